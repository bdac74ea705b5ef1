# SPDX-License-Identifier: Apache-2.0
"""The kubernetes engine on a real gVisor 20240729 node: Molecule scenario
`kubernetes` (molecule/kubernetes), as a user runs it. Its converge builds
Kubernetes v1.35.4 and kine (cached on the build host), runs kine,
kube-apiserver, kube-controller-manager, kube-scheduler and the kubelet with
containerd; its idempotence run changes nothing; its verify checks the node,
a kubectl-applied Pod through runc-gvisor, logs, exec, a Deployment of 3
scaled to 0, Services and DNS, anonymous requests refused by the kubelet and
the apiserver, RBAC keeping secrets from a pod's service account, and the
files' modes; its cleanup resets the node and checks that nothing is left.
Every run is at -vvv (molecule/kubernetes/molecule.yml), and nothing secret
may appear in that output.

A file of its own, so that pytest-xdist (one file per worker) runs it beside
the other Molecule scenarios instead of after them.
"""

from __future__ import annotations

import re

from conftest import molecule_test

# What must never reach a log: private keys (PEM, or a kubeconfig's
# client-key-data), service account tokens (JWTs) and bootstrap tokens.
SECRETS = {
    "a private key": re.compile(r"PRIVATE KEY-----"),
    "a kubeconfig's client key": re.compile(r"client-key-data"),
    "a service account token": re.compile(r"\beyJhbGciOi[\w-]{10,}\.[\w-]{10,}\."),
    "a bootstrap token": re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b"),
}


def secrets_in(output: str) -> list[str]:
    """Where OUTPUT shows a secret, by line and kind (never the secret itself)."""
    return [f"line {number}: {kind}" for number, line in enumerate(output.splitlines(), 1)
            for kind, pattern in SECRETS.items() if pattern.search(line)]


def test_scenario_kubernetes():
    # Fails with the scenario's output unless every step passed (its verify's assertions included).
    output = molecule_test("kubernetes")
    print(output[-3000:])
    assert "ESTABLISH DOCKER CONNECTION" in output, "the scenario did not run at -vvv"
    assert secrets_in(output) == []
