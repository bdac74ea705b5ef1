# SPDX-License-Identifier: Apache-2.0
"""The probe on real nodes: what it reports must match what the field notes saw."""

from __future__ import annotations

import pytest

from site_runs import DECIDE_TASK


def blocker_ids(facts: dict) -> set[str]:
    return {b["id"] for b in facts["blockers"]}


def host_state(node) -> dict[str, str]:
    """What the probe must leave exactly as it found it."""
    return {
        "mounts": node.exec("cat", "/proc/self/mountinfo").stdout,
        "scratch": node.exec("ls", "-a", "/var/tmp").stdout,
        # The runtime check's containers leave no cgroup, runtime state or mount.
        "cgroups": node.exec("sh", "-c", "ls /sys/fs/cgroup/*/").stdout,
        "runtime_state": node.exec("sh", "-c", "ls -a /run/crun /run/runc 2>/dev/null; true").stdout,
        # Every process but ps itself: no child of the probe may outlive it.
        "processes": [line for line in node.exec("ps", "-eo", "pid,stat,comm").stdout.splitlines()
                      if not line.endswith(" ps")],
        "netns": node.exec("ip", "link", "show").stdout,
    }


@pytest.fixture(scope="module")
def gvisor_sid(node_factory):
    node = node_factory("probe-sid")
    before = host_state(node)
    run = node.playbook("playbooks/probe.yml")
    return node, run, before


def test_gvisor_20240729_sid_facts(gvisor_sid):
    _, run, _ = gvisor_sid
    assert run.returncode == 0, run.stderr
    facts = run.task(DECIDE_TASK)["ansible_facts"]["gvisor"]
    assert facts["is_gvisor"] is True
    assert any("Starting gVisor" in line for line in facts["gvisor_evidence"])
    assert facts["kernel_release"] == "4.4.0"
    assert facts["cgroup"]["version"] == 1
    assert {"cpu", "memory", "pids", "devices"} <= set(facts["cgroup"]["controllers"])
    assert facts["cgroup_namespace"] is False
    assert facts["cap_last_cap"]["file_present"] is True
    assert facts["cap_last_cap"]["probed"] == facts["cap_last_cap"]["file_value"] == 40
    assert facts["procfs_root_inode"] != 1
    assert facts["child_subreaper"] is True
    assert facts["runc"]["version"].startswith("1.3.")
    assert facts["containerd"]["version"].startswith("2.")
    assert facts["netlink"]["veth"]["works"] and facts["netlink"]["bridge"]["works"]
    assert facts["netlink"]["route_del"]["works"] is False
    assert facts["mount_peer_unmount"]["works"] is False and "EBUSY" in facts["mount_peer_unmount"]["error"]
    assert facts["kubelet_tunables"]["vm/panic_on_oom"]["error"].endswith("no such file or directory")
    assert facts["default_route"] is False and facts["cgroup_freezer"] is False


SID_BLOCKERS = {"B1", "B3", "B5", "B7", "B8", "B9", "B10", "B11", "B12", "B13", "B14", "B15",
                "B16", "B17", "B18", "B19", "B20", "B21", "B22"}


def test_gvisor_20240729_sid_blockers(gvisor_sid):
    _, run, _ = gvisor_sid
    facts = run.task(DECIDE_TASK)["ansible_facts"]["gvisor"]
    # Each one seen by hand on such a node, with its own error text: B1, B3
    # and B8 from runc 1.3.6, B5 in containerd 2.1.9's log, B7 on an overlay
    # mount, B9 on a CRI container joining its pod's PID namespace, B10 from
    # netlink, B11 from gVisor, B12 and B13 (files gVisor lacks), B14 from
    # crun's masks, B15 from a keyring kept after its process (the soak ran
    # out of them), B16-B21 from a real kubelet v1.35.4 (field notes 9; B17's
    # EBUSY tried here in a private namespace), B22 from crun's own network namespace (field notes 8;
    # a bare bundle's). cap_last_cap exists on 20240729 (no B2),
    # PR_SET_CHILD_SUBREAPER works (no B4) and so does joining a session keyring (no B6).
    assert blocker_ids(facts) == SID_BLOCKERS
    assert facts["keyring"]["kept_after_exit"] is True, facts["keyring"]
    assert facts["decisions"]["engine"]["no_new_keyring"]["answers"] == ["B15"]
    assert not any(b["fatal"] for b in facts["blockers"])
    for blocker in facts["blockers"]:
        assert blocker["evidence"] and blocker["remedy"] and blocker["title"]


def test_gvisor_20240729_sid_runtime_check_and_record(gvisor_sid):
    _, run, _ = gvisor_sid
    facts = run.task(DECIDE_TASK)["ansible_facts"]["gvisor"]
    crun, runc = facts["runtime_check"]["crun"], facts["runtime_check"]["runc"]
    assert {shape for shape, result in crun.items() if result["works"]} == {"cri", "cgroup_namespace", "signal_before_start"}
    assert "Invalid argument" in crun["pid_namespace_join"]["error"]
    assert crun["masked_under_readonly"]["error"] == "a masked directory inside a read-only path was writable"
    assert crun["new_network_namespace"]["error"] == "create: ioctl SIOCSIFFLAGS: Inappropriate ioctl for device"
    assert "incorrect procfs root inode number" in runc["cri"]["error"]
    record = facts["decisions"]
    assert record["runtime"]["value"] == "crun" and record["runtime"]["path"] == "/usr/bin/crun"
    assert [a["value"] for a in record["wrapper_adaptations"]] == ["refuse_masked_under_readonly",
                                                                  "refuse_new_network_namespace", "refuse_pid_namespace_join"]
    assert record["cni_plugin"]["value"] == "gvisor-bridge"
    assert record["errors"] == [] and record["unanswered"] == []
    assert set(record["answered_by"]) >= SID_BLOCKERS


def test_probe_leaves_nothing_behind(gvisor_sid):
    node, _, before = gvisor_sid
    after = host_state(node)
    for what in before:
        assert after[what] == before[what], f"probe changed {what}"


def test_probe_report_names_blockers(gvisor_sid):
    _, run, _ = gvisor_sid
    report = run.task("Report what the host can do and what it gets")["msg"]
    assert report.startswith(f"{run.host}: gVisor, kernel reported 4.4.0")
    for blocker_id in SID_BLOCKERS:
        assert f"\n  {blocker_id} " in report
    assert "\n  runtime: crun at /usr/bin/crun" in report


def test_gvisor_20240729_trixie_gets_the_patched_runc(node_factory):
    """trixie's crun 1.21 runs nothing in gVisor, its runc 1.1.15 dies of B11:
    the record takes runc 1.3.6 with the patches that runc meets there."""
    node = node_factory("probe-trixie", image="trixie")
    run = node.playbook("playbooks/probe.yml")
    assert run.returncode == 0, run.stderr
    facts = run.task(DECIDE_TASK)["ansible_facts"]["gvisor"]
    assert facts["runc"]["version"].startswith("1.1.")
    assert facts["containerd"]["version"].startswith("1.7.")
    # containerd 1.7 has no kernel check (no B5); runc 1.1 has neither the
    # procfs root check (B3) nor the size-limited masking tmpfs (B8).
    assert blocker_ids(facts) == {"B1", "B7", "B9", "B10", "B11", "B12", "B13", "B15",
                                  "B16", "B17", "B18", "B19", "B20", "B21"}
    assert "cannot resolve `null` under rootfs" in facts["runtime_check"]["crun"]["cri"]["error"]
    assert facts["runtime_check"]["runc"]["cri"]["works"] is True
    # runc brings up a namespace's loopback over netlink, which gVisor serves: no B22 here.
    assert facts["runtime_check"]["runc"]["new_network_namespace"]["works"] is True
    assert "interrupted system call" in facts["runtime_check"]["runc"]["signal_before_start"]["error"]
    runtime = facts["decisions"]["runtime"]
    assert runtime["value"] == "runc-patched"
    assert [p["name"][:4] for p in runtime["patches"]] == ["0002", "0003", "0005"]


def test_bookworm_crun_is_tried_and_recorded(node_factory):
    """bookworm's crun 1.8.1 inside gVisor: its outcome, recorded (the project
    does not support bookworm's containerd 1.6 as an engine)."""
    node = node_factory("probe-bookworm", image="bookworm")
    run = node.playbook("playbooks/probe.yml")
    facts = run.task(DECIDE_TASK)["ansible_facts"]["gvisor"]
    assert facts["crun"]["version"].startswith("1.8.")
    crun = facts["runtime_check"]["crun"]
    assert not any(result["works"] for result in crun.values())
    assert "setgroups" in crun["cri"]["error"], crun["cri"]["error"]
    assert facts["decisions"]["runtime"]["value"] != "crun"


def test_plain_runc_container_is_not_gvisor(node_factory):
    node = node_factory("probe-plain", runtime="runc")
    run = node.playbook("playbooks/probe.yml")
    assert run.returncode == 0, run.stderr
    facts = run.task(DECIDE_TASK)["ansible_facts"]["gvisor"]
    assert facts["is_gvisor"] is False
    assert facts["cgroup_namespace"] is True
    assert facts["procfs_root_inode"] == 1
    assert facts["child_subreaper"] is True
    assert facts["tmpfs_size_options"]["works"] is True
    # Nothing gVisor-specific. Overlay may fail here for a reason of docker's
    # own (an overlay upper directory on docker's overlay2 root is refused), a
    # container may lack /dev/kmsg and netfilter's sysctls, and a cgroup v1
    # machine is refused by the kubelet (the last three: kubelet engines only).
    assert blocker_ids(facts) <= {"B7", "B12", "B13", "B20"}
    # Linux frees an exited process's keyring: no B15.
    assert facts["keyring"]["kept_after_exit"] is False, facts["keyring"]
    assert facts["decisions"]["runtime"]["value"] in ("crun", "runc")
    # The containerd engine (the tests' nodes): no kubelet, so its blockers need no relaxation either.
    assert facts["decisions"]["wrapper_adaptations"] == [] and facts["decisions"]["relaxations"] == []


def test_gvisor_20221219_is_beyond_repair(node_factory):
    node = node_factory("probe-legacy", runtime="runsc-legacy")
    run = node.playbook("playbooks/probe.yml")
    facts = run.task(DECIDE_TASK)["ansible_facts"]["gvisor"]
    assert facts["is_gvisor"] is True
    assert facts["cap_last_cap"]["file_present"] is False
    assert facts["child_subreaper"] is False
    # 20221219 also lacks cap_last_cap (B2 with runc 1.3.6) and the session
    # keyring (B6); its overlay works (no B7).
    assert {"B1", "B2", "B3", "B4", "B5", "B6", "B8", "B9"} <= blocker_ids(facts)
    assert [b["id"] for b in facts["blockers"] if b["fatal"]] == ["B4"]
    # The play stops on the host with the diagnosis in plain words.
    assert run.returncode != 0
    failure = run.task("Stop where no pod can run")
    assert failure.get("failed") and "B4" in failure["msg"]
