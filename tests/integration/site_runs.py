# SPDX-License-Identifier: Apache-2.0
"""What the tests that run the whole site.yml on a node share."""

from __future__ import annotations

import json
from pathlib import Path

PAUSE = "localhost/k3s-gvisor/pause:1"
PROBE = "localhost/k3s-gvisor/probe:1"
VENV_PYTHON = "/opt/k3s-gvisor/cri-client/bin/python"
SOCKET = "/run/containerd/containerd.sock"
VERIFY_TASK = "Run the probe pod over CRI"
# The task whose result holds the probe's facts and the decision record (the last that ran: the runtime
# stage decides again after installing a runtime the probe could not check).
DECIDE_TASK = "Decide what the host gets, and keep the record"


def prepare_for_site(node, summary_dir: Path) -> None:
    """The engine's own pause image pinned (built and imported by the engine stage, never pulled: the
    node is offline); the run summary out of the work tree."""
    node.add_host_vars(engine_sandbox_image=PAUSE, verify_summary_path=str(summary_dir / f"{node.name}.json"))


COLLECTION = "k3s_gvisor.node."


def task_name(task: dict) -> str:
    """A task's name as 'role : task' (the collection's prefix dropped) or, outside a role, 'task'."""
    name = task["task"]["name"]
    return name[len(COLLECTION):] if name.startswith(COLLECTION) else name


def changed_tasks(run) -> list[str]:
    """'play: task' for every task that reported a change on the run's host."""
    return [f"{play['play']['name']}: {task_name(task)}" for play in run.result["plays"]
            for task in play["tasks"] if task["hosts"].get(run.host, {}).get("changed")]


def failed_tasks(run) -> list[str]:
    """'task: message' for every task that failed on the run's host."""
    return [f"{task_name(task)}: {str(task['hosts'][run.host].get('msg'))[:2000]}"
            for play in run.result["plays"] for task in play["tasks"]
            if task["hosts"].get(run.host, {}).get("failed")]


def assert_verified(run) -> dict:
    """The run converged without a failure and its probe pod ran; the verify result."""
    assert run.returncode == 0, run.stderr + json.dumps(run.stats) + "\n" + "\n".join(failed_tasks(run))
    result = run.task(VERIFY_TASK)
    assert result["ok"], result.get("failure") or result
    return result
