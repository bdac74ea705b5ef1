#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: runc_gvisor_build
short_description: Build the patched runc, the runc-gvisor wrapper, the CNI plugins and the Kubernetes binaries once, cached
description:
  - Runs on the build host (the controller by default) and makes sure builds of the runc-gvisor wrapper, of the
    gvisor-bridge CNI plugin and upstream's loopback plugin, and of runc with the given patches exist in a cache
    keyed by their inputs (the Go sources with go.mod and go.sum, the pinned Go toolchain, runc's source and
    version, the content of every patch and of the build script, the architecture).
  - The Go programs are built natively with the build host's go and the pinned toolchain, static and pure Go; no
    docker is needed. runc is built natively from its Go module (I(runc_source=module), pinned by the build
    module's go.sum) or, on build hosts with docker, in a container from Debian's source package or a release
    tarball.
  - A cached build is reused after its sha256 is checked against the one recorded when it was built;
    a mismatch fails, naming the file and both checksums, before anything is installed.
  - A build killed half-way leaves only a partial directory, which the next run removes before building again.
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
extends_documentation_fragment:
  - k3s_gvisor.node.attributes
options:
  cache_dir:
    description: Cache directory on the build host.
    type: path
    required: true
  go_toolchain:
    description:
      - The Go toolchain every Go build runs with (GOTOOLCHAIN), e.g. V(go1.27.3); the go found in PATH fetches it
        from the module cache or the Go module proxy.
    type: str
    required: true
  wrapper_src:
    description: Directory of the wrapper's Go module. Omitted, the wrapper is not built.
    type: path
  cni_src:
    description:
      - Directory of the gvisor-bridge CNI plugin's Go module. Omitted, no CNI plugin is built; given, upstream's
        loopback plugin is built from the same module too.
    type: path
  kubernetes_src:
    description:
      - Directory of the kubernetes engine's build module (it requires k8s.io/kubernetes at the pinned release and
        repeats its staging replace block). Given, the commands in I(kubernetes_commands) are built from it,
        version-stamped, and kine from I(kine_src).
    type: path
  kubernetes_commands:
    description: The Kubernetes commands to build.
    type: list
    elements: str
    default: [kubelet, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubeadm, kube-proxy]
  kine_src:
    description: Directory of kine's build module. Omitted, kine is not built.
    type: path
  service_proxy_src:
    description: Directory of gvisor-service-proxy's Go module. Omitted, it is not built.
    type: path
  coredns_src:
    description: Directory of CoreDNS's build module (the cluster's plugin set). Omitted, CoreDNS is not built.
    type: path
  build_runc:
    description: Whether to build runc with I(patches).
    type: bool
    default: false
  patches:
    description: Patch files, applied in this order.
    type: list
    elements: path
    default: []
  build_script:
    description: The runc build script (build-runc.sh); required with I(build_runc).
    type: path
  runc_source:
    description:
      - Where runc's source comes from. V(module) builds natively from the build module in I(runc_module_src);
        V(debian) (Debian's source package) and V(upstream) (a release tarball) build in docker.
    type: str
    choices: [module, debian, upstream]
    default: module
  runc_version:
    description: The runc version asked for (part of the cache key).
    type: str
    default: ""
  runc_module_src:
    description: With I(runc_source=module), the build module whose go.mod and go.sum pin runc's release.
    type: path
  upstream_tarball:
    description: With I(runc_source=upstream), the downloaded and checksum-verified release tarball.
    type: path
  build_image:
    description: With the docker sources, the Debian image the build runs in.
    type: str
    default: ""
  cache_image:
    description: With the docker sources, the name under which the build image with build dependencies is kept.
    type: str
    default: ""
author:
  - k3s-gvisor contributors
notes:
  - In check mode it reports what it would build and builds nothing.
"""

EXAMPLES = r"""
- name: Build the wrapper and the CNI plugins on the controller
  k3s_gvisor.node.runc_gvisor_build:
    cache_dir: /root/.cache/k3s-gvisor
    go_toolchain: go1.27.3
    wrapper_src: "{{ role_path }}/files/wrapper"
    cni_src: "{{ role_path }}/files/cni"
  delegate_to: localhost
  run_once: true

- name: Build runc 1.3.6 with the patches for B3 and B8, natively
  k3s_gvisor.node.runc_gvisor_build:
    cache_dir: /root/.cache/k3s-gvisor
    go_toolchain: go1.27.3
    build_runc: true
    patches:
      - "{{ role_path }}/files/patches/0002-securejoin-gvisor-procfs-root.patch"
      - "{{ role_path }}/files/patches/0003-maskdir-retry-without-size-options.patch"
    build_script: "{{ role_path }}/files/build-runc.sh"
    runc_module_src: "{{ role_path }}/files/runc-module"
    runc_version: 1.3.6
  delegate_to: localhost
"""

RETURN = r"""
runc:
  description: The runc build; null without I(build_runc).
  returned: always
  type: dict
  contains:
    path: {description: The binary in the cache., type: str}
    sha256: {description: Its sha256 (null in check mode when it would be built)., type: str}
    key: {description: The cache key., type: str}
    built: {description: Whether this run built it (or would, in check mode)., type: bool}
    seconds: {description: Build time., type: float}
wrapper:
  description: The runc-gvisor wrapper build, as RV(runc); null without I(wrapper_src).
  returned: always
  type: dict
cni:
  description: The gvisor-bridge CNI plugin build, as RV(runc); null without I(cni_src).
  returned: always
  type: dict
cni_loopback:
  description: Upstream's loopback CNI plugin, built from I(cni_src)'s pinned plugins release, as RV(runc).
  returned: always
  type: dict
kubernetes:
  description: The Kubernetes commands' builds by name, each as RV(runc); empty without I(kubernetes_src).
  returned: always
  type: dict
kine:
  description: kine's build, as RV(runc); null without I(kine_src).
  returned: always
  type: dict
service_proxy:
  description: gvisor-service-proxy's build, as RV(runc); null without I(service_proxy_src).
  returned: always
  type: dict
coredns:
  description: CoreDNS's build, as RV(runc); null without I(coredns_src).
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
from ansible_collections.k3s_gvisor.node.plugins.module_utils.runc_gvisor_build import (
    KUBERNETES_COMMANDS, BuildFailed, CacheCorrupted, FleetBuild,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            cache_dir=dict(type="path", required=True),
            go_toolchain=dict(type="str", required=True),
            wrapper_src=dict(type="path"),
            cni_src=dict(type="path"),
            kubernetes_src=dict(type="path"),
            kubernetes_commands=dict(type="list", elements="str", default=list(KUBERNETES_COMMANDS)),
            kine_src=dict(type="path"),
            service_proxy_src=dict(type="path"),
            coredns_src=dict(type="path"),
            build_runc=dict(type="bool", default=False),
            patches=dict(type="list", elements="path", default=[]),
            build_script=dict(type="path"),
            runc_source=dict(type="str", choices=["module", "debian", "upstream"], default="module"),
            runc_version=dict(type="str", default=""),
            runc_module_src=dict(type="path"),
            upstream_tarball=dict(type="path"),
            build_image=dict(type="str", default=""),
            cache_image=dict(type="str", default=""),
        ),
        required_if=[
            ("build_runc", True, ["build_script"]),
            ("runc_source", "upstream", ["upstream_tarball"]),
        ],
        supports_check_mode=True,
    )
    params = module.params
    if params["build_runc"] and params["runc_source"] == "module" and not params["runc_module_src"]:
        module.fail_json(msg="runc_source=module needs runc_module_src, the build module that pins runc")
    if params["build_runc"] and params["runc_source"] != "module" and not (params["build_image"] and params["cache_image"]):
        module.fail_json(msg="runc_source=%s builds in docker and needs build_image and cache_image" % params["runc_source"])
    unknown = sorted(set(params["kubernetes_commands"]) - set(KUBERNETES_COMMANDS))
    if unknown:
        module.fail_json(msg="kubernetes_commands: unknown %s (known: %s)" % (", ".join(unknown), ", ".join(KUBERNETES_COMMANDS)))
    inputs = [params[name] for name in ("wrapper_src", "cni_src", "kubernetes_src", "kine_src", "service_proxy_src",
                                        "coredns_src", "runc_module_src", "build_script") if params[name]]
    for path in inputs + params["patches"]:
        if not os.path.exists(path):
            module.fail_json(msg="build input %s does not exist" % path)
    fleet = FleetBuild(
        cache_dir=params["cache_dir"], go_toolchain=params["go_toolchain"], wrapper_src=params["wrapper_src"],
        cni_src=params["cni_src"], kubernetes_src=params["kubernetes_src"], kine_src=params["kine_src"],
        service_proxy_src=params["service_proxy_src"], coredns_src=params["coredns_src"],
        build_script=params["build_script"], patches=params["patches"],
        runc_source=params["runc_source"], runc_version=params["runc_version"],
        runc_module_src=params["runc_module_src"], upstream_tarball=params["upstream_tarball"],
        build_image=params["build_image"], cache_image=params["cache_image"],
    )
    wanted = {
        "wrapper": fleet.wrapper_artifact if params["wrapper_src"] else None,
        "cni": fleet.cni_artifact if params["cni_src"] else None,
        "cni_loopback": fleet.cni_loopback_artifact if params["cni_src"] else None,
        "runc": fleet.runc_artifact if params["build_runc"] else None,
        "kine": fleet.kine_artifact if params["kine_src"] else None,
        "service_proxy": fleet.service_proxy_artifact if params["service_proxy_src"] else None,
        "coredns": fleet.coredns_artifact if params["coredns_src"] else None,
    }
    results = {}
    kubernetes = {}
    try:
        for name, artifact in wanted.items():
            results[name] = fleet.ensure(artifact(), module.check_mode) if artifact else None
        if params["kubernetes_src"]:
            for artifact in fleet.kubernetes_artifacts(params["kubernetes_commands"]):
                kubernetes[artifact.binary_name] = fleet.ensure(artifact, module.check_mode)
    except CacheCorrupted as error:
        module.fail_json(msg=str(error))
    except BuildFailed as error:
        module.fail_json(msg=str(error), build_log=error.log[-20000:])
    except Exception as error:  # a bug here must still say where it happened
        module.fail_json(msg="runc_gvisor_build failed: %s" % error, exception=traceback.format_exc())

    built = [artifact for artifact in [*results.values(), *kubernetes.values()] if artifact is not None and artifact.built]
    module.exit_json(changed=bool(built), builds=len(built),
                     kubernetes={name: artifact.as_dict() for name, artifact in kubernetes.items()},
                     **{name: artifact.as_dict() if artifact else None for name, artifact in results.items()})


if __name__ == "__main__":
    main()
