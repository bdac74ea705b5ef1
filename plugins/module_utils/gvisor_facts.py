# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0
"""Facts about a host that is meant to become a k3s node inside gVisor.

The probe itself: readers and testers that touch the system (``read_*``,
``probe_*``, ``try_*``) and ``HostProbe``, which collects them. Every test
with a side effect runs in a forked child that dies afterwards
(forked_child.py): scratch mounts live in a private mount namespace, netlink
changes in a scratch network namespace, and process attributes (subreaper,
session keyring) die with the child. What it reads is parsed by host_text.py
(pure), what it calls is linux_calls.py, and the blocker catalogue and its
rules are gvisor_blockers.py (pure too).

Only the standard library is used: this runs on the target with whatever
python3 the node has (3.11 to 3.14).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import time

from ansible_collections.k3s_gvisor.node.plugins.module_utils.gvisor_blockers import KEYRING_FREE_SECONDS, evaluate_blockers
from ansible_collections.k3s_gvisor.node.plugins.module_utils.runtime_check import SHAPE_NAMES, RuntimeCheck
from ansible_collections.k3s_gvisor.node.plugins.module_utils.host_text import (
    decide_is_gvisor, has_shared_mounts, netlink_batch_script, netlink_facts_from_batch, netlink_not_tested,
    outcome, parse_apt_candidate, parse_apt_print_uris, parse_cap_last_cap, parse_containerd_version,
    parse_crun_version, parse_mountinfo, parse_runc_version, summarize_cgroups, unified_cgroup_mount, version_tuple,
)
from ansible_collections.k3s_gvisor.node.plugins.module_utils.linux_calls import (
    CAPABILITY_PROBE_LIMIT, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, KERNEL_LOG_READ_BYTES, KEYCTL_DESCRIBE,
    KEYCTL_JOIN_SESSION_KEYRING, MNT_DETACH, MS_PRIVATE, MS_RDONLY, MS_REC, PROC_SUPER_MAGIC, PR_CAPBSET_READ,
    PR_SET_CHILD_SUBREAPER, SYSLOG_ACTION_READ_ALL, SYS_KEYCTL, SyscallError, check_call, errno_text,
    exception_text, fs_path, libc, read_text,
)
from ansible_collections.k3s_gvisor.node.plugins.module_utils.forked_child import (
    CHILD_REPORT_GRACE, flush_std_streams, read_until_eof, reap_within, write_all, outcome_from_child, run_forked,
)


BINARY_SEARCH_DIRS = ("/usr/local/bin", "/usr/bin", "/usr/sbin", "/usr/local/sbin")
IP_FALLBACK_PATHS = ("/usr/sbin/ip", "/sbin/ip")

# Tests a caller may skip (slow ones, or ones with contained side effects).
SKIPPABLE_TESTS = (
    "child_subreaper",
    "keyring",
    "overlayfs",
    "tmpfs_size_options",
    "pid_namespace_join",
    "netlink",
    "runtime_check",
    "mount_peer_unmount",
)
SKIPPED = "skipped (skip option)"

# --------------------------------------------------------------------------
# System access: readers (no side effects)
# --------------------------------------------------------------------------


def read_kernel_log():
    """(text, error) of the kernel log, read with syslog(2) like dmesg does."""
    buffer = ctypes.create_string_buffer(KERNEL_LOG_READ_BYTES)
    length = libc().klogctl(SYSLOG_ACTION_READ_ALL, buffer, KERNEL_LOG_READ_BYTES)
    if length < 0:
        return None, errno_text(ctypes.get_errno())
    return buffer.raw[:length].decode("utf-8", "replace"), None


def probe_last_capability() -> int | None:
    """Highest capability number the kernel knows, as systemd's cap_last_cap() finds it.

    PR_CAPBSET_READ answers 0 or 1 for a known capability and EINVAL above
    the last one.
    """
    for cap in range(CAPABILITY_PROBE_LIMIT):
        if libc().prctl(PR_CAPBSET_READ, cap, 0, 0, 0) < 0:
            if ctypes.get_errno() != errno.EINVAL:
                return None
            return cap - 1 if cap > 0 else None
    return None


def read_cap_last_cap() -> dict:
    text = read_text("/proc/sys/kernel/cap_last_cap")
    return {
        "file_present": os.path.exists("/proc/sys/kernel/cap_last_cap"),
        "file_value": parse_cap_last_cap(text),
        "probed": probe_last_capability(),
    }


def statfs_type(path: str) -> int | None:
    """f_type of statfs(2); the first member of struct statfs is a long on Linux."""
    buffer = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on x86_64 and aarch64
    if libc().statfs(fs_path(path), buffer) != 0:
        return None
    return ctypes.c_long.from_buffer(buffer).value & 0xFFFFFFFF


def read_cgroups() -> dict:
    mounts = parse_mountinfo(read_text("/proc/self/mountinfo") or "")
    unified = unified_cgroup_mount(mounts)
    controllers = read_text(os.path.join(unified, "cgroup.controllers")) if unified else None
    return summarize_cgroups(mounts, controllers)


def read_init_system() -> dict:
    name = (read_text("/proc/1/comm") or "").strip() or None
    return {"name": name, "systemd": name == "systemd" and os.path.isdir("/run/systemd/system")}


# The character devices /dev/null and /dev/kmsg are 1:3 and 1:11 on every Linux.
DEV_NULL_RDEV = os.makedev(1, 3)


def dev_kmsg_readable(path: str = "/dev/kmsg") -> bool:
    """Whether the kernel's /dev/kmsg opens (B12). /dev/null bound over it, as
    k3s-gvisor-node --dev-kmsg does, is not it: a probe after the engine
    started must still see B12, or the next converge would drop the bind."""
    try:
        found = os.stat(path)
        if stat.S_ISCHR(found.st_mode) and found.st_rdev == DEV_NULL_RDEV:
            return False
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
    except OSError:
        return False
    return True


def find_binary(name: str) -> str | None:
    """First executable `name` in the usual install dirs, then in PATH; an
    absolute path is taken as it is."""
    if os.path.isabs(name):
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    path_dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    for directory in list(BINARY_SEARCH_DIRS) + path_dirs:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_ip_command() -> str | None:
    found = shutil.which("ip")
    if found:
        return found
    return next((p for p in IP_FALLBACK_PATHS if os.access(p, os.X_OK)), None)


def read_apt_offer(package: str, timeout: float) -> dict:
    """{candidate, uri, reachable}: what the host's apt would install, and whether its mirror answers.

    Reads apt's lists and asks the mirror for the file's headers only;
    nothing is downloaded or installed. No apt, or no candidate: candidate None.
    """
    offer = {"candidate": None, "uri": None, "reachable": False}
    if not shutil.which("apt-cache"):
        return offer
    policy = _run_quietly(["apt-cache", "policy", package], timeout)
    offer["candidate"] = parse_apt_candidate(policy)
    if offer["candidate"] is None:
        return offer
    offer["uri"] = parse_apt_print_uris(_run_quietly(["apt-get", "download", "--print-uris", package], timeout))
    offer["reachable"] = bool(offer["uri"]) and url_answers(offer["uri"], timeout)
    return offer


def _run_quietly(argv: list[str], timeout: float) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                              env=dict(os.environ, LC_ALL="C")).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def url_answers(url: str, timeout: float) -> bool:
    """Whether a HEAD request to url gets a successful answer (apt's mirrors serve plain http); for a
    file: URI (a local repository, as an offline sandbox may have), whether the file is there."""
    import urllib.parse
    import urllib.request  # only here: most probes never need it

    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return os.path.isfile(urllib.parse.unquote(parsed.path))
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as response:
            return 200 <= response.status < 400
    except (OSError, ValueError):
        return False


class VersionQuery:
    """`<binary> --version`, started early and collected late.

    Both version queries run while the other tests do: inside gVisor every
    process start costs tens of milliseconds.
    """

    def __init__(self, name: str, parse):
        self.parse = parse
        self.path = find_binary(name)
        self.process = None
        if self.path:
            try:
                self.process = subprocess.Popen(
                    [self.path, "--version"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=dict(os.environ, LC_ALL="C"),
                    encoding="utf-8",
                    errors="replace",
                )
            except OSError:
                self.process = None  # found but not runnable: reported with version None

    def result(self, timeout: float) -> dict:
        if not self.path:
            return {"found": False, "path": None, "version": None, "version_tuple": None}
        output = ""
        if self.process:
            try:
                output, _ = self.process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.communicate()
        version = self.parse(output)
        return {"found": True, "path": self.path, "version": version, "version_tuple": version_tuple(version)}


# --------------------------------------------------------------------------
# Testers: each runs in a forked child
# --------------------------------------------------------------------------


def set_child_subreaper() -> dict:
    """What containerd-shim does at start (B4)."""
    if libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        return outcome(False, errno_text(ctypes.get_errno()))
    return outcome(True)


def join_session_keyring() -> dict:
    """keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL): a new anonymous session keyring (B6).

    runc and crun join a keyring named after the container; both go through
    the same kernel path. The child's new keyring should die with it: its
    serial goes back to the parent, which looks whether it did (B15).
    """
    number = SYS_KEYCTL.get(platform.machine())
    if number is None:
        return outcome(None, f"keyctl syscall number unknown on {platform.machine()}")
    serial = libc().syscall(number, KEYCTL_JOIN_SESSION_KEYRING, 0)
    if serial < 0:
        return outcome(False, errno_text(ctypes.get_errno()))
    return dict(outcome(True), serial=serial)


def session_keyring_kept(serial: int, wait: float = KEYRING_FREE_SECONDS) -> dict:
    """Whether the keyring SERIAL, joined by a child that has exited, still exists (B15).

    keyctl(KEYCTL_DESCRIBE) answers ENOKEY once a key is gone; any other answer
    (gVisor: EACCES, as the key is no longer ours to possess) means it is kept.
    {kept: bool, answer}: the last answer, the kernel's error text or the
    description.
    """
    number = SYS_KEYCTL[platform.machine()]
    buffer = ctypes.create_string_buffer(256)
    deadline = time.monotonic() + wait
    while True:
        length = libc().syscall(number, KEYCTL_DESCRIBE, serial, buffer, len(buffer))
        error = ctypes.get_errno() if length < 0 else 0
        if error == errno.ENOKEY:
            return {"kept": False, "answer": errno_text(error)}
        if time.monotonic() >= deadline:
            return {"kept": True, "answer": errno_text(error) if error else buffer.value.decode(errors="replace")}
        time.sleep(0.1)


def enter_private_mount_namespace() -> None:
    """New mount namespace where nothing propagates back to the host's.

    Without MS_PRIVATE, mounts under a shared parent would propagate to the
    host's namespace and outlive this child. gVisor 20221219 has no mount
    propagation and rejects the flag with EINVAL; a namespace in which no
    mount is shared is just as safe, so that is accepted instead.
    """
    check_call(libc().unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    if libc().mount(None, b"/", None, MS_REC | MS_PRIVATE, None) == 0:
        return
    number = ctypes.get_errno()
    mounts = parse_mountinfo(read_text("/proc/self/mountinfo") or "")
    if mounts and not has_shared_mounts(mounts):
        return
    raise SyscallError(number, f"mount(/, MS_REC|MS_PRIVATE) failed: {errno_text(number)}")


def mount_overlay(layout: dict) -> dict:
    """Overlay on the scratch filesystem, then a write through it (B7)."""
    options = "lowerdir=%(lower)s,upperdir=%(upper)s,workdir=%(work)s" % layout
    if libc().mount(b"overlay", fs_path(layout["merged"]), b"overlay", 0, fs_path(options)) != 0:
        return outcome(False, f"mount -t overlay: {errno_text(ctypes.get_errno())}")
    try:
        if not os.path.exists(os.path.join(layout["merged"], "from-lower")):
            return outcome(False, "overlay mounted but the lower layer is not visible")
        with open(os.path.join(layout["merged"], "from-merged"), "w") as handle:
            handle.write("x")
        if not os.path.exists(os.path.join(layout["upper"], "from-merged")):
            return outcome(False, "overlay mounted but a write did not reach the upper layer")
        return outcome(True)
    finally:
        libc().umount2(fs_path(layout["merged"]), MNT_DETACH)


def mount_masking_tmpfs(target: str) -> dict:
    """The read-only, size-limited tmpfs runc's maskDir() mounts over masked dirs (B8)."""
    data = b"nr_blocks=1,nr_inodes=1"
    if libc().mount(b"tmpfs", fs_path(target), b"tmpfs", MS_RDONLY, data) != 0:
        return outcome(False, f"mount -t tmpfs -o ro,nr_blocks=1,nr_inodes=1: {errno_text(ctypes.get_errno())}")
    libc().umount2(fs_path(target), MNT_DETACH)
    return outcome(True)


def scratch_mount_tests(layout: dict, tests: list[str]) -> dict:
    """Child body: mount tests inside a private mount namespace."""
    try:
        enter_private_mount_namespace()
    except OSError as exc:
        # Unknown rather than failed: without a private namespace the
        # mounts themselves were never tried.
        return {test: outcome(None, exception_text(exc)) for test in tests}
    testers = {
        "overlayfs": lambda: mount_overlay(layout),
        "tmpfs_size_options": lambda: mount_masking_tmpfs(layout["mask"]),
    }
    results = {}
    for test in tests:
        try:
            results[test] = testers[test]()
        except OSError as exc:
            results[test] = outcome(False, exception_text(exc))
    return results


def make_scratch_layout(scratch_dir: str) -> dict:
    root = tempfile.mkdtemp(prefix="gvisor-probe-", dir=scratch_dir)
    layout = {"root": root}
    for name in ("lower", "upper", "work", "merged", "mask"):
        layout[name] = os.path.join(root, name)
        os.mkdir(layout[name])
    with open(os.path.join(layout["lower"], "from-lower"), "w") as handle:
        handle.write("x")
    return layout


def try_scratch_mounts(scratch_dir: str, tests: list[str], timeout: float) -> dict:
    """Overlay and masking tmpfs results, on a temp dir removed afterwards."""
    if not tests:
        return {}
    try:
        layout = make_scratch_layout(scratch_dir)
    except OSError as exc:
        return {test: outcome(None, f"scratch dir: {exception_text(exc)}") for test in tests}
    try:
        result = run_forked(lambda: scratch_mount_tests(layout, tests), timeout)
    finally:
        # The mounts died with the child's namespace; only files remain.
        shutil.rmtree(layout["root"], ignore_errors=True)
    return {test: outcome_from_child(result.get(test, result)) for test in tests}


def run_ip_batch_in_scratch_netns(ip_path: str, timeout: float) -> dict:
    """Child body: the netlink batch in a new network namespace that dies with the child."""
    check_call(libc().unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
    completed = subprocess.run(
        [ip_path, "-force", "-batch", "-"],
        input=netlink_batch_script(),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, LC_ALL="C"),
    )
    return {"returncode": completed.returncode, "stderr": completed.stderr}


def try_netlink(timeout: float) -> dict:
    ip_path = find_ip_command()
    if not ip_path:
        return netlink_not_tested(f"no ip command (iproute2) in PATH, {', '.join(IP_FALLBACK_PATHS)}")
    result = run_forked(lambda: run_ip_batch_in_scratch_netns(ip_path, timeout), timeout + CHILD_REPORT_GRACE)
    if "stderr" not in result:
        return netlink_not_tested(result.get("error", "no result"), ip_path)
    return netlink_facts_from_batch(result["returncode"], result["stderr"], ip_path)


# PID namespace join (B9): runc joins a pod's PID namespace by setns() and
# then forks the container process. Here a holder process A unshares a new
# PID namespace and forks G, its PID 1, which blocks on a pipe; a second
# child B does the setns() + fork() against G's namespace.


def _pid_namespace_holder(report_fd: int, hold_fd: int) -> None:
    """Body of holder A (never returns): new PID namespace with a blocked PID 1."""
    code = 0
    try:
        os.setpgid(0, 0)
        check_call(libc().unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")
        init_pid = os.fork()
        if init_pid == 0:
            os.close(report_fd)
            while os.read(hold_fd, 1):  # PID 1 of the new namespace: wait for EOF
                pass
            os._exit(0)
        write_all(report_fd, json.dumps({"init_pid": init_pid}).encode())
        os.close(report_fd)
        os.waitpid(init_pid, 0)
    except BaseException as exc:  # always report and exit
        code = 1
        try:
            write_all(report_fd, json.dumps({"error": exception_text(exc)}).encode())
        except OSError:
            pass
    os._exit(code)


def start_pid_namespace_holder(timeout: float):
    """(holder pid, pid of its namespace's PID 1, fd that keeps PID 1 alive, error)."""
    report_r, report_w = os.pipe()
    hold_r, hold_w = os.pipe()
    flush_std_streams()
    holder = os.fork()
    if holder == 0:
        os.close(report_r)
        os.close(hold_w)
        _pid_namespace_holder(report_w, hold_r)
    os.close(report_w)
    os.close(hold_r)
    try:
        data = read_until_eof(report_r, time.monotonic() + timeout)
    finally:
        os.close(report_r)
    try:
        report = json.loads(data.decode()) if data else {"error": f"holder did not answer within {timeout:.1f} s"}
    except ValueError:
        report = {"error": "holder died without a result"}
    return holder, report.get("init_pid"), hold_w, report.get("error")


def stop_pid_namespace_holder(holder: int, hold_w: int, timeout: float) -> None:
    """EOF for PID 1, which exits; the holder reaps it and exits too.

    Should the holder hang, reap_within kills its process group, which PID 1 of
    the new namespace belongs to as well.
    """
    os.close(hold_w)
    reap_within(holder, time.monotonic() + timeout)


def join_pid_namespace_and_fork(init_pid: int, hold_w: int) -> dict:
    """Child body B: what runc's nsexec does for a container joining a PID namespace."""
    os.close(hold_w)  # only the parent may keep PID 1 alive
    fd = os.open(f"/proc/{init_pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc().setns(fd, CLONE_NEWPID) != 0:
            return outcome(False, f"setns(CLONE_NEWPID): {errno_text(ctypes.get_errno())}")
    finally:
        os.close(fd)
    try:
        grandchild = os.fork()
    except OSError as exc:
        return outcome(False, f"fork() after setns(CLONE_NEWPID): {exception_text(exc)}")
    if grandchild == 0:
        os._exit(0)
    status = os.waitpid(grandchild, 0)[1]
    if status != 0:
        return outcome(False, f"process forked into the joined namespace ended with wait status {status}")
    return outcome(True)


def try_pid_namespace_join(timeout: float) -> dict:
    holder, init_pid, hold_w, error = start_pid_namespace_holder(timeout)
    try:
        if error or not init_pid:
            return outcome(None, f"could not create a PID namespace to join: {error}")
        return outcome_from_child(run_forked(lambda: join_pid_namespace_and_fork(init_pid, hold_w), timeout))
    finally:
        stop_pid_namespace_holder(holder, hold_w, timeout)


# --------------------------------------------------------------------------
# The probe
# --------------------------------------------------------------------------


# The runtimes' default state directories (crun makes its own on every call).
RUNTIME_STATE_DIRS = ("/run/crun", "/run/runc")


def remove_empty_dirs(paths) -> None:
    """Remove each of paths that is now an empty directory (one the probe's runtimes made)."""
    for path in paths:
        try:
            os.rmdir(path)
        except OSError:
            pass


class HostProbe:
    """Collects the gvisor facts of this host (run as root)."""

    def __init__(self, scratch_dir: str = "/var/tmp", skip=(), timeout: float = 5.0):
        unknown = set(skip) - set(SKIPPABLE_TESTS)
        if unknown:
            raise ValueError(f"unknown tests to skip: {', '.join(sorted(unknown))}")
        self.scratch_dir = scratch_dir
        self.skip = frozenset(skip)
        self.timeout = timeout

    def collect(self) -> dict:
        started = time.monotonic()
        # crun makes its default state directory on any call, --version and
        # --root included: one it made is removed again (the probe leaves nothing).
        absent_state_dirs = [path for path in RUNTIME_STATE_DIRS if not os.path.lexists(path)]
        try:
            return self._collect(started)
        finally:
            remove_empty_dirs(absent_state_dirs)

    def _collect(self, started: float) -> dict:
        queries = {
            "containerd": VersionQuery("containerd", parse_containerd_version),
            "runc": VersionQuery("runc", parse_runc_version),
            "crun": VersionQuery("crun", parse_crun_version),
        }
        facts = {}
        try:
            facts.update(self.identity())
            facts.update(self.kernel_interfaces())
            facts.update(self.process_tests())
            facts.update(self.mount_tests())
            facts["netlink"] = netlink_not_tested(SKIPPED) if "netlink" in self.skip else try_netlink(self.timeout)
            facts.update(self.kubelet_interfaces(facts["cgroup"]["version"]))
        finally:
            # Collected (and reaped) also when a test above raised.
            for name, query in queries.items():
                facts[name] = query.result(self.timeout)
        facts["runtime_check"] = self.runtime_check(facts)
        facts["crun_from_apt"] = None if facts["crun"]["found"] else read_apt_offer("crun", self.timeout)
        facts["blockers"] = evaluate_blockers(facts)
        facts["probe_seconds"] = round(time.monotonic() - started, 3)
        return facts

    def runtime_check(self, facts: dict) -> dict:
        """{runtime: {shape: {works, error}}} for the host's own crun and runc (runtime_check.py)."""
        runtimes = {name: facts[name]["path"] for name in ("crun", "runc") if facts[name]["found"]}
        if "runtime_check" in self.skip:
            return {name: {shape: outcome(None, SKIPPED) for shape in SHAPE_NAMES} for name in runtimes}
        mounts = parse_mountinfo(read_text("/proc/self/mountinfo") or "")
        cgroup_points = [m["mount_point"] for m in mounts if m["fstype"] in ("cgroup", "cgroup2")]
        check = RuntimeCheck(self.scratch_dir, facts["containerd"].get("version_tuple"), cgroup_points, self.timeout)
        return check.check(runtimes)

    def identity(self) -> dict:
        kernel_log, kernel_log_error = read_kernel_log()
        is_gvisor, evidence = decide_is_gvisor(kernel_log, kernel_log_error, read_text("/proc/version"))
        release = os.uname().release
        return {
            "is_gvisor": is_gvisor,
            "gvisor_evidence": evidence,
            "kernel_release": release,
            "kernel_version_tuple": version_tuple(release),
            "init_system": read_init_system(),
        }

    def kernel_interfaces(self) -> dict:
        return {
            "cgroup": read_cgroups(),
            "cgroup_namespace": os.path.exists("/proc/self/ns/cgroup"),
            "cap_last_cap": read_cap_last_cap(),
            "procfs_root_inode": os.stat("/proc").st_ino,
            "procfs_is_procfs": statfs_type("/proc") == PROC_SUPER_MAGIC,
            "dev_kmsg": dev_kmsg_readable(),
            "netfilter_conntrack_sysctls": os.path.isdir("/proc/sys/net/netfilter"),
        }

    def kubelet_interfaces(self, cgroup_version) -> dict:
        # Imported here: kubelet_facts builds on this module's libc and fork helpers.
        from ansible_collections.k3s_gvisor.node.plugins.module_utils.kubelet_facts import kubelet_facts
        return kubelet_facts(cgroup_version, self.scratch_dir, self.timeout, self.skip)

    def _forked_outcome(self, name: str, function) -> dict:
        if name in self.skip:
            return outcome(None, SKIPPED)
        return outcome_from_child(run_forked(function, self.timeout))

    def _keyring_outcome(self) -> dict:
        """Joining a session keyring (B6), and whether the joined one outlives its process (B15)."""
        if "keyring" in self.skip:
            return {"session_keyring_join": None, "error": SKIPPED, "kept_after_exit": None, "kept_answer": None}
        child = run_forked(join_session_keyring, self.timeout)
        joined = outcome_from_child(child)
        kept = session_keyring_kept(child["serial"]) if joined["works"] else {"kept": None, "answer": None}
        return {"session_keyring_join": joined["works"], "error": joined["error"],
                "kept_after_exit": kept["kept"], "kept_answer": kept["answer"]}

    def process_tests(self) -> dict:
        subreaper = self._forked_outcome("child_subreaper", set_child_subreaper)
        keyring = self._keyring_outcome()
        if "pid_namespace_join" in self.skip:
            pid_join = outcome(None, SKIPPED)
        else:
            pid_join = try_pid_namespace_join(self.timeout)
        return {
            "child_subreaper": subreaper["works"],
            "child_subreaper_error": subreaper["error"],
            "keyring": keyring,
            "pid_namespace_join": pid_join,
        }

    def mount_tests(self) -> dict:
        names = ("overlayfs", "tmpfs_size_options")
        results = try_scratch_mounts(self.scratch_dir, [n for n in names if n not in self.skip], self.timeout)
        return {name: results.get(name, outcome(None, SKIPPED)) for name in names}
