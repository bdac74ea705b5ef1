# SPDX-License-Identifier: Apache-2.0
"""What the soaks count on a node, with the standard library only: shipped
to the node beside cri_burst.py and cri_soak.py (which run in the CRI
client's venv) and beside kubernetes_soak.py (which runs on the node's bare
python3)."""

from __future__ import annotations

import os
import re
import subprocess

# gvisor-bridge names a pod's host-side veth "gvb" + 12 hex digits (HostVethName in its link.go);
# its bridge, gvbr0, is not one.
HOST_VETH_NAME = re.compile(r"gvb[0-9a-f]{12}")


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))]


def processes() -> list[tuple[str, str]]:
    """(comm, state) of every process but this one."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stream:
                stat = stream.read()
        except OSError:  # the process ended between the listing and the read
            continue
        found.append((stat[stat.index("(") + 1:stat.rindex(")")], stat.rsplit(")", 1)[1].split()[0]))
    return found


def host_veths() -> int:
    """Pods' host-side veths, by name: gVisor's netlink reports no link kind, so `type veth` matches nothing."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return sum(bool(HOST_VETH_NAME.fullmatch(line.split(":", 2)[1].strip().split("@", 1)[0]))
               for line in links.splitlines())
