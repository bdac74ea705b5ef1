#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: containerd_config
short_description: Merge the runc-gvisor runtime and the gVisor settings into containerd's config.toml
description:
  - Edits the distribution's containerd configuration in place with tomlkit. Keys, tables, comments and their
    order stay as they are; only the keys below are set, and tables that are missing are added after their
    siblings, indented like the rest of the file.
  - Adds the runtime O(runtime_name) (shim C(io.containerd.runc.v2), C(BinaryName) pointing at the runc-gvisor
    wrapper, C(NoNewKeyring), C(SystemdCgroup)) and makes it the CRI default; optionally sets the snapshotter,
    turns off unprivileged ports and ICMP, pins the sandbox (pause) image and sets the CNI directories.
  - Writes config version 2 (containerd 1.6 and 1.7, table C(plugins."io.containerd.grpc.v1.cri")) or version 3
    (containerd 2.x, tables C(plugins.'io.containerd.cri.v1.runtime') and C(plugins.'io.containerd.cri.v1.images')).
    The file's own C(version) key decides; a file without one gets the version its containerd writes itself.
  - Changes the file only when its text would differ, through M(ansible.builtin.copy) (an atomic move, the file's mode
    and owner kept, check mode, diff and backup as copy does them). A missing file is created with mode 0644.
version_added: "0.1.0"
author:
  - k3s-gvisor contributors
requirements:
  - tomlkit on the controller. The merge runs there (an action plugin); the node's file is read with
    M(ansible.builtin.slurp) and written with M(ansible.builtin.copy), so the node needs Python's standard library only.
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
extends_documentation_fragment:
  - k3s_gvisor.node.attributes
options:
  path:
    description:
      - The containerd configuration file. A symbolic link is followed and its target edited.
    type: path
    default: /etc/containerd/config.toml
  containerd_version:
    description:
      - Version of the containerd that reads the file, as C(containerd --version) prints it (V(2.1.9),
        V(1.7.24~ds1)); C(ansible_facts.gvisor.containerd.version) of the C(gvisor_probe) module.
      - Decides the config version of a file that has no C(version) key (containerd 1.6 and 1.7 write 2,
        containerd 2.x writes 3), and is checked against a file that has one. containerd 1.x cannot read
        version 3; containerd 2.x reads version 2 and converts it on every start, so such a file stays version 2.
      - Also chooses between C(cni.bin_dirs) (containerd 2.1 and newer) and C(cni.bin_dir) for O(cni_bin_dir).
    type: str
    required: true
  runtime_name:
    description:
      - Name of the CRI runtime (the RuntimeClass handler) that runs pods through the wrapper.
    type: str
    default: runc-gvisor
  binary_name:
    description:
      - The runc the shim calls for this runtime (option C(BinaryName)), the runc-gvisor wrapper.
    type: str
    default: /usr/local/bin/runc-gvisor
  default_runtime:
    description:
      - Make O(runtime_name) the CRI default runtime (C(default_runtime_name)), so that pods without a
        RuntimeClass use it.
      - V(false) removes C(default_runtime_name) when it names O(runtime_name) (containerd then defaults to
        C(runc)), and leaves any other default alone.
    type: bool
    default: true
  no_new_keyring:
    description:
      - Runtime option C(NoNewKeyring), so runc does not join a new session keyring (blocker B6), a relaxation -
        containers then share the runtime's session keyring; set it only where the probe found B6.
    type: bool
    default: false
  systemd_cgroup:
    description:
      - Runtime option C(SystemdCgroup). Keep V(false) where systemd does not manage the cgroups, as in gVisor.
    type: bool
    default: false
  snapshotter:
    description:
      - The CRI snapshotter, V(native) where overlay mounts fail (blocker B7). V(null) leaves the file's setting.
    type: str
  unprivileged_ports_icmp:
    description:
      - V(false) writes C(enable_unprivileged_ports = false) and C(enable_unprivileged_icmp = false), which
        containerd 2.x needs on a kernel that reports a version below 4.11, as gVisor does (blocker B5).
      - V(true) writes both as true. V(null) leaves them.
    type: bool
  sandbox_image:
    description:
      - The pause image pinned as the pod sandbox (C(sandbox_image) in version 2, C(pinned_images.sandbox) in
        version 3). V(null) leaves it.
    type: str
  cni_conf_dir:
    description:
      - Directory of the CNI network configurations (C(cni.conf_dir)). V(null) leaves it.
    type: str
  cni_bin_dir:
    description:
      - Directory of the CNI plugin binaries. V(null) leaves it.
      - Version 3 with containerd 2.1 or newer gets C(cni.bin_dirs = [dir]) and an empty C(cni.bin_dir)
        (containerd 2.1 refuses both set); otherwise C(cni.bin_dir = dir).
    type: str
  backup:
    description:
      - Keep a copy of the file, with a timestamp in its name, before changing it.
    type: bool
    default: false
notes:
  - A file that is not valid TOML is left untouched; the task fails with the line and column tomlkit reports.
  - A file with C([plugins]) tables but no C(version) key is a version 1 config (short plugin names such as
    C(plugins.cri)), which this module does not write; the task fails and says how to migrate it.
  - Parts of the path to a key written as dotted keys (C(containerd.snapshotter = ...) inside a table) are refused
    with a message, because tomlkit cannot add keys to them faithfully. Write them as C([table]) sections.
  - With containerd 1.x, a file without a C(runtimes.runc) table also gets C(runtimes.runc.runtime_type =
    "io.containerd.runc.v2"), which is containerd's own default. containerd 1.x replaces its built-in runtimes with
    the file's C(runtimes) table instead of merging them (2.x merges), so adding O(runtime_name) alone would remove
    C(runc), and with O(default_runtime=false) the CRI plugin would not load.
  - Settings in files the config C(imports) override the ones merged here; the module warns about them, and about
    a CRI plugin listed in C(disabled_plugins).
  - containerd reads its configuration only at start; restart it after a change (a handler).
seealso:
  - name: containerd CRI plugin configuration
    description: The keys of config versions 2 and 3.
    link: https://github.com/containerd/containerd/blob/main/docs/cri/config.md
"""

EXAMPLES = r"""
- name: Make runc-gvisor containerd's default runtime, as the probe found the host
  k3s_gvisor.node.containerd_config:
    containerd_version: "{{ ansible_facts.gvisor.containerd.version }}"
    snapshotter: "{{ ansible_facts.gvisor.decisions.engine.snapshotter.value }}"
    unprivileged_ports_icmp: "{{ ansible_facts.gvisor.decisions.engine.unprivileged_ports_icmp.value }}"
    sandbox_image: registry.k8s.io/pause:3.10
  become: true
  notify: Restart containerd

- name: Add the runtime for a RuntimeClass only, leaving runc the default
  k3s_gvisor.node.containerd_config:
    containerd_version: 1.7.24
    default_runtime: false
    backup: true
  become: true

- name: Point containerd's CRI at k3s's CNI directories
  k3s_gvisor.node.containerd_config:
    containerd_version: 2.1.9
    cni_conf_dir: /var/lib/rancher/k3s/agent/etc/cni/net.d
    cni_bin_dir: /var/lib/rancher/k3s/data/cni
  become: true
"""

RETURN = r"""
path:
  description: The file that was (or would be) written, after following a symbolic link.
  returned: always
  type: str
  sample: /etc/containerd/config.toml
schema_version:
  description: The config version the settings were written for (2 or 3).
  returned: always
  type: int
  sample: 3
settings:
  description:
    - Every key the module enforces, as a TOML dotted key, with its value (whether or not it had to change).
  returned: always
  type: dict
  sample:
    version: 3
    "plugins.'io.containerd.cri.v1.images'.snapshotter": native
    "plugins.'io.containerd.cri.v1.runtime'.enable_unprivileged_ports": false
    "plugins.'io.containerd.cri.v1.runtime'.enable_unprivileged_icmp": false
    "plugins.'io.containerd.cri.v1.runtime'.containerd.default_runtime_name": runc-gvisor
    "plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc-gvisor.runtime_type": io.containerd.runc.v2
    "plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc-gvisor.options.BinaryName": /usr/local/bin/runc-gvisor
    "plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc-gvisor.options.NoNewKeyring": true
    "plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc-gvisor.options.SystemdCgroup": false
changed_keys:
  description: The dotted keys whose text changed (set, added or removed), in the order they were merged.
  returned: always
  type: list
  elements: str
  sample:
    - "plugins.'io.containerd.cri.v1.images'.snapshotter"
backup_file:
  description: The copy made with O(backup=true).
  returned: changed and a backup was made
  type: str
  sample: /etc/containerd/config.toml.12345.2025-11-28@15:11:00~
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.k3s_gvisor.node.plugins.module_utils.containerd_toml import ARGUMENT_SPEC


def main():
    # The action plugin of the same name does the work on the controller.
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    module.fail_json(msg="containerd_config runs as an action plugin on the controller; it was called as a module")


if __name__ == "__main__":
    main()
