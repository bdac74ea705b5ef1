# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0
"""Verify Services and the cluster DNS as users rely on them: a Deployment
behind a Service, reached from a pod by its DNS name and by its ClusterIP,
the apiserver as kubernetes.default, a NodePort from the node, and no request
reaching a removed endpoint two seconds after its removal while the
Deployment is scaled 3 to 0 to 3, and ClientIP session affinity. A failure
names the hop that failed (DNS, ClusterIP, endpoint).

Standard library only (it runs with the node's python); it uses the probe
pod of kubernetes_verify as the client, and kubectl as users call it.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from ansible_collections.k3s_gvisor.node.plugins.module_utils.kubernetes_verify import KubernetesCheck, StepFailed

# A removed endpoint may still answer this long (seconds): the proxy applies
# an EndpointSlice change within a second of it.
REMOVAL_GRACE = 2.0
WEB_PORT = 8080
# busybox httpd answers with the pod's hostname, so each answer names its endpoint.
WEB_COMMAND = ["/bin/busybox", "sh", "-c",
               f"mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec /bin/busybox httpd -f -p {WEB_PORT} -h /tmp/www"]


@dataclass
class Answer:
    """One request of the churn loop: when it was sent and who answered (None: no answer)."""

    sent: float
    endpoint: str | None


@dataclass
class ServicesCheck:
    check: KubernetesCheck
    cluster_domain: str = "cluster.local"
    # The node's InternalIP (where NodePorts are served), read from its Node object.
    node_ip: str = ""
    cluster_ip: str = ""
    node_port: int = 0

    @property
    def name(self) -> str:
        return f"{self.check.deployment}-web"

    @property
    def sticky_name(self) -> str:
        return f"{self.name}-sticky"

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.check.namespace}.svc.{self.cluster_domain}"

    # -- manifests ----------------------------------------------------------

    def web_manifests(self, replicas: int) -> dict:
        labels = self.check.labels(self.name)
        template = {"metadata": {"labels": labels},
                    "spec": {"nodeSelector": {"kubernetes.io/hostname": self.check.node},
                             "terminationGracePeriodSeconds": 1,
                             "containers": [dict(self.check.container(WEB_COMMAND), name="web",
                                                 ports=[{"containerPort": WEB_PORT}],
                                                 readinessProbe={"tcpSocket": {"port": WEB_PORT}, "periodSeconds": 1})]}}
        deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                      "metadata": {"name": self.name, "namespace": self.check.namespace, "labels": labels},
                      "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": template}}
        service = {"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": self.name, "namespace": self.check.namespace, "labels": labels},
                   "spec": {"type": "NodePort", "selector": labels,
                            "ports": [{"name": "http", "port": 80, "targetPort": WEB_PORT, "protocol": "TCP"}]}}
        # The same endpoints behind a Service with ClientIP affinity.
        sticky = {"apiVersion": "v1", "kind": "Service",
                  "metadata": {"name": self.sticky_name, "namespace": self.check.namespace, "labels": labels},
                  "spec": {"selector": labels, "sessionAffinity": "ClientIP",
                           "ports": [{"name": "http", "port": 80, "targetPort": WEB_PORT, "protocol": "TCP"}]}}
        return {"apiVersion": "v1", "kind": "List", "items": [deployment, service, sticky]}

    # -- helpers ------------------------------------------------------------

    def in_pod(self, hop: str, *command: str) -> str:
        """Run a busybox applet in the probe pod; StepFailed naming the hop when it fails."""
        try:
            return self.check.kubectl_run("exec", self.check.pod, "-n", self.check.namespace, "--",
                                          "/bin/busybox", *command)
        except StepFailed as error:
            raise StepFailed(f"{hop}: {' '.join(command)} in pod {self.check.pod}: {error}") from None

    def web_pods(self) -> set[str]:
        pods = self.check.get_json("pods", "-n", self.check.namespace, "-l", f"app={self.name}")["items"]
        return {pod["metadata"]["name"] for pod in pods}

    def wait_available(self, replicas: int) -> None:
        def available():
            status = self.check.get_json("deployment", self.name, "-n", self.check.namespace).get("status", {})
            endpoints = len(self.ready_endpoint_pods())
            done = status.get("availableReplicas", 0) == replicas and endpoints == replicas
            return done, f"{status.get('availableReplicas', 0)} available, {endpoints} ready endpoints"
        self.check.wait_for(f"{replicas} ready endpoints of {self.name}", available)

    # -- steps --------------------------------------------------------------

    def dns_ready(self) -> None:
        def ready():
            status = self.check.get_json("deployment", "coredns", "-n", "kube-system").get("status", {})
            return status.get("availableReplicas", 0) >= 1, f"CoreDNS status {status.get('conditions', [])[-1:]}"
        self.check.wait_for("CoreDNS (kube-system/coredns) available", ready)

    def service_ready(self) -> None:
        self.check.apply(self.web_manifests(2))
        service = self.check.get_json("service", self.name, "-n", self.check.namespace)["spec"]
        self.cluster_ip, self.node_port = service["clusterIP"], service["ports"][0]["nodePort"]
        addresses = self.check.get_json("node", self.check.node)["status"].get("addresses", [])
        self.node_ip = next((a["address"] for a in addresses if a["type"] == "InternalIP"), "")
        self.wait_available(2)

    def dns_lookup(self) -> None:
        def resolved():
            answer = self.in_pod("DNS", "nslookup", self.fqdn)
            return self.cluster_ip in re.findall(r"Address:\s*(\S+)", answer), f"nslookup said {answer.strip()!r}"
        self.check.wait_for(f"DNS: {self.fqdn} resolving to {self.cluster_ip} through CoreDNS", resolved)

    def by_cluster_ip(self) -> None:
        self.expect_web("ClusterIP", f"http://{self.cluster_ip}/")

    def by_name(self) -> None:
        # The short name too: the pod's resolv.conf search path, as users write it.
        self.expect_web("Service by DNS name", f"http://{self.fqdn}/")
        self.expect_web("Service by short name", f"http://{self.name}/")

    def expect_web(self, hop: str, url: str) -> None:
        answer, endpoints = self.fetch(hop, url), self.web_pods()
        if answer not in endpoints:
            raise StepFailed(f"{hop}: {url} answered {answer!r}, not one of the endpoints {sorted(endpoints)}")

    def session_affinity(self) -> None:
        """Six requests from the pod: spread over both endpoints by the plain
        Service, all to one endpoint by the ClientIP one."""
        spread = {self.fetch("ClusterIP", f"http://{self.name}/") for _ in range(6)}
        stuck = {self.fetch("sessionAffinity", f"http://{self.sticky_name}/") for _ in range(6)}
        if len(spread) < 2:
            raise StepFailed(f"ClusterIP: six requests all reached {spread}, not both endpoints (round robin)")
        if len(stuck) != 1:
            raise StepFailed(f"sessionAffinity: six requests from one pod reached {sorted(stuck)}, not one endpoint")

    def fetch(self, hop: str, url: str, *options: str) -> str:
        return self.in_pod(hop, "wget", "-q", "-O", "-", "-T", "5", *options, url).strip()

    def kubernetes_default(self) -> None:
        url = f"https://kubernetes.default.svc.{self.cluster_domain}/version"
        answer = self.fetch("kubernetes.default", url, "--no-check-certificate")
        try:
            version = json.loads(answer)["gitVersion"]
        except (ValueError, KeyError):
            raise StepFailed(f"kubernetes.default: {url} answered {answer[:200]!r}, not the apiserver's version") from None
        return version

    def node_port_from_node(self) -> None:
        url = f"http://{self.node_ip}:{self.node_port}/"
        answer = http_get(url)
        if answer not in self.web_pods():
            raise StepFailed(f"NodePort: {url} from the node answered {answer!r}, not an endpoint")

    def ready_endpoint_pods(self) -> set[str]:
        """The pods the Service's EndpointSlices list as ready endpoints now."""
        slices = self.check.get_json("endpointslices", "-n", self.check.namespace,
                                     "-l", f"kubernetes.io/service-name={self.name}")["items"]
        return {(e.get("targetRef") or {}).get("name") for s in slices for e in s.get("endpoints") or []
                if (e.get("conditions") or {}).get("ready")}

    def endpoint_churn(self) -> dict:
        """Scale 2 to 3, then 0, then 3, while the node requests the ClusterIP
        without pause and the EndpointSlices are watched (polled); a request
        answered by an endpoint more than REMOVAL_GRACE seconds after the
        slices stopped listing it as ready fails the step."""
        self.check.kubectl_run("scale", "deployment", self.name, "-n", self.check.namespace, "--replicas=3")
        self.wait_available(3)
        answers: list[Answer] = []
        removed: dict[str, float] = {}
        stop = threading.Event()
        threads = [threading.Thread(target=request_loop, args=(f"http://{self.cluster_ip}/", answers, stop), daemon=True),
                   threading.Thread(target=self.watch_removals, args=(removed, stop), daemon=True)]
        for thread in threads:
            thread.start()
        try:
            old = self.web_pods()
            scaled_at = time.monotonic()
            self.check.kubectl_run("scale", "deployment", self.name, "-n", self.check.namespace, "--replicas=0")
            self.check.wait_for(f"{self.name} scaled to 0", lambda: (not self.web_pods(), f"{self.web_pods()}"))
            self.check.kubectl_run("scale", "deployment", self.name, "-n", self.check.namespace, "--replicas=3")
            self.wait_available(3)
            time.sleep(1.0)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        late = late_answers(answers, removed)
        if late:
            first = late[0]
            raise StepFailed(f"endpoint: {len(late)} requests reached removed endpoints more than {REMOVAL_GRACE:.0f} s "
                             f"after the EndpointSlice dropped them (first {first.sent - removed[first.endpoint]:.1f} s "
                             f"after, {first.endpoint})")
        new = [a for a in answers if a.endpoint and a.endpoint not in old]
        if not new:
            raise StepFailed("endpoint: no request reached the new endpoints after scaling back to 3")
        return {"requests": len(answers), "answered": sum(1 for a in answers if a.endpoint),
                "endpoints_removed_after_seconds": round(max(removed.values(), default=scaled_at) - scaled_at, 3),
                "first_new_answer_after_seconds": round(new[0].sent - scaled_at, 3)}

    def watch_removals(self, removed: dict, stop: threading.Event) -> None:
        """Record when each endpoint stops being listed as ready (polled)."""
        listed: set[str] = set()
        while not stop.is_set():
            try:
                now = self.ready_endpoint_pods()
            except (StepFailed, ValueError):
                now = listed  # a failed poll tells nothing; wait for the next, as after any poll
            seen = time.monotonic()
            for pod in listed - now:
                removed.setdefault(pod, seen)
            listed = now
            stop.wait(0.1)

    def cleanup(self) -> None:
        self.check.kubectl_run("delete", "services,deployments", "-n", self.check.namespace, "-l",
                               f"app={self.name}", "--wait=true", "--ignore-not-found")

    def run_steps(self):
        """(name, step) in order, for KubernetesCheck.run."""
        return (("dns_ready", self.dns_ready), ("service_ready", self.service_ready), ("dns_lookup", self.dns_lookup),
                ("cluster_ip", self.by_cluster_ip), ("service_by_name", self.by_name),
                ("session_affinity", self.session_affinity),
                ("kubernetes_default", self.kubernetes_default), ("node_port", self.node_port_from_node),
                ("endpoint_churn", self.endpoint_churn), ("services_cleanup", self.cleanup))


def late_answers(answers: list[Answer], removed: dict[str, float]) -> list[Answer]:
    """Answers sent more than REMOVAL_GRACE seconds after their endpoint was removed."""
    return [a for a in answers if a.endpoint in removed and a.sent > removed[a.endpoint] + REMOVAL_GRACE]


def http_get(url: str, timeout: float = 2.0) -> str | None:
    """The body of a GET on a new connection, or None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read().decode(errors="replace").strip()
    except (urllib.error.URLError, OSError, socket.timeout):
        return None


def request_loop(url: str, answers: list, stop: threading.Event) -> None:
    while not stop.is_set():
        sent = time.monotonic()
        answers.append(Answer(sent, http_get(url, timeout=1.0)))
        time.sleep(0.05)
