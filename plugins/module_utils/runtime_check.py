# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0
"""The probe's runtime check: the host's own OCI runtimes (crun, runc) run
small bundles shaped like the containers containerd's CRI makes, and the
probe records which shapes each runtime runs.

Pure parts (spec shapes, outcome parsing) are separate from the parts that
run the runtime. Each shape runs in a forked child that makes itself a child
subreaper, as containerd's shim does, so that the container process is
re-parented to it and its exit status is read with waitpid. The bundle, the
runtime's state directory and the container's cgroup are removed again; the
host keeps nothing. Only the standard library is used: this runs on targets.
"""

from __future__ import annotations

import copy
import ctypes
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

from ansible_collections.k3s_gvisor.node.plugins.module_utils.forked_child import run_forked
from ansible_collections.k3s_gvisor.node.plugins.module_utils.linux_calls import CLONE_NEWNET, CLONE_NEWPID, PR_SET_CHILD_SUBREAPER, libc

# What each shape asks of a runtime, and why the decision needs it.
SHAPES = {
    # A container as CRI makes it for kubelet's default pod: its own PID
    # namespace, the pod's network namespace joined by path, CRI's masked
    # and read-only paths, a cgroup with limits.
    "cri": "a CRI container: own PID namespace, the pod's network namespace joined, CRI's masked and read-only paths, a cgroup with limits",
    # The same with a cgroup namespace, which CRI adds on cgroup v2 hosts and
    # runc refuses where the kernel has none (B1).
    "cgroup_namespace": "the CRI container with a cgroup namespace",
    # The same joining an existing PID namespace (CRI pid: POD, B9).
    "pid_namespace_join": "the CRI container joining an existing PID namespace (shareProcessNamespace)",
    # The container's init receives signals while it waits between create
    # and start, as runc init does from Go's own runtime (SIGURG). gVisor
    # fails the blocking open of the exec FIFO with EINTR then (B11).
    "signal_before_start": "the CRI container whose init gets SIGURG ten times between create and start",
    # A masked directory inside a read-only path (/proc/sys/fs under
    # /proc/sys) must stay unwritable. crun >= 1.24 masks with one shared
    # empty directory, and gVisor's recursive bind drops the read-only flag
    # of submounts: there the mask is writable, and shared by containers (B14).
    "masked_under_readonly": "the CRI container with a masked directory inside a read-only path, which it tries to write",
    # A bare bundle as `runc spec` and `ctr run` make it: its own new network
    # namespace, whose loopback the runtime brings up itself. crun does that
    # with ioctl(SIOCSIFFLAGS), which gVisor's netstack does not serve (B22);
    # pods never ask it (they join the namespace CNI made).
    "new_network_namespace": "the CRI container with a new network namespace of its own, whose loopback the runtime brings up",
}
MASK_WRITE_SEEN = "a masked directory inside a read-only path was writable"
SHAPE_NAMES = tuple(SHAPES)
SIGNALS_BEFORE_START = 10


# containerd's CRI masked and read-only paths (internal/cri/opts/spec_linux_opts.go).
CRI_MASKED_PATHS = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                    "/sys/firmware", "/sys/devices/virtual/powercap"]
CRI_READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
# containerd's default capability set for CRI containers (oci.defaultUnixCaps).
CRI_CAPABILITIES = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
# The host directories the rootfs borrows (read-only binds, or the same symlinks on merged-/usr hosts).
HOST_TREES = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
# The runtime-spec version each containerd generation writes into its specs;
# old runtimes refuse versions they do not know (crun 1.8: "unknown version specified").
OCI_VERSION_BY_CONTAINERD_MAJOR = {1: "1.1.0", 2: "1.2.1"}

ERROR_TEXT_LIMIT = 400


# --------------------------------------------------------------------------
# Pure: the specs
# --------------------------------------------------------------------------


def oci_version(containerd_version_tuple: list[int] | None) -> str:
    """The spec version the host's containerd would write (2.x when unknown: what k3s bundles)."""
    major = (containerd_version_tuple or [2])[0]
    return OCI_VERSION_BY_CONTAINERD_MAJOR.get(major, OCI_VERSION_BY_CONTAINERD_MAJOR[2])


def host_tree_layout(entries: dict[str, str | None]) -> tuple[dict[str, str], list[str]]:
    """(symlinks, binds) for the rootfs from the host's top-level trees.

    entries maps a tree name to its symlink target, or None for a real
    directory; absent trees are left out by the caller.
    """
    symlinks = {name: target for name, target in entries.items() if target is not None}
    binds = [name for name, target in entries.items() if target is None]
    return symlinks, binds


def cri_spec(shape: str, rootfs: str, binds: list[str], netns: str, cgroups_path: str,
             version: str, pid_namespace: str | None = None) -> dict:
    """config.json of one shape (see SHAPES)."""
    network = {"type": "network"} if shape == "new_network_namespace" else {"type": "network", "path": netns}
    namespaces = [{"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, network]
    masked = list(CRI_MASKED_PATHS)
    if shape == "pid_namespace_join":
        namespaces.append({"type": "pid", "path": pid_namespace})
        # Not PID 1 in a joined namespace: only check that it ran.
        script = "exit 0"
    else:
        namespaces.append({"type": "pid"})
        script = 'test "$$" = 1'
    if shape == "masked_under_readonly":
        masked.append("/proc/sys/fs")
        # Exit 3 when the write went through: the mask is not read-only.
        script += "; if (echo x > /proc/sys/fs/k3s-gvisor-probe) 2>/dev/null; then exit 3; fi"
    if shape == "cgroup_namespace":
        namespaces.append({"type": "cgroup"})
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    ] + [{"destination": f"/{name}", "type": "bind", "source": f"/{name}", "options": ["rbind", "ro"]}
         for name in binds]
    return {
        "ociVersion": version,
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sh", "-c", script],
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {key: list(CRI_CAPABILITIES) for key in ("bounding", "effective", "permitted")},
            "noNewPrivileges": True,
        },
        "root": {"path": rootfs, "readonly": True},
        "hostname": "k3s-gvisor-probe",
        "mounts": mounts,
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": {"devices": [{"allow": False, "access": "rwm"}], "cpu": {"shares": 2},
                          "pids": {"limit": 64}},
            "namespaces": namespaces,
            "maskedPaths": masked,
            "readonlyPaths": list(CRI_READONLY_PATHS),
        },
    }


def last_error_line(stderr: str) -> str:
    """The runtime's own message from its stderr (runc logs msg="..." lines; crun plain text)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "failed without a message"
    line = lines[-1]
    marker = 'msg="'
    if marker in line:
        line = line.split(marker, 1)[1].rsplit('"', 1)[0].replace('\\"', '"')
    return line[:ERROR_TEXT_LIMIT]


def passed(shapes: dict, names=SHAPE_NAMES) -> bool:
    """True when every named shape that was tried ran."""
    return all((shapes.get(name) or {}).get("works") is True for name in names)


# --------------------------------------------------------------------------
# System: the bundle, the runtime, the forked child
# --------------------------------------------------------------------------


def read_host_trees() -> dict[str, str | None]:
    entries = {}
    for name in HOST_TREES:
        path = f"/{name}"
        if os.path.islink(path):
            entries[name] = os.readlink(path)
        elif os.path.isdir(path):
            entries[name] = None
    return entries


def make_rootfs(root: str) -> list[str]:
    """An empty rootfs that borrows the host's trees; returns the trees to bind."""
    symlinks, binds = host_tree_layout(read_host_trees())
    for name in ("proc", "dev", "sys", "tmp", *binds):
        os.makedirs(os.path.join(root, name), exist_ok=True)
    for name, target in symlinks.items():
        os.symlink(target, os.path.join(root, name))
    return binds


class Namespace:
    """A namespace (net or pid) held open by a forked child until close()."""

    def __init__(self, flag: int):
        self._hold_r, self._hold_w = os.pipe()
        report_r, report_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            self._child(flag, report_w)
        os.close(report_w)
        os.close(self._hold_r)
        answer = os.read(report_r, 64).decode()
        os.close(report_r)
        if not answer.isdigit():
            self.close()
            raise OSError(f"could not make a namespace to join: {answer or 'holder died'}")
        # For a PID namespace the holder's child is its PID 1; for a network
        # namespace the holder itself is in it.
        self.path = f"/proc/{answer}/ns/{'pid' if flag == CLONE_NEWPID else 'net'}"

    def _child(self, flag: int, report_w: int) -> None:
        try:
            # Only its own pipes: a holder that kept another holder's write
            # end open would keep that one alive after its close().
            close_other_fds(keep=(self._hold_r, report_w))
            if libc().unshare(flag) != 0:
                os.write(report_w, os.strerror(ctypes.get_errno()).encode())
                os._exit(1)
            member = os.getpid()
            if flag == CLONE_NEWPID:
                member = os.fork()
                if member == 0:
                    self._pid_one()
            os.write(report_w, str(member).encode())
            os.read(self._hold_r, 1)
            if member != os.getpid():
                os.waitpid(member, 0)
        finally:
            os._exit(0)

    def _pid_one(self) -> None:
        """PID 1 of the new PID namespace: held until close(), then it reaps
        what a container that joined it left (orphans there are its children),
        or the namespace could not end, and exits."""
        os.read(self._hold_r, 1)
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
        os._exit(0)

    def close(self) -> None:
        os.close(self._hold_w)
        os.waitpid(self.pid, 0)


def close_other_fds(keep) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


class ShapeRun:
    """One shape run by one runtime in a scratch bundle; run() in a forked child."""

    def __init__(self, runtime: str, shape: str, work: str, spec: dict, timeout: float):
        self.runtime, self.shape, self.work, self.spec, self.timeout = runtime, shape, work, spec, timeout
        self.container_id = f"k3s-gvisor-probe-{os.getpid()}-{shape.replace('_', '-')}"
        self.bundle = os.path.join(work, shape)
        self.state = os.path.join(work, "state")

    def command(self, *args: str) -> subprocess.CompletedProcess:
        """The runtime with its output in a file, not a pipe: the container's
        init inherits create's stdio and holds it until it exits, so a pipe
        would never reach EOF; and what init itself writes there (its dying
        words before start) is read from the same file."""
        start = self.output.seek(0, os.SEEK_END)
        completed = subprocess.run([self.runtime, "--root", self.state, *args], stdin=subprocess.DEVNULL,
                                   stdout=self.output, stderr=self.output, timeout=self.timeout,
                                   env=dict(os.environ, LC_ALL="C"), check=False)
        self.output.seek(start)
        completed.stderr = self.output.read().decode("utf-8", "replace")
        return completed

    def stopped(self) -> bool:
        """Whether the runtime's state says the container stopped (its output holds state's JSON)."""
        text = self.command("state", self.container_id).stderr
        try:
            return json.loads(text[text.index("{"):]).get("status") == "stopped"
        except ValueError:
            return False

    def init_output(self) -> str:
        """Everything written to the shared output so far (create's, init's, start's)."""
        self.output.seek(0)
        return self.output.read().decode("utf-8", "replace")

    def run(self) -> dict:
        """{works, error}: create, (signals), start, the container's exit status, delete."""
        os.makedirs(self.bundle)
        with open(os.path.join(self.bundle, "config.json"), "w", encoding="utf-8") as handle:
            json.dump(self.spec, handle)
        libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        pid_file = os.path.join(self.bundle, "pid")
        self.output = open(os.path.join(self.bundle, "output"), "w+b")
        try:
            # --no-new-keyring: on gVisor every session keyring is kept forever (B15), and the check
            # runs at every converge; the probe tests keyrings itself.
            created = self.command("create", "--no-new-keyring", "--bundle", self.bundle, "--pid-file", pid_file,
                                   self.container_id)
            if created.returncode != 0:
                return {"works": False, "error": f"create: {last_error_line(created.stderr)}"}
            with open(pid_file, encoding="ascii") as handle:
                pid = int(handle.read().strip())
            if self.shape == "signal_before_start":
                signal_init(pid)
            before_start = self.init_output()
            started = self.command("start", self.container_id)
            if started.returncode != 0:
                # init's own last words say why it was gone (B11's EINTR, say).
                said = f"; before start: {last_error_line(before_start)}" if before_start.strip() else ""
                return {"works": False, "error": f"start: {last_error_line(started.stderr)}{said}"}
            status = wait_for(pid, self.timeout, self.stopped)
            if status == 3 and self.shape == "masked_under_readonly":
                return {"works": False, "error": MASK_WRITE_SEEN}
            if status != 0:
                return {"works": False, "error": f"the container's process ended with exit status {status}: "
                                                 f"{last_error_line(self.init_output())}"}
            return {"works": True, "error": None}
        finally:
            self.command("delete", "--force", self.container_id)
            self.output.close()
            reap_children(self.timeout)


def reap_children(timeout: float) -> None:
    """Reap every child left, the runtime's orphans included (this process is
    their subreaper). Left to a PID 1 that reaps nothing, such a zombie would
    keep a PID namespace it was in from ever ending."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.01)


def signal_init(pid: int) -> None:
    for _ in range(SIGNALS_BEFORE_START):
        try:
            os.kill(pid, signal.SIGURG)
        except ProcessLookupError:
            return
        time.sleep(0.01)


def wait_for(pid: int, timeout: float, stopped=lambda: False) -> int | None:
    """Exit status of the re-parented container process (None: still running after timeout).

    A container that joined another PID namespace is re-parented to that
    namespace's PID 1, not to us: then only stopped() (the runtime's state)
    tells that it ended, and it counts as exit 0."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            if stopped():
                return 0
            done = 0
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    return None


def remove_cgroup(cgroups_path: str, mount_points: list[str]) -> None:
    """The container's cgroup, where a failed create left it (delete removes it otherwise)."""
    for mount_point in mount_points:
        leaf = os.path.join(mount_point, cgroups_path.lstrip("/"))
        if os.path.isdir(leaf):
            try:
                os.rmdir(leaf)
            except OSError:
                pass


class RuntimeCheck:
    """Every shape for each given runtime; the scratch directory is removed afterwards."""

    def __init__(self, scratch_dir: str, containerd_version_tuple, cgroup_mount_points: list[str],
                 timeout: float):
        self.scratch_dir = scratch_dir
        self.version = oci_version(containerd_version_tuple)
        self.cgroup_mount_points = cgroup_mount_points
        self.timeout = timeout

    def check(self, runtimes: dict[str, str]) -> dict:
        """{name: {shape: {works, error}}} for each {name: path}."""
        if not runtimes:
            return {}
        try:
            work = tempfile.mkdtemp(prefix="k3s-gvisor-runtime-check-", dir=self.scratch_dir)
        except OSError as exc:
            # Untested rather than failed: no runtime was tried.
            return {name: {shape: {"works": None, "error": f"scratch dir: {exc}"} for shape in SHAPE_NAMES}
                    for name in runtimes}
        try:
            os.chmod(work, 0o755)
            binds = make_rootfs(os.path.join(work, "rootfs"))
            with_namespaces = self._with_namespaces(work, binds)
            return {name: with_namespaces(name, path) for name, path in runtimes.items()}
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _with_namespaces(self, work: str, binds: list[str]):
        def check_one(name: str, path: str) -> dict:
            try:
                netns, pidns = Namespace(CLONE_NEWNET), Namespace(CLONE_NEWPID)
            except OSError as exc:
                return {shape: {"works": None, "error": str(exc)} for shape in SHAPE_NAMES}
            try:
                return {shape: self._shape(name, path, shape, work, binds, netns.path, pidns.path)
                        for shape in SHAPE_NAMES}
            finally:
                netns.close()
                pidns.close()
        return check_one

    def _shape(self, name, path, shape, work, binds, netns, pidns) -> dict:
        runtime_work = os.path.join(work, name)
        cgroups_path = f"/k3s-gvisor-probe-{os.getpid()}-{name}-{shape.replace('_', '-')}"
        spec = cri_spec(shape, os.path.join(work, "rootfs"), binds, netns, cgroups_path, self.version, pidns)
        run = ShapeRun(path, shape, runtime_work, copy.deepcopy(spec), self.timeout)
        try:
            result = run_forked(run.run, self.timeout * 4)
        finally:
            remove_cgroup(cgroups_path, self.cgroup_mount_points)
        if "works" not in result:
            return {"works": None, "error": result.get("error", "no result")}
        return {"works": result["works"], "error": result.get("error")}
