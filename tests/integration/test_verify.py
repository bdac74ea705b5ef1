# SPDX-License-Identifier: Apache-2.0
"""The verify stage on real gVisor nodes (sid: containerd 2.1.9, crun 1.28;
trixie: containerd 1.7.24, the patched runc 1.3.6), container_engine=containerd.

site.yml converges each node; the verify stage must report the pod sandbox
READY with every step timed, the probe's marker read, and the probe in a PID
namespace of its own. A second converge changes nothing, each stage playbook
run alone (runtime.yml, engine.yml, verify.yml: each probes first and reads
the earlier stages' results from the host) changes nothing and verify ends
READY, check mode runs no pod, and the summary JSON is written and
well-formed. On sid, a second CRI runtime handler that runs stock runc 1.3.6
(no wrapper, no patches) must give B3 with its remedy; runc forced as the
runtime stops the converge at the probe with B3's text, before anything is
installed; the patched runc forced there ends READY, pod network too. In the
success and the failure case alike, nothing is left behind; what is counted
is in LEFTOVERS_SCRIPT.
"""

from __future__ import annotations

import json
import time

import pytest

from site_runs import DECIDE_TASK, PAUSE, PROBE, SOCKET, assert_verified, changed_tasks, failed_tasks, leftovers, module

EXPECTED_RUNTIME = {"sid": "crun", "trixie": "runc-patched"}
STEPS = ["run_pod_sandbox", "sandbox_ready", "create_container", "start_container", "container_exit", "read_log", "cleanup"]

# trixie is in the slow tier: molecule's trixie scenario verifies it in CI.
@pytest.fixture(scope="module", params=["sid", pytest.param("trixie", marks=pytest.mark.slow)])
def verified(request, node_factory, tmp_path_factory):
    node = node_factory(f"verify-{request.param}", image=request.param)
    summary_path = tmp_path_factory.mktemp("summary") / "summary.json"
    # The probe pod on the node's network: the pod network's check is test_pod_network.py.
    node.add_host_vars(engine_sandbox_image=PAUSE, verify_summary_path=str(summary_path), verify_network="host")
    started = time.monotonic()
    run = node.playbook("site.yml")
    seconds = time.monotonic() - started
    assert run.returncode == 0, run.stderr + json.dumps(run.stats)
    result = run.task("Run the probe pod over CRI")
    print(f"\n{node.name}: full converge {seconds:.1f} s; verify steps {result['timings']}")
    return node, run, result, summary_path


def test_the_probe_pod_runs_and_every_step_is_timed(verified):
    _, _, result, _ = verified
    assert result["ok"] and result["failure"] is None, result["failure"]
    assert result["sandbox_state"] == "SANDBOX_READY"
    assert sorted(result["timings"]) == sorted(STEPS)
    assert all(seconds >= 0 for seconds in result["timings"].values())
    assert result["marker_found"]
    assert result["network"] == "host" and result["pid_namespace"] == "container"
    assert result["cleanup_errors"] == []


def test_the_probe_saw_its_own_pid_namespace(verified):
    node, _, result, _ = verified
    probe = result["probe"]
    assert probe["pid"] == "1" and result["own_pid_namespace"]
    assert probe["namespaces"]["pid"] != node.exec("readlink", "/proc/1/ns/pid").stdout.strip()
    assert probe["uid"] == "0" and len(probe["capeff"]) == 16


def test_the_summary_is_written_and_names_each_blockers_mitigation(verified):
    node, run, result, summary_path = verified
    summary = json.loads(summary_path.read_text())
    (host,) = summary["hosts"]
    facts = run.task(DECIDE_TASK)["ansible_facts"]["gvisor"]
    record = facts["decisions"]
    probe_blockers = [b["id"] for b in facts["blockers"]]
    assert host["host"] == node.name and host["verify_status"] == "READY"
    assert [b["id"] for b in host["blockers"]] == probe_blockers and probe_blockers
    for blocker in host["blockers"]:
        assert blocker["mitigation"] and not blocker["mitigation"].startswith(("none", "not answered")), blocker
        assert blocker["mitigation"] == "; ".join(record["answered_by"][blocker["id"]]), blocker
    assert host["verify"]["timings"] == result["timings"]
    assert host["gvisor_release"].startswith("20240729")
    # The runtime as the record chose it and the runtime stage installed it.
    assert host["runtime"] == record["runtime"]["value"] == EXPECTED_RUNTIME[node.image]
    assert host["runtime_path"] == record["runtime"]["path"] and host["runtime_installed"] is True
    assert host["patches"] == [p["name"] for p in record["runtime"]["patches"]]
    assert host["adaptations"] == [a["value"] for a in record["wrapper_adaptations"]]
    assert host["relaxations"] == [r["value"] for r in record["relaxations"]] and host["relaxations"]
    assert "runc" not in host and "patched_runc" not in host


def test_a_second_run_leaves_nothing_behind(verified):
    node, _, _, _ = verified
    before = leftovers(node)
    assert {key: value for key, value in before.items() if key != "snapshots"} == dict.fromkeys(before.keys() - {"snapshots"}, 0)
    result = module(node, "cri_pod_sandbox", socket=SOCKET, probe_image=PROBE)
    assert result["ok"], result.get("failure") or result
    assert leftovers(node) == before


def test_a_second_converge_changes_nothing(verified):
    node, _, _, _ = verified
    run = node.playbook("site.yml")
    assert run.returncode == 0, run.stderr
    assert run.stats["changed"] == 0, changed_tasks(run)
    assert run.task("Run the probe pod over CRI")["ok"]


def test_check_mode_runs_no_pod(verified):
    node, _, _, _ = verified
    before = leftovers(node)
    run = node.playbook("site.yml", "--check")
    assert run.returncode == 0, run.stderr
    assert run.stats["changed"] == 0
    result = run.task("Run the probe pod over CRI")
    assert result["checked"] is False and "check mode" in result["msg"]
    assert leftovers(node) == before


@pytest.mark.parametrize("stage", ["runtime", "engine", "verify"])
def test_each_stage_alone_on_a_converged_node_changes_nothing(verified, stage):
    """Each stage playbook runs alone: it probes first and reads what the earlier stages made from the host."""
    node, _, _, _ = verified
    run = node.playbook(f"playbooks/{stage}.yml")
    assert run.returncode == 0, run.stderr + "\n".join(failed_tasks(run))
    assert run.stats["changed"] == 0, changed_tasks(run)
    assert run.task(DECIDE_TASK)["ansible_facts"]["gvisor"]["decisions"]["runtime"]["value"] == EXPECTED_RUNTIME[node.image]
    if stage == "verify":
        result = run.task("Run the probe pod over CRI")
        assert result["ok"] and result["sandbox_state"] == "SANDBOX_READY", result.get("failure") or result
        assert "verify on %s: READY" % node.name in run.task("Report the verify result")["msg"]


def test_stock_runc_gives_b3_and_leaves_nothing_behind(verified):
    """Last in the module: it adds a runtime handler to the engine's config."""
    node, run, _, _ = verified
    if node.image != "sid":
        pytest.skip("trixie's stock runc 1.1.15 has no procfs check (B3) and runs pods as it is")
    stock = {"engine_containerd_extra_runtimes": [{"name": "runc-stock", "binary": "/usr/bin/runc"}]}
    added = node.playbook("playbooks/engine.yml", "-e", json.dumps(stock))
    assert added.returncode == 0, added.stderr + "\n".join(failed_tasks(added))
    assert any(task.endswith(": Write containerd's config") for task in changed_tasks(added)), changed_tasks(added)
    before = leftovers(node)
    result = module(node, "cri_pod_sandbox", socket=SOCKET, probe_image=PROBE, runtime_handler="runc-stock")
    assert not result["ok"]
    failure = result["failure"]
    assert failure["blocker"] == "B3", failure
    assert failure["step"] == "run_pod_sandbox"
    assert "unsafe procfs detected: incorrect procfs root inode number" in failure["evidence"]
    assert failure["remedy"].startswith("use the patched runc")
    assert result["cleanup_errors"] == []
    assert leftovers(node) == before


# What the runtime stage would install: a converge stopped at the probe leaves none of it.
RUNTIME_INSTALLED = ["/usr/local/bin/runc-gvisor", "/usr/local/lib/runc-gvisor", "/etc/runc-gvisor",
                     "/usr/lib/cni/gvisor-bridge", "/usr/local/bin/k3s-gvisor-supervise",
                     "/etc/containerd/config.toml.k3s-gvisor-orig", "/opt/k3s-gvisor"]
B3_TEXT = "unsafe procfs detected: incorrect procfs root inode number"


@pytest.fixture(scope="module")
def forced_node(node_factory, tmp_path_factory):
    node = node_factory("verify-sid-forced", image="sid")
    node.summary_path = tmp_path_factory.mktemp("summary") / "summary.json"
    node.add_host_vars(verify_summary_path=str(node.summary_path))
    return node


def test_runc_forced_on_sid_stops_at_the_probe_naming_b3(forced_node):
    """sid's runc 1.3.6 cannot run pods in gVisor (B3): forcing it stops the host before anything is installed."""
    node = forced_node
    config = node.exec("cat", "/etc/containerd/config.toml").stdout
    run = node.playbook("site.yml", "-e", "runc_gvisor_runtime=runc")
    assert run.returncode != 0
    failed = failed_tasks(run)
    assert len(failed) == 1 and failed[0].startswith("gvisor_preflight : Stop where the decisions cannot be carried out"), failed
    message = run.task("Stop where the decisions cannot be carried out")["msg"]
    assert "runc_gvisor_runtime=runc" in message and B3_TEXT in message, message
    assert [path for path in RUNTIME_INSTALLED if node.exec("test", "-e", path).returncode == 0] == []
    assert node.exec("cat", "/etc/containerd/config.toml").stdout == config
    assert changed_tasks(run) == []
    assert node.exec("test", "-e", "/etc/k3s-gvisor/record.json").returncode == 1  # a record it stops on is not kept


@pytest.mark.slow  # a whole converge; CI has the patched runc from molecule trixie and test_runtime_matrix
def test_the_patched_runc_forced_on_sid_ends_ready_with_the_pod_network(forced_node):
    node = forced_node
    run = node.playbook("site.yml", "-e", "runc_gvisor_runtime=runc-patched")
    result = assert_verified(run)
    network = run.task("Run two pods on the pod network over CRI")
    assert result["network"] == "pod" and network["ok"], network.get("failure") or network
    record = run.task(DECIDE_TASK)["ansible_facts"]["gvisor"]["decisions"]
    assert record["runtime"]["value"] == "runc-patched"
    assert [p["name"][:4] for p in record["runtime"]["patches"]] == ["0002", "0003", "0005"]
    profile = json.loads(node.exec("cat", "/etc/runc-gvisor/profile.json").stdout)
    assert profile == {"runc": "/usr/local/lib/runc-gvisor/runc",
                       "adaptations": ["drop_cgroup_namespace", "refuse_pid_namespace_join"]}
    assert "1.3.6+k3sgvisor" in node.exec("/usr/local/lib/runc-gvisor/runc", "--version").stdout
    # The summary names it; the relaxation is the patched runc's, not crun's.
    (host,) = json.loads(node.summary_path.read_text())["hosts"]
    assert host["verify_status"] == "READY" and host["runtime"] == "runc-patched"
    assert any("patch 0002" in relaxation for relaxation in host["relaxations"]), host["relaxations"]
    assert not any(relaxation.startswith("crun") for relaxation in host["relaxations"]), host["relaxations"]

