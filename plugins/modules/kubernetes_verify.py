#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubernetes_verify
short_description: Check that Kubernetes runs pods on this node through the engine's runtime, as users run them
description:
  - With kubectl and the admin kubeconfig on a server - the node Ready; a Pod applied with kubectl, placed on the
    node by its name, Running; containerd's record of its container names the runtime wrapper (runc-gvisor); its
    log holds this run's marker; C(kubectl exec) into it answers; a Deployment of 3 replicas becomes available and is
    scaled to 0; everything this module made is deleted again (also what an interrupted earlier run left).
  - Each step is timed. A failure names the step, what kubectl said, and the events of the objects this run made.
  - The cluster is left as it was found, so the module reports C(changed=false). In check mode nothing runs.
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
extends_documentation_fragment:
  - k3s_gvisor.node.attributes
options:
  kubectl:
    description: The kubectl command with the options that reach the cluster as an admin.
    type: list
    elements: str
    required: true
  ctr:
    description: The ctr command with the options that reach the engine's containerd.
    type: list
    elements: str
    required: true
  node:
    description: The node's name, as it registered.
    type: str
    required: true
  image:
    description: The probe image (imported locally; nothing is pulled).
    type: str
    required: true
  wrapper:
    description: The runtime binary containerd must record for the pod's container (the runc-gvisor wrapper).
    type: path
    required: true
  marker:
    description: This run's marker, so that an old log cannot pass; omitted, a new random one.
    type: str
  timeout:
    description: Seconds each wait may take.
    type: float
    default: 120
"""

EXAMPLES = r"""
- name: Run a Pod and a Deployment through Kubernetes
  k3s_gvisor.node.kubernetes_verify:
    kubectl: [/usr/local/bin/kubectl, --kubeconfig, /etc/kubernetes/admin.conf]
    ctr: [ctr, --address, /run/containerd/containerd.sock]
    node: node-1
    image: localhost/k3s-gvisor/probe:1
    wrapper: /usr/local/bin/runc-gvisor
"""

RETURN = r"""
ok:
  description: Whether every step passed.
  returned: success
  type: bool
checked:
  description: Whether the check ran (false in check mode).
  returned: always
  type: bool
failed_step:
  description: The step that failed, or null.
  returned: success
  type: str
  sample: exec
failure:
  description:
    - The failed step's diagnosis C({step, blocker, title, evidence, remedy}), its evidence what kubectl said and the
      events, matched against the probe's blocker catalogue; null when every step passed.
  returned: success
  type: dict
events:
  description: The events of this run's objects, on failure.
  returned: success
  type: list
  elements: str
steps:
  description: Seconds each step took, in order (node_ready, pod_running, runtime, logs, exec, deployment_available, scaled_to_zero, cleanup).
  returned: success
  type: dict
  sample: {node_ready: 0.2, pod_running: 3.1}
runtime_binary:
  description: The runtime binary containerd recorded for the Pod's container.
  returned: when that step passed
  type: str
"""

import uuid

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.k3s_gvisor.node.plugins.module_utils.kubernetes_verify import KubernetesCheck


def main():
    module = AnsibleModule(
        argument_spec=dict(
            kubectl=dict(type="list", elements="str", required=True),
            ctr=dict(type="list", elements="str", required=True),
            node=dict(type="str", required=True),
            image=dict(type="str", required=True),
            wrapper=dict(type="path", required=True),
            marker=dict(type="str"),
            timeout=dict(type="float", default=120.0),
        ),
        supports_check_mode=True,
    )
    if module.check_mode:
        module.exit_json(changed=False, checked=False, ok=False)
    params = module.params
    check = KubernetesCheck(kubectl=params["kubectl"], ctr=params["ctr"], node=params["node"], image=params["image"],
                            wrapper=params["wrapper"], marker=params["marker"] or uuid.uuid4().hex[:12],
                            timeout=params["timeout"])
    module.exit_json(changed=False, checked=True, **check.run())


if __name__ == "__main__":
    main()
