#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: runc_gvisor_build
short_description: Build the patched runc, the runc-gvisor wrapper and the CNI plugin once, cached
description:
  - Runs on the build host (the controller by default) and makes sure a build of runc with the given
    patches, of the runc-gvisor wrapper and of the gvisor-bridge CNI plugin exist in a cache keyed by their inputs
    (runc source and version, the content of every patch and of the build script, the architecture;
    the Go sources of the wrapper and of the CNI plugin).
  - A cached build is reused after its sha256 is checked against the one recorded when it was built;
    a mismatch fails, naming the file and both checksums, before anything is installed.
  - Builds run in docker containers on plain runc, from Debian's runc source package or an upstream
    release tarball, and produce static binaries that run on every node of the fleet.
  - A build killed half-way leaves only a partial directory, which the next run removes before building again.
options:
  cache_dir:
    description: Cache directory on the build host.
    type: path
    required: true
  build_runc:
    description: Whether a patched runc is wanted (false builds only the wrapper).
    type: bool
    default: true
  patches:
    description: Patch files, applied in this order.
    type: list
    elements: path
    default: []
  build_script:
    description: The runc build script (build-runc.sh).
    type: path
    required: true
  wrapper_src:
    description: Directory of the wrapper's Go module.
    type: path
    required: true
  cni_src:
    description: Directory of the gvisor-bridge CNI plugin's Go module; built the wrapper's way. Omitted, it is not built.
    type: path
  runc_source:
    description: Where runc's source comes from.
    type: str
    choices: [debian, upstream]
    default: debian
  runc_version:
    description: The runc version asked for (part of the cache key).
    type: str
    required: true
  upstream_tarball:
    description: With I(runc_source=upstream), the downloaded and checksum-verified release tarball.
    type: path
  build_image:
    description: Docker image of a Debian release whose runc source package is built (debian) or whose Go builds (upstream).
    type: str
    required: true
  cache_image:
    description: Docker image name under which the build image with build dependencies installed is kept.
    type: str
    required: true
author:
  - k3s-gvisor contributors
notes:
  - Supports check mode, in which it reports what it would build and builds nothing.
"""

EXAMPLES = r"""
- name: Build the patched runc and the wrapper on the controller
  runc_gvisor_build:
    cache_dir: /root/.cache/k3s-gvisor
    patches: "{{ query('ansible.builtin.fileglob', role_path ~ '/files/patches/*.patch') | sort }}"
    build_script: "{{ role_path }}/files/build-runc.sh"
    wrapper_src: "{{ role_path }}/files/wrapper"
    runc_version: 1.3.6+ds1-1
    build_image: k3s-gvisor/node:sid
    cache_image: k3s-gvisor/runc-build:sid
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
runc:
  description: The patched runc build; null when I(build_runc=false).
  returned: always
  type: dict
  contains:
    path: {description: The binary in the cache., type: str}
    sha256: {description: Its sha256 (null in check mode when it would be built)., type: str}
    key: {description: The cache key., type: str}
    built: {description: Whether this run built it (or would, in check mode)., type: bool}
    seconds: {description: Build time., type: float}
wrapper:
  description: The runc-gvisor wrapper build, as I(runc).
  returned: always
  type: dict
cni:
  description: The gvisor-bridge CNI plugin build, as I(runc); null without I(cni_src).
  returned: always
  type: dict
builds:
  description: How many binaries this run built (or would build, in check mode).
  returned: always
  type: int
  sample: 0
"""

import os
import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.runc_gvisor_build import BuildFailed, CacheCorrupted, FleetBuild


def main():
    module = AnsibleModule(
        argument_spec=dict(
            cache_dir=dict(type="path", required=True),
            build_runc=dict(type="bool", default=True),
            patches=dict(type="list", elements="path", default=[]),
            build_script=dict(type="path", required=True),
            wrapper_src=dict(type="path", required=True),
            cni_src=dict(type="path"),
            runc_source=dict(type="str", choices=["debian", "upstream"], default="debian"),
            runc_version=dict(type="str", required=True),
            upstream_tarball=dict(type="path"),
            build_image=dict(type="str", required=True),
            cache_image=dict(type="str", required=True),
        ),
        required_if=[("runc_source", "upstream", ["upstream_tarball"])],
        supports_check_mode=True,
    )
    params = module.params
    inputs = [params["build_script"], params["wrapper_src"], *params["patches"]]
    if params["cni_src"]:
        inputs.append(params["cni_src"])
    for path in inputs:
        if not os.path.exists(path):
            module.fail_json(msg="build input %s does not exist" % path)

    fleet = FleetBuild(
        cache_dir=params["cache_dir"], patches=params["patches"], build_script=params["build_script"],
        wrapper_src=params["wrapper_src"], build_image=params["build_image"], cache_image=params["cache_image"],
        runc_source=params["runc_source"], runc_version=params["runc_version"],
        upstream_tarball=params["upstream_tarball"], cni_src=params["cni_src"],
    )
    try:
        wrapper = fleet.ensure(fleet.wrapper_artifact(), module.check_mode)
        runc = fleet.ensure(fleet.runc_artifact(), module.check_mode) if params["build_runc"] else None
        cni = fleet.ensure(fleet.cni_artifact(), module.check_mode) if params["cni_src"] else None
    except CacheCorrupted as error:
        module.fail_json(msg=str(error))
    except BuildFailed as error:
        module.fail_json(msg=str(error), build_log=error.log[-20000:])
    except Exception as error:  # a bug here must still say where it happened
        module.fail_json(msg="runc_gvisor_build failed: %s" % error, exception=traceback.format_exc())

    built = [artifact for artifact in (wrapper, runc, cni) if artifact is not None and artifact.built]
    module.exit_json(
        changed=bool(built),
        builds=len(built),
        wrapper=wrapper.as_dict(),
        runc=runc.as_dict() if runc else None,
        cni=cni.as_dict() if cni else None,
    )


if __name__ == "__main__":
    main()
