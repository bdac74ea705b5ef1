# SPDX-License-Identifier: Apache-2.0
"""Bad input to the kubernetes engine on a real gVisor 20240729 node (sid),
refused by name before anything is built or installed (issue 24 §2).

A wrong engine_kubernetes_version: the collection builds the release its
kubernetes-build module requires (go.sum holds the checksum), so any other
is refused by the runtime stage, before its build, naming both releases.
"""

from __future__ import annotations

import json

from site_runs import failed_tasks

# What the runtime stage would install for the kubernetes engine.
INSTALLED = ["/usr/local/bin/runc-gvisor", "/etc/runc-gvisor", "/usr/local/bin/kubelet", "/usr/local/bin/kube-apiserver",
             "/usr/local/bin/kine"]
REFUSAL = "runc_gvisor : Check that the Kubernetes release asked for is the one this collection builds"


def test_a_wrong_kubernetes_version_is_refused_before_anything_is_installed(node_factory):
    node = node_factory("kubernetes-wrong-version")
    present = [path for path in INSTALLED if node.exec("test", "-e", path).returncode == 0]
    run = node.playbook("site.yml", "-e", json.dumps({"container_engine": "kubernetes",
                                                      "engine_kubernetes_version": "v1.35.3"}))
    assert run.returncode != 0
    failures = failed_tasks(run)
    assert len(failures) == 1 and failures[0].startswith(REFUSAL + ": "), failures
    assert "engine_kubernetes_version is \"v1.35.3\"" in failures[0] and "builds Kubernetes v1.35.4" in failures[0]
    assert [path for path in INSTALLED if node.exec("test", "-e", path).returncode == 0] == present == []
