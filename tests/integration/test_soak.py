# SPDX-License-Identifier: Apache-2.0
"""Pod churn, counted: 500 pod lifecycles through CRI on one gVisor 20240729
node (sid image, container_engine=containerd, the runtime the record chose,
converged by site.yml), each on the pod network, in waves of 1, 5 and 20 at
once (tests/integration/cri_soak.py; docs/RELIABILITY.md).

test_soak: no step of any lifecycle fails, teardown fails nothing, and once
settled the node holds what it held before (CRI sandboxes and containers,
runtime state, mounts, cgroups, shims, zombies, processes, pod logs, veths,
IPAM reservations); the peaks show the counters saw the pods.

test_soak_engine_killed: the same with three resident pods running and
containerd sent SIGKILL half-way: its supervisor brings it back, the
resident pods are READY and RUNNING in the restarted engine, the waves
after it fail nothing, and nothing is left.

The k3s half of the soak (a Deployment scaled 0 -> 20 -> 0, a Job of 50)
waits for k3s itself (issue 14: the module proxy refuses its source).

    scripts/test -m slow tests/integration/test_soak.py   # ~25 minutes
"""

from __future__ import annotations

import json
import subprocess

import pytest

from site_runs import PROBE, SHIPPED, SOCKET, VENV_PYTHON, assert_verified, prepare_for_site, ship_burst

pytestmark = pytest.mark.slow

WAVES = "1x100,5x40,20x10"
LIFECYCLES = 500
CALL_TIMEOUT = 300
# host-local's reservations for the engine's pod network (engine_cni_ipam_dir).
IPAM_DIR = "/var/lib/cni/networks/k3s-gvisor"
SOAK_TIMEOUT = 3600
# What one pod adds to each count: the peaks must show every counter saw pods.
COUNTED = ("cri_sandboxes", "cri_containers", "containerd_mounts", "live_shims", "pod_log_dirs", "veths",
           "ipam_reservations")


@pytest.fixture(scope="module")
def soak_node(node_factory, tmp_path_factory):
    node = node_factory("soak-sid", image="sid")
    prepare_for_site(node, tmp_path_factory.mktemp("summary"))
    assert_verified(node.playbook("site.yml"))
    ship_burst(node, scripts=("cri_burst.py", "cri_soak.py"))
    return node


def run_soak(node, *extra: str) -> dict:
    proc = subprocess.run(
        ["docker", "exec", "-e", f"PYTHONPATH={SHIPPED}", node.name, VENV_PYTHON, f"{SHIPPED}/cri_soak.py",
         "--waves", WAVES, "--socket", SOCKET, "--probe-image", PROBE, "--ipam-dir", IPAM_DIR,
         "--timeout", str(CALL_TIMEOUT), *extra],
        capture_output=True, text=True, timeout=SOAK_TIMEOUT)
    assert node.exec("/bin/true").returncode == 0, "the node lost its root file system during the soak"
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    print(json.dumps({key: report[key] for key in ("steps", "cleanup_retries", "soak_seconds", "settle_seconds",
                                                   "before", "peak", "after", "engine_kill") if key in report},
                     indent=1))
    return report


def assert_clean(report: dict) -> None:
    # The failures first: they say why the counts below would be short.
    assert not report["failed"], (f"{len(report['failed'])} lifecycles failed; the first and last:\n"
                                  + json.dumps(report["failed"][:3] + report["failed"][-2:], indent=1))
    assert report["lifecycles"] == LIFECYCLES
    assert report["steps"]["run_pod_sandbox"]["ran"] == LIFECYCLES
    assert report["steps"]["read_log"]["ran"] == LIFECYCLES, report["steps"]
    assert all(step["failed"] == 0 for step in report["steps"].values()), report["steps"]
    assert not report["resident_cleanup_errors"], report["resident_cleanup_errors"]
    assert report["after"] == report["before"], {key: (report["before"][key], report["after"][key])
                                                 for key in report["before"] if report["before"][key] != report["after"][key]}
    unseen = [key for key in COUNTED if report["peak"][key] <= report["before"][key]]
    assert not unseen, f"counters that never saw a pod: {unseen}"


def test_soak(soak_node):
    node = soak_node
    assert_clean(run_soak(node))


def test_soak_engine_killed(soak_node):
    node = soak_node
    # Half-way: after the 100 single waves and 20 of the 40 waves of five.
    report = run_soak(node, "--resident", "3", "--kill-engine-after-wave", "119")
    kill = report["engine_kill"]
    assert kill["new_pid"] != kill["killed_pid"]
    assert kill["resident_before"] == [["SANDBOX_READY", "CONTAINER_RUNNING"]] * 3
    assert report["resident"] == [["SANDBOX_READY", "CONTAINER_RUNNING"]] * 3, report["resident"]
    assert_clean(report)
