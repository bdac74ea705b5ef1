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
  - With O(services), between exec and the Deployment - CoreDNS available; a Deployment behind a NodePort Service
    reached from the Pod by the Service's DNS name, short name and ClusterIP, spread over both endpoints, and
    kept on one by a second Service with ClientIP session affinity; C(kubernetes.default) answering
    C(/version) through its Service; the NodePort from the node; and while the node requests the ClusterIP without
    pause, the Deployment scaled 3 to 0 to 3 with no request reaching a removed endpoint two seconds after its
    removal. A failure names the hop (DNS, ClusterIP, endpoint).
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
  services:
    description: Check Services and the cluster DNS too (the NodePort on the node's InternalIP).
    type: dict
    suboptions:
      cluster_domain:
        description: The cluster's DNS domain.
        type: str
        default: cluster.local
"""

EXAMPLES = r"""
- name: Run a Pod and a Deployment through Kubernetes
  k3s_gvisor.node.kubernetes_verify:
    kubectl: [/usr/local/bin/kubectl, --kubeconfig, /etc/kubernetes/admin.conf]
    ctr: [ctr, --address, /run/containerd/containerd.sock]
    node: node-1
    image: localhost/k3s-gvisor/probe:1
    wrapper: /usr/local/bin/runc-gvisor
    services:
      cluster_domain: cluster.local
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
  description:
    - Seconds each step took, in order (node_ready, pod_running, runtime, logs, exec, deployment_available,
      scaled_to_zero, cleanup); with O(services), after exec dns_ready, service_ready, dns_lookup, cluster_ip,
      service_by_name, session_affinity, kubernetes_default, node_port, endpoint_churn and services_cleanup.
  returned: success
  type: dict
  sample: {node_ready: 0.2, pod_running: 3.1}
runtime_binary:
  description: The runtime binary containerd recorded for the Pod's container.
  returned: when that step passed
  type: str
apiserver_version:
  description: The version C(kubernetes.default) answered from the Pod.
  returned: when that step passed
  type: str
endpoint_churn:
  description: The churn loop's requests, those answered, and when the first new endpoint answered.
  returned: when that step passed
  type: dict
  sample: {requests: 120, answered: 80, first_new_answer_after_seconds: 9.2}
"""

import uuid

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.k3s_gvisor.node.plugins.module_utils.kubernetes_services import ServicesCheck
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
            services=dict(type="dict", options=dict(
                cluster_domain=dict(type="str", default="cluster.local"),
            )),
        ),
        supports_check_mode=True,
    )
    if module.check_mode:
        module.exit_json(changed=False, checked=False, ok=False)
    params = module.params
    check = KubernetesCheck(kubectl=params["kubectl"], ctr=params["ctr"], node=params["node"], image=params["image"],
                            wrapper=params["wrapper"], marker=params["marker"] or uuid.uuid4().hex[:12],
                            timeout=params["timeout"])
    services = params["services"] and ServicesCheck(check, params["services"]["cluster_domain"])
    module.exit_json(changed=False, checked=True, **check.run(services or None))


if __name__ == "__main__":
    main()
