# SPDX-License-Identifier: Apache-2.0
"""The containerd engine on real gVisor nodes (sid: containerd 2.1.9; trixie: 1.7.24).

Converged by site.yml's probe, runtime and engine stages: containerd runs under
k3s-gvisor-supervise (the nodes' PID 1 is `sleep infinity`), serves CRI, and
runs pods through runc-gvisor by default. Then the daemon is killed, a second
converge must change nothing, and reset must leave the node as it was.
"""

from __future__ import annotations

import json
import time
import tomllib

import pytest

STAGES = ("--tags", "probe,runtime,engine")
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
INSTALLED = ["/usr/local/bin/runc-gvisor", "/usr/local/lib/runc-gvisor", "/etc/runc-gvisor",
             "/usr/local/bin/k3s-gvisor-supervise", "/run/k3s-gvisor", "/var/log/k3s-gvisor",
             CONTAINERD_CONFIG + ".k3s-gvisor-orig", CONTAINERD_CONFIG + ".k3s-gvisor-absent"]


def config_before(node) -> str | None:
    result = node.exec("cat", CONTAINERD_CONFIG)
    return result.stdout if result.returncode == 0 else None


@pytest.fixture(scope="module", params=["sid", "trixie"])
def engine_node(request, node_factory):
    node = node_factory(f"engine-{request.param}", image=request.param)
    original = config_before(node)
    run = node.playbook("site.yml", *STAGES)
    assert run.returncode == 0, run.stderr + str(run.result.get("stats"))
    return node, original


def supervisor_state(node) -> tuple[int, dict]:
    result = node.exec("/usr/local/bin/k3s-gvisor-supervise", "status", "containerd")
    return result.returncode, json.loads(result.stdout or "{}")


def cri_plugin_status(node) -> list[str]:
    lines = node.exec("ctr", "plugins", "ls").stdout.splitlines()
    return [line for line in lines if line.startswith(("io.containerd.grpc.v1", "io.containerd.cri.v1"))
            and (" cri " in line or " runtime " in line)]


def test_containerd_runs_under_the_supervisor(engine_node):
    node, _ = engine_node
    code, state = supervisor_state(node)
    assert code == 0, state
    assert state["command"][0] == "containerd"
    assert node.exec("test", "-d", f"/proc/{state['daemon_pid']}").returncode == 0


def test_cri_plugin_is_loaded(engine_node):
    node, _ = engine_node
    statuses = cri_plugin_status(node)
    assert statuses and all(line.split()[-1] == "ok" for line in statuses), statuses


def test_runc_gvisor_is_the_default_runtime(engine_node):
    node, _ = engine_node
    dump = tomllib.loads(node.exec("containerd", "config", "dump").stdout)
    plugins = dump["plugins"]
    if dump["version"] >= 3:
        cri = plugins["io.containerd.cri.v1.runtime"]["containerd"]
        snapshotter = plugins["io.containerd.cri.v1.images"]["snapshotter"]
    else:
        cri = plugins["io.containerd.grpc.v1.cri"]["containerd"]
        snapshotter = cri["snapshotter"]
    assert cri["default_runtime_name"] == "runc-gvisor"
    runtime = cri["runtimes"]["runc-gvisor"]
    assert runtime["runtime_type"] == "io.containerd.runc.v2"
    assert runtime["options"]["BinaryName"] == "/usr/local/bin/runc-gvisor"
    assert runtime["options"]["NoNewKeyring"] is True
    assert runtime["options"]["SystemdCgroup"] is False
    assert snapshotter == "native"  # B7 on gVisor


def test_killed_containerd_comes_back(engine_node):
    node, _ = engine_node
    _, before = supervisor_state(node)
    assert node.exec("kill", "-9", str(before["daemon_pid"])).returncode == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        code, after = supervisor_state(node)
        if code == 0 and after["daemon_pid"] != before["daemon_pid"] and cri_plugin_status(node):
            break
        time.sleep(1)
    assert after["daemon_pid"] != before["daemon_pid"]
    assert after["restarts"] == before["restarts"] + 1
    assert all(line.split()[-1] == "ok" for line in cri_plugin_status(node))


def test_second_converge_changes_nothing(engine_node):
    node, _ = engine_node
    run = node.playbook("site.yml", *STAGES)
    assert run.returncode == 0, run.stderr
    assert run.stats["changed"] == 0, [
        task["task"]["name"] for play in run.result["plays"] for task in play["tasks"]
        if task["hosts"].get(node.name, {}).get("changed")]


def test_check_mode_on_a_converged_node_reports_nothing_to_do(engine_node):
    node, _ = engine_node
    run = node.playbook("site.yml", *STAGES, "--check", "--diff")
    assert run.returncode == 0, run.stderr
    assert run.stats["changed"] == 0


def test_check_mode_on_a_fresh_node_changes_nothing(node_factory):
    node = node_factory("engine-check")
    before = {path: node.exec("test", "-e", path).returncode for path in INSTALLED}
    original = config_before(node)
    run = node.playbook("site.yml", *STAGES, "--check", "--diff")
    assert run.returncode == 0, run.stderr + str(run.stats)
    assert run.stats["changed"] > 0  # it says what it would do
    assert {path: node.exec("test", "-e", path).returncode for path in INSTALLED} == before
    assert config_before(node) == original


def test_reset_leaves_no_trace(engine_node):
    """Runs last in the module: it undoes the converge."""
    node, original = engine_node
    first = node.playbook("playbooks/reset.yml")
    assert first.returncode == 0, first.stderr
    for path in INSTALLED:
        assert node.exec("test", "-e", path).returncode != 0, f"{path} is left"
    assert config_before(node) == original
    assert "containerd" not in node.exec("ps", "-eo", "comm").stdout.split()
    again = node.playbook("playbooks/reset.yml")
    assert again.returncode == 0 and again.stats["changed"] == 0
