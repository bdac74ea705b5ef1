# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0
"""Install Debian packages with apt-get and dpkg-query alone: no python3-apt,
which ansible.builtin.apt installs on the node first (nodes here have
Python's standard library only, and may be offline).

Pure parts (parsing) are separate from the commands."""

from __future__ import annotations

import os
import re
import subprocess

APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}


def parse_installed(dpkg_output: str) -> set[str]:
    """Installed package names from `dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' NAMES`."""
    installed = set()
    for line in dpkg_output.splitlines():
        words = line.split()
        if len(words) >= 2 and words[1].startswith("ii"):
            installed.add(words[0].split(":")[0])
    return installed


def parse_candidates(policy_output: str) -> dict[str, str | None]:
    """{package: candidate or None} from `apt-cache policy NAMES`."""
    candidates, current = {}, None
    for line in policy_output.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = line[:-1]
            candidates[current] = None
            continue
        match = re.match(r"^\s+Candidate:\s*(\S+)", line)
        if match and current is not None:
            candidates[current] = None if match.group(1) == "(none)" else match.group(1)
    return candidates


def last_lines(text: str, count: int = 5) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return " / ".join(lines[-count:])


class Apt:
    """apt-get and dpkg-query as a node has them."""

    def __init__(self, run=None):
        self.run = run or self._run

    @staticmethod
    def _run(argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, check=False, env=dict(os.environ, **APT_ENV))

    def missing(self, names: list[str]) -> list[str]:
        proc = self.run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\\n", *names])
        installed = parse_installed(proc.stdout)
        return [name for name in names if name not in installed]

    def candidates(self, names: list[str]) -> dict[str, str | None]:
        return parse_candidates(self.run(["apt-cache", "policy", *names]).stdout)

    def update(self) -> None:
        proc = self.run(["apt-get", "update", "-q"])
        if proc.returncode != 0:
            raise AptError(f"apt-get update failed: {last_lines(proc.stderr or proc.stdout)}")

    def install(self, names: list[str]) -> None:
        proc = self.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *names])
        if proc.returncode != 0:
            raise AptError(f"apt-get install {' '.join(names)} failed: {last_lines(proc.stderr or proc.stdout)}")


class AptError(Exception):
    """apt could not do it; the message names the packages and apt's words."""


def ensure_installed(apt: Apt, names: list[str], check_mode: bool) -> dict:
    """{changed, installed, updated_lists}: install what is missing, updating apt's
    lists first only when one of them has no candidate (nothing is updated
    for packages that are already there)."""
    missing = apt.missing(names)
    result = {"changed": bool(missing), "installed": missing, "updated_lists": False}
    if not missing or check_mode:
        return result
    if any(candidate is None for candidate in apt.candidates(missing).values()):
        apt.update()
        result["updated_lists"] = True
        unknown = [name for name, candidate in apt.candidates(missing).items() if candidate is None]
        if unknown:
            raise AptError(f"apt offers no {', '.join(unknown)} even after apt-get update: "
                           "no mirror is reachable, or its suites do not carry them")
    apt.install(missing)
    return result
