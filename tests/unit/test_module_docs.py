# SPDX-License-Identifier: Apache-2.0
"""Every module of the collection documents itself: ansible-doc renders it
(DOCUMENTATION, EXAMPLES and RETURN parse, the doc fragment resolves)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from tree_collection import COLLECTION_ROOT

REPO = Path(__file__).resolve().parents[2]
MODULES = sorted(path.stem for path in (REPO / "plugins" / "modules").glob("*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_renders_the_module(module):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTION_ROOT)
    proc = subprocess.run([str(REPO / ".venv/bin/ansible-doc"), "--json", f"k3s_gvisor.node.{module}"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and "ERROR" not in proc.stderr, proc.stderr
    doc = json.loads(proc.stdout)[f"k3s_gvisor.node.{module}"]
    assert doc["doc"]["short_description"] and doc["doc"]["options"] is not None
    assert doc["examples"] and doc["return"], f"{module} has no EXAMPLES or RETURN"
    # The shared attributes come from the collection's doc fragment.
    assert set(doc["doc"]["attributes"]) >= {"check_mode", "diff_mode"}
    assert all(attribute.get("description") for attribute in doc["doc"]["attributes"].values())
