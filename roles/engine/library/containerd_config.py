#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# Apache License 2.0 (see LICENSE)

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
  - Changes the file only when its text would differ, atomically (a temporary file in the same directory,
    renamed over it), keeping its mode and owner. A missing file is created with mode 0644, and its directory
    with it.
version_added: "0.1.0"
author:
  - k3s-gvisor contributors
requirements:
  - tomlkit on the target (Debian and Ubuntu C(python3-tomlkit)).
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
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
      - Runtime option C(NoNewKeyring), so runc does not join a new session keyring (blocker B6).
    type: bool
    default: true
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
  containerd_config:
    containerd_version: "{{ ansible_facts.gvisor.containerd.version }}"
    snapshotter: "{{ 'native' if 'B7' in (ansible_facts.gvisor.blockers | map(attribute='id')) else omit }}"
    unprivileged_ports_icmp: "{{ false if 'B5' in (ansible_facts.gvisor.blockers | map(attribute='id')) else omit }}"
    sandbox_image: registry.k8s.io/pause:3.10
  become: true
  notify: Restart containerd

- name: Add the runtime for a RuntimeClass only, leaving runc the default
  containerd_config:
    containerd_version: 1.7.24
    default_runtime: false
    backup: true
  become: true

- name: Point containerd's CRI at k3s's CNI directories
  containerd_config:
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

import errno
import os
import stat
import tempfile
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_bytes, to_native
from ansible.module_utils.containerd_toml import (
    HAS_TOMLKIT,
    ConfigSyntaxError,
    ContainerdConfigError,
    GvisorSettings,
    merge_containerd_config,
)

NEW_FILE_MODE = 0o644
NEW_DIR_MODE = 0o755


def read_config(path: str) -> tuple[str, os.stat_result | None]:
    """The file's text and stat, or ("", None) when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "", None
    if not stat.S_ISREG(st.st_mode):
        raise ContainerdConfigError("is not a regular file")
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return data.decode("utf-8"), st
    except UnicodeDecodeError as error:
        raise ContainerdConfigError("is not UTF-8 (TOML must be): %s" % error) from None


def write_atomically(module: AnsibleModule, path: str, text: str, st: os.stat_result | None) -> None:
    """Write text to a temporary file beside path and rename it over path, keeping mode and owner."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        os.makedirs(directory, NEW_DIR_MODE)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(to_bytes(text, errors="surrogate_or_strict"))
            handle.flush()
            os.fsync(handle.fileno())
        if st is None:
            os.chmod(tmp, NEW_FILE_MODE)
        else:
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
            try:
                os.chown(tmp, st.st_uid, st.st_gid)
            except OSError as error:
                # Without CAP_CHOWN the file stays ours; that is only wrong if it was someone else's.
                if error.errno != errno.EPERM or (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
                    raise
            if module.selinux_enabled():
                module.set_context_if_different(tmp, module.selinux_context(path), False)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", default="/etc/containerd/config.toml"),
            containerd_version=dict(type="str", required=True),
            runtime_name=dict(type="str", default="runc-gvisor"),
            binary_name=dict(type="str", default="/usr/local/bin/runc-gvisor"),
            default_runtime=dict(type="bool", default=True),
            no_new_keyring=dict(type="bool", default=True),
            systemd_cgroup=dict(type="bool", default=False),
            snapshotter=dict(type="str"),
            unprivileged_ports_icmp=dict(type="bool"),
            sandbox_image=dict(type="str"),
            cni_conf_dir=dict(type="str"),
            cni_bin_dir=dict(type="str"),
            backup=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    if not HAS_TOMLKIT:
        module.fail_json(msg=missing_required_lib("tomlkit (Debian: python3-tomlkit)"))

    params = module.params
    path = os.path.realpath(params["path"])
    settings = GvisorSettings(
        runtime_name=params["runtime_name"],
        binary_name=params["binary_name"],
        default_runtime=params["default_runtime"],
        no_new_keyring=params["no_new_keyring"],
        systemd_cgroup=params["systemd_cgroup"],
        snapshotter=params["snapshotter"],
        unprivileged_ports_icmp=params["unprivileged_ports_icmp"],
        sandbox_image=params["sandbox_image"],
        cni_conf_dir=params["cni_conf_dir"],
        cni_bin_dir=params["cni_bin_dir"],
    )

    try:
        before, st = read_config(path)
    except ContainerdConfigError as error:
        module.fail_json(msg="%s %s" % (path, error), path=path)
    except OSError as error:
        module.fail_json(msg="cannot read %s: %s" % (path, to_native(error)), path=path)

    try:
        result = merge_containerd_config(before, settings, params["containerd_version"])
    except ConfigSyntaxError as error:
        where = "line %s, column %s: " % (error.line, error.col) if error.line is not None else ""
        module.fail_json(
            msg="%s is not valid TOML at %s%s; the file was left as it is" % (path, where, error.reason),
            path=path, line=error.line, column=error.col,
        )
    except ContainerdConfigError as error:
        module.fail_json(msg="%s: %s; the file was left as it is" % (path, error), path=path)
    except Exception as error:  # a bug: say so with the traceback, and touch nothing
        module.fail_json(msg="merging %s failed: %s" % (path, error), path=path, exception=traceback.format_exc())

    for warning in result.warnings:
        module.warn("%s: %s" % (path, warning))

    changed = result.text != before
    response = dict(
        changed=changed,
        path=path,
        schema_version=result.schema_version,
        settings=result.settings,
        changed_keys=result.changed_keys,
    )
    if changed and module._diff:
        response["diff"] = dict(
            before=before,
            after=result.text,
            before_header=path if st is not None else "%s (absent)" % path,
            after_header=path,
        )
    if changed and not module.check_mode:
        try:
            if params["backup"] and st is not None:
                response["backup_file"] = module.backup_local(path)
            write_atomically(module, path, result.text, st)
        except OSError as error:
            module.fail_json(msg="cannot write %s: %s" % (path, to_native(error)), path=path,
                             exception=traceback.format_exc())
    module.exit_json(**response)


if __name__ == "__main__":
    main()
