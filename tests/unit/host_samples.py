# SPDX-License-Identifier: Apache-2.0
"""Probe facts as real hosts gave them, shared by the probe's and the
decisions' unit tests."""

from __future__ import annotations

import copy

from ansible_collections.k3s_gvisor.node.plugins.module_utils import gvisor_blockers as gb

# Probe results as observed (facts dicts minus evidence and blockers): this
# machine, a gVisor 20240729 docker node, and gVisor 20221219 (`runsc do`,
# with bookworm's binaries).
OBSERVED_PLAIN = {
    "is_gvisor": False,
    "kernel_release": "6.18.44-fc-v657",
    "kernel_version_tuple": [6, 18, 44],
    "init_system": {"name": "process_api", "systemd": False},
    "cgroup": {
        "version": 1,
        "controllers": ["blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids"],
    },
    "cgroup_namespace": True,
    "cap_last_cap": {"file_present": True, "file_value": 40, "probed": 40},
    "procfs_root_inode": 1,
    "procfs_is_procfs": True,
    "dev_kmsg": True,
    "netfilter_conntrack_sysctls": True,
    "kubelet_tunables": {name: {"value": str(value), "error": None} for name, value in {
        "vm/overcommit_memory": 0, "vm/panic_on_oom": 0, "kernel/panic": 1, "kernel/panic_on_oops": 0,
        "kernel/keys/root_maxkeys": 1000000, "kernel/keys/root_maxbytes": 25000000}.items()},
    "mount_peer_unmount": {"works": True, "error": None},
    "cgroup_freezer": True,
    "cpuacct_usage_percpu": True,
    "default_route": True,
    "child_subreaper": True,
    "child_subreaper_error": None,
    "keyring": {"session_keyring_join": True, "error": None, "kept_after_exit": False,
                "kept_answer": "ENOKEY: Required key not available"},
    "pid_namespace_join": {"works": True, "error": None},
    "overlayfs": {"works": True, "error": None},
    "tmpfs_size_options": {"works": True, "error": None},
    "containerd": {"found": True, "path": "/usr/bin/containerd", "version": "1.6.20~ds1", "version_tuple": [1, 6, 20]},
    "runc": {"found": True, "path": "/usr/bin/runc", "version": "1.1.5+ds1", "version_tuple": [1, 1, 5]},
}
OBSERVED_GVISOR_20240729 = {
    "is_gvisor": True,
    "kernel_release": "4.4.0",
    "kernel_version_tuple": [4, 4, 0],
    "init_system": {"name": "sleep", "systemd": False},
    "cgroup": {"version": 1, "controllers": ["cpu", "cpuacct", "cpuset", "devices", "job", "memory", "pids"]},
    "cgroup_namespace": False,
    "cap_last_cap": {"file_present": True, "file_value": 40, "probed": 40},
    "procfs_root_inode": 86,
    "procfs_is_procfs": True,
    "dev_kmsg": False,
    "netfilter_conntrack_sysctls": False,
    # Seen on a gVisor 20240729 sid node (scripts/demo's).
    "kubelet_tunables": {
        "vm/overcommit_memory": {"value": "0", "error": "write /proc/sys/vm/overcommit_memory: input/output error"},
        "vm/panic_on_oom": {"value": None, "error": "open /proc/sys/vm/panic_on_oom: no such file or directory"},
        "kernel/panic": {"value": None, "error": "open /proc/sys/kernel/panic: no such file or directory"},
        "kernel/panic_on_oops": {"value": None, "error": "open /proc/sys/kernel/panic_on_oops: no such file or directory"},
        "kernel/keys/root_maxkeys": {"value": None,
                                     "error": "open /proc/sys/kernel/keys/root_maxkeys: no such file or directory"},
        "kernel/keys/root_maxbytes": {"value": None,
                                      "error": "open /proc/sys/kernel/keys/root_maxbytes: no such file or directory"},
    },
    "mount_peer_unmount": {"works": False,
                           "error": "umount /var/tmp/gvisor-probe-peer-dujgfygn/propagated: EBUSY: Device or resource busy"},
    "cgroup_freezer": False,
    "cpuacct_usage_percpu": False,
    "default_route": False,
    "child_subreaper": True,
    "child_subreaper_error": None,
    # Seen: gVisor frees no session keyring; DESCRIBE of an exited child's says EACCES, not ENOKEY.
    "keyring": {"session_keyring_join": True, "error": None, "kept_after_exit": True,
                "kept_answer": "EACCES: Permission denied"},
    "pid_namespace_join": {"works": False, "error": "setns(CLONE_NEWPID): EINVAL: Invalid argument"},
    "overlayfs": {"works": False, "error": "mount -t overlay: EINVAL: Invalid argument"},
    "tmpfs_size_options": {
        "works": False,
        "error": "mount -t tmpfs -o ro,nr_blocks=1,nr_inodes=1: EINVAL: Invalid argument",
    },
    # a sid node (docker --runtime=runsc --privileged, Python 3.14)
    "containerd": {
        "found": True,
        "path": "/usr/bin/containerd",
        "version": "2.1.9+unknown",
        "version_tuple": [2, 1, 9],
    },
    "runc": {"found": True, "path": "/usr/bin/runc", "version": "1.3.6+ds1", "version_tuple": [1, 3, 6]},
    "crun": {"found": True, "path": "/usr/bin/crun", "version": "1.28", "version_tuple": [1, 28, 0]},
    "crun_from_apt": None,
    "netlink": {
        "available": True, "reason": None, "ip_path": "/usr/sbin/ip",
        "veth": {"works": True, "error": None}, "bridge": {"works": True, "error": None},
        "address": {"works": True, "error": None}, "route_add": {"works": True, "error": None},
        "route_del": {"works": False,
                      "error": "ip route del 10.255.1.0/24 dev kgp-br: RTNETLINK answers: Operation not supported"},
    },
    # The probe's runtime check on that node (2026-12-01).
    "runtime_check": {
        "crun": {
            "cri": {"works": True, "error": None},
            "cgroup_namespace": {"works": True, "error": None},
            "pid_namespace_join": {"works": False, "error": "create: setns `/proc/4038/ns/pid`: Invalid argument"},
            "signal_before_start": {"works": True, "error": None},
            "masked_under_readonly": {"works": False, "error": "a masked directory inside a read-only path was writable"},
            # Seen 2026-12-07 on the same image.
            "new_network_namespace": {"works": False, "error": "create: ioctl SIOCSIFFLAGS: Inappropriate ioctl for device"},
        },
        "runc": {
            "cri": {"works": False, "error": "create: runc create failed: unsafe procfs detected: incorrect procfs root inode number 86"},
            "cgroup_namespace": {"works": False, "error": "create: runc create failed: cgroup namespaces aren't enabled in the kernel"},
            "pid_namespace_join": {"works": False, "error": "create: runc create failed: unsafe procfs detected: incorrect procfs root inode number 86"},
            "signal_before_start": {"works": False, "error": "create: runc create failed: unsafe procfs detected: incorrect procfs root inode number 86"},
            "masked_under_readonly": {"works": False, "error": "create: runc create failed: unsafe procfs detected: incorrect procfs root inode number 86"},
            "new_network_namespace": {"works": False, "error": "create: runc create failed: unsafe procfs detected: incorrect procfs root inode number 86"},
        },
    },
}
OBSERVED_GVISOR_20221219 = {
    "is_gvisor": True,
    "kernel_release": "4.4.0",
    "kernel_version_tuple": [4, 4, 0],
    "init_system": {"name": "sleep", "systemd": False},
    "cgroup": {"version": None, "controllers": []},
    "cgroup_namespace": False,
    "cap_last_cap": {"file_present": False, "file_value": None, "probed": 37},
    "procfs_root_inode": 75,
    "procfs_is_procfs": True,
    "dev_kmsg": False,
    "netfilter_conntrack_sysctls": False,
    "child_subreaper": False,
    "child_subreaper_error": "EINVAL: Invalid argument",
    "keyring": {"session_keyring_join": False, "error": "EACCES: Permission denied"},
    "pid_namespace_join": {"works": False, "error": "setns(CLONE_NEWPID): ENOTSUP: Operation not supported"},
    "overlayfs": {"works": True, "error": None},
    "tmpfs_size_options": {
        "works": False,
        "error": "mount -t tmpfs -o ro,nr_blocks=1,nr_inodes=1: EINVAL: Invalid argument",
    },
    # a bookworm node
    "containerd": {"found": True, "path": "/usr/bin/containerd", "version": "1.6.20~ds1", "version_tuple": [1, 6, 20]},
    "runc": {"found": True, "path": "/usr/sbin/runc", "version": "1.1.5+ds1", "version_tuple": [1, 1, 5]},
}
NOT_FOUND = {"found": False, "path": None, "version": None, "version_tuple": None}


def facts_with(base: dict, **changes) -> dict:
    facts = copy.deepcopy(base)
    facts.update(changes)
    return facts


def blocker_ids(facts: dict) -> list[str]:
    return [blocker["id"] for blocker in gb.evaluate_blockers(facts)]


def blocker(facts: dict, blocker_id: str) -> dict:
    return next(b for b in gb.evaluate_blockers(facts) if b["id"] == blocker_id)
