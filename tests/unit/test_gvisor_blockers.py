# SPDX-License-Identifier: Apache-2.0
"""Unit tests for plugins/module_utils/gvisor_blockers.py: the catalogue, and
the rules that raise each blocker from probe facts as real hosts gave them."""

from __future__ import annotations

import pytest
from host_samples import (NOT_FOUND, OBSERVED_GVISOR_20221219, OBSERVED_GVISOR_20240729, OBSERVED_PLAIN, blocker,
                          blocker_ids, facts_with)

from ansible_collections.k3s_gvisor.node.plugins.module_utils import gvisor_blockers as gb
from ansible_collections.k3s_gvisor.node.plugins.module_utils.gvisor_facts import SKIPPED
from ansible_collections.k3s_gvisor.node.plugins.module_utils.host_text import netlink_not_tested


# The blockers' words, exactly as the field notes give them.
# Error lines as the engines printed them on real hosts (containerd's log, runc's
# stderr, the CRI error the verify stage got), each with the blocker it shows.
SEEN_ERRORS = {
    "B1": 'time="2026-12-01T21:08:54Z" level=error msg="runc run failed: cgroup namespaces aren\'t enabled in the kernel"',
    "B2": ("failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: "
           "unable to start container process: error during container init: open /proc/sys/kernel/cap_last_cap: "
           "no such file or directory: unknown"),
    "B3": 'time="2026-12-01T21:08:53Z" level=error msg="runc run failed: unsafe procfs detected: incorrect procfs root inode number 86"',
    "B4": "failed to start shim: start failed: io.containerd.runc.v2: invalid argument: exit status 1",
    "B8": ("runc create failed: unable to start container process: error during container init: can't mask dir "
           '"/sys/firmware": mount src=tmpfs, dst=/sys/firmware, flags=MS_RDONLY, data=nr_blocks=1,nr_inodes=1: invalid argument'),
    "B9": ("failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create "
           "failed: unable to start container process: can't get final child's PID from pipe: EOF: unknown"),
    "B10": 'plugin type="bridge" failed (add): "cni0" already exists but is not a bridge',
    "B11": "reopen exec fifo: reopen fd 7: interrupted system call",
}


@pytest.mark.parametrize(
    "version, affected",
    [
        ([1, 1, 5], False),
        ([1, 1, 15], False),
        ([1, 2, 7], False),
        ([1, 2, 8], True),
        ([1, 2, 9], True),
        ([1, 3, 0], False),
        ([1, 3, 2], False),
        ([1, 3, 3], True),
        ([1, 3, 6], True),
        ([1, 4, 0], True),
        ([2, 0, 0], True),
    ],
)
def test_runc_procfs_hardening_range(version, affected):
    assert gb.runc_has_procfs_hardening(version) is affected


def test_catalogue_has_a_rule_for_every_blocker_and_only_b4_is_fatal():
    assert [rule_id for rule_id, _ in gb.BLOCKER_RULES] == sorted(gb.BLOCKER_CATALOGUE, key=lambda b: int(b[1:]))
    unfixable = sorted(bid for bid, info in gb.BLOCKER_CATALOGUE.items() if not info.fixable)
    assert unfixable == ["B4", "B9"]
    fatal = sorted(bid for bid, info in gb.BLOCKER_CATALOGUE.items() if info.fatal)
    assert fatal == ["B4"]


@pytest.mark.parametrize("blocker_id", sorted(SEEN_ERRORS))
def test_each_seen_error_shows_its_blocker_and_no_other(blocker_id):
    line = SEEN_ERRORS[blocker_id]
    assert [bid for bid, info in gb.BLOCKER_CATALOGUE.items() if info.matches(line)] == [blocker_id]


@pytest.mark.parametrize("inode", [2, 75, 1234567])
def test_b3_is_recognised_whatever_the_inode_number(inode):
    line = f"runc create failed: unsafe procfs detected: incorrect procfs root inode number {inode}"
    assert gb.BLOCKER_CATALOGUE["B3"].matches(line)
    assert not gb.BLOCKER_CATALOGUE["B3"].matches("unsafe procfs detected: procfs is not procfs")


def test_b11_is_runc_inits_fifo_open_only():
    for line in ("open exec fifo /proc/self/fd/5: interrupted system call",
                 "reopen exec fifo: reopen fd 12: interrupted system call"):
        assert gb.BLOCKER_CATALOGUE["B11"].matches(line)
    assert not gb.BLOCKER_CATALOGUE["B11"].matches("read /dev/ptmx: interrupted system call")


def test_plain_host_has_no_blockers_but_the_kubelets_cgroup_v1_refusal():
    # This machine's kernel runs cgroup v1, which kubelet v1.35 refuses too: not gVisor's.
    assert blocker_ids(OBSERVED_PLAIN) == ["B20"]
    assert gb.evaluate_blockers(facts_with(OBSERVED_PLAIN, cgroup={"version": 2, "controllers": ["cpu"]})) == []


def test_b15_a_kept_keyring_or_a_spent_quota():
    kept = blocker(OBSERVED_GVISOR_20240729, "B15")
    assert "still there after 3 s (keyctl DESCRIBE: EACCES: Permission denied)" in kept["evidence"]
    spent = facts_with(OBSERVED_PLAIN, keyring={"session_keyring_join": False, "error": "EDQUOT: Disk quota exceeded",
                                                "kept_after_exit": None, "kept_answer": None})
    # The join fails (B6) because the quota is spent (B15).
    assert blocker_ids(spent) == ["B6", "B15", "B20"]
    assert "quota is spent already" in blocker(spent, "B15")["evidence"]
    assert "B15" not in blocker_ids(OBSERVED_PLAIN)
    # What crun said in the soak once the quota was spent.
    assert gb.BLOCKER_CATALOGUE["B15"].matches(gb.BLOCKER_CATALOGUE["B15"].error_text)


def test_blockers_from_partial_facts_do_not_raise():
    assert gb.evaluate_blockers({}) == []


# ---------------------------------------------------------------------------
# Blockers
# ---------------------------------------------------------------------------


def test_gvisor_20240729_sid_node():
    facts = OBSERVED_GVISOR_20240729
    assert blocker_ids(facts) == ["B1", "B3", "B5", "B7", "B8", "B9", "B10", "B11", "B12", "B13", "B14", "B15",
                                  "B16", "B17", "B18", "B19", "B20", "B21", "B22"]
    assert "with crun" in blocker(facts, "B14")["evidence"]
    # crun's own: runc fails every shape there (B3), so it shows no B22.
    assert blocker(facts, "B22")["evidence"].endswith("with crun: create: ioctl SIOCSIFFLAGS: Inappropriate ioctl for device")
    assert blocker(facts, "B3")["evidence"] == "procfs root inode is 86, runc 1.3.6+ds1 verifies st_ino == 1"
    assert "containerd is 2.1.9+unknown" in blocker(facts, "B5")["evidence"]
    assert "4.4.0" in blocker(facts, "B5")["evidence"]
    assert blocker(facts, "B9")["fixable"] is False
    assert set(blocker(facts, "B1")) == {"id", "title", "evidence", "remedy", "fixable", "fatal", "error_text"}


def test_gvisor_20240729_with_stock_bookworm_runc():
    """runc 1.1.5 has neither the procfs check nor the sized masking tmpfs."""
    facts = facts_with(
        OBSERVED_GVISOR_20240729,
        runc=OBSERVED_GVISOR_20221219["runc"],
        containerd=OBSERVED_GVISOR_20221219["containerd"],
    )
    assert blocker_ids(facts) == ["B1", "B7", "B9", "B10", "B11", "B12", "B13", "B14", "B15",
                                  "B16", "B17", "B18", "B19", "B20", "B21", "B22"]


def test_gvisor_20221219_bookworm_node():
    facts = OBSERVED_GVISOR_20221219
    assert blocker_ids(facts) == ["B1", "B4", "B6", "B9", "B11", "B12", "B13"]
    assert blocker(facts, "B4")["evidence"] == "prctl(PR_SET_CHILD_SUBREAPER, 1) failed: EINVAL: Invalid argument"
    assert "20240729" in blocker(facts, "B4")["remedy"]
    assert "EACCES" in blocker(facts, "B6")["evidence"]


def test_b2_needs_runc_1_3_and_a_missing_file():
    facts = facts_with(OBSERVED_GVISOR_20221219, runc=OBSERVED_GVISOR_20240729["runc"])
    assert "B2" in blocker_ids(facts)
    assert "last capability 37" in blocker(facts, "B2")["evidence"]
    assert "runc 1.3.6+ds1" in blocker(facts, "B2")["evidence"]
    older = facts_with(facts, runc={**facts["runc"], "version": "1.2.9", "version_tuple": [1, 2, 9]})
    assert "B2" not in blocker_ids(older)


def test_missing_runc_and_containerd_assume_the_bundled_ones():
    facts = facts_with(OBSERVED_GVISOR_20221219, runc=NOT_FOUND, containerd=NOT_FOUND)
    assert blocker_ids(facts) == ["B1", "B2", "B3", "B4", "B5", "B6", "B8", "B9", "B11", "B12", "B13"]
    for blocker_id in ("B2", "B3", "B8"):
        assert "k3s bundles a recent runc" in blocker(facts, blocker_id)["evidence"]
    assert "procfs root inode is 75" in blocker(facts, "B3")["evidence"]
    assert "k3s bundles containerd 2.x" in blocker(facts, "B5")["evidence"]


def test_b5_needs_an_old_kernel_release():
    facts = facts_with(OBSERVED_PLAIN, containerd=OBSERVED_GVISOR_20240729["containerd"])
    assert "B5" not in blocker_ids(facts)
    old_kernel = facts_with(facts, kernel_release="4.10.17", kernel_version_tuple=[4, 10, 17])
    assert "B5" in blocker_ids(old_kernel)


def test_untested_facts_raise_no_blockers():
    skipped = facts_with(
        OBSERVED_GVISOR_20240729,
        child_subreaper=None,
        keyring={"session_keyring_join": None, "error": "skipped"},
        overlayfs={"works": None, "error": SKIPPED},
        tmpfs_size_options={"works": None, "error": SKIPPED},
        pid_namespace_join={"works": None, "error": "no answer within 5.0 s (killed)"},
        netlink=netlink_not_tested(SKIPPED),
        runtime_check={},
        kubelet_tunables={},
        mount_peer_unmount={"works": None, "error": SKIPPED},
        cgroup_freezer=None,
        cpuacct_usage_percpu=None,
        default_route=None,
    )
    # What remains comes from facts that were read: B11 from gVisor itself, B20 from the cgroup mounts.
    assert blocker_ids(skipped) == ["B1", "B3", "B5", "B11", "B12", "B13", "B20"]


def test_b22_needs_a_runtime_that_runs_cri_but_not_its_own_network_namespace():
    """trixie's crun 1.21 fails every shape (its new namespace with the same ioctl error): that is not B22."""
    broken = {"works": False, "error": "create: ioctl(SIOCSIFFLAGS): Inappropriate ioctl for device"}
    runs_nothing = {"cri": {"works": False, "error": "create: cannot resolve `null` under rootfs"},
                    "new_network_namespace": broken}
    assert "B22" not in blocker_ids(facts_with(OBSERVED_GVISOR_20240729, runtime_check={"crun": runs_nothing}))
    runs_cri = {"cri": {"works": True, "error": None}, "new_network_namespace": broken}
    assert "B22" in blocker_ids(facts_with(OBSERVED_GVISOR_20240729, runtime_check={"crun": runs_cri}))
    both = dict(runs_cri, new_network_namespace={"works": True, "error": None})
    assert "B22" not in blocker_ids(facts_with(OBSERVED_GVISOR_20240729, runtime_check={"runc": both}))


@pytest.mark.parametrize("said", ["create: ioctl SIOCSIFFLAGS: Inappropriate ioctl for device",  # crun 1.28
                                  "create: ioctl(SIOCSIFFLAGS): Inappropriate ioctl for device"])  # crun 1.21
def test_b22_s_text_as_each_crun_writes_it(said):
    assert gb.BLOCKER_CATALOGUE["B22"].matches(said)
