# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0
"""Facts about a host that is meant to become a k3s node inside gVisor.

The module is split in two layers (the blocker catalogue and its rules are
gvisor_blockers.py, pure too):

* Pure logic (parsers, the netlink batch). It takes file contents, touches
  nothing, and is what the unit tests feed with real samples.
* Readers and testers that touch the system (``read_*``, ``probe_*``,
  ``try_*`` and ``HostProbe``). Every test with a side effect runs in a forked
  child that dies afterwards: scratch mounts live in a private mount
  namespace, netlink changes in a scratch network namespace, and process
  attributes (subreaper, session keyring) die with the child.

Only the standard library is used: this runs on the target with whatever
python3 the node has (3.11 to 3.14).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

from ansible_collections.k3s_gvisor.node.plugins.module_utils.gvisor_blockers import KEYRING_FREE_SECONDS, evaluate_blockers
from ansible_collections.k3s_gvisor.node.plugins.module_utils.runtime_check import SHAPE_NAMES, RuntimeCheck

# --------------------------------------------------------------------------
# Kernel interface constants (from the Linux UAPI headers)
# --------------------------------------------------------------------------

SYSLOG_ACTION_READ_ALL = 3
PR_CAPBSET_READ = 23
PR_SET_CHILD_SUBREAPER = 36
KEYCTL_JOIN_SESSION_KEYRING = 1
KEYCTL_DESCRIBE = 6
PROC_SUPER_MAGIC = 0x9FA0

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

# keyctl(2) has no glibc wrapper (it lives in libkeyutils), so it is called
# by number. The numbers differ per architecture.
SYS_KEYCTL = {"x86_64": 250, "aarch64": 219}

# Capabilities are numbered below 64 on every Linux so far; the probe stops
# there so a kernel that never says EINVAL cannot make it loop forever.
CAPABILITY_PROBE_LIMIT = 64

# Enough for gVisor's whole fake log (about 500 bytes). On Linux, READ_ALL
# with a small buffer returns the newest records, which is all we quote.
KERNEL_LOG_READ_BYTES = 16384

# gVisor's /proc/version is a fixed string (seen identical in 20221219 and
# 20240729). The release part is matched loosely in case it changes.
GVISOR_PROC_VERSION = re.compile(r"^Linux version \S+ #1 SMP Sun Jan 10 15:06:54 PST 2016\s*$")
GVISOR_KERNEL_LOG_FIRST_LINE = "Starting gVisor..."

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

# Extra time a forked child gets beyond the per-test timeout to report back
# after its own inner timeout (e.g. the ip subprocess) expired.
CHILD_REPORT_GRACE = 1.0

# --------------------------------------------------------------------------
# Pure logic: parsing
# --------------------------------------------------------------------------

_LOG_PREFIX = re.compile(r"^(?:<\d+>)?(?:\[\s*[\d.]+\]\s?)?")
_VERSION_NUMBERS = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")

# cgroup v1 super options that are flags, not controller names.
_CGROUP_V1_FLAGS = frozenset(
    ("rw", "ro", "clone_children", "noprefix", "xattr", "cpuset_v2_mode", "favordynmods", "none", "all")
)


def kernel_log_first_line(log_text: str | None) -> str | None:
    """First kernel log record without its <level> and [timestamp] prefix."""
    if not log_text:
        return None
    first = log_text.splitlines()[0]
    return _LOG_PREFIX.sub("", first, count=1).strip()


def proc_version_is_gvisor(proc_version: str | None) -> bool:
    return bool(proc_version) and bool(GVISOR_PROC_VERSION.match(proc_version.strip()))


def decide_is_gvisor(kernel_log: str | None, kernel_log_error: str | None, proc_version: str | None):
    """Return (is_gvisor, evidence).

    Decision: only the kernel log counts. gVisor's syslog(2) always returns
    its own fake log whose first record is "Starting gVisor..."; a real
    kernel's log starts with its own messages. /proc/version is recorded as
    supporting evidence but never decides alone: any kernel can be built to
    print that string, and an unreadable kernel log leaves is_gvisor false.
    """
    evidence = []
    first = kernel_log_first_line(kernel_log)
    log_says_gvisor = first == GVISOR_KERNEL_LOG_FIRST_LINE
    if kernel_log_error:
        evidence.append(f"kernel log unreadable via syslog(2): {kernel_log_error}")
    elif first is None:
        evidence.append("kernel log (syslog(2) READ_ALL) is empty")
    elif log_says_gvisor:
        evidence.append(f"kernel log (syslog(2) READ_ALL) starts with {GVISOR_KERNEL_LOG_FIRST_LINE!r}")
    else:
        evidence.append(f"kernel log (syslog(2) READ_ALL) starts with {first!r}, not {GVISOR_KERNEL_LOG_FIRST_LINE!r}")
    version_line = (proc_version or "").strip()
    if proc_version_is_gvisor(proc_version):
        evidence.append(f"/proc/version is gVisor's fixed string {version_line!r} (supporting evidence only)")
    else:
        evidence.append(f"/proc/version is {version_line!r}, not gVisor's fixed string")
    return log_says_gvisor, evidence


def version_tuple(text: str | None) -> list[int] | None:
    """[major, minor, patch] from the first dotted number in text."""
    match = _VERSION_NUMBERS.search(text or "")
    if not match:
        return None
    return [int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)]


def first_version(output: str | None, line_pattern: str) -> str | None:
    """The version the first line matching line_pattern (a regex ending where the version starts) names."""
    for line in (output or "").splitlines():
        match = re.match(line_pattern + r"v?(\d+\.\d+\S*)", line.strip())
        if match:
            return match.group(1)
    return None


def parse_containerd_version(output: str | None) -> str | None:
    """Version from `containerd --version`.

    Seen forms: "containerd containerd.io 1.7.24 <commit>",
    "containerd github.com/containerd/containerd/v2 2.1.9 <commit>",
    "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3"
    and k3s's "containerd github.com/k3s-io/containerd v1.7.23-k3s2 <commit>".
    """
    return first_version(output, r"^containerd\s+\S+\s+")


def parse_runc_version(output: str | None) -> str | None:
    """Version from the first line of `runc --version` ("runc version 1.3.6+ds1")."""
    return first_version(output, r"^runc version\s+")


def parse_crun_version(output: str | None) -> str | None:
    """Version from the first line of `crun --version` ("crun version 1.28")."""
    return first_version(output, r"^crun version\s+")


def parse_apt_candidate(policy_output: str | None) -> str | None:
    """The candidate version from `apt-cache policy PACKAGE`, None when apt offers none."""
    match = re.search(r"^\s*Candidate:\s*(\S+)", policy_output or "", re.M)
    if not match or match.group(1) == "(none)":
        return None
    return match.group(1)


def parse_apt_print_uris(output: str | None) -> str | None:
    """The first URI from `apt-get download --print-uris PACKAGE` ('URI' FILE SIZE HASH)."""
    match = re.search(r"^'([^']+)'", output or "", re.M)
    return match.group(1) if match else None


def parse_cap_last_cap(text: str | None) -> int | None:
    try:
        return int((text or "").strip())
    except ValueError:
        return None


def _unescape_mountinfo(field: str) -> str:
    # The kernel escapes space, tab, newline and backslash as \ooo.
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[dict]:
    """Mounts from /proc/<pid>/mountinfo as dicts (see proc(5) for the fields)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        separator = fields.index("-", 6)
        tail = fields[separator + 1 :]
        mounts.append(
            {
                "mount_point": _unescape_mountinfo(fields[4]),
                "mount_options": fields[5],
                "optional_fields": fields[6:separator],
                "fstype": tail[0] if tail else "",
                "source": _unescape_mountinfo(tail[1]) if len(tail) > 1 else "",
                "super_options": tail[2] if len(tail) > 2 else "",
            }
        )
    return mounts


def has_shared_mounts(mounts: list[dict]) -> bool:
    """True when any mount is in a shared peer group (mounts there propagate)."""
    return any(tag.startswith("shared:") for mount in mounts for tag in mount["optional_fields"])


def cgroup_v1_controllers(super_options: str) -> list[str]:
    """Controller names in a cgroup v1 mount's super options.

    Named hierarchies (name=systemd) and options with values
    (release_agent=...) are not controllers.
    """
    return [opt for opt in super_options.split(",") if opt and "=" not in opt and opt not in _CGROUP_V1_FLAGS]


def unified_cgroup_mount(mounts: list[dict]) -> str | None:
    """Mount point of the cgroup2 hierarchy, preferring /sys/fs/cgroup."""
    points = [m["mount_point"] for m in mounts if m["fstype"] == "cgroup2"]
    if "/sys/fs/cgroup" in points:
        return "/sys/fs/cgroup"
    return points[0] if points else None


def summarize_cgroups(mounts: list[dict], unified_controllers_text: str | None = None) -> dict:
    """{version, controllers} from parsed mountinfo.

    A host with any cgroup v1 controller mount is reported as version 1, also
    when a cgroup2 hierarchy is mounted beside it ("hybrid", e.g. at
    /sys/fs/cgroup/unified): containerd and runc only use cgroup v2 when
    /sys/fs/cgroup itself is cgroup2, and in hybrid mode the controllers
    belong to the v1 hierarchies. Version 2 means cgroup2 is the only kind
    mounted; its controllers come from its cgroup.controllers file (passed in
    as text). No cgroup mount at all gives version None.
    """
    v1_controllers = set()
    for mount in mounts:
        if mount["fstype"] == "cgroup":
            v1_controllers.update(cgroup_v1_controllers(mount["super_options"]))
    if v1_controllers:
        return {"version": 1, "controllers": sorted(v1_controllers)}
    if unified_cgroup_mount(mounts):
        return {"version": 2, "controllers": sorted((unified_controllers_text or "").split())}
    return {"version": None, "controllers": []}


# --------------------------------------------------------------------------
# Pure logic: netlink batch
# --------------------------------------------------------------------------

# One scratch network namespace, one `ip -force -batch -` process. Each line
# belongs to a step; a step passes when all its lines pass. The route uses a
# subnet beside the bridge address, because adding the address already
# creates the connected route for its own /24 on Linux ("File exists").
NETLINK_BATCH = (
    ("veth", "link add kgp-va type veth peer name kgp-vb"),
    ("bridge", "link add kgp-br type bridge"),
    ("bridge", "link set kgp-va master kgp-br"),
    ("address", "address add 10.255.0.1/24 dev kgp-br"),
    ("route_add", "link set kgp-br up"),
    ("route_add", "link set kgp-va up"),
    ("route_add", "link set kgp-vb up"),
    ("route_add", "route add 10.255.1.0/24 dev kgp-br"),
    ("route_del", "route del 10.255.1.0/24 dev kgp-br"),
)
NETLINK_STEPS = ("veth", "bridge", "address", "route_add", "route_del")

_BATCH_FAILURE = re.compile(r"^Command failed \S*:(\d+)\s*$")


def outcome(works: bool | None, error: str | None = None) -> dict:
    """A tried feature: works is True, False, or None when it could not be tried."""
    return {"works": works, "error": error}


def netlink_batch_script() -> str:
    return "".join(command + "\n" for _step, command in NETLINK_BATCH)


def parse_ip_batch_failures(stderr: str) -> dict[int, str]:
    """{line number: error text} from `ip -force -batch` stderr.

    ip prints a command's error messages, then "Command failed -:N".
    """
    failures = {}
    pending = []
    for line in stderr.splitlines():
        match = _BATCH_FAILURE.match(line.strip())
        if match:
            failures[int(match.group(1))] = " ".join(pending) or "failed without a message"
            pending = []
        elif line.strip():
            pending.append(line.strip())
    return failures


def netlink_step_results(stderr: str) -> dict:
    """{step: {works, error}} for NETLINK_BATCH from ip's stderr; error names the first failed command."""
    failures = parse_ip_batch_failures(stderr)
    results = {step: outcome(True) for step in NETLINK_STEPS}
    for line_number, (step, command) in enumerate(NETLINK_BATCH, start=1):
        if line_number in failures and results[step]["works"]:
            results[step] = outcome(False, f"ip {command}: {failures[line_number]}")
    return results


def netlink_facts_from_batch(returncode: int, stderr: str, ip_path: str) -> dict:
    """Netlink facts from one `ip -force -batch` run.

    A failing run that names no failed command did not run the batch at all
    (e.g. an ip without -batch or -force): the steps are then untested.
    """
    if returncode != 0 and not parse_ip_batch_failures(stderr):
        message = " ".join(stderr.split())[:200]
        return netlink_not_tested(f"ip -force -batch failed as a whole (exit {returncode}): {message}", ip_path)
    facts = {"available": True, "reason": None, "ip_path": ip_path}
    facts.update(netlink_step_results(stderr))
    return facts


def netlink_not_tested(reason: str, ip_path: str | None = None) -> dict:
    facts = {"available": False, "reason": reason, "ip_path": ip_path}
    facts.update({step: outcome(None, reason) for step in NETLINK_STEPS})
    return facts


# --------------------------------------------------------------------------
# System access: libc and small helpers
# --------------------------------------------------------------------------

_LIBC = None


def libc():
    """The C library of this process, with errno capture and typed calls."""
    global _LIBC
    if _LIBC is None:
        # dlopen(NULL) finds libc without ctypes.util.find_library, which
        # would spawn ldconfig/gcc processes (slow inside gVisor).
        lib = ctypes.CDLL(None, use_errno=True)
        ulong, cstr = ctypes.c_ulong, ctypes.c_char_p
        signatures = {
            "prctl": ([ctypes.c_int, ulong, ulong, ulong, ulong], ctypes.c_int),
            "klogctl": ([ctypes.c_int, ctypes.c_char_p, ctypes.c_int], ctypes.c_int),
            "statfs": ([cstr, ctypes.c_void_p], ctypes.c_int),
            "unshare": ([ctypes.c_int], ctypes.c_int),
            "setns": ([ctypes.c_int, ctypes.c_int], ctypes.c_int),
            "mount": ([cstr, cstr, cstr, ulong, cstr], ctypes.c_int),
            "umount2": ([cstr, ctypes.c_int], ctypes.c_int),
            "syscall": ([ctypes.c_long, ctypes.c_long, ctypes.c_long], ctypes.c_long),
        }
        for name, (argtypes, restype) in signatures.items():
            function = getattr(lib, name)
            function.argtypes = argtypes
            function.restype = restype
        _LIBC = lib
    return _LIBC


def errno_text(number: int) -> str:
    return f"{errno.errorcode.get(number, f'errno {number}')}: {os.strerror(number)}"


class SyscallError(OSError):
    """A failed libc call; its message names the call and the errno."""


def check_call(result: int, what: str) -> int:
    """Raise SyscallError when a libc call returned -1."""
    if result == -1:
        number = ctypes.get_errno()
        raise SyscallError(number, f"{what} failed: {errno_text(number)}")
    return result


def exception_text(exc: BaseException) -> str:
    """Short text for an exception from a test, for the facts."""
    if isinstance(exc, SyscallError):
        return exc.strerror
    if isinstance(exc, OSError) and exc.errno:
        return errno_text(exc.errno) + (f" ({exc.filename})" if exc.filename else "")
    return f"{type(exc).__name__}: {exc}"


def _fs(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


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
    if libc().statfs(_fs(path), buffer) != 0:
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
# System access: forked children
# --------------------------------------------------------------------------


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _read_until_eof(fd: int, deadline: float) -> bytes | None:
    """Everything written to fd until EOF, or None when the deadline passed."""
    chunks = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _reap(pid: int, deadline: float) -> int:
    """Wait for pid until the deadline, then kill its process group and it."""
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.002)
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return os.waitpid(pid, 0)[1]


def _child_main(function, write_fd: int) -> None:
    """Body of a forked child: run function, send its result as JSON, _exit.

    os._exit skips the parent's atexit handlers and buffered output. The
    child leads its own process group so a timeout kills its helpers too.
    """
    code = 0
    try:
        os.setpgid(0, 0)
        result = function()
    except BaseException as exc:  # a child must always report and exit
        result = {"error": exception_text(exc)}
        code = 1
    try:
        _write_all(write_fd, json.dumps(result).encode())
    finally:
        os._exit(code)


def _flush_std_streams() -> None:
    # Anything buffered before fork() would otherwise be written twice.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass


def run_forked(function, timeout: float) -> dict:
    """Run function() in a forked child and return the dict it returned.

    The child is killed (with its process group) when it does not answer
    within timeout seconds; the result is then {"error": "..."}.
    """
    read_fd, write_fd = os.pipe()
    _flush_std_streams()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child_main(function, write_fd)
    os.close(write_fd)
    deadline = time.monotonic() + timeout
    try:
        data = _read_until_eof(read_fd, deadline)
    finally:
        os.close(read_fd)
        status = _reap(pid, deadline if data is not None else time.monotonic())
    if data is None:
        return {"error": f"no answer within {timeout:.1f} s (killed)"}
    try:
        return json.loads(data.decode())
    except ValueError:
        return {"error": f"child died (wait status {status}) without a result"}


def outcome_from_child(result: dict) -> dict:
    """A child's {works, error}; a child that crashed or timed out is untested (works None)."""
    if "works" in result:
        return outcome(result["works"], result.get("error"))
    return outcome(None, result.get("error", "no result"))


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
    if libc().mount(b"overlay", _fs(layout["merged"]), b"overlay", 0, _fs(options)) != 0:
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
        libc().umount2(_fs(layout["merged"]), MNT_DETACH)


def mount_masking_tmpfs(target: str) -> dict:
    """The read-only, size-limited tmpfs runc's maskDir() mounts over masked dirs (B8)."""
    data = b"nr_blocks=1,nr_inodes=1"
    if libc().mount(b"tmpfs", _fs(target), b"tmpfs", MS_RDONLY, data) != 0:
        return outcome(False, f"mount -t tmpfs -o ro,nr_blocks=1,nr_inodes=1: {errno_text(ctypes.get_errno())}")
    libc().umount2(_fs(target), MNT_DETACH)
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
        _write_all(report_fd, json.dumps({"init_pid": init_pid}).encode())
        os.close(report_fd)
        os.waitpid(init_pid, 0)
    except BaseException as exc:  # always report and exit
        code = 1
        try:
            _write_all(report_fd, json.dumps({"error": exception_text(exc)}).encode())
        except OSError:
            pass
    os._exit(code)


def start_pid_namespace_holder(timeout: float):
    """(holder pid, pid of its namespace's PID 1, fd that keeps PID 1 alive, error)."""
    report_r, report_w = os.pipe()
    hold_r, hold_w = os.pipe()
    _flush_std_streams()
    holder = os.fork()
    if holder == 0:
        os.close(report_r)
        os.close(hold_w)
        _pid_namespace_holder(report_w, hold_r)
    os.close(report_w)
    os.close(hold_r)
    try:
        data = _read_until_eof(report_r, time.monotonic() + timeout)
    finally:
        os.close(report_r)
    try:
        report = json.loads(data.decode()) if data else {"error": f"holder did not answer within {timeout:.1f} s"}
    except ValueError:
        report = {"error": "holder died without a result"}
    return holder, report.get("init_pid"), hold_w, report.get("error")


def stop_pid_namespace_holder(holder: int, hold_w: int, timeout: float) -> None:
    """EOF for PID 1, which exits; the holder reaps it and exits too.

    Should the holder hang, _reap kills its process group, which PID 1 of
    the new namespace belongs to as well.
    """
    os.close(hold_w)
    _reap(holder, time.monotonic() + timeout)


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
        check = RuntimeCheck(self.scratch_dir, facts["containerd"].get("version_tuple"), cgroup_points,
                             run_forked, self.timeout)
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
