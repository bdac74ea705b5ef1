# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0
"""The known blockers (B1 to B22, docs/PROBE.md): the catalogue, with each
one's title, remedy and error text, and the rules that raise them from a
host's probe facts. Pure: fact dicts in, blockers out; the probe
(gvisor_facts.py), the decisions and the verify stage's diagnosis read it.

Only the standard library is used (it runs on the target, and in the CRI
client the verify stage ships).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ansible_collections.k3s_gvisor.node.plugins.module_utils.runtime_check import MASK_WRITE_SEEN

# What crun says where it cannot bring up its own network namespace's loopback inside gVisor (field notes 8).
NEW_NETNS_LOOPBACK_ERROR = "ioctl SIOCSIFFLAGS: Inappropriate ioctl for device"

# Linux frees an exited process's session keyring at once (the key GC runs within
# milliseconds); gVisor 20240729 frees none. Waited for before calling it kept.
KEYRING_FREE_SECONDS = 3.0
# strerror(EDQUOT): the keyring quota is spent.
QUOTA_SPENT = "Disk quota exceeded"



def runc_reads_cap_last_cap(runc_version: list[int]) -> bool:
    """runc >= 1.3.0 uses moby/sys/capability, whose LastCap() needs the file."""
    return tuple(runc_version) >= (1, 3, 0)


def runc_has_procfs_hardening(runc_version: list[int]) -> bool:
    """runc releases with the CVE-2025-52881 procfs hardening.

    1.2.8+ within 1.2.x, 1.3.3+ within 1.3.x, and everything from 1.4.0.
    The procfs root inode check (B3) and the size-limited masking tmpfs (B8)
    came with the same security releases.
    """
    version = tuple(runc_version)
    return version >= (1, 3, 3) or (1, 2, 8) <= version < (1, 3, 0)


@dataclass(frozen=True)
class BlockerInfo:
    title: str
    error_text: str
    remedy: str
    fixable: bool
    # True when no pod at all can run and nothing here repairs it: the play
    # stops on such a host. B9 is not fixable but only rules out some pods.
    fatal: bool = False
    # A regular expression for the error when its text varies (a number, a
    # path); error_text is then one instance of it. Matched as a substring
    # of error_text otherwise.
    error_pattern: str | None = None

    def matches(self, error: str) -> bool:
        """Whether an error message shows this blocker."""
        if self.error_pattern:
            return re.search(self.error_pattern, error) is not None
        return bool(self.error_text) and self.error_text in error


BLOCKER_CATALOGUE = {
    "B1": BlockerInfo(
        title="runc rejects specs with a cgroup namespace",
        error_text="cgroup namespaces aren't enabled in the kernel",
        remedy="run runc through the runc-gvisor wrapper, which drops the cgroup namespace from the OCI spec",
        fixable=True,
    ),
    "B2": BlockerInfo(
        title="runc >= 1.3.0 needs /proc/sys/kernel/cap_last_cap",
        error_text="error during container init: open /proc/sys/kernel/cap_last_cap: no such file or directory",
        remedy="use the patched runc whose LastCap() falls back to probing prctl(PR_CAPBSET_READ) when the file is absent",
        fixable=True,
    ),
    "B3": BlockerInfo(
        title="runc's procfs root inode check rejects gVisor's procfs",
        error_text="runc create failed: unsafe procfs detected: incorrect procfs root inode number 86",
        error_pattern=r"unsafe procfs detected: incorrect procfs root inode number \d+",
        remedy=(
            "use the patched runc, whose procfs root inode check is relaxed for a genuine procfs on gVisor only; "
            "a relaxation of the CVE-2025-52881 hardening (see docs/PROBE.md)"
        ),
        fixable=True,
    ),
    "B4": BlockerInfo(
        title="PR_SET_CHILD_SUBREAPER is not supported, containerd-shim cannot start",
        error_text="failed to start shim: start failed: io.containerd.runc.v2: invalid argument",
        remedy="use gVisor release 20240729 or newer (Debian: bookworm-backports, trixie or sid); no runtime-side fix exists",
        fixable=False,
        fatal=True,
    ),
    "B5": BlockerInfo(
        title="containerd 2.x CRI enables unprivileged ports/ICMP, which needs a kernel >= 4.11",
        # Seen in containerd 2.1.9's log on gVisor 20240729; the CRI plugin is then not loaded.
        error_text=(
            "invalid plugin config: unprivileged_icmp and unprivileged_port require kernel version "
            "greater than or equal to 4.11"
        ),
        remedy="set enable_unprivileged_ports = false and enable_unprivileged_icmp = false in containerd's CRI config",
        fixable=True,
    ),
    "B6": BlockerInfo(
        title="runc cannot join a session keyring",
        error_text="unable to join session keyring",
        remedy="set NoNewKeyring = true in the runc runtime options",
        fixable=True,
    ),
    "B7": BlockerInfo(
        title="overlayfs does not work, so the overlayfs snapshotter cannot",
        error_text="overlay mounts fail",
        remedy="use the native snapshotter (k3s: --snapshotter=native) or fuse-overlayfs",
        fixable=True,
    ),
    "B8": BlockerInfo(
        title="runc cannot mask directories with a size-limited tmpfs",
        error_text=(
            'error during container init: can\'t mask dir "/sys/firmware": mount src=tmpfs, dst=/sys/firmware, '
            "flags=MS_RDONLY, data=nr_blocks=1,nr_inodes=1: invalid argument"
        ),
        remedy="use the patched runc whose maskDir() retries the read-only tmpfs without size options on EINVAL",
        fixable=True,
    ),
    "B9": BlockerInfo(
        title="joining an existing PID namespace fails",
        error_text="runc create failed: unable to start container process: can't get final child's PID from pipe: EOF",
        remedy=(
            "pods must not use shareProcessNamespace (CRI pid: POD); kubelet's default, a PID namespace per "
            "container, works. CRI clients must set the PID namespace mode to CONTAINER explicitly"
        ),
        fixable=False,
    ),
    "B10": BlockerInfo(
        title="netlink cannot delete routes, so the standard bridge and ptp CNI plugins fail",
        error_text='"cni0" already exists but is not a bridge',
        error_pattern=r'already exists but is not a bridge|failed to delete route .*: operation not supported',
        remedy=(
            "use the gvisor-bridge CNI plugin, which makes the bridge without reading its kind back and never "
            "deletes a route (docs/NETWORK.md)"
        ),
        fixable=True,
    ),
    "B11": BlockerInfo(
        title="gVisor fails a blocking FIFO open with EINTR on a signal, which kills runc init before start",
        error_text="reopen exec fifo: reopen fd 7: interrupted system call",
        error_pattern=r"(re)?open exec fifo.*: interrupted system call",
        remedy=(
            "run a runtime whose init takes no signals while it waits (crun), or the patched runc whose "
            "runc init opens its exec FIFO again after EINTR (patch 0005; google/gvisor#14849)"
        ),
        fixable=True,
    ),
    "B12": BlockerInfo(
        title="/dev/kmsg is missing, which the kubelet reads",
        error_text="failed to run Kubelet: failed to create kubelet: open /dev/kmsg: no such device or address",
        error_pattern=r"open /dev/kmsg: no such (device or address|file or directory)",
        remedy="bind /dev/null over /dev/kmsg before the kubelet starts (k3s-gvisor-node --dev-kmsg), undone by reset",
        fixable=True,
    ),
    "B13": BlockerInfo(
        title="no netfilter (no /proc/sys/net/netfilter), so kube-proxy and network policy cannot run",
        error_text="open /proc/sys/net/netfilter/nf_conntrack_max: no such file or directory",
        remedy=(
            "run no kube-proxy (k3s: disable-kube-proxy and disable-network-policy, whose errors would stop k3s); "
            "Services need another proxy (issue 23)"
        ),
        fixable=True,
    ),
    "B14": BlockerInfo(
        title="a masked directory inside a read-only path is writable, and shared by the runtime's containers",
        error_text=MASK_WRITE_SEEN,
        remedy=(
            "refuse specs that mask a directory inside a read-only path (runc-gvisor refuse_masked_under_readonly); "
            "containerd's default CRI spec has none. crun >= 1.24 masks with one shared empty directory, and "
            "gVisor's recursive bind drops the read-only flag of submounts"
        ),
        fixable=True,
    ),
    "B15": BlockerInfo(
        title="session keyrings are never freed, so after about 200 containers no container starts",
        error_text=(
            "OCI runtime create failed: join keyctl `c4a129b1c990c218b77b63d988b2bd6bf2efc29ec29a93385980eeabb8fff5d3`: "
            "Disk quota exceeded"
        ),
        error_pattern=r"join keyctl .*: Disk quota exceeded|unable to join session keyring: .*disk quota exceeded",
        remedy=(
            "let the runtime keep the caller's session keyring (containerd's runc option NoNewKeyring = true, "
            "which passes --no-new-keyring to runc and crun); a node whose quota is spent needs its sandbox restarted"
        ),
        fixable=True,
    ),
    "B16": BlockerInfo(
        title="kernel tunables the kubelet sets are missing or cannot be written",
        error_text=(
            '"Failed to start ContainerManager" err="[write /proc/sys/vm/overcommit_memory: input/output error, '
            "open /proc/sys/vm/panic_on_oom: no such file or directory, open /proc/sys/kernel/panic: no such file "
            "or directory, open /proc/sys/kernel/panic_on_oops: no such file or directory, open "
            "/proc/sys/kernel/keys/root_maxkeys: no such file or directory, open /proc/sys/kernel/keys/root_maxbytes: "
            'no such file or directory]"'
        ),
        error_pattern=r"Failed to start ContainerManager.*(/proc/sys/(vm|kernel)/\S+: (no such file|input/output error))",
        remedy=(
            "run the kubelet in a mount namespace of its own in which /proc/sys/vm and /proc/sys/kernel are "
            "views (tmpfs copies) holding the values it wants; no process outside it sees them (k3s-gvisor-node "
            "--kernel-tunables)"
        ),
        fixable=True,
    ),
    "B17": BlockerInfo(
        title="a mount with a propagation peer in another mount namespace cannot be unmounted",
        error_text=(
            "failed to create containerd container: failed to unmount /var/lib/containerd/tmpmounts/containerd-mount1: "
            "failed to unmount target /var/lib/containerd/tmpmounts/containerd-mount1: device or resource busy"
        ),
        error_pattern=r"failed to unmount .*: device or resource busy|UnmountVolume.TearDown failed.*exit status 32",
        remedy=(
            "start containerd and the kubelet together in one private mount namespace, /var/lib/kubelet rshared "
            "inside it and / left private (k3s's own shape: its containerd is its child) (k3s-gvisor-node "
            "--private-mount-namespace)"
        ),
        fixable=True,
    ),
    "B18": BlockerInfo(
        title="no freezer directory in the cgroup v1 hierarchy, which the runtime's exec stats",
        error_text="OCI runtime exec failed: error when using statfs on '/sys/fs/cgroup/freezer': No such file or directory",
        remedy="make an empty /sys/fs/cgroup/freezer before the engine starts (k3s-gvisor-node --cgroup-freezer)",
        fixable=True,
    ),
    "B19": BlockerInfo(
        title="no default route, so the kubelet cannot choose the node's IP",
        error_text='can\'t get ip address of node NAME. error: no default routes found in "/proc/net/route"',
        error_pattern=r"no default routes found in \"/proc/net/route\"",
        remedy=(
            "give the pod bridge its gateway address before the kubelet starts and pass it as the node IP; the "
            "apiserver reaches kubelets by InternalIP (k3s-gvisor-node --node-bridge)"
        ),
        fixable=True,
    ),
    "B20": BlockerInfo(
        title="cgroup v1 only, which the kubelet refuses by default since v1.35",
        error_text="kubelet is configured to not run on a host using cgroup v1",
        remedy="failCgroupV1: false in the kubelet's configuration (cgroup v1 is in maintenance upstream)",
        fixable=True,
    ),
    "B21": BlockerInfo(
        title="cAdvisor keeps no stats of the root container, so the kubelet finds no root filesystem data",
        error_text='"Failed to start ContainerManager" err="failed to get rootfs info: unable to find data in memory cache"',
        error_pattern=r"failed to get rootfs info: unable to find data in memory cache",
        remedy=(
            "localStorageCapacityIsolation: false in the kubelet's configuration (seen with the root container's "
            "stats failing: open /sys/fs/cgroup/cpuacct/cpuacct.usage_percpu: no such file or directory)"
        ),
        fixable=True,
    ),
    "B22": BlockerInfo(
        title="the runtime cannot bring up the loopback of a network namespace it makes itself",
        error_text=NEW_NETNS_LOOPBACK_ERROR,
        # crun 1.21 (trixie) writes it ioctl(SIOCSIFFLAGS).
        error_pattern=r"ioctl[ (]SIOCSIFFLAGS\)?: Inappropriate ioctl for device",
        remedy=(
            "refuse specs that ask for a new network namespace (runc-gvisor refuse_new_network_namespace), naming "
            "this blocker: pods are not affected (they join the namespace CNI made); a bare bundle (`runc spec`, "
            "`ctr run`) must join an existing network namespace or the host's. crun brings loopback up with "
            "ioctl(SIOCSIFFLAGS), which gVisor's netstack does not serve"
        ),
        fixable=True,
    ),
}


def _runc_phrase(runc: dict) -> str:
    return f"runc {runc.get('version')}" if runc.get("found") else "runc not found"


def _assumed_runc_note(runc: dict) -> str:
    return "" if runc.get("found") else "; runc not found: k3s bundles a recent runc, assumed affected"


def _runc_is_affected(runc: dict, version_test) -> bool:
    """A missing runc, or one with an unparsable version, counts as affected: k3s bundles a recent one."""
    if not runc.get("found") or not runc.get("version_tuple"):
        return True
    return version_test(runc["version_tuple"])


def _b1_cgroup_namespace(facts):
    if facts.get("cgroup_namespace") is not False:
        return None
    return "/proc/self/ns/cgroup is absent: runc's validator refuses any spec with a cgroup namespace"


def _b2_cap_last_cap(facts):
    cap, runc = facts.get("cap_last_cap") or {}, facts.get("runc") or {}
    if cap.get("file_present") is not False or not _runc_is_affected(runc, runc_reads_cap_last_cap):
        return None
    return (
        f"/proc/sys/kernel/cap_last_cap is absent (PR_CAPBSET_READ probe: last capability {cap.get('probed')}); "
        f"{_runc_phrase(runc)} reads it in runc init{_assumed_runc_note(runc)}"
    )


def _b3_procfs_root_inode(facts):
    inode, runc = facts.get("procfs_root_inode"), facts.get("runc") or {}
    if inode in (None, 1) or not _runc_is_affected(runc, runc_has_procfs_hardening):
        return None
    return f"procfs root inode is {inode}, {_runc_phrase(runc)} verifies st_ino == 1{_assumed_runc_note(runc)}"


def _b4_child_subreaper(facts):
    if facts.get("child_subreaper") is not False:
        return None
    return f"prctl(PR_SET_CHILD_SUBREAPER, 1) failed: {facts.get('child_subreaper_error')}"


def _b5_unprivileged_ports(facts):
    kernel, containerd = facts.get("kernel_version_tuple"), facts.get("containerd") or {}
    if not kernel or tuple(kernel) >= (4, 11, 0):
        return None
    release = facts.get("kernel_release")
    if not containerd.get("found") or not containerd.get("version_tuple"):
        return f"kernel reports {release} (< 4.11); containerd not found: k3s bundles containerd 2.x, assumed"
    if containerd["version_tuple"][0] < 2:
        return None
    return f"kernel reports {release} (< 4.11) and containerd is {containerd.get('version')}"


def _b6_session_keyring(facts):
    keyring = facts.get("keyring") or {}
    if keyring.get("session_keyring_join") is not False:
        return None
    return f"keyctl(KEYCTL_JOIN_SESSION_KEYRING) failed: {keyring.get('error')}"


def _b15_session_keyrings_kept(facts):
    keyring = facts.get("keyring") or {}
    if keyring.get("kept_after_exit"):
        return (f"a session keyring joined by a process that has exited is still there after "
                f"{KEYRING_FREE_SECONDS:.0f} s (keyctl DESCRIBE: {keyring.get('kept_answer')}): every container's "
                f"keyring is kept, and the quota of 200 runs out")
    if QUOTA_SPENT in (keyring.get("error") or ""):
        return f"keyctl(KEYCTL_JOIN_SESSION_KEYRING) failed: {keyring['error']}: the keyring quota is spent already"
    return None


def _failed(facts: dict, name: str) -> str | None:
    """The error of a {works, error} fact that was tested and failed, else None."""
    result = facts.get(name) or {}
    return (result.get("error") or "failed") if result.get("works") is False else None


def _b7_overlayfs(facts):
    error = _failed(facts, "overlayfs")
    if error is None:
        return None
    return f"overlay mount on the scratch directory's filesystem failed: {error}"


def _b8_masking_tmpfs(facts):
    runc, error = facts.get("runc") or {}, _failed(facts, "tmpfs_size_options")
    if error is None or not _runc_is_affected(runc, runc_has_procfs_hardening):
        return None
    return (
        f"read-only tmpfs with nr_blocks=1,nr_inodes=1 failed: {error}; "
        f"{_runc_phrase(runc)} masks directories that way{_assumed_runc_note(runc)}"
    )


def _b9_pid_namespace_join(facts):
    error = _failed(facts, "pid_namespace_join")
    if error is None:
        return None
    return f"setns(CLONE_NEWPID) into another process's PID namespace and forking there failed: {error}"


def _b10_route_delete(facts):
    route_del = (facts.get("netlink") or {}).get("route_del") or {}
    if route_del.get("works") is not False:
        return None
    return f"netlink route deletion failed in a scratch network namespace: {route_del.get('error')}"


def _b11_fifo_eintr(facts):
    """gVisor's own bug (google/gvisor#14849, in every release Debian ships), with
    what the runtime check saw of it: it strikes runtimes whose init takes
    signals while it waits (runc's Go runtime sends itself SIGURG)."""
    if not facts.get("is_gvisor"):
        return None
    died = [f"{name}: {shapes['signal_before_start']['error']}"
            for name, shapes in (facts.get("runtime_check") or {}).items()
            if BLOCKER_CATALOGUE["B11"].matches((shapes.get("signal_before_start") or {}).get("error") or "")]
    seen = f"; the runtime check saw it: {'; '.join(died)}" if died else ""
    return f"gVisor fails a blocking open of a FIFO with EINTR when a signal arrives (google/gvisor#14849){seen}"


def _when_false(key: str, evidence: str):
    """A rule raised where the probe read KEY and found it false (never where it was not read)."""
    def rule(facts):
        return evidence if facts.get(key) is False else None
    return rule


_b12_dev_kmsg = _when_false("dev_kmsg", "/dev/kmsg does not open for reading")


_b13_conntrack_sysctls = _when_false("netfilter_conntrack_sysctls", "/proc/sys/net/netfilter is absent")


def shows_b14(shapes: dict) -> bool:
    """A runtime whose check container wrote into a mask inside a read-only path."""
    return (shapes.get("masked_under_readonly") or {}).get("error") == MASK_WRITE_SEEN


def _b14_masked_under_readonly(facts):
    writable = [name for name, shapes in (facts.get("runtime_check") or {}).items() if shows_b14(shapes)]
    if not writable:
        return None
    return (f"the runtime check's container wrote into /proc/sys/fs, masked inside the read-only /proc/sys, "
            f"with {', '.join(writable)}")


def _b22_new_network_namespace(facts):
    failing = [f"{name}: {shapes['new_network_namespace']['error']}"
               for name, shapes in (facts.get("runtime_check") or {}).items()
               if shows_b22(shapes)]
    if not failing:
        return None
    return "the runtime check's container with a network namespace of its own failed, with " + "; ".join(failing)


def shows_b22(shapes: dict) -> bool:
    """A runtime that runs the CRI container but not the same with a new network namespace of its own."""
    return ((shapes.get("cri") or {}).get("works") is True
            and (shapes.get("new_network_namespace") or {}).get("works") is False)


def _b16_kubelet_tunables(facts):
    failing = [f"{name}: {found['error']}" for name, found in (facts.get("kubelet_tunables") or {}).items()
               if found.get("error")]
    return "; ".join(failing) if failing else None


def _b17_unmount_with_peer(facts):
    error = _failed(facts, "mount_peer_unmount")
    if error is None:
        return None
    return f"a shared tmpfs whose peer lives in a second mount namespace did not unmount: {error}"


_b18_cgroup_freezer = _when_false("cgroup_freezer", "cgroup v1, and /sys/fs/cgroup/freezer does not exist")


_b19_default_route = _when_false("default_route", "/proc/net/route has no default route")


def _b20_cgroup_v1(facts):
    cgroup = facts.get("cgroup") or {}
    if cgroup.get("version") != 1:
        return None
    return f"cgroup v1 controllers only ({', '.join(cgroup.get('controllers') or [])}), no cgroup2 hierarchy in charge"


def _b21_root_container_stats(facts):
    if facts.get("cpuacct_usage_percpu") is not False:
        return None
    return "cgroup v1, and /sys/fs/cgroup/cpuacct/cpuacct.usage_percpu does not exist (cAdvisor's root container stats)"


# Each rule returns an evidence string when its blocker applies, else None.
# A fact that was not tested (None) never raises a blocker.
BLOCKER_RULES = (
    ("B1", _b1_cgroup_namespace),
    ("B2", _b2_cap_last_cap),
    ("B3", _b3_procfs_root_inode),
    ("B4", _b4_child_subreaper),
    ("B5", _b5_unprivileged_ports),
    ("B6", _b6_session_keyring),
    ("B7", _b7_overlayfs),
    ("B8", _b8_masking_tmpfs),
    ("B9", _b9_pid_namespace_join),
    ("B10", _b10_route_delete),
    ("B11", _b11_fifo_eintr),
    ("B12", _b12_dev_kmsg),
    ("B13", _b13_conntrack_sysctls),
    ("B14", _b14_masked_under_readonly),
    ("B15", _b15_session_keyrings_kept),
    ("B16", _b16_kubelet_tunables),
    ("B17", _b17_unmount_with_peer),
    ("B18", _b18_cgroup_freezer),
    ("B19", _b19_default_route),
    ("B20", _b20_cgroup_v1),
    ("B21", _b21_root_container_stats),
    ("B22", _b22_new_network_namespace),
)


def evaluate_blockers(facts: dict) -> list[dict]:
    """Blockers that apply to a host, from its facts alone (pure)."""
    blockers = []
    for blocker_id, rule in BLOCKER_RULES:
        evidence = rule(facts)
        if evidence is None:
            continue
        info = BLOCKER_CATALOGUE[blocker_id]
        blockers.append(
            {
                "id": blocker_id,
                "title": info.title,
                "evidence": evidence,
                "remedy": info.remedy,
                "fixable": info.fixable,
                "fatal": info.fatal,
                "error_text": info.error_text,
            }
        )
    return blockers
