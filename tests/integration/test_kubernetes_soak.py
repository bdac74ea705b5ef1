# SPDX-License-Identifier: Apache-2.0
"""Pod churn through Kubernetes, counted (issue 24 §1): 500 pod lifecycles
on one gVisor 20240729 node (sid image) converged by site.yml with the
kubernetes engine, driven by tests/integration/kubernetes_soak.py on the
node: a Deployment scaled 0 -> 20 -> 0 fifteen times and four Jobs of 50
completions (10 at a time).

Spread through the run, each of the kubelet, kube-apiserver, kine,
containerd, the service proxy and the kubelet's launcher (k3s-gvisor-node,
whose children containerd and the kubelet must go with it) is sent SIGKILL
twice, a few seconds into a wave (its supervisor must bring it back, alone,
and the wave go on), and the
node container is restarted once (`docker restart`): runsc keeps the root
file system in memory, so the node comes back as its image was and the
next site.yml makes a new cluster (tests/integration/test_faults.py test 4
shows the same for containerd); the waves after it run there.

Asserted: no pod is lost (every pod Kubernetes made was seen Running or
Ready), and after the last wave of each half the node holds what it held
before that half (containerd's tasks, containers and snapshots, mounts,
shims, zombies, veths, IPAM reservations, kubelet and log directories,
keyrings). Printed, for docs/RELIABILITY.md: per wave its startup p50 and
p99, pods recreated, and the datastore's size.

    scripts/test -m slow tests/integration/test_kubernetes_soak.py   # ~40 minutes
"""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from conftest import REPO
from site_runs import converge_verified, converged_kubernetes_node

pytestmark = pytest.mark.slow

SHIPPED = "/tmp/k3s-gvisor-soak"
SCRIPT = f"{SHIPPED}/kubernetes_soak.py"
DEPLOYMENT_SIZE = 20
JOB_SIZE = 50
# Seconds into a wave at which its component is killed: pods are being made.
KILL_AFTER_SECONDS = 4
WAVE_TIMEOUT = 1200
# (kind, component to SIGKILL during the wave or None); "restart" restarts the node container.
FIRST_HALF = [("deployment", "k3s-gvisor-node"), ("deployment", "kubelet"), ("job", "kube-apiserver"), ("deployment", "kine"),
              ("deployment", "containerd"), ("deployment", "service-proxy"), ("deployment", None), ("job", None)]
SECOND_HALF = [("deployment", "k3s-gvisor-node"), ("deployment", "kubelet"), ("job", "kube-apiserver"), ("deployment", "kine"),
               ("deployment", "containerd"), ("deployment", "service-proxy"), ("deployment", None), ("job", None),
               ("deployment", None), ("deployment", None), ("deployment", None)]
# What each pod adds to: the counts at a Deployment's peak must show them, so that equal counts
# before and after a half mean something.
COUNTED = ("containerd_tasks", "containerd_containers", "mounts", "live_shims", "veths", "ipam_reservations",
           "kubelet_pod_dirs", "pod_log_dirs")


def on_node(node, *args: str, timeout: float = WAVE_TIMEOUT) -> dict:
    proc = subprocess.run(["docker", "exec", node.name, "python3", SCRIPT, *args],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"kubernetes_soak.py {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return json.loads(proc.stdout)


def prepare_soak(node) -> None:
    node.ship({name: str(REPO / "tests/integration" / name) for name in ("kubernetes_soak.py", "node_counts.py")},
              SHIPPED)
    on_node(node, "setup")


def wave(node, kind: str, victim: str | None) -> dict:
    """One wave; with VICTIM, that component SIGKILLed a few seconds into it."""
    killed: dict = {}

    def kill() -> None:
        time.sleep(KILL_AFTER_SECONDS)
        try:
            killed.update(on_node(node, "kill", victim))
        except AssertionError as error:  # said by the wave's own assertion below
            killed["error"] = str(error)

    killer = threading.Thread(target=kill) if victim else None
    if killer:
        killer.start()
    report = on_node(node, kind, str(DEPLOYMENT_SIZE if kind == "deployment" else JOB_SIZE))
    if killer:
        killer.join()
        assert "error" not in killed, killed["error"]
        report["killed"] = killed
    report["kind"] = kind
    return report


def half(node, waves: list[tuple[str, str | None]]) -> dict:
    before = on_node(node, "count")
    reports = []
    for kind, victim in waves:
        reports.append(wave(node, kind, victim))
        print(f"wave {len(reports)}: " + json.dumps(reports[-1]), flush=True)
    after = on_node(node, "count", "--like", json.dumps(before))
    print("before: " + json.dumps(before) + "\nafter:  " + json.dumps(after))
    return {"waves": reports, "before": before, "after": after}


def left(half_report: dict) -> dict:
    before, after = half_report["before"], half_report["after"]
    return {key: (before[key], after[key]) for key in before
            if key not in ("datastore_bytes", "settle_seconds") and before[key] != after[key]}


@pytest.fixture(scope="module")
def soak_node(node_factory):
    node = converged_kubernetes_node(node_factory, "kubernetes-soak")
    prepare_soak(node)
    return node


# Seen 2026-12-07 (docs/RELIABILITY.md): four waves passed (0 lost) with the
# launcher, the kubelet, the apiserver and kine killed; at containerd's kill
# the engine's mount namespace lost its submounts (a gVisor 20240729
# fault), and the pods whose shims were in it could not be stopped
# (`open /dev/null: no such file or directory`). Since 2026-12-08 the next
# start ends such a namespace with its processes, so the kubelet makes those
# pods again (seen by hand); the soak has not been run with it. Strict: take
# it off once a run passes.
@pytest.mark.xfail(strict=True, reason="gVisor 20240729 drops the submounts of the engine's mount namespace after "
                   "restarts; the recovery is not yet proven by a whole soak (issue 24 §1, docs/RELIABILITY.md)")
def test_kubernetes_soak(soak_node):
    node = soak_node
    first = half(node, FIRST_HALF)
    subprocess.run(["docker", "restart", node.name], check=True, capture_output=True, timeout=300)
    started = time.monotonic()
    converge_verified(node)
    prepare_soak(node)
    print(f"after docker restart: site.yml verified a new cluster in {time.monotonic() - started:.0f} s")
    second = half(node, SECOND_HALF)
    waves = first["waves"] + second["waves"]
    assert [report for report in waves if report["lost"]] == []
    kills = [report["killed"] for report in waves if "killed" in report]
    assert sorted(kill["name"] for kill in kills) == sorted(
        2 * ["k3s-gvisor-node", "kubelet", "kube-apiserver", "kine", "containerd", "gvisor-service-proxy"])
    assert all(kill["kubelets"] == kill["containerds"] == 1 for kill in kills), kills
    assert left(first) == {} and left(second) == {}, (left(first), left(second))
    assert all(report["pods"] >= report["size"] for report in waves)
    peak = first["waves"][0]["at_peak"]
    assert [key for key in COUNTED if peak[key] < first["before"][key] + DEPLOYMENT_SIZE] == [], (peak, first["before"])
