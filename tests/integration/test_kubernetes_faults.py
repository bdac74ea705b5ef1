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
  - the kubelet's root on a full file system (a small tmpfs mounted over it
    and filled: gVisor's in-memory root file system is never full): refused
    naming the path, the free space and the kubelet's eviction threshold;
    once unmounted the next converge verifies;
  - the datastore file deleted: refused, saying the running kine holds the
    only copy and how to recover; reset and a converge make a new cluster;
  - the node container restarted (`docker restart`) in the middle of a
    converge, once kine runs: the next converge verifies. runsc keeps the root
    file system in memory, so the node comes back as its image was, and the
    controller's caches are what carry over.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from conftest import REPO
from site_runs import converge_verified, converged_kubernetes_node, failed_tasks

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


def refused(node, task: str) -> str:
    """The engine stages fail at TASK alone; its message."""
    run = node.playbook("site.yml", *ENGINE_STAGES)
    assert run.returncode != 0
    failures = failed_tasks(run)
    assert len(failures) == 1 and failures[0].startswith(f"engine : {task}: "), failures
    return failures[0]


@pytest.fixture(scope="module")
def cluster(node_factory):
    return converged_kubernetes_node(node_factory, "kubernetes-faults")


@pytest.mark.slow
def test_a_half_written_kubeconfig_is_made_again(cluster):
    node = cluster
    assert node.exec("sh", "-c", "head -c 2800 /etc/kubernetes/admin.conf > /tmp/half && cat /tmp/half > "
                     "/etc/kubernetes/admin.conf && : > /etc/kubernetes/proxy.conf").returncode == 0
    assert node.exec(*KUBECTL, "get", "nodes").returncode != 0
    converge_verified(node)
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
    converge_verified(node)


@pytest.mark.slow
def test_a_full_file_system_under_the_kubelet_is_named(cluster):
    node = cluster
    assert node.exec("sh", "-c", "mount -t tmpfs -o size=32m,mode=0700 tmpfs /var/lib/kubelet && "
                     "dd if=/dev/zero of=/var/lib/kubelet/fill bs=1M count=30").returncode == 0
    message = refused(node, "Refuse a file system that the kubelet would find too full to run pods on")
    assert "/var/lib/kubelet on" in message and "2 MiB free of 32 MiB" in message, message
    assert "nodefs.available<10%" in message, message
    assert node.exec("umount", "/var/lib/kubelet").returncode == 0
    converge_verified(node)


@pytest.mark.slow
def test_a_deleted_datastore_is_named_and_reset_makes_a_new_cluster(cluster):
    node = cluster
    assert node.exec("rm", DATASTORE).returncode == 0
    message = refused(node, "Refuse to go on where the cluster's datastore is gone")
    assert DATASTORE in message and "playbooks/reset.yml" in message, message
    assert node.exec("test", "-e", DATASTORE).returncode != 0  # nothing was changed
    reset = node.playbook("playbooks/reset.yml")
    assert reset.returncode == 0, reset.stderr + "\n".join(failed_tasks(reset))
    converge_verified(node)


@pytest.mark.slow
def test_a_node_restarted_mid_converge_converges_on_the_next_run(cluster):
    node = cluster
    subprocess.run(["docker", "restart", node.name], check=True, capture_output=True, timeout=300)
    argv, env = node.playbook_command("site.yml")
    converge = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    while node.exec("pgrep", "-x", "kine").returncode != 0:
        assert converge.poll() is None and time.monotonic() < deadline, "the converge ended before kine started"
        time.sleep(2)
    subprocess.run(["docker", "restart", node.name], check=True, capture_output=True, timeout=300)
    assert converge.wait(timeout=900) != 0
    converge_verified(node)
