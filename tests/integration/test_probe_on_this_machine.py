# SPDX-License-Identifier: Apache-2.0
"""The real probe (HostProbe) on the machine running the tests, a plain Linux
kernel, as root: its scratch mounts, network namespace and PID namespace
tests really run, and leave nothing behind. No docker needed."""

from __future__ import annotations

import os
import sys

import pytest

from child_processes import no_child_left

from ansible_collections.k3s_gvisor.node.plugins.module_utils import gvisor_facts as gf
from ansible_collections.k3s_gvisor.node.plugins.module_utils.host_text import NETLINK_STEPS
from ansible_collections.k3s_gvisor.node.plugins.module_utils.linux_calls import read_text

# ---------------------------------------------------------------------------
# The real probe on this machine (a plain Linux 6.x kernel, as root)
# ---------------------------------------------------------------------------

needs_root_on_linux = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0, reason="the probe needs root on Linux"
)


@pytest.fixture(scope="module")
def live_probe(tmp_path_factory):
    scratch = tmp_path_factory.mktemp("scratch")
    facts = gf.HostProbe(scratch_dir=str(scratch), timeout=5).collect()
    return facts, scratch


@needs_root_on_linux
def test_live_probe_on_plain_kernel(live_probe):
    facts, _ = live_probe
    if facts["is_gvisor"]:
        pytest.skip("these assertions describe a plain kernel")
    assert facts["cgroup_namespace"] is True
    assert facts["cap_last_cap"]["file_present"] is True
    assert facts["cap_last_cap"]["probed"] == facts["cap_last_cap"]["file_value"]
    assert facts["procfs_root_inode"] == 1
    assert facts["procfs_is_procfs"] is True
    assert facts["kernel_version_tuple"][0] >= 5
    assert not {"B1", "B3", "B4"} & {b["id"] for b in facts["blockers"]}
    assert facts["child_subreaper"] is True
    assert facts["pid_namespace_join"] == {"works": True, "error": None}
    assert facts["overlayfs"]["works"] is True and facts["tmpfs_size_options"]["works"] is True
    assert all(facts["netlink"][step]["works"] for step in NETLINK_STEPS)
    # This machine's own runc runs every shape CRI makes; nothing is left of the check.
    assert all(result["works"] for result in facts["runtime_check"]["runc"].values())
    assert not [name for name in os.listdir("/var/tmp") if name.startswith("k3s-gvisor-runtime-check-")]


@needs_root_on_linux
def test_live_probe_leaves_nothing_behind(live_probe):
    facts, scratch = live_probe
    assert list(scratch.iterdir()) == []
    mountinfo = read_text("/proc/self/mountinfo")
    assert str(scratch) not in mountinfo and "gvisor-probe-" not in mountinfo
    assert no_child_left()
    assert not os.path.exists("/sys/class/net/kgp-br") and not os.path.exists("/sys/class/net/kgp-va")
    assert facts["keyring"]["session_keyring_join"] is not None
    # Whatever the kernel did with the child's keyring, the probe looked.
    assert facts["keyring"]["kept_after_exit"] in (True, False) or not facts["keyring"]["session_keyring_join"]


@needs_root_on_linux
def test_live_probe_skips():
    facts = gf.HostProbe(skip=list(gf.SKIPPABLE_TESTS)).collect()
    assert facts["overlayfs"] == {"works": None, "error": gf.SKIPPED}
    assert facts["netlink"]["available"] is False
    assert facts["pid_namespace_join"]["works"] is None
    assert facts["keyring"] == {"session_keyring_join": None, "error": gf.SKIPPED, "kept_after_exit": None,
                                "kept_answer": None}


@needs_root_on_linux
def test_unusable_scratch_dir_leaves_mount_tests_untested(tmp_path):
    facts = gf.HostProbe(scratch_dir=str(tmp_path / "missing"), skip=["netlink", "pid_namespace_join"]).collect()
    assert facts["overlayfs"]["works"] is None and facts["tmpfs_size_options"]["works"] is None
    assert facts["overlayfs"]["error"].startswith("scratch dir: ")
    assert "B7" not in [b["id"] for b in facts["blockers"]]
