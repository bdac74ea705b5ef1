# SPDX-License-Identifier: Apache-2.0
"""The real runc-gvisor binary, a fake runc behind it, and a fresh directory
per case. The fake runc only records the argv it gets, so the tests here see
the wrapper's own behaviour, not runc's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WRAPPER_SRC = REPO / "roles" / "runc_gvisor" / "files" / "wrapper"
NOBODY = 65534
# Records its argv, NUL-separated, where the case says.
FAKE_RUNC = '#!/bin/sh\nprintf "%s\\0" "$@" > "$FAKE_RUNC_RECORD"\n'
# Wrapper processes run this session: the count the issue asks for.
CASES_RUN = [0]


@dataclass
class Outcome:
    returncode: int
    stdout: bytes
    stderr: str
    runc_argv: list[str] | None  # None: the fake runc was not called
    log: str  # the --log file's content, when the case gave one


@dataclass
class World:
    root: Path
    wrapper: Path
    fake_runc: Path

    def case_dir(self) -> Path:
        """A fresh world-writable directory for one case (some run as nobody)."""
        case = Path(tempfile.mkdtemp(prefix="case-", dir=self.root))
        case.chmod(0o777)
        return case

    def run(self, case: Path, argv: list[str], adaptations: list[str], cwd: Path | None = None,
            as_nobody: bool = False) -> Outcome:
        profile = case / "profile.json"
        profile.write_text(json.dumps({"runc": str(self.fake_runc), "adaptations": adaptations}))
        profile.chmod(0o644)
        record = case / "runc-argv"
        env = {"PATH": "/usr/bin:/bin", "RUNC_GVISOR_PROFILE": str(profile), "FAKE_RUNC_RECORD": str(record)}
        CASES_RUN[0] += 1
        proc = subprocess.run([str(self.wrapper), *argv], cwd=cwd or case, env=env, capture_output=True,
                              timeout=20, preexec_fn=drop_to_nobody if as_nobody else None)
        runc_argv = record.read_bytes().split(b"\0")[:-1] if record.exists() else None
        log = case / "runc.log"
        return Outcome(proc.returncode, proc.stdout, proc.stderr.decode(errors="replace"),
                       [a.decode() for a in runc_argv] if runc_argv is not None else None,
                       log.read_text(errors="replace") if log.exists() else "")


def drop_to_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


@pytest.fixture(scope="session")
def world():
    """The wrapper built once, as the role builds it (static, offline)."""
    if shutil.which("go") is None:
        pytest.fail("go is not installed: scripts/bootstrap installs it (golang-go)")
    root = Path(tempfile.mkdtemp(prefix="runc-gvisor-property-"))
    root.chmod(0o755)
    wrapper = root / "runc-gvisor"
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod", GOPROXY="off", GOTOOLCHAIN="local")
    subprocess.run(["go", "build", "-trimpath", "-buildvcs=false", "-o", str(wrapper), "."],
                   cwd=WRAPPER_SRC, env=env, check=True, capture_output=True)
    fake = root / "fake-runc"
    fake.write_text(FAKE_RUNC)
    fake.chmod(0o755)
    yield World(root, wrapper, fake)
    shutil.rmtree(root, ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
    if CASES_RUN[0]:
        terminalreporter.write_line(f"runc-gvisor bad-input cases run (wrapper processes): {CASES_RUN[0]}")
