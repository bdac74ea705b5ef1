# SPDX-License-Identifier: Apache-2.0
"""Whether the test process has children left, for the tests that fork."""

from __future__ import annotations

import os

from ansible_collections.k3s_gvisor.node.plugins.module_utils.linux_calls import read_text


def children_of_this_process() -> set[int]:
    pids = set()
    for task in os.listdir("/proc/self/task"):
        text = read_text("/proc/self/task/%s/children" % task) or ""
        pids.update(int(pid) for pid in text.split())
    return pids


def no_child_left() -> bool:
    try:
        return os.waitpid(-1, os.WNOHANG) == (0, 0) and not children_of_this_process()
    except ChildProcessError:
        return not children_of_this_process()
