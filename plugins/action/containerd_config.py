# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0
"""Action plugin of k3s_gvisor.node.containerd_config: the merge runs here, on
the controller, with tomlkit; the node only has its file read (slurp) and
written (ansible.builtin.copy: atomic move, mode and owner kept, check mode,
diff and backup), as ansible.builtin.template does. Nodes need Python's
standard library alone."""

from __future__ import annotations

import base64
import os
import shutil
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible_collections.k3s_gvisor.node.plugins.module_utils.containerd_toml import (
    ARGUMENT_SPEC,
    HAS_TOMLKIT,
    ConfigSyntaxError,
    ContainerdConfigError,
    GvisorSettings,
    merge_containerd_config,
)

display = Display()
NEW_FILE_MODE = "0644"
# Only for a directory the file needs and that does not exist yet.
NEW_DIR_MODE = "0755"


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        _, params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        if not HAS_TOMLKIT:
            raise AnsibleActionFail("containerd_config needs tomlkit on the controller (pip install tomlkit)")
        path = params["path"]
        try:
            exists, before = self._read_remote(path, task_vars)
            merged = self._merge(path, before, params)
        except AnsibleActionFail as error:
            return dict(result, failed=True, msg=to_native(error), path=path)
        for warning in merged.warnings:
            display.warning("%s: %s" % (path, warning))
        result.update(path=path, schema_version=merged.schema_version, settings=merged.settings,
                      changed_keys=merged.changed_keys)
        if merged.text == before:
            return dict(result, changed=False)
        result.update(self._write(path, exists, merged.text, params["backup"], task_vars))
        return result

    def _read_remote(self, path: str, task_vars) -> tuple[bool, str]:
        """(exists, text) of the node's file; a symlink is followed, anything but a regular file refused."""
        stat = self._execute_module("ansible.legacy.stat", module_args=dict(path=path, follow=True, get_checksum=False),
                                    task_vars=task_vars)
        if stat.get("failed"):
            raise AnsibleActionFail("cannot stat %s: %s" % (path, stat.get("msg")))
        if not stat["stat"]["exists"]:
            return False, ""
        if not stat["stat"]["isreg"]:
            raise AnsibleActionFail("%s is not a regular file" % path)
        slurped = self._execute_module("ansible.legacy.slurp", module_args=dict(src=path), task_vars=task_vars)
        if slurped.get("failed"):
            raise AnsibleActionFail("cannot read %s: %s" % (path, slurped.get("msg")))
        try:
            return True, base64.b64decode(slurped["content"]).decode("utf-8")
        except UnicodeDecodeError as error:
            raise AnsibleActionFail("%s is not UTF-8 (TOML must be): %s; the file was left as it is" % (path, error)) from None

    @staticmethod
    def _merge(path: str, before: str, params: dict):
        settings = GvisorSettings(**{name: params[name] for name in (
            "runtime_name", "binary_name", "default_runtime", "no_new_keyring", "systemd_cgroup", "snapshotter",
            "unprivileged_ports_icmp", "sandbox_image", "cni_conf_dir", "cni_bin_dir")})
        try:
            return merge_containerd_config(before, settings, params["containerd_version"])
        except ConfigSyntaxError as error:
            where = "line %s, column %s: " % (error.line, error.col) if error.line is not None else ""
            raise AnsibleActionFail("%s is not valid TOML at %s%s; the file was left as it is"
                                    % (path, where, error.reason)) from None
        except ContainerdConfigError as error:
            raise AnsibleActionFail("%s: %s; the file was left as it is" % (path, error)) from None

    def _write(self, path: str, exists: bool, text: str, backup: bool, task_vars) -> dict:
        """The merged text to the node through ansible.builtin.copy, from a local temporary file."""
        if not exists:
            made = self._execute_module("ansible.legacy.file", task_vars=task_vars, module_args=dict(
                path=os.path.dirname(path), state="directory", mode=NEW_DIR_MODE))
            if made.get("failed"):
                return dict(failed=True, msg="cannot make %s: %s" % (os.path.dirname(path), made.get("msg")))
        local_dir = tempfile.mkdtemp(prefix="k3s-gvisor-containerd-config-")
        try:
            local = os.path.join(local_dir, os.path.basename(path))
            with open(to_bytes(local), "wb") as handle:
                handle.write(to_bytes(text, errors="surrogate_or_strict"))
            copy_args = dict(src=local, dest=path, follow=True, backup=backup)
            if not exists:
                # A new file; an existing one keeps its own mode and owner.
                copy_args["mode"] = NEW_FILE_MODE
            copy_task = self._task.copy()
            copy_task.args.clear()
            copy_task.args.update(copy_args)
            copy_action = self._shared_loader_obj.action_loader.get(
                "ansible.legacy.copy", task=copy_task, connection=self._connection, play_context=self._play_context,
                loader=self._loader, templar=self._templar, shared_loader_obj=self._shared_loader_obj)
            copied = copy_action.run(task_vars=task_vars)
        finally:
            shutil.rmtree(local_dir, ignore_errors=True)
        if copied.get("failed"):
            return dict(failed=True, msg="cannot write %s: %s" % (path, to_text(copied.get("msg", "copy failed"))))
        written = {key: copied[key] for key in ("changed", "backup_file") if key in copied}
        # copy reports one file's diff as a list of one.
        diff = copied.get("diff")
        if diff:
            written["diff"] = diff[0] if isinstance(diff, list) and len(diff) == 1 else diff
        return written
