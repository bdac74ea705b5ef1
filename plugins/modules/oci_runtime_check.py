#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: oci_runtime_check
short_description: Check that an OCI runtime runs containers shaped as containerd's CRI makes them, on this host
description:
  - Runs the probe's runtime check (the shapes of RV(ansible_facts.gvisor.runtime_check), module M(k3s_gvisor.node.gvisor_probe))
    for one runtime binary, and fails when it does not run the shapes a runtime must run to be chosen (C(cri) and
    C(signal_before_start)).
  - Used where the probe could not check the runtime itself, because it was installed after the probe (Debian's
    crun from apt).
  - Each shape runs in a forked child in a scratch bundle; the bundle, the runtime's state and the container's cgroup
    are removed again, so the host is left as it was and the module reports C(changed=false).
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
extends_documentation_fragment:
  - k3s_gvisor.node.attributes
options:
  runtime:
    description: Path of the runtime binary (runc's command line, as crun and runc both take it).
    type: path
    required: true
  containerd_version:
    description: The host's containerd version, which sets the spec version of the bundles (2.x when omitted).
    type: str
  scratch_dir:
    description: Where the scratch bundle is made and removed again.
    type: path
    default: /var/tmp
  timeout:
    description: Seconds each runtime command may take.
    type: float
    default: 10.0
author:
  - k3s-gvisor contributors
notes:
  - Needs root. Runs with the standard library alone.
"""

EXAMPLES = r"""
- name: Check the crun apt just installed
  k3s_gvisor.node.oci_runtime_check:
    runtime: /usr/bin/crun
    containerd_version: 2.1.9
"""

RETURN = r"""
binary:
  description: The runtime as the probe reports one - C({found, path, version, version_tuple}).
  returned: always
  type: dict
  sample: {"found": true, "path": "/usr/bin/crun", "version": "1.28", "version_tuple": [1, 28]}
shapes:
  description: Each shape's result, C({works, error}).
  returned: always
  type: dict
  sample: {"cri": {"works": true, "error": null}}
"""

import os
import time
import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.k3s_gvisor.node.plugins.module_utils.gvisor_decisions import REQUIRED_SHAPES
from ansible_collections.k3s_gvisor.node.plugins.module_utils.gvisor_facts import VersionQuery
from ansible_collections.k3s_gvisor.node.plugins.module_utils.host_text import parse_crun_version, parse_mountinfo, parse_runc_version, version_tuple
from ansible_collections.k3s_gvisor.node.plugins.module_utils.linux_calls import read_text
from ansible_collections.k3s_gvisor.node.plugins.module_utils.runtime_check import RuntimeCheck, passed


def runtime_binary(path: str, timeout: float) -> dict:
    """What the probe would report of the runtime at PATH (crun or runc, by its name)."""
    parse = parse_crun_version if os.path.basename(path).startswith("crun") else parse_runc_version
    return VersionQuery(path, parse).result(timeout)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            runtime=dict(type="path", required=True),
            containerd_version=dict(type="str"),
            scratch_dir=dict(type="path", default="/var/tmp"),
            timeout=dict(type="float", default=10.0),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if not os.access(params["runtime"], os.X_OK):
        module.fail_json(msg="%s is not an executable runtime" % params["runtime"])
    mounts = parse_mountinfo(read_text("/proc/self/mountinfo") or "")
    cgroup_points = [m["mount_point"] for m in mounts if m["fstype"] in ("cgroup", "cgroup2")]
    started = time.monotonic()
    try:
        check = RuntimeCheck(params["scratch_dir"], version_tuple(params["containerd_version"]), cgroup_points,
                             params["timeout"])
        shapes = check.check({"runtime": params["runtime"]})["runtime"]
    except Exception as exc:  # a bug here must still say where it happened
        module.fail_json(msg="runtime check failed: %s" % exc, exception=traceback.format_exc())
    result = {"changed": False, "binary": runtime_binary(params["runtime"], params["timeout"]), "shapes": shapes,
              "seconds": round(time.monotonic() - started, 3)}
    if not passed(shapes, REQUIRED_SHAPES):
        failed = ["%s: %s" % (shape, shapes[shape]["error"]) for shape in REQUIRED_SHAPES if shapes[shape]["works"] is not True]
        module.fail_json(msg="%s does not run CRI's containers on this host: %s. Set runc_gvisor_runtime to another "
                             "runtime (runc-patched runs everywhere the probe found a remedy)" % (params["runtime"], "; ".join(failed)),
                         **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
