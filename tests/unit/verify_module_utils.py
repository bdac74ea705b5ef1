"""Load the verify role's module_utils (and the probe's catalogue) under the
names Ansible gives them (ansible.module_utils.NAME), as the modules import
each other that way."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {
    "gvisor_facts": ROOT / "roles" / "gvisor_preflight" / "module_utils" / "gvisor_facts.py",
    "oci_image": ROOT / "roles" / "verify" / "module_utils" / "oci_image.py",
    "verify_images": ROOT / "roles" / "verify" / "module_utils" / "verify_images.py",
    "cri_pod_sandbox": ROOT / "roles" / "verify" / "module_utils" / "cri_pod_sandbox.py",
    "cri_pod_network": ROOT / "roles" / "verify" / "module_utils" / "cri_pod_network.py",
}


def load(name: str):
    """The module_utils NAME, loaded once with its dependencies (SOURCES order)."""
    full = f"ansible.module_utils.{name}"
    if full not in sys.modules:
        for dependency in list(SOURCES)[: list(SOURCES).index(name)]:
            load(dependency)
        spec = importlib.util.spec_from_file_location(full, SOURCES[name])
        module = importlib.util.module_from_spec(spec)
        sys.modules[full] = module
        spec.loader.exec_module(module)
    return sys.modules[full]
