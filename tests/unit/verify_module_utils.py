# SPDX-License-Identifier: Apache-2.0
"""The collection's module_utils, by short name, as the modules import them
(tests/conftest.py puts this tree on the path as k3s_gvisor.node)."""

from __future__ import annotations

import importlib

MODULE_UTILS = "ansible_collections.k3s_gvisor.node.plugins.module_utils"


def load(name: str):
    """The module_utils NAME (cri_pod_sandbox, oci_image, ...)."""
    return importlib.import_module(f"{MODULE_UTILS}.{name}")
