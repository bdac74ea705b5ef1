# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0
"""Verify through Kubernetes what users do with it: the node Ready, a Pod
applied with kubectl Running through the engine's runtime (runc-gvisor), its
log, kubectl exec into it, (where the engine serves them, Services and DNS:
kubernetes_services), a Deployment of 3 replicas available and scaled to 0,
everything deleted after. Each step is timed; a failure names the
step, what kubectl said and the pods' events.

Standard library only (it runs with the node's python): kubectl and ctr are
called as users call them.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from dataclasses import dataclass, field

from ansible_collections.k3s_gvisor.node.plugins.module_utils.cri_pod_sandbox import diagnose

POLL_SECONDS = 0.5
MANAGED_BY = "k3s-gvisor-verify"


class StepFailed(Exception):
    """A step that did not reach what it waited for; the message says what it saw."""


@dataclass
class KubernetesCheck:
    kubectl: list[str]
    ctr: list[str]
    node: str
    image: str
    wrapper: str
    marker: str
    timeout: float = 120.0
    namespace: str = "default"
    steps: dict = field(default_factory=dict)

    @property
    def pod(self) -> str:
        return f"{MANAGED_BY}-{self.marker}"

    @property
    def deployment(self) -> str:
        return f"{MANAGED_BY}-deploy-{self.marker}"

    # -- kubectl ------------------------------------------------------------

    def kubectl_run(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        proc = subprocess.run([*self.kubectl, *args], input=stdin, capture_output=True, text=True,
                              timeout=self.timeout, check=False)
        if check and proc.returncode != 0:
            raise StepFailed(f"kubectl {' '.join(args)}: {(proc.stderr or proc.stdout).strip()}")
        return proc.stdout

    def get_json(self, *args: str) -> dict:
        return json.loads(self.kubectl_run("get", *args, "-o", "json"))

    def apply(self, document: dict) -> None:
        self.kubectl_run("apply", "-f", "-", stdin=json.dumps(document))

    def wait_for(self, what: str, test) -> object:
        """test() until it returns a true value; StepFailed naming what and the last answer at the timeout."""
        deadline = time.monotonic() + self.timeout
        last = None
        while True:
            try:
                result, last = test()
            except StepFailed as error:
                result, last = None, str(error)
            if result:
                return result
            if time.monotonic() >= deadline:
                raise StepFailed(f"{what} not reached within {self.timeout:.0f} s; last seen: {last}")
            time.sleep(POLL_SECONDS)

    # -- manifests ----------------------------------------------------------

    def labels(self, app: str) -> dict:
        return {"app.kubernetes.io/managed-by": MANAGED_BY, "app": app}

    def container(self, command: list[str]) -> dict:
        # Own PID namespace per container (no shareProcessNamespace, B9); the
        # image was imported locally, so nothing is pulled.
        return {"name": "probe", "image": self.image, "imagePullPolicy": "Never", "command": command,
                "env": [{"name": "K3S_GVISOR_MARKER", "value": self.marker}]}

    def pod_manifest(self) -> dict:
        command = ["/bin/sh", "-c", "/bin/sh /probe.sh; exec /bin/sleep 2147483647"]
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": self.pod, "namespace": self.namespace, "labels": self.labels(self.pod)},
                "spec": {"nodeName": self.node, "terminationGracePeriodSeconds": 1,
                         "containers": [self.container(command)]}}

    def deployment_manifest(self, replicas: int) -> dict:
        template = {"metadata": {"labels": self.labels(self.deployment)},
                    "spec": {"nodeSelector": {"kubernetes.io/hostname": self.node}, "terminationGracePeriodSeconds": 1,
                             "containers": [self.container(["/bin/sleep", "2147483647"])]}}
        return {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": self.deployment, "namespace": self.namespace,
                             "labels": self.labels(self.deployment)},
                "spec": {"replicas": replicas, "selector": {"matchLabels": self.labels(self.deployment)},
                         "template": template}}

    # -- steps --------------------------------------------------------------

    def node_ready(self) -> None:
        def ready():
            conditions = self.get_json("node", self.node)["status"].get("conditions", [])
            status = {c["type"]: c["status"] for c in conditions}
            return status.get("Ready") == "True", f"conditions {status}"
        self.wait_for(f"node {self.node} Ready", ready)

    def pod_running(self) -> None:
        self.apply(self.pod_manifest())

        def running():
            status = self.get_json("pod", self.pod, "-n", self.namespace).get("status", {})
            return status.get("phase") == "Running", f"phase {status.get('phase')}, {container_states(status)}"
        self.wait_for(f"pod {self.pod} Running", running)

    def runtime(self) -> str:
        """The pod's container runs through the wrapper: containerd's record of it names it."""
        status = self.get_json("pod", self.pod, "-n", self.namespace)["status"]
        container_id = status["containerStatuses"][0]["containerID"].split("://", 1)[1]
        proc = subprocess.run([*self.ctr, "--namespace", "k8s.io", "containers", "info", container_id],
                              capture_output=True, text=True, timeout=self.timeout, check=False)
        if proc.returncode != 0:
            raise StepFailed(f"ctr containers info {container_id}: {proc.stderr.strip()}")
        options = (json.loads(proc.stdout).get("Runtime") or {}).get("Options") or {}
        binary = runc_options_binary_name(options)
        if binary != self.wrapper:
            raise StepFailed(f"container {container_id} runs with runtime binary {binary or 'the default runc'!r}, "
                             f"not {self.wrapper}")
        return binary

    def logs(self) -> None:
        def marked():
            lines = self.kubectl_run("logs", self.pod, "-n", self.namespace).splitlines()
            return f"{self.marker} end" in lines, f"log {lines[-3:]}"
        self.wait_for(f"the probe's marker in the log of {self.pod}", marked)

    def exec(self) -> None:
        said = self.kubectl_run("exec", self.pod, "-n", self.namespace, "--", "/bin/sh", "-c",
                                'echo "exec $K3S_GVISOR_MARKER"').strip()
        if said != f"exec {self.marker}":
            raise StepFailed(f"kubectl exec printed {said!r}, not 'exec {self.marker}'")

    def deployment_available(self, replicas: int = 3) -> None:
        self.apply(self.deployment_manifest(replicas))

        def available():
            status = self.get_json("deployment", self.deployment, "-n", self.namespace).get("status", {})
            return status.get("availableReplicas") == replicas, f"status {status.get('conditions', [])[-1:]}"
        self.wait_for(f"{replicas} replicas of {self.deployment} available", available)

    def scaled_to_zero(self) -> None:
        self.kubectl_run("scale", "deployment", self.deployment, "-n", self.namespace, "--replicas=0")

        def gone():
            pods = self.get_json("pods", "-n", self.namespace, "-l", f"app={self.deployment}")["items"]
            return not pods, f"{len(pods)} pods left"
        self.wait_for(f"{self.deployment} scaled to 0", gone)

    def cleanup(self) -> None:
        """Delete what this run made (and what an earlier, interrupted run left)."""
        self.kubectl_run("delete", "pods,deployments", "-n", self.namespace, "-l",
                         f"app.kubernetes.io/managed-by={MANAGED_BY}", "--wait=true", "--ignore-not-found")

    def events(self) -> list[str]:
        """The namespace's events about this run's objects, for a failure's report."""
        try:
            items = self.get_json("events", "-n", self.namespace)["items"]
        except (StepFailed, ValueError, subprocess.SubprocessError):
            return []
        return [f"{item['involvedObject'].get('name')}: {item.get('reason')}: {item.get('message', '').strip()}"
                for item in items if MANAGED_BY in item["involvedObject"].get("name", "")][-20:]

    def run(self, services=None) -> dict:
        """Every step in order, timed; {ok, failed_step, failure, events, steps}. With
        services (a ServicesCheck), its steps run after exec, from the probe pod."""
        steps = (("node_ready", self.node_ready), ("pod_running", self.pod_running), ("runtime", self.runtime),
                 ("logs", self.logs), ("exec", self.exec), *(services.run_steps() if services else ()),
                 ("deployment_available", self.deployment_available),
                 ("scaled_to_zero", self.scaled_to_zero), ("cleanup", self.cleanup))
        # What a step found, beyond its time, in the result under the step's name.
        answers = {"runtime": "runtime_binary", "kubernetes_default": "apiserver_version",
                   "endpoint_churn": "endpoint_churn"}
        result = {"ok": True, "failed_step": None, "failure": None, "events": [], "node": self.node,
                  "pod": self.pod}
        try:
            for name, step in steps:
                started = time.monotonic()
                answer = step()
                self.steps[name] = round(time.monotonic() - started, 3)
                if name in answers:
                    result[answers[name]] = answer
        except (StepFailed, subprocess.SubprocessError, KeyError, IndexError, ValueError) as error:
            events = self.events()
            # The blocker catalogue diagnoses what kubectl and the events said.
            result.update(ok=False, failed_step=name, events=events,
                          failure=diagnose(f"kubernetes {name}", "; ".join([str(error), *events])))
            for cleanup in (services.cleanup if services else None, self.cleanup):
                try:
                    if cleanup:
                        cleanup()
                except (StepFailed, subprocess.SubprocessError):
                    pass
        result["steps"] = dict(self.steps)
        return result


# containerd.runc.v1.Options (containerd's api/types/runc/options): field 6 is binary_name.
RUNC_OPTIONS_TYPE = "containerd.runc.v1.Options"
BINARY_NAME_FIELD = 6


def runc_options_binary_name(options: dict) -> str:
    """binary_name of the runc shim's options as `ctr containers info` prints
    them (a protobuf Any: type_url and the message base64-encoded); "" when
    unset (the shim's default runc). Read from the protobuf wire format:
    varint keys, length-delimited strings, varints skipped."""
    if options.get("type_url", "").rsplit("/", 1)[-1] != RUNC_OPTIONS_TYPE:
        return options.get("BinaryName", "")
    data, index = base64.b64decode(options.get("value", "")), 0

    def varint() -> int:
        nonlocal index
        value = shift = 0
        while True:
            byte = data[index]
            index += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while index < len(data):
        key = varint()
        field_number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            varint()
        elif wire_type == 2:
            length = varint()
            value, index = data[index:index + length], index + length
            if field_number == BINARY_NAME_FIELD:
                return value.decode()
        else:
            raise ValueError(f"unexpected protobuf wire type {wire_type} in the runc options")
    return ""


def container_states(status: dict) -> str:
    """One phrase of what each container is waiting for or why it ended."""
    phrases = []
    for container in status.get("containerStatuses") or []:
        for state, detail in (container.get("state") or {}).items():
            reason = detail.get("reason") or ""
            message = detail.get("message") or ""
            phrases.append(f"{container['name']} {state} {reason} {message}".strip())
    return "; ".join(phrases) or "no container status yet"
