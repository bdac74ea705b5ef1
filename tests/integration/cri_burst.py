# SPDX-License-Identifier: Apache-2.0
"""Run on a node with the CRI client's venv: many probe pods at once, then count what is left.

    PYTHONPATH=DIR python cri_burst.py --count 20 --socket SOCK --probe-image REF --timeout S

DIR holds the verify role's module_utils (and the probe's catalogue) as
ansible_collections/k3s_gvisor/node/plugins/module_utils/*.py: each pod is the verify role's own PodSandboxCheck
(RunPodSandbox, READY, the probe container, its log, stop and remove), so
this is the same CRI client as the verify stage, only many of it in threads
that start together. Prints one JSON object: each pod's result, and the
node's counts (see count_node) before the burst, at their peak during it,
and after it has settled.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from ansible_collections.k3s_gvisor.node.plugins.module_utils.cri_pod_sandbox import CheckSettings, PodSandboxCheck
from cri_api.v1 import api_pb2, api_pb2_grpc
from node_counts import processes

RUNC_ROOT = "/run/containerd/runc/k8s.io"
# Where containerd mounts: its tasks' rootfs and state, and its snapshotters' directories.
MOUNT_ROOTS = ("/run/containerd/", "/var/lib/containerd/")
SETTLE_SECONDS = 60


def count_node(stub) -> dict:
    """What a pod can leave behind, counted on the node."""
    procs = processes()
    with open("/proc/self/mountinfo", encoding="utf-8") as stream:
        mount_points = [line.split()[4] for line in stream]
    return {
        "cri_sandboxes": len(stub.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=60).items),
        "cri_containers": len(stub.ListContainers(api_pb2.ListContainersRequest(), timeout=60).containers),
        "runc_state_dirs": len(glob.glob(os.path.join(RUNC_ROOT, "*"))),
        "containerd_mounts": sum(point.startswith(MOUNT_ROOTS) for point in mount_points),
        # Every cgroup directory of every controller: a pod's, wherever runc puts it, adds some.
        "cgroup_dirs": sum(len(dirs) for _, dirs, _ in os.walk("/sys/fs/cgroup")),
        "live_shims": sum(comm.startswith("containerd-shim") and state != "Z" for comm, state in procs),
        "zombies": sum(state == "Z" for _, state in procs),
        "live_processes": sum(state != "Z" for _, state in procs),
        "pod_log_dirs": len(glob.glob("/var/log/pods/*")),
    }


def settle(stub, before: dict) -> tuple[dict, float]:
    """Counts once they equal BEFORE (shims exit after their sandbox is removed), or at the deadline."""
    started = time.monotonic()
    while True:
        after = count_node(stub)
        if after == before or time.monotonic() - started > SETTLE_SECONDS:
            return after, round(time.monotonic() - started, 1)
        time.sleep(1)


class PeakCounter(threading.Thread):
    """Counts the node every second while the burst runs; keeps each count's highest value.

    The peaks show that the counters see pods at all, so that equal counts
    before and after mean something."""

    def __init__(self, stub):
        super().__init__(daemon=True)
        self.stub = stub
        self.peak: dict = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for key, value in count_node(self.stub).items():
                self.peak[key] = max(value, self.peak.get(key, value))
            self.done.wait(1)

    def stop(self) -> dict:
        self.done.set()
        self.join()
        return self.peak


def burst(stub, count: int, probe_image: str, timeout: float) -> list[dict]:
    """COUNT PodSandboxChecks released together by a barrier; their results."""
    host_pid_namespace = os.readlink("/proc/self/ns/pid")
    start = threading.Barrier(count)

    def one(_index: int) -> dict:
        check = PodSandboxCheck(stub, api_pb2, CheckSettings(sandbox_image="", probe_image=probe_image, timeout=timeout),
                                host_pid_namespace=host_pid_namespace)
        start.wait()
        return check.run()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--probe-image", required=True)
    parser.add_argument("--timeout", type=float, required=True)
    args = parser.parse_args()
    with grpc.insecure_channel(f"unix://{args.socket}") as channel:
        stub = api_pb2_grpc.RuntimeServiceStub(channel)
        before = count_node(stub)
        peaks = PeakCounter(stub)
        peaks.start()
        started = time.monotonic()
        results = burst(stub, args.count, args.probe_image, args.timeout)
        seconds = round(time.monotonic() - started, 1)
        peak = peaks.stop()
        after, settled = settle(stub, before)
    print(json.dumps({"results": results, "before": before, "peak": peak, "after": after,
                      "burst_seconds": seconds, "settle_seconds": settled}))


if __name__ == "__main__":
    main()
