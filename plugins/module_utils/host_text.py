# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0
"""Text a host gives, read: kernel log and /proc/version (is this gVisor?),
versions (one parser for containerd, runc, crun and Kubernetes), apt's
answers, capabilities, mountinfo and cgroups, and the netlink batch the probe
runs with `ip` and its answer. Pure: strings in, facts out, touching nothing;
the unit tests feed it real samples.

Only the standard library: this runs on the target.
"""

from __future__ import annotations

import re

# gVisor's /proc/version is a fixed string (seen identical in 20221219 and
# 20240729). The release part is matched loosely in case it changes.
GVISOR_PROC_VERSION = re.compile(r"^Linux version \S+ #1 SMP Sun Jan 10 15:06:54 PST 2016\s*$")
GVISOR_KERNEL_LOG_FIRST_LINE = "Starting gVisor..."

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
