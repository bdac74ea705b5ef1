# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0
"""What a host offers the kubelet (blockers B16 to B21, docs/PROBE.md).

Readers have no side effects; the one tester (a mount's unmount while a peer
of it lives in another mount namespace, B17) runs in a forked child inside a
private mount namespace of its own, so nothing it mounts reaches the host.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile

from ansible_collections.k3s_gvisor.node.plugins.module_utils.forked_child import outcome_from_child, run_forked
from ansible_collections.k3s_gvisor.node.plugins.module_utils.gvisor_facts import enter_private_mount_namespace
from ansible_collections.k3s_gvisor.node.plugins.module_utils.host_text import outcome
from ansible_collections.k3s_gvisor.node.plugins.module_utils.linux_calls import CLONE_NEWNS, MNT_DETACH, check_call, errno_text, fs_path, libc, read_text

# What the kubelet's setupKernelTunables wants under /proc/sys (pkg/kubelet/cm,
# v1.35): it reads each one and writes it where the value differs; any error
# stops the kubelet ("Failed to start ContainerManager").
KUBELET_TUNABLES = {
    "vm/overcommit_memory": 1,
    "vm/panic_on_oom": 0,
    "kernel/panic": 10,
    "kernel/panic_on_oops": 1,
    "kernel/keys/root_maxkeys": 1000000,
    "kernel/keys/root_maxbytes": 25000000,
}
PROC_SYS = "/proc/sys"
# Where k3s-gvisor-node notes what it changed on the host (for reset): a
# fact it changed is reported as the host had it, or the record would change
# between the first converge and the next.
NODE_MARKS = "/run/k3s-gvisor/node"
MS_SHARED = 1 << 20


def read_tunable(path: str, wanted: int) -> dict:
    """{value, error}: error says why the kubelet could not have it (missing, or
    unwritable where it would write). Unwritable is tried by writing back the
    value read, which changes nothing."""
    text = read_text(path)
    if text is None:
        return {"value": None, "error": f"open {path}: no such file or directory"}
    value = text.strip()
    if value == str(wanted):
        return {"value": value, "error": None}
    try:
        with open(path, "w", encoding="ascii") as stream:
            stream.write(value)
    except OSError as exc:
        return {"value": value, "error": f"write {path}: {os.strerror(exc.errno or 0).lower()}"}
    return {"value": value, "error": None}


def read_kubelet_tunables(proc_sys: str = PROC_SYS) -> dict:
    return {name: read_tunable(os.path.join(proc_sys, name), wanted) for name, wanted in KUBELET_TUNABLES.items()}


def has_default_route(route_table: str | None) -> bool | None:
    """Whether /proc/net/route's text holds an IPv4 default route (destination 0)."""
    if route_table is None:
        return None
    rows = [line.split() for line in route_table.splitlines()[1:]]
    return any(len(row) > 2 and row[1] == "00000000" for row in rows)


def cgroup_freezer_present(cgroup_version: int | None, root: str = "/sys/fs/cgroup",
                           marks: str = NODE_MARKS) -> bool | None:
    """Whether a cgroup v1 host has the freezer directory runtimes statfs on
    exec (B18); not when k3s-gvisor-node made it."""
    if cgroup_version != 1:
        return None
    if os.path.exists(os.path.join(marks, "made-cgroup-freezer")):
        return False
    return os.path.isdir(os.path.join(root, "freezer"))


def cpuacct_per_cpu_usage(cgroup_version: int | None, root: str = "/sys/fs/cgroup") -> bool | None:
    """Whether a cgroup v1 host's cpuacct hierarchy has cpuacct.usage_percpu,
    without which cAdvisor keeps no stats of the root container (B21)."""
    if cgroup_version != 1:
        return None
    return os.path.exists(os.path.join(root, "cpuacct", "cpuacct.usage_percpu"))


def _hold_peer_namespace(ready_w: int, release_r: int) -> None:
    """Grandchild: a second mount namespace (holding a peer of every shared
    mount), kept alive until the parent closes release_r's other end."""
    try:
        check_call(libc().unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        os.write(ready_w, b"1")
        os.read(release_r, 1)
    finally:
        os._exit(0)


def unmount_with_peer(root: str) -> dict:
    """Child body: a mount propagated into a second mount namespace, then
    unmounted where it was made: EBUSY on gVisor 20240729. That is containerd's
    and the kubelet's case when they live in two namespaces (a mount under a
    shared parent reaches the other one)."""
    enter_private_mount_namespace()
    check_call(libc().mount(b"tmpfs", fs_path(root), b"tmpfs", 0, None), "mount tmpfs")
    check_call(libc().mount(None, fs_path(root), None, MS_SHARED, None), "mount --make-shared")
    ready_r, ready_w = os.pipe()
    release_r, release_w = os.pipe()
    holder = os.fork()
    if holder == 0:
        os.close(ready_r)
        os.close(release_w)
        _hold_peer_namespace(ready_w, release_r)
    os.close(ready_w)
    os.close(release_r)
    target = os.path.join(root, "propagated")
    try:
        if os.read(ready_r, 1) != b"1":
            return outcome(None, "the peer namespace did not start")
        os.mkdir(target)
        check_call(libc().mount(b"tmpfs", fs_path(target), b"tmpfs", 0, None), "mount tmpfs under the shared one")
        if libc().umount2(fs_path(target), 0) != 0:
            number = ctypes.get_errno()
            return outcome(False, f"umount {target}: {errno_text(number)}") if number == errno.EBUSY \
                else outcome(None, f"umount: {errno_text(number)}")
        return outcome(True)
    finally:
        os.close(release_w)
        os.waitpid(holder, 0)
        libc().umount2(fs_path(target), MNT_DETACH)
        libc().umount2(fs_path(root), MNT_DETACH)


def try_unmount_with_peer(scratch_dir: str, timeout: float) -> dict:
    try:
        root = tempfile.mkdtemp(prefix="gvisor-probe-peer-", dir=scratch_dir)
    except OSError as exc:
        return outcome(None, f"scratch dir: {exc}")
    try:
        return outcome_from_child(run_forked(lambda: unmount_with_peer(root), timeout))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def kubelet_facts(cgroup_version: int | None, scratch_dir: str, timeout: float, skip=frozenset()) -> dict:
    """The facts of B16 to B21."""
    peer = outcome(None, "skipped (skip option)") if "mount_peer_unmount" in skip \
        else try_unmount_with_peer(scratch_dir, timeout)
    return {
        "kubelet_tunables": read_kubelet_tunables(),
        "mount_peer_unmount": peer,
        "cgroup_freezer": cgroup_freezer_present(cgroup_version),
        "cpuacct_usage_percpu": cpuacct_per_cpu_usage(cgroup_version),
        "default_route": has_default_route(read_text("/proc/net/route")),
    }
