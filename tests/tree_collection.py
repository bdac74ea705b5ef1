# SPDX-License-Identifier: Apache-2.0
"""Tests import the collection's Python code from this tree under the
names Ansible gives it (ansible_collections.k3s_gvisor.node.plugins...): a
temporary collection root whose k3s_gvisor/node is this repository."""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLLECTION = "ansible_collections.k3s_gvisor.node"
MODULE_UTILS = f"{COLLECTION}.plugins.module_utils"

_ROOT = Path(tempfile.mkdtemp(prefix="k3s-gvisor-collection-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)
(_ROOT / "ansible_collections" / "k3s_gvisor").mkdir(parents=True)
(_ROOT / "ansible_collections" / "k3s_gvisor" / "node").symlink_to(REPO)
sys.path.insert(0, str(_ROOT))
COLLECTION_ROOT = str(_ROOT)
