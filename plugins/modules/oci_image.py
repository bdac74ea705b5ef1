#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: oci_image
short_description: Build the verify stage's images, or CoreDNS's, and import them into containerd
description:
  - Builds a one-layer OCI image around the host's static busybox (the pod sandbox "pause" image, or the probe
    image whose script prints a marker and the container's view), or an image of one static program (CoreDNS,
    for the cluster DNS), as an OCI image layout archive, and imports it with C(ctr images import). No registry
    is needed.
  - The archive is deterministic, so its manifest digest depends only on busybox and this module. When the image
    is already in containerd under O(reference) with that digest, nothing is done.
  - Imported images are unpacked for O(snapshotter), the snapshotter the engine's CRI uses.
version_added: "0.1.0"
author:
  - k3s-gvisor contributors
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
extends_documentation_fragment:
  - k3s_gvisor.node.attributes
options:
  reference:
    description: The image's name in containerd, fully named with a tag (V(localhost/k3s-gvisor/pause:1)).
    type: str
    required: true
  kind:
    description: Which image to build; V(coredns) packs O(binary) as C(/coredns).
    type: str
    choices: [coredns, pause, probe]
    required: true
  busybox:
    description: A statically linked busybox on the host (Debian C(busybox-static)).
    type: path
    default: /bin/busybox
  binary:
    description: The statically linked program of O(kind=coredns), on the host.
    type: path
  ctr:
    description: The ctr command, with the options that reach the engine (V([ctr, --address, SOCKET]), V([k3s, ctr])).
    type: list
    elements: str
    default: [ctr]
  namespace:
    description: containerd namespace of the CRI.
    type: str
    default: k8s.io
  snapshotter:
    description: Snapshotter to unpack the image for (the record's, V(overlayfs) or V(native)); empty for containerd's default.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Import the pause image
  oci_image:
    reference: localhost/k3s-gvisor/pause:1
    kind: pause
    ctr: [ctr, --address, /run/containerd/containerd.sock]
    snapshotter: native

- name: Import CoreDNS's image, built from its module
  oci_image:
    reference: localhost/k3s-gvisor/coredns:1.14.7
    kind: coredns
    binary: /usr/local/bin/coredns
    ctr: [ctr, --address, /run/containerd/containerd.sock]
"""

RETURN = r"""
reference:
  description: The image's name.
  returned: always
  type: str
digest:
  description: The manifest digest of the image built here (what C(ctr images ls) shows once imported).
  returned: always
  type: str
  sample: sha256:4f1c...
previous_digest:
  description: The digest the name had before, or null.
  returned: always
  type: str
"""

import os
import platform
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.k3s_gvisor.node.plugins.module_utils.oci_image import (
    elf_is_static, manifest_digest, oci_architecture, oci_archive, parse_ctr_images, program_spec,
)
from ansible_collections.k3s_gvisor.node.plugins.module_utils.verify_images import IMAGE_KINDS


# Images of one static program, named after it.
PROGRAM_KINDS = ("coredns",)


class ImageImport:
    """Compare the image built here with containerd's, import it when it differs."""

    def __init__(self, module: AnsibleModule):
        self.module = module
        params = module.params
        self.ctr = params["ctr"] + ["--namespace", params["namespace"]]
        architecture = oci_architecture(platform.machine())
        if params["kind"] in PROGRAM_KINDS:
            program = self._read_static("binary", params["binary"], "build it with CGO_ENABLED=0")
            self.spec = program_spec(params["reference"], params["kind"], program, architecture)
        else:
            busybox = self._read_static("busybox", params["busybox"], "install busybox-static, or name its binary")
            self.spec = IMAGE_KINDS[params["kind"]](params["reference"], busybox, architecture)

    def _read_static(self, option: str, path: str, remedy: str) -> bytes:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
            static = elf_is_static(data)
        except (OSError, ValueError) as exc:
            self.module.fail_json(msg=f"{option}={path}: {exc}; {remedy}")
        if not static:
            self.module.fail_json(msg=f"{option}={path} is dynamically linked; {remedy}")
        return data

    def _ctr(self, *args: str) -> tuple[int, str]:
        """(rc, stdout) of ctr; fails the module on an error unless in check mode."""
        command = self.ctr + list(args)
        try:
            rc, out, err = self.module.run_command(command, handle_exceptions=False)
        except OSError as exc:
            # Check mode on a fresh host: k3s, whose ctr this is, is not installed yet.
            if self.module.check_mode:
                return 127, ""
            self.module.fail_json(msg=f"{' '.join(command)}: {exc}")
        if rc != 0 and not self.module.check_mode:
            self.module.fail_json(msg=f"{' '.join(command)} failed (rc {rc}): {err.strip() or out.strip()}")
        return rc, out

    def present_digest(self) -> str | None:
        rc, out = self._ctr("images", "ls", f"name=={self.spec.reference}")
        # rc != 0 only in check mode on a fresh host: the engine is not started
        # yet, so the image cannot be there and a real run would import it.
        return parse_ctr_images(out).get(self.spec.reference) if rc == 0 else None

    def run(self) -> dict:
        digest = manifest_digest(self.spec)
        previous = self.present_digest()
        result = {"changed": previous != digest, "reference": self.spec.reference, "digest": digest, "previous_digest": previous}
        if not result["changed"] or self.module.check_mode:
            return result
        self._import()
        imported = self.present_digest()
        if imported != digest:
            self.module.fail_json(msg=f"imported {self.spec.reference} but containerd shows digest {imported}, not {digest}", **result)
        return result

    def _import(self) -> None:
        snapshotter = self.module.params["snapshotter"]
        with tempfile.NamedTemporaryFile(prefix="k3s-gvisor-image-", suffix=".tar") as archive:
            archive.write(oci_archive(self.spec))
            archive.flush()
            os.fsync(archive.fileno())
            options = ["--snapshotter", snapshotter] if snapshotter else []
            # --local: containerd 2.x's transfer API refuses to unpack an
            # archive whose index names no platforms; the local importer reads
            # the platform from the image config (ctr 1.7 has the flag too).
            self._ctr("images", "import", "--local", *options, archive.name)


def main():
    module = AnsibleModule(
        argument_spec={
            "reference": {"type": "str", "required": True},
            "kind": {"type": "str", "required": True, "choices": sorted([*IMAGE_KINDS, *PROGRAM_KINDS])},
            "busybox": {"type": "path", "default": "/bin/busybox"},
            "binary": {"type": "path"},
            "ctr": {"type": "list", "elements": "str", "default": ["ctr"]},
            "namespace": {"type": "str", "default": "k8s.io"},
            "snapshotter": {"type": "str", "default": ""},
        },
        required_if=[("kind", kind, ["binary"]) for kind in PROGRAM_KINDS],
        supports_check_mode=True,
    )
    try:
        module.exit_json(**ImageImport(module).run())
    except ValueError as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()
