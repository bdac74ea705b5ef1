# SPDX-License-Identifier: Apache-2.0
"""Run on a node with the CRI client's venv: hundreds of pod lifecycles in waves, counted.

    PYTHONPATH=DIR python cri_soak.py --waves 1x100,5x40,20x10 --socket SOCK \\
        --probe-image REF --ipam-dir DIR --timeout S [--resident N --kill-engine-after-wave W]

Each lifecycle is the verify role's own PodSandboxCheck on the pod network
(RunPodSandbox with its own network namespace, so a veth and an address
from host-local; READY; the probe container; its log; stop and remove).
A wave of width K releases K of them together; the next wave starts when
all K have ended. Prints one JSON object: per step, the failures, p50 and
p99 seconds; teardown's retries and errors; the failed lifecycles whole; and
the node's counts (cri_burst.count_node, plus veths and IPAM reservations)
before, at their peak, and after the soak has settled.

With --resident N, N pods whose container sleeps are started first and
stay through the soak. With --kill-engine-after-wave W, the engine's daemon
is sent SIGKILL after wave W (the resident pods running): the supervisor
must bring it back, the CRI answer again, the resident pods be READY and
RUNNING again in the restarted engine, and the waves after it fail nothing.
The resident pods are removed before the last count.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from ansible_collections.k3s_gvisor.node.plugins.module_utils.cri_pod_sandbox import (
    CheckSettings,
    PodSandboxCheck,
    remove_pods,
)
from cri_api.v1 import api_pb2, api_pb2_grpc
from cri_burst import PeakCounter, count_node
from node_counts import host_veths, percentile

SUPERVISE = "/usr/local/bin/k3s-gvisor-supervise"
SETTLE_SECONDS = 90
# Seconds the engine may take to come back after SIGKILL (the supervisor backs off 1 s first).
ENGINE_BACK_SECONDS = 120


def parse_waves(text: str) -> list[int]:
    """'1x100,5x40' -> the width of every wave in order: [1]*100 + [5]*40."""
    widths = []
    for part in text.split(","):
        width, _, count = part.partition("x")
        widths += [int(width)] * int(count)
    return widths


def count_soak(stub, ipam_dir: str) -> dict:
    """count_node, plus what the pod network adds per pod: veths and address reservations."""
    reservations = [path for path in glob.glob(os.path.join(ipam_dir, "*"))
                    if not os.path.basename(path).startswith(("last_reserved_ip", "lock"))]
    return dict(count_node(stub), veths=host_veths(), ipam_reservations=len(reservations))


def summarize(results: list[dict]) -> dict:
    """Per step: how many ran, failed, and their p50/p99 seconds."""
    steps: dict = {}
    for result in results:
        failed_step = (result["failure"] or {}).get("step")
        for step, seconds in result["timings"].items():
            entry = steps.setdefault(step, {"ran": 0, "failed": 0, "seconds": []})
            entry["ran"] += 1
            entry["failed"] += step == failed_step
            entry["seconds"].append(seconds)
        steps.setdefault("cleanup", {"ran": 0, "failed": 0, "seconds": []})["failed"] += bool(result["cleanup_errors"])
    return {step: {"ran": entry["ran"], "failed": entry["failed"], "p50": percentile(entry["seconds"], 0.5),
                   "p99": percentile(entry["seconds"], 0.99)} for step, entry in steps.items()}


class Resident:
    """Pods whose container sleeps through the soak: what an engine restart must keep."""

    def __init__(self, stub, probe_image: str, count: int, timeout: float):
        self.stub, self.timeout = stub, timeout
        settings = [CheckSettings(sandbox_image="", probe_image=probe_image, network="pod", timeout=timeout)
                    for _ in range(count)]
        # The check's sandbox and container messages; its probe steps are not run.
        self.checks = [PodSandboxCheck(stub, api_pb2, each, host_pid_namespace="") for each in settings]
        self.container_ids: list[str] = []

    def start(self) -> None:
        for check in self.checks:
            os.makedirs(check.settings.log_directory, mode=0o755, exist_ok=True)
            check.run_pod_sandbox()
            check.sandbox_ready()
            config = check.container_config()
            config.command[:] = ["/bin/sleep", "86400"]
            request = api_pb2.CreateContainerRequest(pod_sandbox_id=check.sandbox_id, config=config,
                                                     sandbox_config=check.sandbox_config())
            container_id = self.stub.CreateContainer(request, timeout=self.timeout).container_id
            self.stub.StartContainer(api_pb2.StartContainerRequest(container_id=container_id), timeout=self.timeout)
            self.container_ids.append(container_id)

    def states(self) -> list[list[str]]:
        """[sandbox state, container state] of each resident pod, as the engine reports them now."""
        found = []
        for check, container_id in zip(self.checks, self.container_ids):
            sandbox = self.stub.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=check.sandbox_id),
                                                 timeout=self.timeout).status
            container = self.stub.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=container_id),
                                                  timeout=self.timeout).status
            found.append([api_pb2.PodSandboxState.Name(sandbox.state), api_pb2.ContainerState.Name(container.state)])
        return found

    def remove(self) -> list[str]:
        """Stop and remove them; [errors, then each retry]."""
        retries: list[str] = []
        sandboxes = {check.sandbox_id for check in self.checks if check.sandbox_id}
        errors = remove_pods(self.stub, api_pb2, set(self.container_ids), sandboxes, self.timeout, retries)
        for check in self.checks:
            check._remove_log_directory(errors)  # noqa: SLF001 - the check's own log layout
        return errors + [f"retried: {retry}" for retry in retries]


def kill_engine(stub, engine: str) -> dict:
    """SIGKILL the supervised daemon; wait until its supervisor has it running and the CRI answers."""
    state = json.loads(subprocess.run([SUPERVISE, "status", engine], capture_output=True, text=True).stdout)
    os.kill(state["daemon_pid"], signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() - killed < ENGINE_BACK_SECONDS:
        time.sleep(1)
        now = json.loads(subprocess.run([SUPERVISE, "status", engine], capture_output=True, text=True).stdout)
        if now.get("running") and now.get("daemon_pid") != state["daemon_pid"]:
            try:
                stub.Version(api_pb2.VersionRequest(), timeout=10)
            except grpc.RpcError:
                continue
            return {"killed_pid": state["daemon_pid"], "new_pid": now["daemon_pid"],
                    "back_seconds": round(time.monotonic() - killed, 1), "restarts": now.get("restarts")}
    raise RuntimeError(f"{engine} did not come back within {ENGINE_BACK_SECONDS} s of SIGKILL")


def wave(stub, width: int, probe_image: str, timeout: float) -> list[dict]:
    """WIDTH lifecycles released together by a barrier; their results."""
    start = threading.Barrier(width)
    host_pid_namespace = os.readlink("/proc/self/ns/pid")

    def one(_index: int) -> dict:
        check = PodSandboxCheck(stub, api_pb2, CheckSettings(sandbox_image="", probe_image=probe_image,
                                                             network="pod", timeout=timeout),
                                host_pid_namespace=host_pid_namespace)
        start.wait()
        return check.run()

    with ThreadPoolExecutor(max_workers=width) as pool:
        return list(pool.map(one, range(width)))


def settle(stub, ipam_dir: str, before: dict) -> tuple[dict, float]:
    """Counts once they equal BEFORE (shims exit after their sandbox is removed), or at the deadline."""
    started = time.monotonic()
    while True:
        after = count_soak(stub, ipam_dir)
        if after == before or time.monotonic() - started > SETTLE_SECONDS:
            return after, round(time.monotonic() - started, 1)
        time.sleep(1)


class SoakPeaks(PeakCounter):
    """cri_burst's peak counter with the pod network's counts too."""

    def __init__(self, stub, ipam_dir: str):
        super().__init__(stub)
        self.ipam_dir = ipam_dir

    def run(self) -> None:
        while not self.done.is_set():
            try:
                counts = count_soak(self.stub, self.ipam_dir)
            except grpc.RpcError:  # the engine killed on purpose: count again in a second
                counts = {}
            for key, value in counts.items():
                self.peak[key] = max(value, self.peak.get(key, value))
            self.done.wait(1)


def soak(stub, args) -> dict:
    widths = parse_waves(args.waves)
    resident = Resident(stub, args.probe_image, args.resident, args.timeout)
    report: dict = {"waves": args.waves, "lifecycles": sum(widths)}
    resident.start()
    results: list[dict] = []
    started = time.monotonic()
    for index, width in enumerate(widths):
        results += wave(stub, width, args.probe_image, args.timeout)
        if index == args.kill_engine_after_wave:
            report["engine_kill"] = dict(kill_engine(stub, args.engine), after_wave=index, resident_before=resident.states())
    report["soak_seconds"] = round(time.monotonic() - started, 1)
    report["resident"] = resident.states()
    report["resident_cleanup_errors"] = resident.remove()
    report["steps"] = summarize(results)
    report["failed"] = [result for result in results if result["failure"] or result["cleanup_errors"]]
    report["cleanup_retries"] = [retry for result in results for retry in result["cleanup_retries"]]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waves", required=True, help="WIDTHxCOUNT,...")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--probe-image", required=True)
    parser.add_argument("--ipam-dir", required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--resident", type=int, default=0)
    parser.add_argument("--kill-engine-after-wave", type=int, default=-1)
    parser.add_argument("--engine", default="containerd", help="the supervised daemon's name")
    args = parser.parse_args()
    with grpc.insecure_channel(f"unix://{args.socket}") as channel:
        stub = api_pb2_grpc.RuntimeServiceStub(channel)
        before = count_soak(stub, args.ipam_dir)
        peaks = SoakPeaks(stub, args.ipam_dir)
        peaks.start()
        report = soak(stub, args)
        report["peak"] = peaks.stop()
        report["before"] = before
        report["after"], report["settle_seconds"] = settle(stub, args.ipam_dir, before)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
