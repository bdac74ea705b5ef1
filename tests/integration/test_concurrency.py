# SPDX-License-Identifier: Apache-2.0
"""Twenty pod sandboxes at once on one gVisor 20240729 node, through the full
stack: CRI -> containerd 2.1.9 -> runc-gvisor -> the runtime the probe's
decision record chose, crun 1.28 (sid image, container_engine=containerd,
converged by site.yml), and again with the patched runc 1.3.6 forced
(runc_gvisor_runtime=runc-patched: 0002 0003 0005).

tests/integration/cri_burst.py runs on the node with the CRI client's venv
and the verify role's own PodSandboxCheck, twenty of them released together:
each makes a sandbox, waits for READY, runs the probe container in it, reads
its log and removes both. Every sandbox must reach READY, every probe run
and every pod be removed without an error, and afterwards the node must
hold exactly what it held before. (One pod of twenty used to fail with
"cannot start a stopped process": runc init died of an EINTR gVisor returns
from a blocking FIFO open (B11); runc patch 0005 retries it, crun's init
takes no signals while it waits, see docs/RELIABILITY.md.) Counted (cri_burst.count_node): CRI
sandboxes and containers; runc state directories under containerd's runc
root for k8s.io; mountinfo lines under /run/containerd and
/var/lib/containerd (task rootfs, snapshotter directories); cgroup
directories of every controller; live containerd-shim processes; zombie
processes (state Z); live processes; pod log directories.

The node's PID 1 is `sleep infinity`, which reaps nothing: the shims that
twenty pods leave are reaped by the engine's supervisor (child subreaper),
or they would be counted as zombies.
"""

from __future__ import annotations

import json
import statistics
import subprocess

import pytest

from site_runs import DECIDE_TASK, PROBE, SHIPPED, SOCKET, VENV_PYTHON, assert_verified, prepare_for_site, ship_burst

# Slow (a fresh converge or more per test): run by `scripts/test -m slow tests/integration`, not by CI.
pytestmark = pytest.mark.slow

PODS = 20
# Seconds each CRI call and wait may take with twenty pods on two shared cores.
CALL_TIMEOUT = 300
BURST_TIMEOUT = 1200


# The runtime behind runc-gvisor: the record's own choice on sid, and the patched runc forced.
RUNTIMES = {"crun": (), "runc-patched": ("-e", "runc_gvisor_runtime=runc-patched")}


@pytest.fixture(scope="module", params=sorted(RUNTIMES))
def burst(request, node_factory, tmp_path_factory):
    node = node_factory(f"conc-sid-{request.param}", image="sid")
    prepare_for_site(node, tmp_path_factory.mktemp("summary"))
    run = node.playbook("site.yml", *RUNTIMES[request.param])
    assert_verified(run)
    runtime = run.task(DECIDE_TASK)["ansible_facts"]["gvisor"]["decisions"]["runtime"]
    assert runtime["value"] == request.param, runtime
    ship_burst(node)
    try:
        proc = subprocess.run(
            ["docker", "exec", "-e", f"PYTHONPATH={SHIPPED}", node.name, VENV_PYTHON, f"{SHIPPED}/cri_burst.py",
             "--count", str(PODS), "--socket", SOCKET, "--probe-image", PROBE, "--timeout", str(CALL_TIMEOUT)],
            capture_output=True, text=True, timeout=BURST_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc = None
    # Seen under load (docs/RELIABILITY.md): the node's processes lose their root file system.
    assert node.exec("/bin/true").returncode == 0, "the node lost its root file system during the burst"
    assert proc is not None, f"the burst did not end within {BURST_TIMEOUT} s"
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    totals = [result["total_seconds"] for result in report["results"]]
    print(f"\n{request.param}: {PODS} pods at once: burst {report['burst_seconds']} s, per pod median {statistics.median(totals)} s, "
          f"max {max(totals)} s; settled in {report['settle_seconds']} s\nbefore {report['before']}\n"
          f"peak   {report['peak']}\nafter  {report['after']}")
    return node, report


def test_the_premise_pid_1_reaps_nothing(burst):
    node, _ = burst
    assert node.exec("cat", "/proc/1/comm").stdout.strip() == "sleep"


def test_every_pod_was_removed(burst):
    _, report = burst
    results = report["results"]
    assert len(results) == PODS and len({result["run_id"] for result in results}) == PODS
    assert [result["cleanup_errors"] for result in results] == [[]] * PODS


def test_every_sandbox_was_ready_and_every_probe_ran(burst):
    _, report = burst
    failures = [(result["run_id"], result["failure"]) for result in report["results"] if not result["ok"]]
    assert not failures, failures
    assert all(result["sandbox_state"] == "SANDBOX_READY" and result["marker_found"] for result in report["results"])


def test_the_counters_saw_the_pods(burst):
    """Equal counts before and after mean something only if the counters move while pods run."""
    _, report = burst
    before, peak = report["before"], report["peak"]
    for key in ("cri_sandboxes", "runc_state_dirs", "live_shims", "cgroup_dirs", "live_processes"):
        assert peak[key] > before[key], (key, before, peak)


def test_nothing_is_left_behind(burst):
    _, report = burst
    assert report["after"] == report["before"]


def test_no_shim_and_no_zombie_remains(burst):
    _, report = burst
    assert report["after"]["live_shims"] == 0
    assert report["after"]["zombies"] == 0
    assert report["after"]["cri_sandboxes"] == 0 and report["after"]["runc_state_dirs"] == 0
