# SPDX-License-Identifier: Apache-2.0
"""Unit tests for plugins/module_utils/gvisor_blockers.py: the catalogue, and
the rules that raise each blocker from probe facts as real hosts gave them."""

from __future__ import annotations

import pytest
from host_samples import OBSERVED_GVISOR_20240729, OBSERVED_PLAIN, blocker, blocker_ids, facts_with

from ansible_collections.k3s_gvisor.node.plugins.module_utils import gvisor_blockers as gb


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
