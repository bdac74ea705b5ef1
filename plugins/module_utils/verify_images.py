# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0
"""The verify stage's two images, and how to read what the probe printed.

pause: the pod sandbox's process, busybox `sleep` as the only process. As
  PID 1 of its PID namespace it ignores SIGTERM (no handler); containerd stops
  sandboxes with SIGKILL, which always works. It must not fork: on gVisor
  20240729 a child outlives the death of its namespace's PID 1 (seen: a
  `sh -c 'trap ... ; sleep & wait'` pause left its sleep behind, reparented to
  the shim, and the sandbox's cgroup could not be removed), where Linux
  kills the whole namespace.
probe: a shell script that prints a marker (from its environment, new for
  every run, so an old log cannot pass) and what the container sees: its PID,
  uid, hostname, effective capabilities and namespaces.

Pure logic, standard library only: it runs with the node's python (image
build) and in the CRI client's venv (log check).
"""

from __future__ import annotations

import re

from ansible_collections.k3s_gvisor.node.plugins.module_utils.oci_image import ImageFile, ImageSpec, busybox_files

MARKER_VARIABLE = "K3S_GVISOR_MARKER"

# The longest sleep busybox takes on every architecture (seconds, ~68 years).
PAUSE_COMMAND = ("/bin/sleep", "2147483647")

PROBE_SCRIPT = """#!/bin/sh
# k3s-gvisor verify probe: a marker and this container's view, one fact a line.
echo "$K3S_GVISOR_MARKER begin"
echo "pid=$$"
echo "uid=$(id -u)"
echo "hostname=$(hostname)"
sed -n 's/^CapEff:[[:space:]]*/capeff=/p' /proc/self/status
for ns in /proc/self/ns/*; do echo "ns.${ns##*/}=$(readlink "$ns")"; done
echo "$K3S_GVISOR_MARKER end"
"""

# Applets the pause and the probe call (busybox runs as the applet a link names).
APPLETS = ("sh", "sleep", "id", "hostname", "sed", "readlink")


def pause_spec(reference: str, busybox: bytes, architecture: str) -> ImageSpec:
    return ImageSpec(reference, busybox_files(busybox, APPLETS), PAUSE_COMMAND, architecture)


def probe_spec(reference: str, busybox: bytes, architecture: str) -> ImageSpec:
    script = ImageFile("probe.sh", PROBE_SCRIPT.encode(), 0o755)
    return ImageSpec(reference, busybox_files(busybox, APPLETS, (script,)), ("/bin/sh", "/probe.sh"), architecture)


IMAGE_KINDS = {"pause": pause_spec, "probe": probe_spec}

# A line of a CRI container log: RFC 3339 time, stream, P(artial) or F(ull), text.
_CRI_LOG_LINE = re.compile(r"^(\S+) (stdout|stderr) ([PF]) ?(.*)$")


def parse_cri_log(text: str) -> list[tuple[str, str]]:
    """[(stream, line)] from a CRI log file, partial lines joined."""
    lines, pending = [], {}
    for raw in text.splitlines():
        match = _CRI_LOG_LINE.match(raw)
        if not match:
            continue
        _time, stream, tag, content = match.groups()
        pending[stream] = pending.get(stream, "") + content
        if tag == "F":
            lines.append((stream, pending.pop(stream)))
    lines.extend((stream, rest) for stream, rest in pending.items())
    return lines


def parse_probe_output(lines, marker: str) -> dict:
    """{marker_found, facts} from the probe's stdout lines.

    marker_found is True only when both the begin and the end line carry this
    run's marker; facts are the key=value lines between them (namespaces
    gathered under "namespaces").
    """
    stdout = [text for stream, text in lines if stream == "stdout"]
    try:
        begin = stdout.index(f"{marker} begin")
        end = stdout.index(f"{marker} end", begin)
    except ValueError:
        return {"marker_found": False, "facts": {}}
    facts: dict = {"namespaces": {}}
    for line in stdout[begin + 1 : end]:
        key, _, value = line.partition("=")
        if key.startswith("ns."):
            facts["namespaces"][key[3:]] = value
        elif key:
            facts[key] = value
    return {"marker_found": True, "facts": facts}


def own_pid_namespace(facts: dict, host_pid_namespace: str) -> bool:
    """The probe ran as PID 1 of a PID namespace that is not the host's (pid: CONTAINER)."""
    seen = facts.get("namespaces", {}).get("pid")
    return facts.get("pid") == "1" and bool(seen) and seen != host_pid_namespace
