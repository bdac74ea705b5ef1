# SPDX-License-Identifier: Apache-2.0
"""Faults of the kubernetes engine on real gVisor 20240729 nodes (sid)
(issue 24 §2): each is refused by name before the engine changes, or
repaired by the next converge, which ends verified.

  - A wrong engine_kubernetes_version (fresh node): the collection builds the
    release its kubernetes-build module requires (go.sum holds the
    checksum), so any other is refused by the runtime stage, before its
    build, naming both releases.
On one converged node, in file order (the slow tier, like test_faults.py: a
converge of the kubernetes engine and three more, which CI's 90 minutes do
not hold beside the rest):
  - a half-written admin.conf and an empty proxy.conf: kubeadm would refuse
    to load them; the next converge makes them again from the same CA;
  - the apiserver's port held by another program (the apiserver stopped, a
    python http.server on 6443): refused naming the program; once it is
    gone the next converge starts the apiserver;
  - the datastore file deleted: refused, saying the running kine holds the
    only copy and how to recover; reset and a converge make a new cluster.
"""

from __future__ import annotations

import json

import pytest

from site_runs import failed_tasks

# What the runtime stage would install for the kubernetes engine.
INSTALLED = ["/usr/local/bin/runc-gvisor", "/etc/runc-gvisor", "/usr/local/bin/kubelet", "/usr/local/bin/kube-apiserver",
             "/usr/local/bin/kine"]
REFUSAL = "runc_gvisor : Check that the Kubernetes release asked for is the one this collection builds"
ENGINE_STAGES = ("--tags", "probe,runtime,engine")
KUBECTL = ["/usr/local/bin/kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf"]
SUPERVISE = "/usr/local/bin/k3s-gvisor-supervise"
DATASTORE = "/var/lib/k3s-gvisor/kine/state.db"


def test_a_wrong_kubernetes_version_is_refused_before_anything_is_installed(node_factory):
    node = node_factory("kubernetes-wrong-version")
    present = [path for path in INSTALLED if node.exec("test", "-e", path).returncode == 0]
    run = node.playbook("site.yml", "-e", json.dumps({"container_engine": "kubernetes",
                                                      "engine_kubernetes_version": "v1.35.3"}))
    assert run.returncode != 0
    failures = failed_tasks(run)
    assert len(failures) == 1 and failures[0].startswith(REFUSAL + ": "), failures
    assert "engine_kubernetes_version is \"v1.35.3\"" in failures[0] and "builds Kubernetes v1.35.4" in failures[0]
    assert [path for path in INSTALLED if node.exec("test", "-e", path).returncode == 0] == present == []


def verified(node, *args: str):
    run = node.playbook("site.yml", *args)
    assert run.returncode == 0, run.stderr + json.dumps(run.stats) + "\n" + "\n".join(failed_tasks(run))
    assert f"verify on {node.name}: READY" in run.task("Report the verify result")["msg"]
    return run


def refused(node, task: str) -> str:
    """The engine stages fail at TASK alone; its message."""
    run = node.playbook("site.yml", *ENGINE_STAGES)
    assert run.returncode != 0
    failures = failed_tasks(run)
    assert len(failures) == 1 and failures[0].startswith(f"engine : {task}: "), failures
    return failures[0]


@pytest.fixture(scope="module")
def cluster(node_factory):
    node = node_factory("kubernetes-faults")
    node.add_host_vars(container_engine="kubernetes")
    verified(node)
    return node


@pytest.mark.slow
def test_a_half_written_kubeconfig_is_made_again(cluster):
    node = cluster
    assert node.exec("sh", "-c", "head -c 2800 /etc/kubernetes/admin.conf > /tmp/half && cat /tmp/half > "
                     "/etc/kubernetes/admin.conf && : > /etc/kubernetes/proxy.conf").returncode == 0
    assert node.exec(*KUBECTL, "get", "nodes").returncode != 0
    verified(node)
    assert node.exec(*KUBECTL, "get", "nodes").returncode == 0


@pytest.mark.slow
def test_the_apiserver_port_held_by_another_program_is_named(cluster):
    node = cluster
    assert node.exec(SUPERVISE, "stop", "kube-apiserver").returncode == 0
    assert node.exec(SUPERVISE, "forget", "kube-apiserver").returncode == 0
    assert node.exec("sh", "-c", "setsid python3 -m http.server 6443 >/dev/null 2>&1 & sleep 1").returncode == 0
    message = refused(node, "Refuse an apiserver port that another program holds")
    assert 'users:(("python3"' in message and "Port 6443" in message, message
    assert node.exec("pkill", "-f", "http.server 6443").returncode == 0
    verified(node)


@pytest.mark.slow
def test_a_deleted_datastore_is_named_and_reset_makes_a_new_cluster(cluster):
    node = cluster
    assert node.exec("rm", DATASTORE).returncode == 0
    message = refused(node, "Refuse to go on where the cluster's datastore is gone")
    assert DATASTORE in message and "playbooks/reset.yml" in message, message
    assert node.exec("test", "-e", DATASTORE).returncode != 0  # nothing was changed
    reset = node.playbook("playbooks/reset.yml")
    assert reset.returncode == 0, reset.stderr + "\n".join(failed_tasks(reset))
    verified(node)
