# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0
"""The decision record: what each host gets, decided once from the probe's
facts and the user's policy, each entry citing the blocker ids it answers.

Every role and the run summary read this record (ansible_facts.gvisor.decisions)
and nothing else; none of them re-derives a remedy from the blockers. Pure:
facts and policy in, record out (the unit tests feed it real samples).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ansible_collections.k3s_gvisor.node.plugins.module_utils.gvisor_blockers import evaluate_blockers, shows_b14, shows_b22
from ansible_collections.k3s_gvisor.node.plugins.module_utils.host_text import version_tuple
from ansible_collections.k3s_gvisor.node.plugins.module_utils.runtime_check import passed

RUNTIMES = ("crun", "runc", "runc-patched")
# What a runtime must run on a host for the record to choose it; the cgroup
# namespace and PID namespace shapes only decide the wrapper's adaptations.
REQUIRED_SHAPES = ("cri", "signal_before_start")
# Blockers that belong to the runtime whose check showed them (crun's here):
# where the chosen runtime shows one, runc-gvisor refuses the specs that
# meet it; a runtime that does not show it answers it.
RUNTIME_OWN_BLOCKERS = (
    ("B14", shows_b14, "refuse_masked_under_readonly",
     "this runtime leaves a masked directory inside a read-only path writable here"),
    ("B22", shows_b22, "refuse_new_network_namespace",
     "this runtime cannot bring up the loopback of a network namespace it makes here"),
)
# crun releases that ran CRI's shapes inside gVisor 20240729 (sid's 1.28);
# trixie's 1.21 could not ("cannot resolve `null` under rootfs"), bookworm's
# 1.8.1 neither ("error opening file `/proc/self/setgroups`"). An apt offer
# below this is not taken; an installed crun is judged by the check itself.
CRUN_FROM_APT_MINIMUM = (1, 28)

# The patched runc's patches (roles/runc_gvisor/files/patches), each with the
# blockers it answers. 0002 is a security relaxation (runc_gvisor_relax_procfs_check).
RUNC_PATCHES = (
    ("0001-capability-lastcap-prctl-fallback.patch", "B2"),
    ("0002-securejoin-gvisor-procfs-root.patch", "B3"),
    ("0003-maskdir-retry-without-size-options.patch", "B8"),
    ("0005-exec-fifo-open-retry-eintr.patch", "B11"),
)
# Where the patched runc goes unless the user moves it (runc_gvisor_install_dir).
PATCHED_RUNC_DIR = "/usr/local/lib/runc-gvisor"
# runc's own blockers: what the patches answer, and crun never meets.
RUNC_BLOCKERS = frozenset(blocker for _, blocker in RUNC_PATCHES)
# Those of them a runc release decides by its version (B11 is gVisor's FIFO, met by every runc).
RUNC_VERSION_BLOCKERS = frozenset({"B2", "B3", "B8"})
# The runc release the patched runc is built from: the one place of its
# version (roles/runc_gvisor/files/runc-module's go.mod requires exactly it,
# and its go.sum holds the checksum; a unit test keeps them together). Its
# own version decides B2, B3 and B8 for it, not the distribution's runc's.
PATCHED_RUNC_VERSION = "1.3.6"
CRUN_PATH = "/usr/bin/crun"


@dataclass(frozen=True)
class Policy:
    """The user's say in the decisions (role variables runc_gvisor_*)."""

    runtime: str = "auto"  # auto, crun, runc, runc-patched
    relax_procfs_check: bool = True  # accept patch 0002 (B3) where the patched runc is needed
    pid_namespace_per_container: bool = False  # B9, opt-in
    cni_plugin: str = "auto"  # auto, always (gvisor-bridge), never (the standard bridge plugin)
    engine: str = "k3s"  # container_engine: k3s, kubernetes or containerd (no kubelet)
    patched_runc_dir: str = PATCHED_RUNC_DIR  # runc_gvisor_install_dir

    @property
    def patched_runc_path(self) -> str:
        return self.patched_runc_dir.rstrip("/") + "/runc"


def entry(value, answers, why: str) -> dict:
    """One decision: its value, the blocker ids it answers, and why."""
    return {"value": value, "answers": sorted(set(answers), key=_blocker_number), "why": why}


def _blocker_number(blocker_id: str) -> int:
    return int(blocker_id[1:])


def _ids(facts: dict) -> set[str]:
    return {blocker["id"] for blocker in facts.get("blockers") or []}


def _check(facts: dict, runtime: str) -> dict:
    return (facts.get("runtime_check") or {}).get(runtime) or {}


def _version(facts: dict, runtime: str) -> str:
    return (facts.get(runtime) or {}).get("version") or "?"


def _failure(facts: dict, runtime: str) -> str:
    """Why a runtime is not taken, in one phrase."""
    if not (facts.get(runtime) or {}).get("found"):
        return f"{runtime}: not installed"
    for shape in REQUIRED_SHAPES:
        result = _check(facts, runtime).get(shape) or {}
        if result.get("works") is not True:
            return f"{runtime} {_version(facts, runtime)}: {shape}: {result.get('error') or 'not checked'}"
    return ""


def runs_pods(facts: dict, runtime: str) -> bool:
    return bool((facts.get(runtime) or {}).get("found")) and passed(_check(facts, runtime), REQUIRED_SHAPES)


def crun_installable(facts: dict) -> bool:
    offer = facts.get("crun_from_apt") or {}
    numbers = version_tuple(offer.get("candidate"))
    return bool(offer.get("reachable")) and numbers is not None and tuple(numbers[:2]) >= CRUN_FROM_APT_MINIMUM


def choose_runtime(facts: dict, policy: Policy, errors: list[str]) -> dict:
    """{name, path, install_package, answers, why}: the OCI runtime behind runc-gvisor."""
    blockers = _ids(facts)
    runc_blockers = blockers & RUNC_BLOCKERS
    if policy.runtime in ("auto", "crun"):
        if runs_pods(facts, "crun"):
            # A crun that ran the cgroup-namespace shape answers B1 itself (it
            # runs the container in the node's cgroup namespace; docs/SECURITY.md).
            own = {"B1"} & blockers if (_check(facts, "crun").get("cgroup_namespace") or {}).get("works") else set()
            return _runtime("crun", facts["crun"]["path"], None, runc_blockers | own,
                            f"crun {_version(facts, 'crun')} ran every CRI shape of the runtime check")
        if crun_installable(facts):
            candidate = facts["crun_from_apt"]["candidate"]
            return _runtime("crun", CRUN_PATH, "crun", runc_blockers,
                            f"crun {candidate} from apt (crun >= {'.'.join(map(str, CRUN_FROM_APT_MINIMUM))} ran "
                            "CRI's shapes in gVisor); the runtime stage checks it once installed")
        if policy.runtime == "crun":
            errors.append(f"runc_gvisor_runtime=crun, but {_failure(facts, 'crun')}, and apt offers no crun "
                          f">= {'.'.join(map(str, CRUN_FROM_APT_MINIMUM))} that its mirror serves")
            return _runtime("crun", CRUN_PATH, None, [], "forced, not usable (see errors)")
    if policy.runtime in ("auto", "runc"):
        if runs_pods(facts, "runc"):
            return _runtime("runc", facts["runc"]["path"], None, [],
                            f"the distribution's runc {_version(facts, 'runc')} ran every CRI shape"
                            + ("" if policy.runtime == "runc" else f"; {_failure(facts, 'crun')}"))
        if policy.runtime == "runc":
            errors.append(f"runc_gvisor_runtime=runc, but {_failure(facts, 'runc')}")
            return _runtime("runc", (facts.get("runc") or {}).get("path") or "", None, [],
                            "forced, not usable (see errors)")
    return patched_runtime(facts, policy, errors)


def patched_runtime(facts: dict, policy: Policy, errors: list[str]) -> dict:
    """The patched runc, with the patches this host's blockers call for."""
    if policy.runtime == "runc-patched":
        why = "runc_gvisor_runtime=runc-patched"
    else:
        why = f"no stock runtime runs pods here ({_failure(facts, 'crun')}; {_failure(facts, 'runc')})"
    blockers = patched_runc_blockers(facts, PATCHED_RUNC_VERSION, policy.patched_runc_path)
    patches = [{"name": name, "answers": [blocker]} for name, blocker in RUNC_PATCHES if blocker in blockers]
    if "B3" in blockers and not policy.relax_procfs_check:
        patches = [patch for patch in patches if patch["answers"] != ["B3"]]
        errors.append("B3 (runc's procfs root inode check) has no remedy here: runc_gvisor_relax_procfs_check is "
                      "false, and neither crun nor the distribution's runc runs pods on this host")
    runtime = _runtime("runc-patched", policy.patched_runc_path, None,
                       {blocker for patch in patches for blocker in patch["answers"]},
                       f"{why}; runc {PATCHED_RUNC_VERSION} with the patches its blockers call for")
    runtime["patches"] = patches
    runtime["version"] = PATCHED_RUNC_VERSION
    return runtime


def patched_runc_blockers(facts: dict, version: str, path: str) -> set[str]:
    """The blockers the patched runc meets on this host: the host's own, with
    B2, B3 and B8 judged for the runc release it is built from (a trixie host
    has none of them for its runc 1.1.15, but runc 1.3.6 checks the procfs root)."""
    built = {"found": True, "path": path, "version": version, "version_tuple": version_tuple(version)}
    as_built = evaluate_blockers(dict(facts, runc=built))
    return {blocker["id"] for blocker in as_built} | (_ids(facts) - RUNC_VERSION_BLOCKERS)


def _runtime(name: str, path: str, install_package, answers, why: str) -> dict:
    runtime = entry(name, answers, why)
    runtime.update({"path": path, "install_package": install_package, "patches": [], "version": None})
    return runtime


def wrapper_adaptations(facts: dict, runtime: dict, policy: Policy) -> list[dict]:
    """What runc-gvisor changes in each spec, for the chosen runtime on this host."""
    blockers = _ids(facts)
    check = _check(facts, runtime["value"]) if runtime["value"] != "runc-patched" else {}
    adaptations = []
    # A runtime that ran the cgroup-namespace shape needs no help; an
    # uninstalled or patched one is assumed to need it (runc's validator refuses).
    if "B1" in blockers and (check.get("cgroup_namespace") or {}).get("works") is not True:
        adaptations.append(entry("drop_cgroup_namespace", ["B1"],
                                 "the kernel has no cgroup namespaces and the runtime refuses specs that ask for one"))
    for blocker, shows, refusal, why in RUNTIME_OWN_BLOCKERS:
        if blocker in blockers and shows(check):
            adaptations.append(entry(refusal, [blocker], why))
    if "B9" in blockers and (check.get("pid_namespace_join") or {}).get("works") is not True:
        if policy.pid_namespace_per_container:
            adaptations.append(entry("pid_namespace_per_container", ["B9"],
                                     "opt-in: a container asking for its pod's PID namespace gets its own"))
        else:
            adaptations.append(entry("refuse_pid_namespace_join", ["B9"],
                                     "joining a PID namespace fails here: refuse it with B9's diagnosis"))
    return adaptations


def cni_plugin(facts: dict, policy: Policy) -> dict:
    if policy.cni_plugin == "always":
        return entry("gvisor-bridge", [], "runc_gvisor_cni_plugin=always")
    if policy.cni_plugin == "auto" and "B10" in _ids(facts):
        return entry("gvisor-bridge", ["B10"], "netlink cannot delete routes: the standard plugins fail")
    return entry("bridge", [], "the standard bridge plugin (containernetworking-plugins)")


def engine_settings(facts: dict) -> dict:
    blockers = _ids(facts)
    return {
        "snapshotter": entry("native", ["B7"], "overlay mounts fail") if "B7" in blockers
        else entry("overlayfs", [], "overlay mounts work"),
        "unprivileged_ports_icmp": entry(False, ["B5"], "containerd 2.x refuses them below kernel 4.11")
        if "B5" in blockers else entry(None, [], "left as containerd sets them"),
        "no_new_keyring": no_new_keyring(blockers),
    }


# Why each keyring blocker makes the runtime keep the caller's session keyring.
KEYRING_BLOCKERS = {"B6": "joining a session keyring fails",
                    "B15": "session keyrings are never freed: one per container would spend the quota"}


def no_new_keyring(blockers: set) -> dict:
    answers = [blocker for blocker in KEYRING_BLOCKERS if blocker in blockers]
    if not answers:
        return entry(False, [], "the runtime gives each container its own session keyring")
    return entry(True, answers, "; ".join(KEYRING_BLOCKERS[blocker] for blocker in answers))


# Engines that run a kubelet: they get the node preparation and kubelet settings below.
KUBELET_ENGINES = ("k3s", "kubernetes")
# Blockers only a kubelet meets: on an engine without one they need no answer.
KUBELET_BLOCKERS = ("B12", "B13", "B16", "B17", "B18", "B19", "B20", "B21")


def node_preparation(blockers: set) -> list[dict]:
    """k3s-gvisor-node's options, redone before every start of the engine (a
    restarted sandbox has lost its mounts)."""
    steps = []
    if "B17" in blockers:
        steps.append(entry("--private-mount-namespace", ["B17"],
                           "containerd and the kubelet share one private mount namespace, /var/lib/kubelet rshared "
                           "inside it, so no mount of theirs has a peer in another namespace"))
    else:
        steps.append(entry("--shared-root", [], "the kubelet expects / to propagate mounts (rshared)"))
    if "B16" in blockers:
        steps.append(entry("--kernel-tunables", ["B16"],
                           "views of /proc/sys/vm and /proc/sys/kernel holding the kubelet's values, seen only in "
                           "the engine's own mount namespace"))
    if "B12" in blockers:
        steps.append(entry("--dev-kmsg", ["B12"], "bind /dev/null over the missing /dev/kmsg"))
    if "B18" in blockers:
        steps.append(entry("--cgroup-freezer", ["B18"], "an empty freezer directory for the runtime's exec to stat"))
    if "B19" in blockers:
        steps.append(entry("--node-bridge", ["B19"],
                           "the pod bridge gets its gateway address before the kubelet starts; that address is the "
                           "node IP"))
    return steps


def kubelet_configuration(blockers: set) -> list[dict]:
    """Fragments of the kubelet's configuration (KubeletConfiguration fields)."""
    fragments = []
    if "B20" in blockers:
        fragments.append(entry({"failCgroupV1": False}, ["B20"], "the kubelet refuses cgroup v1 by default"))
    if "B21" in blockers:
        fragments.append(entry({"localStorageCapacityIsolation": False}, ["B21"],
                               "cAdvisor has no root filesystem data for the kubelet's ephemeral storage accounting"))
    return fragments


def kubernetes_settings(facts: dict, engine: str) -> dict | None:
    """What the kubelet's node needs (both Kubernetes engines); None without a kubelet."""
    if engine not in KUBELET_ENGINES:
        return None
    blockers = _ids(facts)
    return {
        "node": node_preparation(blockers),
        "kubelet": kubelet_configuration(blockers),
        "service_proxy": service_proxy(blockers),
    }


def service_proxy(blockers: set) -> dict:
    """What serves Services on the node: kube-proxy, or where there is no
    netfilter our proxy, which owns each ClusterIP on the pod bridge. Never both."""
    if "B13" in blockers:
        return entry("gvisor-service-proxy", ["B13"],
                     "no netfilter: kube-proxy cannot program Services, so a node-local proxy owns each ClusterIP on "
                     "the pod bridge and splices connections to the ready endpoints")
    return entry("kube-proxy", [], "netfilter present")


def k3s_settings(kubernetes: dict | None, engine: str) -> dict | None:
    """k3s's config.yaml flags beyond the engine and kubelet settings (which
    its template, its kubelet.conf.d drop-in and k3s-gvisor-node carry)."""
    if engine != "k3s":
        return None
    flags = []
    if kubernetes["service_proxy"]["value"] != "kube-proxy":
        # k3s's source: an embedded kube-proxy or network policy error shuts k3s down.
        # Renders kubernetes.service_proxy, which answers B13.
        flags.append(entry({"disable-kube-proxy": True, "disable-network-policy": True}, [],
                           "no netfilter: k3s's kube-proxy and network policy controller would stop k3s"))
    return {"flags": flags}


def relaxations(runtime: dict, adaptations: list[dict], engine: dict, kubernetes: dict | None) -> list[dict]:
    """What is relaxed on this host, and what it gives up (docs/SECURITY.md)."""
    found = []
    if any(patch["answers"] == ["B3"] for patch in runtime.get("patches", [])):
        found.append(entry("procfs root inode check relaxed on gVisor only (patched runc, patch 0002)", ["B3"],
                           "a second procfs instance mounted over /proc would be accepted inside gVisor"))
    if any(patch["answers"] == ["B8"] for patch in runtime.get("patches", [])):
        found.append(entry("masks without size caps (patched runc, patch 0003)", ["B8"],
                           "the size caps of an empty read-only tmpfs; the mask itself stays"))
    if runtime["value"] == "crun" and "B3" in runtime["answers"]:
        found.append(entry("crun does not verify the procfs root (runc's CVE-2025-52881 check)", ["B3"],
                           "procfs opened by path, without runc's root-inode and mount checks"))
    names = {adaptation["value"] for adaptation in adaptations}
    if "drop_cgroup_namespace" in names:
        found.append(entry("cgroup namespace dropped by runc-gvisor", ["B1"],
                           "containers see the node's cgroup paths (gVisor has no cgroup namespaces)"))
    if "pid_namespace_per_container" in names:
        found.append(entry("own PID namespace instead of the pod's (opt-in)", ["B9"],
                           "containers of a pod do not see each other's processes"))
    if engine["no_new_keyring"]["value"]:
        found.append(entry("no session keyring per container (NoNewKeyring)", engine["no_new_keyring"]["answers"],
                           "containers share the runtime's session keyring"))
    steps = {step["value"] for step in (kubernetes or {}).get("node", [])}
    if "--kernel-tunables" in steps:
        found.append(entry("the kubelet's kernel tunables are a view (k3s-gvisor-node --kernel-tunables)", ["B16"],
                           "the kubelet believes vm.panic_on_oom=0, kernel.panic=10 and the keyring limits are set; "
                           "the sandbox's kernel keeps its own"))
    fields = {name for fragment in (kubernetes or {}).get("kubelet", []) for name in fragment["value"]}
    if "localStorageCapacityIsolation" in fields:
        found.append(entry("the kubelet's local storage capacity isolation is off", ["B21"],
                           "ephemeral-storage requests and limits are neither accounted nor enforced (no eviction "
                           "for a pod filling the node's disk)"))
    if "--dev-kmsg" in steps:
        found.append(entry("/dev/null bound over /dev/kmsg (k3s-gvisor-node --dev-kmsg)", ["B12"],
                           "the kubelet's OOM watcher reads no kernel log, so it reports no OOM kills"))
    return found


def gvisor_release(facts: dict) -> str:
    """The gVisor release as far as the facts tell (the summary's guess, where
    the inventory names none): the child subreaper came with 20240729."""
    if facts.get("child_subreaper") is False:
        return "older than 20240729 (B4: no child subreaper)"
    if facts.get("is_gvisor"):
        return "20240729 or newer (child subreaper works)"
    return "not gVisor"


def decide(facts: dict, policy: Policy) -> dict:
    """The decision record of one host."""
    errors: list[str] = []
    runtime = choose_runtime(facts, policy, errors)
    # A runtime's own blocker is answered by choosing a runtime that does not show it.
    answered = {blocker for blocker, shows, _, _ in RUNTIME_OWN_BLOCKERS
                if blocker in _ids(facts) and not shows(_check(facts, runtime["value"]))}
    runtime["answers"] = sorted(set(runtime["answers"]) | answered, key=_blocker_number)
    adaptations = wrapper_adaptations(facts, runtime, policy)
    engine = engine_settings(facts)
    kubernetes = kubernetes_settings(facts, policy.engine)
    record = {
        "container_engine": policy.engine,
        "runtime": runtime,
        "wrapper_adaptations": adaptations,
        "cni_plugin": cni_plugin(facts, policy),
        "engine": engine,
        "kubernetes": kubernetes,
        "k3s": k3s_settings(kubernetes, policy.engine),
        "relaxations": relaxations(runtime, adaptations, engine, kubernetes),
        "errors": errors,
        # Blockers under which no pod runs and nothing here repairs (B4): the play stops the host.
        "fatal": sorted((b["id"] for b in facts.get("blockers") or [] if b["fatal"]), key=_blocker_number),
        "gvisor_release": gvisor_release(facts),
    }
    record["answered_by"] = answered_by(record)
    record["unanswered"] = unanswered(facts, record)
    return record


def answered_by(record: dict) -> dict[str, list[str]]:
    """{blocker id: [what answers it]} over the whole record."""
    answers: dict[str, list[str]] = {}

    def note(item: dict, label: str) -> None:
        for blocker in item["answers"]:
            answers.setdefault(blocker, []).append(label)

    runtime = record["runtime"]
    note(runtime, f"runtime {runtime['value']}")
    for patch in runtime.get("patches", []):
        note(patch, f"patch {patch['name'][:4]}")
    for adaptation in record["wrapper_adaptations"]:
        note(adaptation, f"runc-gvisor {adaptation['value']}")
    note(record["cni_plugin"], f"CNI plugin {record['cni_plugin']['value']}")
    for name, setting in record["engine"].items():
        note(setting, f"engine {name}={setting['value']}")
    kubernetes = record["kubernetes"]
    if kubernetes is None:
        for blocker in KUBELET_BLOCKERS:
            answers.setdefault(blocker, []).append(f"no kubelet on engine {record['container_engine']}")
        return answers
    for step in kubernetes["node"]:
        note(step, f"k3s-gvisor-node {step['value']}")
    for fragment in kubernetes["kubelet"]:
        note(fragment, "kubelet " + ", ".join(f"{key}: {value}" for key, value in fragment["value"].items()))
    note(kubernetes["service_proxy"], kubernetes["service_proxy"]["value"])
    for flag in (record["k3s"] or {}).get("flags", []):
        note(flag, "k3s " + ", ".join(flag["value"]))
    return answers


def unanswered(facts: dict, record: dict) -> list[str]:
    """Blocker ids nothing in the record answers (fatal ones, B9 without the wrapper's say, ...)."""
    answers = answered_by(record)
    return sorted((blocker for blocker in _ids(facts) if blocker not in answers), key=_blocker_number)


# The record kept on each host (/etc/k3s-gvisor/record.json): the facts it was
# decided from, the policy, and the decisions. A run reads it and decides from
# the facts it holds, not from a host the collection has since changed (a crun
# it installed, /dev/null over /dev/kmsg); so reruns decide the same.
RECORD_FORMAT = 1
# Probe facts that say how the probe ran, not what the host is.
RUN_FACTS = ("probe_seconds", "decisions")


def recorded_basis(recorded: dict | None) -> dict | None:
    """The facts a kept record was decided from; None where there is no
    usable record (none yet, another format, or not a record at all)."""
    if not isinstance(recorded, dict) or recorded.get("format") != RECORD_FORMAT:
        return None
    basis = recorded.get("facts")
    return basis if isinstance(basis, dict) and "blockers" in basis else None


def probe_basis(facts: dict) -> dict:
    """The probe's facts as a record keeps them."""
    return {key: value for key, value in facts.items() if key not in RUN_FACTS}


def with_checked_runtime(basis: dict, name: str, binary: dict, shapes: dict) -> dict:
    """The basis once the runtime stage installed runtime NAME and ran the
    runtime check on it: the runtime as found, its shapes, and the blockers
    judged again (B14 is the runtime's own, seen only by its check)."""
    updated = dict(basis)
    updated[name] = binary
    updated["runtime_check"] = dict(basis.get("runtime_check") or {}, **{name: shapes})
    if name == "crun":
        updated["crun_from_apt"] = None  # as the probe reports an installed crun
    updated["blockers"] = evaluate_blockers(updated)
    return updated


def record_document(basis: dict, policy: Policy, decisions: dict) -> dict:
    return {"format": RECORD_FORMAT, "policy": asdict(policy), "facts": basis, "decisions": decisions}
