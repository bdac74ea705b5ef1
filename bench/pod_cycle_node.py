# SPDX-License-Identifier: Apache-2.0
"""bench/pod_cycle's node side: N probe-pod cycles per runtime handler over CRI,
interleaved (A, B, A, B, ...), one JSON line per cycle on stdout.

Run on the node with the verify role's CRI client venv, with the verify
module_utils importable under the collection's names (bench/pod_cycle ships them):

    python pod_cycle_node.py --cycles N --handler runc-gvisor --handler runc-stock

Each cycle is the verify role's check (PodSandboxCheck): RunPodSandbox ->
SANDBOX_READY -> CreateContainer + StartContainer of the probe -> exit ->
read its log -> stop and remove (the "cleanup" step), timed step by step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import grpc
from cri_api.v1 import api_pb2, api_pb2_grpc

from ansible_collections.k3s_gvisor.node.plugins.module_utils.cri_pod_sandbox import CheckSettings, PodSandboxCheck


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", default="/run/containerd/containerd.sock")
    parser.add_argument("--sandbox-image", default="localhost/k3s-gvisor/pause:1")
    parser.add_argument("--probe-image", default="localhost/k3s-gvisor/probe:1")
    parser.add_argument("--handler", action="append", required=True, help="runtime handler (repeat: interleaved)")
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=1, help="untimed cycles per handler first")
    args = parser.parse_args()
    host_pid_namespace = os.readlink("/proc/self/ns/pid")
    with grpc.insecure_channel(f"unix://{args.socket}") as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        stub = api_pb2_grpc.RuntimeServiceStub(channel)
        for cycle in range(-args.warmup, args.cycles):
            for handler in args.handler:
                settings = CheckSettings(sandbox_image=args.sandbox_image, probe_image=args.probe_image,
                                         runtime_handler=handler)
                result = PodSandboxCheck(stub, api_pb2, settings, host_pid_namespace).run()
                record = {"cycle": cycle, "handler": handler, "ok": result["ok"],
                          "timings": result["timings"], "total": result["total_seconds"],
                          "failure": result["failure"], "cleanup_errors": result["cleanup_errors"]}
                print(json.dumps(record), flush=True)
                if not result["ok"]:
                    return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
