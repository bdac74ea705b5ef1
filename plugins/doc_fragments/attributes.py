# SPDX-License-Identifier: Apache-2.0
# Copyright: k3s-gvisor contributors
"""The attribute descriptions every module of the collection shares, so that
each module states only how far it supports them (as community.general's
attributes fragment does)."""

from __future__ import annotations


class ModuleDocFragment:
    # check_mode and diff_mode: each module sets only their "support".
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
"""

    # For modules that return ansible_facts.
    FACTS = r"""
options: {}
attributes:
  facts:
    description: Action returns an C(ansible_facts) dictionary that will update existing host facts.
    support: full
"""
