# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0
"""Two pods on the engine's pod network over CRI, TCP between them and from the node.

PodNetworkCheck runs two pod sandboxes (network: POD, so the engine's CNI
gives each its own IP), checks that the IPs are distinct and inside the
node's pod range, starts a TCP server in one (busybox nc from the probe
image, answering this run's marker to every connection), has a container in
the other connect to the server's pod IP and print what it read, then
connects from the node to the same pod IP. Everything is removed as the
probe pod check removes it (by this run's label, cri_pod_sandbox.py), and
what a pod leaves on the node when its CNI DEL goes wrong is looked for:
the host ends of veths (links that appeared during the run, the bridge
excepted) and host-local's reservation files for the two IPs.

Pure parts (scripts, IP checks, leftovers) are functions unit-tested in
tests/unit/test_cri_pod_network.py; the CRI and socket parts are passed in.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from dataclasses import dataclass

from ansible_collections.k3s_gvisor.node.plugins.module_utils.cri_pod_sandbox import (CheckSettings, PodSandboxCheck, StepFailed, diagnose, error_text,
                                                   read_cri_log, shown_ending)

PODS = ("server", "client")
STEPS = ("run_pod_sandboxes", "pod_ips", "start_server", "pod_to_pod", "node_to_pod", "cleanup", "leftovers")
BUSYBOX = "/bin/busybox"
REPLY_PREFIX = "reply="


@dataclass
class NetworkSettings(CheckSettings):
    """CheckSettings plus the pod network to expect."""

    network: str = "pod"
    pod_cidr: str = "10.42.0.0/24"
    bridge: str = "gvbr0"
    ipam_dir: str = "/var/lib/cni/networks/k3s-gvisor"
    port: int = 8080


def server_command(port: int, reply: str) -> list[str]:
    """Serve `reply` to every TCP connection on `port`: busybox nc, persistent (-ll), runs `echo` per connection.

    nc itself is the container's process: a shell loop around a one-shot nc was
    seen (gVisor 20240729, containerd 2.1.9) to exit and leave its nc behind,
    which then kept StopContainer waiting.
    """
    return [BUSYBOX, "nc", "-ll", "-p", str(port), "-e", BUSYBOX, "echo", reply]


def client_command(server_ip: str, port: int, attempts: int) -> list[str]:
    """Connect to server_ip:port until it answers (the server may not listen yet); print reply=WHAT, or fail."""
    script = (
        f"i=0; while [ $i -lt {attempts} ]; do "
        f"reply=$({BUSYBOX} nc {server_ip} {port} </dev/null) && [ -n \"$reply\" ] && "
        f"{{ echo \"{REPLY_PREFIX}$reply\"; exit 0; }}; "
        f"i=$((i+1)); {BUSYBOX} sleep 1; done; "
        f"echo \"no reply from {server_ip}:{port} in {attempts} attempts\"; exit 1"
    )
    return [BUSYBOX, "sh", "-c", script]


def client_reply(lines) -> str | None:
    """What the client read from the server ([(stream, text)] of its log), None when it read nothing."""
    for _stream, text in lines:
        if text.startswith(REPLY_PREFIX):
            return text[len(REPLY_PREFIX):]
    return None


def pod_ip_problems(ips: dict, pod_cidr: str) -> list[str]:
    """What is wrong with the pods' IPs ({pod: ip or ""}): missing, outside the range, the gateway's, or shared."""
    network = ipaddress.ip_network(pod_cidr, strict=False)
    gateway = next(network.hosts())
    problems = []
    for pod, ip in ips.items():
        if not ip:
            problems.append(f"pod {pod} has no IP (the engine reported none)")
        elif ipaddress.ip_address(ip) not in network:
            problems.append(f"pod {pod} has {ip}, outside {network}")
        elif ipaddress.ip_address(ip) == gateway:
            problems.append(f"pod {pod} has {ip}, the bridge's (gateway) address")
    given = [ip for ip in ips.values() if ip]
    if len(set(given)) < len(given):
        problems.append(f"pods share an IP: {ips}")
    return problems


def leftovers(links_before, links_after, bridge: str, ips, ipam_dir: str, exists=os.path.exists) -> list[str]:
    """What the pods left: links that appeared during the run (not the bridge), reservations of their IPs."""
    found = [f"link {name}" for name in sorted(set(links_after) - set(links_before) - {bridge})]
    found += [f"IPAM reservation {os.path.join(ipam_dir, ip)}" for ip in ips if ip and exists(os.path.join(ipam_dir, ip))]
    return found


def link_names() -> list[str]:
    """The node's network links (from the kernel's, or gVisor's, interface list)."""
    return [name for _index, name in socket.if_nameindex()]


def tcp_read(ip: str, port: int, timeout: float) -> str:
    """Connect, read until the server closes, return the text."""
    with socket.create_connection((ip, port), timeout=timeout) as connection:
        chunks = []
        while True:
            chunk = connection.recv(4096)
            if not chunk:
                return b"".join(chunks).decode(errors="replace").strip()
            chunks.append(chunk)


class PodNetworkCheck:
    """See the module docstring; `pods` does the CRI calls, waits and cleanup of the probe pod check."""

    def __init__(self, stub, api, settings: NetworkSettings, sleep=time.sleep, clock=time.monotonic,
                 links=link_names, read=tcp_read, exists=os.path.exists):
        self.api = api
        self.stub = stub
        self.settings = settings
        self.pods = PodSandboxCheck(stub, api, settings, host_pid_namespace="", sleep=sleep, clock=clock)
        self.timer = self.pods.timer
        self.links, self.read, self.exists = links, read, exists
        self.sleep, self.clock = sleep, clock
        self.sandboxes: dict = {}
        self.ips: dict = dict.fromkeys(PODS, "")

    # ---- CRI messages ----------------------------------------------------

    def sandbox_config(self, pod: str):
        config = self.pods.sandbox_config()
        config.metadata.name = f"{pod}-{self.settings.run_id}"
        config.metadata.uid = f"{self.settings.run_id}-{pod}"
        config.hostname = f"{pod}-{self.settings.run_id}"
        return config

    def container_config(self, pod: str, command: list[str]):
        api = self.api
        return api.ContainerConfig(
            metadata=api.ContainerMetadata(name=pod, attempt=0),
            image=api.ImageSpec(image=self.settings.probe_image),
            command=command,
            labels=self.pods._labels(),
            log_path=f"{pod}.log",
            linux=api.LinuxContainerConfig(
                security_context=api.LinuxContainerSecurityContext(namespace_options=self.pods._namespace_options())),
        )

    # ---- steps -----------------------------------------------------------

    def run_pod_sandboxes(self):
        for pod in PODS:
            request = self.api.RunPodSandboxRequest(config=self.sandbox_config(pod),
                                                    runtime_handler=self.settings.runtime_handler)
            self.sandboxes[pod] = self.stub.RunPodSandbox(request, timeout=self.settings.timeout).pod_sandbox_id

    def pod_ips(self) -> dict:
        for pod, sandbox_id in self.sandboxes.items():
            self.pods.sandbox_id = sandbox_id
            self.pods.sandbox_ready()
            status = self.stub.PodSandboxStatus(self.api.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id)).status
            self.ips[pod] = status.network.ip
        problems = pod_ip_problems(self.ips, self.settings.pod_cidr)
        if problems:
            raise StepFailed("; ".join(problems))
        return dict(self.ips)

    def start_container(self, pod: str, command: list[str]) -> str:
        request = self.api.CreateContainerRequest(pod_sandbox_id=self.sandboxes[pod], config=self.container_config(pod, command),
                                                  sandbox_config=self.sandbox_config(pod))
        container_id = self.stub.CreateContainer(request, timeout=self.settings.timeout).container_id
        self.stub.StartContainer(self.api.StartContainerRequest(container_id=container_id), timeout=self.settings.timeout)
        return container_id

    def start_server(self):
        self.start_container("server", server_command(self.settings.port, self.settings.marker))

    def pod_to_pod(self) -> str:
        attempts = max(1, int(self.settings.timeout))
        self.pods.container_id = self.start_container("client", client_command(self.ips["server"], self.settings.port, attempts))
        exited = self.pods.container_exit()
        self.pods.container_id = None
        lines = read_cri_log(exited["log_path"])
        reply = client_reply(lines)
        if exited["exit_code"] != 0 or reply != self.settings.marker:
            shown = shown_ending(lines, 5) or "(empty log)"
            raise StepFailed(f"client pod {self.ips['client']} -> server pod {self.ips['server']}:{self.settings.port}: "
                             f"exit code {exited['exit_code']}, expected {self.settings.marker!r}; the log ends: {shown}")
        return reply

    def node_to_pod(self) -> str:
        """The node connects to the server pod; retried while nc restarts between connections."""
        target = f"{self.ips['server']}:{self.settings.port}"
        deadline = self.clock() + self.settings.timeout
        while True:
            try:
                reply = self.read(self.ips["server"], self.settings.port, self.settings.timeout)
            except OSError as exc:
                reply, seen = None, f"{type(exc).__name__}: {exc}"
            else:
                seen = f"read {reply!r}"
            if reply == self.settings.marker:
                return reply
            if self.clock() >= deadline:
                raise StepFailed(f"node -> server pod {target}: {seen}, expected {self.settings.marker!r}")
            self.sleep(0.2)

    # ---- the whole check -------------------------------------------------

    def run(self) -> dict:
        result = {"ok": False, "run_id": self.settings.run_id, "pod_cidr": self.settings.pod_cidr,
                  "port": self.settings.port, "failure": None}
        links_before = self.links()
        step = STEPS[0]
        try:
            os.makedirs(self.settings.log_directory, mode=0o755, exist_ok=True)
            for step, function in self._steps(result):
                self.timer.run(step, function)
            result["ok"] = True
        except Exception as exc:  # noqa: BLE001 - any failure is diagnosed, then cleaned up after
            result["failure"] = diagnose(step, str(exc) if isinstance(exc, StepFailed) else error_text(exc))
        finally:
            result["cleanup_errors"] = self.timer.run("cleanup", self._cleanup_all)
            result["cleanup_retries"] = list(self.pods.cleanup_retries)
            result["leftovers"] = self.timer.run("leftovers", lambda: leftovers(
                links_before, self.links(), self.settings.bridge, self.ips.values(), self.settings.ipam_dir, self.exists))
            result["ips"] = dict(self.ips)
            result["timings"] = dict(self.timer.seconds)
            result["total_seconds"] = round(sum(self.timer.seconds.values()), 3)
        # The network under test passed; what its teardown met is named as teardown's
        # (a CNI DEL that leaves links or reservations behind is the network's own defect).
        if result["ok"] and result["leftovers"]:
            result["ok"] = False
            result["failure"] = diagnose("leftovers", "; ".join(result["leftovers"]))
        elif result["ok"] and result["cleanup_errors"]:
            result["ok"] = False
            result["failure"] = diagnose("teardown", "; ".join(result["cleanup_errors"]))
        return result

    def _cleanup_all(self) -> list[str]:
        # The containers' logs first, so that the probe check's cleanup finds the directory empty and removes it.
        for pod in PODS:
            path = os.path.join(self.settings.log_directory, f"{pod}.log")
            if os.path.lexists(path):
                os.unlink(path)
        return self.pods._cleanup_all()

    def _steps(self, result: dict):
        def ips():
            result["ips"] = self.pod_ips()

        def pod_to_pod():
            result["pod_to_pod_reply"] = self.pod_to_pod()

        def node_to_pod():
            result["node_to_pod_reply"] = self.node_to_pod()

        return (("run_pod_sandboxes", self.run_pod_sandboxes), ("pod_ips", ips), ("start_server", self.start_server),
                ("pod_to_pod", pod_to_pod), ("node_to_pod", node_to_pod))
