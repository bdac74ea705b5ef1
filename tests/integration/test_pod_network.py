# SPDX-License-Identifier: Apache-2.0
"""Pod networking on a real gVisor 20240729 node (sid: containerd 2.1.9), container_engine=containerd.

site.yml converges the node with the defaults: the probe's decision record
names gvisor-bridge (B10: netlink cannot delete routes), the runtime stage
installs it and upstream's loopback plugin (the image has no CNI plugins),
the engine writes the pod network's CNI config for it, and verify (verify_network auto -> pod) runs the probe pod on the pod network
and then two pods that exchange TCP over their pod IPs while the node reaches
one of them. Afterwards no veth, reservation or pod is left; reset removes the
config and host-local's directory.
"""

from __future__ import annotations

import ipaddress
import json
import time

import pytest

from conftest import NODE_PREFIX, Node, gvisor_node
from site_runs import DECIDE_TASK, PAUSE, PROBE, SOCKET, leftovers, module

NODE = f"{NODE_PREFIX}net-sid"
CONFLIST = "/etc/cni/net.d/10-k3s-gvisor.conflist"
IPAM_DIR = "/var/lib/cni/networks/k3s-gvisor"
POD_CIDR = ipaddress.ip_network("10.42.0.0/24")


@pytest.fixture(scope="module")
def converged(tmp_path_factory):
    gvisor_node("destroy", NODE)
    gvisor_node("create", NODE, "--image", "sid", "--runtime", "runsc")
    try:
        node = Node(NODE, "sid", "runsc", tmp_path_factory.mktemp("pod-network"))
        node.add_host_vars(engine_sandbox_image=PAUSE,
                           verify_summary_path=str(tmp_path_factory.mktemp("summary") / "summary.json"))
        started = time.monotonic()
        run = node.playbook("site.yml")
        assert run.returncode == 0, failed_tasks(run)
        network = run.task("Run two pods on the pod network over CRI")
        print(f"\n{NODE}: full converge {time.monotonic() - started:.1f} s; pod network steps {network['timings']}")
        yield node, run, network
    finally:
        gvisor_node("destroy", NODE)


def failed_tasks(run) -> str:
    """Each failed task's name and message, for an assertion's text."""
    failed = [f"{task['task']['name']}: {host.get('msg', '')} {json.dumps(host.get('failure'))}"
              for play in run.result["plays"] for task in play["tasks"]
              for host in task["hosts"].values() if host.get("failed")]
    return "\n".join(failed) + run.stderr[-2000:]


def pod_traces(node) -> dict:
    """Host ends of gvisor-bridge's veths (gvb + 12 hex; not the bridge gvbr0) and host-local's reservation files (named after IPs) on the node."""
    links = [line.split(":")[1].strip() for line in node.exec("ip", "-o", "link", "show").stdout.splitlines()]
    reserved = node.exec("ls", "-1", IPAM_DIR).stdout.split()
    return {"veths": [name for name in links if name.startswith("gvb") and name != "gvbr0"],
            "reservations": [name for name in reserved if name[0].isdigit()]}


def test_the_engine_wrote_the_gvisor_bridge_network(converged):
    node, run, _ = converged
    decision = run.task(DECIDE_TASK)["ansible_facts"]["gvisor"]["decisions"]["cni_plugin"]
    assert decision["value"] == "gvisor-bridge" and decision["answers"] == ["B10"], decision
    for plugin in ("gvisor-bridge", "loopback"):
        assert node.exec("test", "-x", f"/usr/lib/cni/{plugin}").returncode == 0, plugin
    # No IPAM plugin: the pods' addresses come from host-local's allocator, linked into gvisor-bridge.
    assert node.exec("test", "-e", "/usr/lib/cni/host-local").returncode == 1
    conflist = json.loads(node.exec("cat", CONFLIST).stdout)
    (plugin,) = conflist["plugins"]
    assert conflist["name"] == "k3s-gvisor" and conflist["cniVersion"] == "1.0.0"
    assert plugin["type"] == "gvisor-bridge" and plugin["bridge"] == "gvbr0"
    assert plugin["ipam"] == {"type": "host-local", "ranges": [[{"subnet": str(POD_CIDR)}]]}


def test_the_probe_pod_ran_on_the_pod_network(converged):
    _, run, _ = converged
    probe = run.task("Run the probe pod over CRI")
    assert probe["ok"] and probe["network"] == "pod", probe.get("failure")
    assert probe["probe"]["hostname"].startswith("verify-")


def test_two_pods_exchange_tcp_over_their_ips_and_the_node_reaches_one(converged):
    _, _, network = converged
    assert network["ok"] and network["failure"] is None, network["failure"]
    ips = [ipaddress.ip_address(ip) for ip in network["ips"].values()]
    assert len(set(ips)) == 2 and all(ip in POD_CIDR and ip != next(POD_CIDR.hosts()) for ip in ips), network["ips"]
    marker = f"k3s-gvisor-verify-{network['run_id']}"
    assert network["pod_to_pod_reply"] == marker and network["node_to_pod_reply"] == marker
    assert network["leftovers"] == [] and network["cleanup_errors"] == []


def test_nothing_is_left_and_a_second_check_passes_the_same(converged):
    node, _, _ = converged
    assert pod_traces(node) == {"veths": [], "reservations": []}
    before = leftovers(node)
    result = module(node, "cri_pod_network", socket=SOCKET, probe_image=PROBE, pod_cidr=str(POD_CIDR))
    assert result["ok"], result.get("failure") or result
    print(f"\n{NODE}: second pod network check {result['timings']}")
    assert pod_traces(node) == {"veths": [], "reservations": []}
    assert leftovers(node) == before


def test_reset_removes_the_network_config_reservations_and_plugins(converged):
    node, _, _ = converged
    run = node.playbook("playbooks/reset.yml")
    assert run.returncode == 0, failed_tasks(run)
    for path in (CONFLIST, IPAM_DIR, "/usr/lib/cni/gvisor-bridge", "/usr/lib/cni/loopback"):
        assert node.exec("test", "-e", path).returncode == 1, path
