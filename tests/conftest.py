# SPDX-License-Identifier: Apache-2.0
"""Shared by every test: the collection's code importable from this tree."""

import tree_collection  # noqa: F401  (puts k3s_gvisor.node on sys.path)
