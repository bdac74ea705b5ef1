# SPDX-License-Identifier: Apache-2.0
"""k3s-gvisor-supervise run as the engine runs it, on this machine (no root,
no namespaces): its own state, log and record directories under tmp_path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SUPERVISE = REPO / "roles/engine/files/k3s-gvisor-supervise"


def supervise(tmp_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, K3S_GVISOR_RUN_DIR=str(tmp_path / "run"), K3S_GVISOR_LOG_DIR=str(tmp_path / "log"),
               K3S_GVISOR_RECORD_DIR=str(tmp_path / "record"))
    return subprocess.run([sys.executable, str(SUPERVISE), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def test_stop_ends_although_the_daemon_leaves_a_child_running(tmp_path):
    """As a kubelet's containerd leaves the pods' shims: they outlive the daemon
    and become the supervisor's children. Stopping must not wait for them
    (seen: a kubelet restart with pods running failed after 25 s)."""
    child_pid_file = tmp_path / "child.pid"
    daemon = f"sleep 300 & echo $! > {child_pid_file}; exec sleep 300"
    started = supervise(tmp_path, "start", "daemon", "--", "sh", "-c", daemon)
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 10
    while not child_pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(child_pid_file.read_text())
    try:
        began = time.monotonic()
        stopped = supervise(tmp_path, "stop", "daemon")
        took = time.monotonic() - began
        assert stopped.returncode == 0, stopped.stderr
        assert took < 10, f"stop took {took:.1f} s"
        assert supervise(tmp_path, "status", "daemon").returncode == 3  # not supervised any more
    finally:
        os.kill(child, signal.SIGKILL)
