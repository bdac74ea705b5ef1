#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0
"""Ansible module: two pods on the engine's pod network exchange TCP over their IPs; the node reaches one."""

from __future__ import annotations

DOCUMENTATION = r"""
module: cri_pod_network
short_description: Check same-node pod networking over CRI (two pods, TCP pod to pod and node to pod)
description:
  - Runs two pod sandboxes with network V(POD) over the CRI socket, so that the engine's CNI config gives each an IP.
  - Checks the IPs are distinct and inside O(pod_cidr); starts a TCP server (busybox C(nc) of the probe image) in one,
    has a container in the other connect to the server's pod IP and read this run's marker, then connects from the node.
  - Removes everything it made (found again by this run's label) and reports what the pods left on the node
    (host ends of veths, host-local reservations of their IPs).
  - Needs the container-runtime-interface-api package (role verify installs it in a venv on the node).
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
extends_documentation_fragment:
  - k3s_gvisor.node.attributes
options:
  socket:
    description: The CRI socket.
    type: path
    required: true
  probe_image:
    description: An image with a static busybox at /bin/busybox (role verify's probe image).
    type: str
    required: true
  runtime_handler:
    description: The CRI runtime handler; empty for the engine's default.
    type: str
    default: ""
  pod_cidr:
    description: The node's pod IPv4 range the IPs must come from.
    type: str
    required: true
  bridge:
    description: The CNI bridge, which may appear during the run and stays (not a leftover).
    type: str
    default: gvbr0
  ipam_dir:
    description: host-local's directory for the network, where a reservation left behind is a file named after the IP.
    type: path
    default: /var/lib/cni/networks/k3s-gvisor
  port:
    description: The TCP port the server pod listens on.
    type: int
    default: 8080
  log_root:
    description: Directory of the pod log directories.
    type: path
    default: /var/log/pods
  timeout:
    description: Seconds each CRI call, each wait and the connection attempts may take.
    type: float
    default: 60
"""

EXAMPLES = r"""
- name: Check pod networking
  cri_pod_network:
    socket: /run/containerd/containerd.sock
    probe_image: localhost/k3s-gvisor/probe:1
    pod_cidr: 10.42.0.0/24
  vars:
    ansible_python_interpreter: /opt/k3s-gvisor/cri-client/bin/python
"""

RETURN = r"""
ok:
  description: Both pods got distinct IPs in the range, the client read the marker from the server, so did the node, nothing was left.
  returned: always
  type: bool
checked:
  description: Whether the pods were run (not in check mode).
  type: bool
  returned: always
ips:
  description: The pods' IPs as the engine reported them (V(server), V(client)).
  returned: when checked
  type: dict
  sample: {"server": "10.42.0.2", "client": "10.42.0.3"}
pod_to_pod_reply:
  description: What the client pod read from the server pod's IP.
  returned: when that step passed
  type: str
node_to_pod_reply:
  description: What the node read from the server pod's IP.
  returned: when that step passed
  type: str
timings:
  description: Seconds per step (run_pod_sandboxes, pod_ips, start_server, pod_to_pod, node_to_pod, cleanup, leftovers).
  returned: when checked
  type: dict
total_seconds:
  description: Sum of the timings.
  returned: when checked
  type: float
leftovers:
  description: What the pods left on the node after removal (links, IPAM reservations); empty when all is gone.
  returned: when checked
  type: list
  elements: str
earlier_runs:
  description: What earlier verify runs had left and this run removed first (see cri_pod_sandbox).
  returned: always
  type: dict
cleanup_errors:
  description: Errors met while removing what the run made.
  returned: when checked
  type: list
  elements: str
cleanup_retries:
  description:
    - Teardown calls that met a transient error (a shim's ttrpc connection closed, the engine unavailable) and were
      made again, as kubelet would; each error as it came. Not failures of the thing under test.
  returned: when checked
  type: list
  elements: str
failure:
  description: Null on success; else the step that failed and the evidence (see cri_pod_sandbox).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.k3s_gvisor.node.plugins.module_utils.cri_pod_network import NetworkSettings, PodNetworkCheck
from ansible_collections.k3s_gvisor.node.plugins.module_utils.cri_pod_sandbox import CRI_ARGUMENTS, run_over_cri


def main():
    module = AnsibleModule(
        argument_spec=dict(CRI_ARGUMENTS,
                           pod_cidr={"type": "str", "required": True},
                           bridge={"type": "str", "default": "gvbr0"},
                           ipam_dir={"type": "path", "default": "/var/lib/cni/networks/k3s-gvisor"},
                           port={"type": "int", "default": 8080}),
        supports_check_mode=True,
    )
    params = module.params
    settings = NetworkSettings(sandbox_image="", probe_image=params["probe_image"],
                               runtime_handler=params["runtime_handler"], pod_cidr=params["pod_cidr"],
                               bridge=params["bridge"], ipam_dir=params["ipam_dir"], port=params["port"],
                               log_root=params["log_root"], timeout=params["timeout"])
    base = {"changed": False, "socket": params["socket"], "pod_cidr": settings.pod_cidr}
    run_over_cri(module, base, settings.timeout, would_run="create and remove two pod sandboxes",
                 empty={"ips": {}, "leftovers": []},
                 make_check=lambda stub, api: PodNetworkCheck(stub, api, settings))


if __name__ == "__main__":
    main()
