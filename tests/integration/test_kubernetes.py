# SPDX-License-Identifier: Apache-2.0
"""The kubernetes engine on a real gVisor 20240729 node: Molecule scenario
`kubernetes` (molecule/kubernetes), as a user runs it. Its converge builds
Kubernetes v1.35.4 and kine (cached on the build host), runs kine,
kube-apiserver, kube-controller-manager, kube-scheduler and the kubelet with
containerd; its idempotence run changes nothing; its verify checks the node,
a kubectl-applied Pod through runc-gvisor, logs, exec, a Deployment of 3
scaled to 0, the kubelet's refusal of anonymous requests and the files'
modes; its cleanup resets the node and checks that nothing is left.

A file of its own, so that pytest-xdist (one file per worker) runs it beside
the other Molecule scenarios instead of after them.
"""

from __future__ import annotations

from conftest import molecule_test


def test_scenario_kubernetes():
    # Fails with the scenario's output unless every step passed (its verify's assertions included).
    print(molecule_test("kubernetes")[-3000:])
