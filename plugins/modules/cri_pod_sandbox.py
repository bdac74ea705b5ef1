#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cri_pod_sandbox
short_description: Run a probe pod over CRI end to end, time each step, and diagnose a failure
description:
  - Talks CRI (v1) to the engine's socket with the C(container-runtime-interface-api) client library and does
    what kubelet does for an ordinary pod, timing each step. RunPodSandbox, PodSandboxStatus until
    C(SANDBOX_READY), CreateContainer and StartContainer of the probe container (PID namespace mode
    C(CONTAINER), kubelet's default; see blocker B9), wait for it to exit, read its CRI log file and check the
    marker of this run, then stop and remove the container and the sandbox.
  - Everything the run made carries a label with the run's id and is removed at the end, when a step failed too.
  - A failed step is matched against the probe's blocker catalogue (B1-B22, module C(gvisor_probe)); the result
    then names the blocker, the engine's words as evidence, and the remedy. An unknown error is returned verbatim
    with its step.
  - The module does not fail when the pod does not run; it returns O(ignore:ok=false) and the diagnosis, so the
    caller can report all hosts. It fails on bad parameters and when the CRI client library is missing.
  - Run it with the python of the venv that has the client library (role C(verify) makes it).
version_added: "0.1.0"
author:
  - k3s-gvisor contributors
requirements:
  - container-runtime-interface-api, grpcio and protobuf (pinned in roles/verify/files/cri-client-requirements.txt).
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
extends_documentation_fragment:
  - k3s_gvisor.node.attributes
options:
  socket:
    description: The engine's CRI socket (containerd V(/run/containerd/containerd.sock), k3s V(/run/k3s/containerd/containerd.sock)).
    type: path
    required: true
  sandbox_image:
    description:
      - The pod sandbox image the engine is configured with, for the result; the engine, not this module, chooses it.
    type: str
    default: ""
  probe_image:
    description: The probe container's image (module C(oci_image), kind V(probe)); used with pull policy "never".
    type: str
    required: true
  runtime_handler:
    description: The CRI runtime handler (RuntimeClass handler) to run the pod with; empty for the engine's default.
    type: str
    default: ""
  network:
    description:
      - V(host) gives the pod the node's network namespace; V(pod) asks the engine's CNI for a pod network, which is
        not available inside gVisor so far.
    type: str
    choices: [host, pod]
    default: host
  log_root:
    description: Directory of the pod log directories (kubelet's V(/var/log/pods)).
    type: path
    default: /var/log/pods
  timeout:
    description: Seconds each CRI call and each wait may take.
    type: float
    default: 60
"""

EXAMPLES = r"""
- name: Run the probe pod
  cri_pod_sandbox:
    socket: /run/containerd/containerd.sock
    probe_image: localhost/k3s-gvisor/probe:1
  vars:
    ansible_python_interpreter: /opt/k3s-gvisor/cri-client/bin/python
  register: verify_result
"""

RETURN = r"""
ok:
  description: The sandbox became ready, the probe printed this run's marker and ran in its own PID namespace.
  returned: always
  type: bool
checked:
  description: False in check mode, where nothing is run.
  returned: always
  type: bool
timings:
  description: Seconds per step that ran (run_pod_sandbox, sandbox_ready, create_container, start_container, container_exit, read_log, cleanup).
  returned: when checked
  type: dict
  sample: {"run_pod_sandbox": 0.81, "sandbox_ready": 0.02, "cleanup": 0.9}
total_seconds:
  description: Sum of the timings.
  returned: when checked
  type: float
sandbox_state:
  description: The sandbox state seen (V(SANDBOX_READY)).
  returned: when the sandbox became ready
  type: str
network:
  description: V(host) (the node's network namespace) or V(pod).
  returned: always
  type: str
pid_namespace:
  description: The probe container's PID namespace mode, always V(container).
  returned: always
  type: str
probe:
  description: What the probe container printed about itself (pid, uid, hostname, capeff, namespaces).
  returned: when the log was read
  type: dict
own_pid_namespace:
  description: The probe ran as PID 1 of a PID namespace other than the node's.
  returned: when the log was read
  type: bool
failure:
  description:
    - Null on success. Else the step that failed, the matching blocker id (null when unknown), its title,
      the evidence (the engine's error text, verbatim) and the remedy.
  returned: always
  type: dict
  sample: {"step": "run_pod_sandbox", "blocker": "B3", "title": "...", "evidence": "...", "remedy": "..."}
earlier_runs:
  description:
    - What earlier verify runs had left and this run removed before its own pods (a run whose engine or
      play was killed half-way cannot remove its pods itself); C(changed) is true when anything was removed.
    - Verify runs on one node take turns (an flock on V(/run/k3s-gvisor-verify.lock)), so no running one's pods are removed.
  returned: always
  type: dict
  sample: {"containers": [], "sandboxes": ["5f0c..."], "log_directories": ["/var/log/pods/k3s-gvisor-verify_probe-0123_0123"], "errors": []}
cleanup_errors:
  description: Errors met while removing what the run made (empty when all is gone).
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
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.k3s_gvisor.node.plugins.module_utils.cri_pod_sandbox import CRI_ARGUMENTS, CheckSettings, PodSandboxCheck, run_over_cri


def main():
    module = AnsibleModule(
        argument_spec=dict(CRI_ARGUMENTS,
                           sandbox_image={"type": "str", "default": ""},
                           network={"type": "str", "choices": ["host", "pod"], "default": "host"}),
        supports_check_mode=True,
    )
    params = module.params
    settings = CheckSettings(sandbox_image=params["sandbox_image"], probe_image=params["probe_image"],
                             runtime_handler=params["runtime_handler"], network=params["network"],
                             log_root=params["log_root"], timeout=params["timeout"])
    base = {"changed": False, "socket": params["socket"], "sandbox_image": settings.sandbox_image,
            "probe_image": settings.probe_image, "network": settings.network, "pid_namespace": "container"}
    run_over_cri(module, base, settings.timeout, would_run="create and remove one pod sandbox", empty={},
                 make_check=lambda stub, api: PodSandboxCheck(stub, api, settings,
                                                              host_pid_namespace=os.readlink("/proc/self/ns/pid")))


if __name__ == "__main__":
    main()
