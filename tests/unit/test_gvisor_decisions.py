# SPDX-License-Identifier: Apache-2.0
"""The decision record (plugins/module_utils/gvisor_decisions.py) from probe
facts as real hosts gave them: what each host gets, and which blocker each
entry answers."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from host_samples import NOT_FOUND, OBSERVED_GVISOR_20221219, OBSERVED_GVISOR_20240729, OBSERVED_PLAIN

from ansible_collections.k3s_gvisor.node.plugins.module_utils import gvisor_decisions as gd
from ansible_collections.k3s_gvisor.node.plugins.module_utils import gvisor_blockers as gb

REPO = Path(__file__).resolve().parents[2]
PASSES = {shape: {"works": True, "error": None} for shape in ("cri", "cgroup_namespace", "pid_namespace_join",
                                                                 "signal_before_start", "masked_under_readonly")}
EINTR = "start: cannot start a container that has stopped; before start: open exec fifo /proc/self/fd/5: interrupted system call"


def with_blockers(facts: dict, **changes) -> dict:
    """Facts with changes, and their blockers evaluated as the probe does."""
    facts = copy.deepcopy(facts)
    facts.update(changes)
    facts["blockers"] = gb.evaluate_blockers(facts)
    return facts


def decide(facts: dict, **policy) -> dict:
    return gd.decide(facts, gd.Policy(**policy))


SID = with_blockers(OBSERVED_GVISOR_20240729)
SID_WITHOUT_CRUN = with_blockers(OBSERVED_GVISOR_20240729, crun=NOT_FOUND,
                                 runtime_check={"runc": OBSERVED_GVISOR_20240729["runtime_check"]["runc"]})
# trixie's runc 1.1.15 runs CRI's shapes but dies of B11 when its init is signalled.
TRIXIE_RUNC = {**PASSES, "cgroup_namespace": {"works": False, "error": "create: runc create failed: cgroup namespaces aren't enabled in the kernel"},
               "pid_namespace_join": {"works": False, "error": "create: runc create failed: unable to start container process: can't get final child's PID from pipe: EOF"},
               "signal_before_start": {"works": False, "error": EINTR}}
TRIXIE = with_blockers(OBSERVED_GVISOR_20240729, crun=NOT_FOUND,
                       runc={"found": True, "path": "/usr/sbin/runc", "version": "1.1.15+ds1", "version_tuple": [1, 1, 15]},
                       containerd={"found": True, "path": "/usr/bin/containerd", "version": "1.7.24~ds1", "version_tuple": [1, 7, 24]},
                       runtime_check={"runc": TRIXIE_RUNC})
PLAIN = with_blockers(OBSERVED_PLAIN, crun=NOT_FOUND, crun_from_apt={"candidate": None, "uri": None, "reachable": False},
                      runtime_check={"runc": PASSES},
                      netlink={"available": True, "route_del": {"works": True, "error": None}})


def test_sid_gets_crun_which_answers_runcs_blockers_and_b1_itself():
    record = decide(SID)
    assert record["runtime"]["value"] == "crun" and record["runtime"]["path"] == "/usr/bin/crun"
    assert record["runtime"]["install_package"] is None and record["runtime"]["patches"] == []
    assert record["runtime"]["answers"] == ["B1", "B3", "B8", "B11"]
    # crun ran the cgroup-namespace shape: the wrapper drops nothing; it refuses
    # what crun leaves writable here (B14), the network namespaces it cannot
    # make here (B22) and what no runtime can join (B9).
    assert [a["value"] for a in record["wrapper_adaptations"]] == ["refuse_masked_under_readonly",
                                                                  "refuse_new_network_namespace", "refuse_pid_namespace_join"]
    assert record["cni_plugin"]["value"] == "gvisor-bridge" and record["cni_plugin"]["answers"] == ["B10"]
    assert record["engine"]["snapshotter"] == {"value": "native", "answers": ["B7"], "why": "overlay mounts fail"}
    assert record["engine"]["unprivileged_ports_icmp"]["value"] is False
    # gVisor 20240729 joins keyrings (no B6) but keeps every one (B15).
    assert record["engine"]["no_new_keyring"]["value"] is True and record["engine"]["no_new_keyring"]["answers"] == ["B15"]
    assert record["errors"] == [] and record["unanswered"] == []


def test_every_blocker_of_a_host_is_answered_or_named_unanswered():
    for facts in (SID, SID_WITHOUT_CRUN, TRIXIE, PLAIN):
        record = decide(facts)
        raised = {b["id"] for b in facts["blockers"]}
        # Answered may hold more: what the chosen runtime meets (runc 1.3.6's B3 on trixie).
        assert raised <= set(record["answered_by"]) | set(record["unanswered"])
        assert set(record["unanswered"]) <= raised


def test_sid_without_crun_gets_the_patched_runc_with_exactly_the_patches_its_blockers_call_for():
    record = decide(SID_WITHOUT_CRUN)
    runtime = record["runtime"]
    assert runtime["value"] == "runc-patched" and runtime["path"] == gd.PATCHED_RUNC_DIR + "/runc"
    assert [(p["name"][:4], p["answers"]) for p in runtime["patches"]] == [("0002", ["B3"]), ("0003", ["B8"]), ("0005", ["B11"])]
    assert "crun: not installed" in runtime["why"] and "unsafe procfs detected" in runtime["why"]
    assert [a["value"] for a in record["wrapper_adaptations"]] == ["drop_cgroup_namespace", "refuse_pid_namespace_join"]
    relaxed = {r["answers"][0] for r in record["relaxations"]}
    # B15: no session keyring per container, as gVisor keeps every one; B12,
    # B16 and B21: the kubelet's node (k3s, the default engine).
    assert relaxed == {"B1", "B3", "B8", "B15", "B12", "B16", "B21"}
    assert {r["answers"][0] for r in decide(SID_WITHOUT_CRUN, engine="containerd")["relaxations"]} == {"B1", "B3", "B8", "B15"}


def test_a_host_that_needs_b2_gets_patch_0001():
    facts = with_blockers(SID_WITHOUT_CRUN, cap_last_cap={"file_present": False, "file_value": None, "probed": 40})
    assert "0001-capability-lastcap-prctl-fallback.patch" in [p["name"] for p in decide(facts)["runtime"]["patches"]]


def test_trixies_runc_dies_of_b11_so_the_patched_runc_is_chosen_with_what_runc_1_3_meets_there():
    assert "B11" in {b["id"] for b in TRIXIE["blockers"]}
    assert "the runtime check saw it" in next(b for b in TRIXIE["blockers"] if b["id"] == "B11")["evidence"]
    record = decide(TRIXIE)
    assert record["runtime"]["value"] == "runc-patched" and record["runtime"]["version"] == gd.PATCHED_RUNC_VERSION
    # runc 1.1.15 meets neither B3 nor B8, but the runc it gets (1.3.6) does on gVisor.
    assert not {"B3", "B8"} & {b["id"] for b in TRIXIE["blockers"]}
    assert [p["name"][:4] for p in record["runtime"]["patches"]] == ["0002", "0003", "0005"]
    assert [r["answers"] for r in record["relaxations"] if r["answers"] == ["B3"]] == [["B3"]]


def test_the_patched_runc_version_is_the_one_its_build_module_requires():
    go_mod = (REPO / "roles/runc_gvisor/files/runc-module/go.mod").read_text()
    assert f"github.com/opencontainers/runc v{gd.PATCHED_RUNC_VERSION} " in go_mod
    go_sum = (REPO / "roles/runc_gvisor/files/runc-module/go.sum").read_text()
    assert f"github.com/opencontainers/runc v{gd.PATCHED_RUNC_VERSION} h1:" in go_sum


def test_a_plain_host_keeps_its_runc_and_nothing_is_relaxed():
    record = decide(PLAIN)
    assert record["runtime"]["value"] == "runc" and record["runtime"]["path"] == "/usr/bin/runc"
    assert record["wrapper_adaptations"] == [] and record["relaxations"] == []
    assert record["cni_plugin"]["value"] == "bridge"
    assert record["engine"]["snapshotter"]["value"] == "overlayfs"
    assert record["engine"]["unprivileged_ports_icmp"]["value"] is None


@pytest.mark.parametrize("candidate, reachable, chosen", [
    ("1.28-1", True, "crun"),
    ("1.21-1", True, "runc-patched"),  # trixie's crun: cannot resolve `null` under rootfs inside gVisor
    ("1.28-1", False, "runc-patched"),  # the mirror does not answer
])
def test_crun_from_apt_only_where_a_known_good_release_is_reachable(candidate, reachable, chosen):
    facts = with_blockers(SID_WITHOUT_CRUN, crun_from_apt={"candidate": candidate, "uri": "http://m/crun.deb",
                                                           "reachable": reachable})
    record = decide(facts)
    assert record["runtime"]["value"] == chosen
    if chosen == "crun":
        assert record["runtime"]["install_package"] == "crun" and record["runtime"]["path"] == gd.CRUN_PATH
        # Not checked yet: the wrapper keeps B1's adaptation until it is.
        assert "drop_cgroup_namespace" in [a["value"] for a in record["wrapper_adaptations"]]


def test_forcing_a_runtime_the_host_cannot_run_is_an_error_naming_why():
    record = decide(SID_WITHOUT_CRUN, runtime="crun")
    assert record["errors"] and "runc_gvisor_runtime=crun" in record["errors"][0] and "not installed" in record["errors"][0]
    record = decide(SID, runtime="runc")
    assert "runc_gvisor_runtime=runc" in record["errors"][0] and "incorrect procfs root inode number 86" in record["errors"][0]


def test_forcing_the_patched_runc_where_crun_works():
    record = decide(SID, runtime="runc-patched")
    assert record["runtime"]["value"] == "runc-patched" and record["errors"] == []
    assert record["runtime"]["why"].startswith("runc_gvisor_runtime=runc-patched; runc 1.3.6")


def test_refusing_the_b3_relaxation_where_only_the_patched_runc_works_is_an_error():
    record = decide(SID_WITHOUT_CRUN, relax_procfs_check=False)
    assert "runc_gvisor_relax_procfs_check is false" in record["errors"][0]
    assert "0002-securejoin-gvisor-procfs-root.patch" not in [p["name"] for p in record["runtime"]["patches"]]
    # With crun there is nothing to refuse.
    assert decide(SID, relax_procfs_check=False)["errors"] == []


def test_b9_opt_in_gives_a_pid_namespace_per_container():
    record = decide(SID, pid_namespace_per_container=True)
    assert [a["value"] for a in record["wrapper_adaptations"]] == ["refuse_masked_under_readonly",
                                                                  "refuse_new_network_namespace", "pid_namespace_per_container"]
    assert "own PID namespace instead of the pod's (opt-in)" in [r["value"] for r in record["relaxations"]]


@pytest.mark.parametrize("cni_plugin, expected", [("always", "gvisor-bridge"), ("never", "bridge"), ("auto", "gvisor-bridge")])
def test_cni_plugin_policy(cni_plugin, expected):
    assert decide(SID, cni_plugin=cni_plugin)["cni_plugin"]["value"] == expected


def test_no_new_keyring_only_where_the_keyring_cannot_be_joined():
    legacy = with_blockers(OBSERVED_GVISOR_20221219)
    record = decide(legacy)
    assert record["engine"]["no_new_keyring"] == {"value": True, "answers": ["B6"], "why": "joining a session keyring fails"}
    assert "no session keyring per container (NoNewKeyring)" in [r["value"] for r in record["relaxations"]]
    # B4 is fatal there: nothing answers it.
    assert "B4" in record["unanswered"]
    plain = decide(PLAIN)
    assert plain["engine"]["no_new_keyring"]["value"] is False
    assert not any("NoNewKeyring" in r["value"] for r in plain["relaxations"])


def test_kubelet_engines_get_the_node_preparation_and_kubelet_settings_the_blockers_call_for():
    for engine in ("k3s", "kubernetes"):
        record = decide(SID, engine=engine)
        kubernetes = record["kubernetes"]
        assert record["container_engine"] == engine
        assert [(step["value"], step["answers"]) for step in kubernetes["node"]] == [
            ("--private-mount-namespace", ["B17"]), ("--kernel-tunables", ["B16"]), ("--dev-kmsg", ["B12"]),
            ("--cgroup-freezer", ["B18"]), ("--node-bridge", ["B19"])]
        assert [(f["value"], f["answers"]) for f in kubernetes["kubelet"]] == [
            ({"failCgroupV1": False}, ["B20"]), ({"localStorageCapacityIsolation": False}, ["B21"])]
        assert kubernetes["service_proxy"]["value"] == "gvisor-service-proxy"
        assert kubernetes["service_proxy"]["answers"] == ["B13"]
        # Each blocker is answered once, in one place.
        assert record["unanswered"] == []
        assert all(len(record["answered_by"][b]) == 1 for b in gd.KUBELET_BLOCKERS if b in record["answered_by"])
    k3s = decide(SID, engine="k3s")["k3s"]
    assert k3s["flags"] == [{"value": {"disable-kube-proxy": True, "disable-network-policy": True}, "answers": [],
                             "why": "no netfilter: k3s's kube-proxy and network policy controller would stop k3s"}]
    assert decide(SID, engine="kubernetes")["k3s"] is None


def test_a_plain_host_gets_no_node_preparation_but_a_shared_root():
    kubernetes = decide(PLAIN, engine="kubernetes")["kubernetes"]
    assert [step["value"] for step in kubernetes["node"]] == ["--shared-root"]
    # This machine's kernel is cgroup v1: the kubelet's refusal is not gVisor's.
    assert [f["answers"] for f in kubernetes["kubelet"]] == [["B20"]]
    assert kubernetes["service_proxy"]["value"] == "kube-proxy"
    assert decide(PLAIN, engine="k3s")["k3s"] == {"flags": []}


def test_the_containerd_engine_runs_no_kubelet_and_needs_no_kubelet_remedy():
    record = decide(SID, engine="containerd")
    assert record["kubernetes"] is None and record["k3s"] is None
    for blocker in ("B12", "B13", "B16", "B17", "B18", "B19", "B20", "B21"):
        assert record["answered_by"][blocker] == ["no kubelet on engine containerd"]
    assert not any("kubelet" in r["value"] or "kmsg" in r["value"] for r in record["relaxations"])


@pytest.mark.parametrize("blocker, refusal", [("B14", "refuse_masked_under_readonly"),
                                              ("B22", "refuse_new_network_namespace")])
def test_crun_s_own_blockers_are_answered_by_another_runtime(blocker, refusal):
    record = decide(SID, runtime="runc-patched")
    assert blocker in record["runtime"]["answers"]
    assert refusal not in [a["value"] for a in record["wrapper_adaptations"]]
    assert blocker not in record["unanswered"]


def crun_from_apt(facts: dict) -> dict:
    return with_blockers(facts, crun_from_apt={"candidate": "1.28-1", "uri": "http://m/crun.deb", "reachable": True})


def test_crun_from_apt_decided_again_with_its_check_is_decided_as_where_crun_was_installed_before():
    """The runtime stage installs crun, checks it and decides again: the
    record must then be the one every later run decides (issue: the first
    converge missed B14's refusal, which only crun's own check shows)."""
    first = decide(crun_from_apt(SID_WITHOUT_CRUN))
    assert first["runtime"]["install_package"] == "crun"
    assert "refuse_masked_under_readonly" not in [a["value"] for a in first["wrapper_adaptations"]]
    basis = gd.with_checked_runtime(crun_from_apt(SID_WITHOUT_CRUN), "crun", SID["crun"], SID["runtime_check"]["crun"])
    again = decide(basis)
    installed_before = decide(SID)
    for key in ("wrapper_adaptations", "engine", "kubernetes", "relaxations", "answered_by", "unanswered"):
        assert again[key] == installed_before[key], key
    assert again["runtime"]["value"] == "crun" and again["runtime"]["install_package"] is None
    assert [a["value"] for a in again["wrapper_adaptations"]] == ["refuse_masked_under_readonly",
                                                                  "refuse_new_network_namespace", "refuse_pid_namespace_join"]
    assert {b["id"] for b in basis["blockers"]} == {b["id"] for b in SID["blockers"]}


def test_a_kept_record_is_read_only_in_its_own_format():
    basis = gd.probe_basis(dict(SID, probe_seconds=1.5, decisions={"runtime": {}}))
    assert "probe_seconds" not in basis and "decisions" not in basis
    document = gd.record_document(basis, gd.Policy(), decide(SID))
    assert gd.recorded_basis(document) == basis
    assert document["policy"]["engine"] == "k3s" and document["policy"]["patched_runc_dir"] == gd.PATCHED_RUNC_DIR
    for foreign in (None, [], {"format": 0, "facts": basis}, {"format": gd.RECORD_FORMAT, "facts": {"x": 1}},
                    {"format": gd.RECORD_FORMAT}):
        assert gd.recorded_basis(foreign) is None, foreign


def test_the_patched_runc_is_where_the_user_installs_it():
    record = decide(SID_WITHOUT_CRUN, patched_runc_dir="/opt/gvisor/")
    assert record["runtime"]["value"] == "runc-patched" and record["runtime"]["path"] == "/opt/gvisor/runc"


def test_the_record_names_the_fatal_blockers_and_guesses_the_gvisor_release():
    old = decide(with_blockers(OBSERVED_GVISOR_20221219))
    assert old["fatal"] == ["B4"] and old["gvisor_release"].startswith("older than 20240729")
    assert decide(SID)["fatal"] == [] and decide(SID)["gvisor_release"].startswith("20240729 or newer")
    assert decide(PLAIN)["gvisor_release"] == "not gVisor"
