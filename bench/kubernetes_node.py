# SPDX-License-Identifier: Apache-2.0
"""bench/kubernetes's node side: pod startup latency through Kubernetes, one
JSON line per pod on stdout.

    python3 kubernetes_node.py serial N | burst N   (on a kubernetes-engine server)

serial: N pods created one after another, each waited for until Ready.
burst: N pods created by one `kubectl apply`, all waited for.
Latency: from just before `kubectl apply` to the first poll that sees the
pod's Ready condition True (polled every 0.1 s with the admin kubeconfig;
the API's own timestamps have a resolution of one second). The pods run the
verify stage's probe image (sleep), placed on this node by its name; they
are deleted (and waited for) before the script exits. Standard library only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

KUBECTL = ["/usr/local/bin/kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf"]
IMAGE = "localhost/k3s-gvisor/probe:1"
LABEL = "k3s-gvisor-bench"
POLL_SECONDS = 0.1
TIMEOUT_SECONDS = 300


def kubectl(*args: str, stdin: str | None = None) -> str:
    return subprocess.run([*KUBECTL, *args], input=stdin, capture_output=True, text=True, check=True).stdout


def pod(name: str, node: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": LABEL}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "sleep", "image": IMAGE, "imagePullPolicy": "Never",
                                     "command": ["/bin/sleep", "2147483647"]}]}}


def ready_pods() -> set[str]:
    items = json.loads(kubectl("get", "pods", "-l", f"app={LABEL}", "-o", "json"))["items"]
    return {item["metadata"]["name"] for item in items
            if any(c["type"] == "Ready" and c["status"] == "True" for c in item.get("status", {}).get("conditions", []))}


def start(names: list[str], node: str) -> dict[str, float]:
    """Apply the pods at once; {name: seconds to Ready}."""
    document = {"apiVersion": "v1", "kind": "List", "items": [pod(name, node) for name in names]}
    started = time.monotonic()
    kubectl("apply", "-f", "-", stdin=json.dumps(document))
    latencies: dict[str, float] = {}
    while len(latencies) < len(names):
        if time.monotonic() - started > TIMEOUT_SECONDS:
            raise SystemExit(f"not Ready within {TIMEOUT_SECONDS} s: {sorted(set(names) - set(latencies))}")
        now = time.monotonic()
        # Earlier waves' pods are still there (serial mode): only this wave's count.
        for name in (ready_pods() & set(names)) - set(latencies):
            latencies[name] = now - started
        time.sleep(POLL_SECONDS)
    return latencies


def main(mode: str, count: int) -> None:
    node = os.uname().nodename.lower()
    run = f"{mode}-{int(time.time())}"
    names = [f"{LABEL}-{run}-{i}" for i in range(count)]
    try:
        waves = [[name] for name in names] if mode == "serial" else [names]
        for wave in waves:
            for name, seconds in start(wave, node).items():
                print(json.dumps({"mode": mode, "pod": name, "seconds": round(seconds, 3)}), flush=True)
    finally:
        kubectl("delete", "pods", "-l", f"app={LABEL}", "--wait=true", "--ignore-not-found")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
