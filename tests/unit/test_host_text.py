# SPDX-License-Identifier: Apache-2.0
"""Unit tests for plugins/module_utils/host_text.py: the parsers and the
netlink batch, fed real file contents and command output captured on this
project's machines (plain Linux 6.x kernel, and gVisor 20240729 / 20221219
sandboxes started with `runsc --platform=ptrace --network=none do`)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.k3s_gvisor.node.plugins.module_utils import host_text as ht

# ---------------------------------------------------------------------------
# Real samples
# ---------------------------------------------------------------------------

# gVisor 20240729 (runsc do), with the cgroup v1 hierarchies mounted the way a
# privileged docker node has them (tmpfs on /sys/fs/cgroup, one per controller).
GVISOR_20240729_MOUNTINFO = """\
18 17 0:19 / / rw - overlay none rw
19 18 0:20 / /sys rw - sysfs none rw,dentry_cache_limit=1000
21 18 0:21 / /dev rw - tmpfs none rw,mode=0755
22 18 0:22 / /proc rw - proc none rw,dentry_cache_limit=1000
23 21 0:23 / /dev/pts rw - devpts none rw
24 19 0:25 / /sys/fs/cgroup rw - tmpfs none rw
25 24 0:9 / /sys/fs/cgroup/cpu rw - cgroup none rw,cpu
26 24 0:10 / /sys/fs/cgroup/cpuacct rw - cgroup none rw,cpuacct
27 24 0:11 / /sys/fs/cgroup/cpuset rw - cgroup none rw,cpuset
28 24 0:14 / /sys/fs/cgroup/memory rw - cgroup none rw,memory
29 24 0:12 / /sys/fs/cgroup/devices rw - cgroup none rw,devices
30 24 0:13 / /sys/fs/cgroup/job rw - cgroup none rw,job
31 24 0:15 / /sys/fs/cgroup/pids rw - cgroup none rw,pids
"""

# gVisor 20240729 under `runsc do`: no cgroup mounted at all.
GVISOR_RUNSC_DO_MOUNTINFO = """\
18 17 0:19 / / rw - overlay none rw
19 18 0:20 / /sys rw - sysfs none rw,dentry_cache_limit=1000
21 18 0:21 / /dev rw - tmpfs none rw,mode=0755
22 18 0:22 / /proc rw - proc none rw,dentry_cache_limit=1000
23 21 0:23 / /dev/pts rw - devpts none rw
"""

# The plain-kernel machine this project is developed on: hybrid cgroups (v1
# controllers plus an empty cgroup2 at /sys/fs/cgroup/unified), a shared
# /var/lib/docker and an overlay with long options.
PLAIN_HYBRID_MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12358300k,nr_inodes=3089575,mode=755
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24731708k
26 24 0:24 / /dev/pts rw,relatime - devpts devpts rw,mode=600,ptmxmode=000
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 27 254:0 /var/lib/docker /var/lib/docker rw,relatime shared:1 - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
46 42 0:39 / /var/lib/docker/overlay2/1cc0ba6bbcd7/merged rw,relatime shared:2 - overlay overlay \
rw,lowerdir=/var/lib/docker/overlay2/l/NFZAEHQ2YXZ5:/var/lib/docker/overlay2/l/TNQUCXD64UK7,\
upperdir=/var/lib/docker/overlay2/1cc0ba6bbcd7/diff,workdir=/var/lib/docker/overlay2/1cc0ba6bbcd7/work
48 27 0:4 net:[4026532259] /run/docker/netns/eac47e7d4532 rw - nsfs nsfs rw
"""

# A systemd host in the unified cgroup v2 layout (the Debian 12 default; lines
# as such a host writes them), plus a mount point with an escaped space.
PLAIN_UNIFIED_MOUNTINFO = """\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
23 28 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
28 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
61 28 0:52 / /mnt/usb\\040stick rw,relatime shared:30 - vfat /dev/sdb1 rw,fmask=0022
"""
UNIFIED_CGROUP_CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc\n"

# An older systemd host: cpu and cpuacct co-mounted, flags among the options.
PLAIN_V1_COMOUNTED_MOUNTINFO = """\
24 23 0:19 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup \
rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
27 23 0:22 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,cpuacct,cpu,clone_children
28 23 0:23 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,memory,clone_children
"""

# syslog(2) SYSLOG_ACTION_READ_ALL output, raw (with <level> prefixes).
GVISOR_KERNEL_LOG = (
    "<6>[   0.000000] Starting gVisor...\n"
    "<6>[   0.466317] Creating cloned children...\n"
    "<6>[   0.701671] Recruiting cron-ies...\n"
    "<6>[   0.999147] Letting the watchdogs out...\n"
    "<6>[   1.150767] Constructing home...\n"
    "<6>[   2.281623] Setting up VFS...\n"
    "<6>[   2.410288] Setting up FUSE...\n"
    "<6>[   2.598471] Ready!\n"
)
PLAIN_KERNEL_LOG = (
    "<6>[    0.092405] pci_bus 0000:00: root bus resource [mem 0x4000000000-0x7fffffffff window]\n"
    "<6>[    0.092405] pci_bus 0000:00: root bus resource [io  0x0000-0x0cf7 window]\n"
    "<6>[    0.092405] pci_bus 0000:00: root bus resource [io  0x0d00-0xffff window]\n"
)
GVISOR_PROC_VERSION = "Linux version 4.4.0 #1 SMP Sun Jan 10 15:06:54 PST 2016\n"
PLAIN_PROC_VERSION = (
    "Linux version 6.18.44-fc-v657 (builder@sandboxing) (gcc (GCC) 15.3.0, GNU ld (GNU Binutils) 2.46) "
    "#1 SMP PREEMPT_DYNAMIC @0\n"
)

CONTAINERD_OUTPUTS = {
    "containerd containerd.io 1.7.24 88bf19b2105c8b17560993bee28a01ddc2f97182\n": ("1.7.24", [1, 7, 24]),
    "containerd github.com/containerd/containerd/v2 2.1.9+unknown \n": ("2.1.9+unknown", [2, 1, 9]),
    "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n": ("1.6.20~ds1", [1, 6, 20]),
    "containerd github.com/k3s-io/containerd v1.7.23-k3s2 a4fa2b9f2e4e\n": ("1.7.23-k3s2", [1, 7, 23]),
}
RUNC_OUTPUTS = {
    "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\ngo: go1.19.8\nlibseccomp: 2.5.4\n": (
        "1.1.5+ds1",
        [1, 1, 5],
    ),
    "runc version 1.3.6+ds1\ncommit: 1.3.6+ds1-1\nspec: 1.2.1\ngo: go1.26.5\nlibseccomp: 2.6.1\n": (
        "1.3.6+ds1",
        [1, 3, 6],
    ),
    "runc version 1.2.6\ncommit: v1.2.6-0-ge89a2992\nspec: 1.2.0\ngo: go1.23.7\nlibseccomp: 2.5.5\n": (
        "1.2.6",
        [1, 2, 6],
    ),
}

# `ip -force -batch -` stderr for NETLINK_BATCH.
GVISOR_IP_BATCH_STDERR = "RTNETLINK answers: Operation not supported\nCommand failed -:9\n"
# The same batch run a second time in one network namespace of a plain kernel.
PLAIN_IP_BATCH_RERUN_STDERR = (
    "RTNETLINK answers: File exists\nCommand failed -:1\n"
    "RTNETLINK answers: File exists\nCommand failed -:2\n"
    "Error: ipv4: Address already assigned.\nCommand failed -:4\n"
)


# ---------------------------------------------------------------------------
# gVisor detection
# ---------------------------------------------------------------------------


def test_kernel_log_first_line_strips_level_and_timestamp():
    assert ht.kernel_log_first_line(GVISOR_KERNEL_LOG) == "Starting gVisor..."
    assert ht.kernel_log_first_line("[    0.000000] Starting gVisor...\n") == "Starting gVisor..."
    assert ht.kernel_log_first_line(PLAIN_KERNEL_LOG).startswith("pci_bus 0000:00: root bus resource")
    assert ht.kernel_log_first_line("") is None


def test_gvisor_kernel_log_decides():
    is_gvisor, evidence = ht.decide_is_gvisor(GVISOR_KERNEL_LOG, None, GVISOR_PROC_VERSION)
    assert is_gvisor is True
    assert any("Starting gVisor..." in line for line in evidence)
    assert any("supporting evidence only" in line for line in evidence)


def test_plain_kernel_is_not_gvisor():
    is_gvisor, evidence = ht.decide_is_gvisor(PLAIN_KERNEL_LOG, None, PLAIN_PROC_VERSION)
    assert is_gvisor is False
    assert any("not gVisor's fixed string" in line for line in evidence)


def test_gvisor_version_string_alone_is_not_enough():
    """An unreadable kernel log leaves is_gvisor false even with gVisor's /proc/version."""
    is_gvisor, evidence = ht.decide_is_gvisor(None, "EPERM: Operation not permitted", GVISOR_PROC_VERSION)
    assert is_gvisor is False
    assert evidence[0] == "kernel log unreadable via syslog(2): EPERM: Operation not permitted"
    assert ht.proc_version_is_gvisor(GVISOR_PROC_VERSION)


def test_real_kernel_log_with_faked_version_is_not_gvisor():
    assert ht.decide_is_gvisor(PLAIN_KERNEL_LOG, None, GVISOR_PROC_VERSION)[0] is False


def test_proc_version_pattern():
    assert ht.proc_version_is_gvisor("Linux version 4.19.0 #1 SMP Sun Jan 10 15:06:54 PST 2016")
    assert not ht.proc_version_is_gvisor(PLAIN_PROC_VERSION)
    assert not ht.proc_version_is_gvisor(None)


# ---------------------------------------------------------------------------
# Versions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("output, expected", CONTAINERD_OUTPUTS.items())
def test_containerd_version(output, expected):
    version = ht.parse_containerd_version(output)
    assert (version, ht.version_tuple(version)) == expected


@pytest.mark.parametrize("output, expected", RUNC_OUTPUTS.items())
def test_runc_version(output, expected):
    version = ht.parse_runc_version(output)
    assert (version, ht.version_tuple(version)) == expected


def test_unparsable_version_output():
    assert ht.parse_runc_version("runc: error while loading shared libraries\n") is None
    assert ht.parse_containerd_version("") is None
    assert ht.version_tuple(None) is None


def test_kernel_release_tuple():
    assert ht.version_tuple("6.18.44-fc-v657") == [6, 18, 44]
    assert ht.version_tuple("4.4.0") == [4, 4, 0]
    assert ht.version_tuple("6.1") == [6, 1, 0]


@given(st.text())
def test_version_parsers_never_raise(text):
    result = ht.version_tuple(text)
    assert result is None or (len(result) == 3 and all(isinstance(n, int) for n in result))
    ht.parse_containerd_version(text)
    ht.parse_runc_version(text)


# ---------------------------------------------------------------------------
# Mountinfo and cgroups
# ---------------------------------------------------------------------------


def test_parse_mountinfo_fields():
    mounts = ht.parse_mountinfo(PLAIN_HYBRID_MOUNTINFO)
    by_point = {m["mount_point"]: m for m in mounts}
    assert by_point["/"]["fstype"] == "ext4"
    assert by_point["/"]["source"] == "/dev/vda"
    assert by_point["/var/lib/docker"]["optional_fields"] == ["shared:1"]
    assert by_point["/sys/fs/cgroup/systemd"]["super_options"] == "rw,name=systemd"
    assert by_point["/run/docker/netns/eac47e7d4532"]["fstype"] == "nsfs"


def test_parse_mountinfo_unescapes_paths():
    mounts = ht.parse_mountinfo(PLAIN_UNIFIED_MOUNTINFO)
    assert "/mnt/usb stick" in [m["mount_point"] for m in mounts]


def test_gvisor_cgroups_are_v1():
    assert ht.summarize_cgroups(ht.parse_mountinfo(GVISOR_20240729_MOUNTINFO)) == {
        "version": 1,
        "controllers": ["cpu", "cpuacct", "cpuset", "devices", "job", "memory", "pids"],
    }


def test_no_cgroups_mounted():
    assert ht.summarize_cgroups(ht.parse_mountinfo(GVISOR_RUNSC_DO_MOUNTINFO)) == {"version": None, "controllers": []}


def test_hybrid_host_reports_v1_without_named_hierarchies():
    mounts = ht.parse_mountinfo(PLAIN_HYBRID_MOUNTINFO)
    assert ht.unified_cgroup_mount(mounts) == "/sys/fs/cgroup/unified"
    assert ht.summarize_cgroups(mounts, "") == {
        "version": 1,
        "controllers": ["blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids"],
    }


def test_unified_host_reports_v2_controllers_from_file():
    mounts = ht.parse_mountinfo(PLAIN_UNIFIED_MOUNTINFO)
    assert ht.unified_cgroup_mount(mounts) == "/sys/fs/cgroup"
    assert ht.summarize_cgroups(mounts, UNIFIED_CGROUP_CONTROLLERS) == {
        "version": 2,
        "controllers": ["cpu", "cpuset", "hugetlb", "io", "memory", "misc", "pids", "rdma"],
    }


def test_comounted_v1_controllers_and_flags():
    summary = ht.summarize_cgroups(ht.parse_mountinfo(PLAIN_V1_COMOUNTED_MOUNTINFO))
    assert summary == {"version": 1, "controllers": ["cpu", "cpuacct", "memory"]}


def test_shared_mounts_detection():
    assert ht.has_shared_mounts(ht.parse_mountinfo(PLAIN_HYBRID_MOUNTINFO))
    assert not ht.has_shared_mounts(ht.parse_mountinfo(GVISOR_20240729_MOUNTINFO))


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\n\r"), max_size=80), max_size=8))
def test_parse_mountinfo_never_raises(lines):
    for mount in ht.parse_mountinfo("\n".join(lines)):
        assert set(mount) == {"mount_point", "mount_options", "optional_fields", "fstype", "source", "super_options"}


def test_cap_last_cap_file_parsing():
    assert ht.parse_cap_last_cap("40\n") == 40
    assert ht.parse_cap_last_cap(None) is None
    assert ht.parse_cap_last_cap("") is None


# ---------------------------------------------------------------------------
# Netlink batch
# ---------------------------------------------------------------------------


def test_batch_script_has_one_line_per_command():
    script = ht.netlink_batch_script()
    assert script.count("\n") == len(ht.NETLINK_BATCH)
    assert {step for step, _ in ht.NETLINK_BATCH} == set(ht.NETLINK_STEPS)


def test_gvisor_batch_fails_only_route_del():
    results = ht.netlink_step_results(GVISOR_IP_BATCH_STDERR)
    assert [step for step in ht.NETLINK_STEPS if results[step]["works"]] == ["veth", "bridge", "address", "route_add"]
    assert results["route_del"] == {
        "works": False,
        "error": "ip route del 10.255.1.0/24 dev kgp-br: RTNETLINK answers: Operation not supported",
    }


def test_batch_failures_map_to_their_steps():
    results = ht.netlink_step_results(PLAIN_IP_BATCH_RERUN_STDERR)
    assert [step for step in ht.NETLINK_STEPS if not results[step]["works"]] == ["veth", "bridge", "address"]
    assert results["veth"]["error"] == "ip link add kgp-va type veth peer name kgp-vb: RTNETLINK answers: File exists"
    assert results["bridge"]["error"] == "ip link add kgp-br type bridge: RTNETLINK answers: File exists"
    assert results["address"]["error"].endswith("Error: ipv4: Address already assigned.")


def test_clean_batch_passes_every_step():
    results = ht.netlink_step_results("")
    assert all(results[step] == {"works": True, "error": None} for step in ht.NETLINK_STEPS)


def test_batch_that_never_ran_is_untested():
    # iproute2's answer to an option it does not know; no command ran.
    facts = ht.netlink_facts_from_batch(255, 'Option "-force" is unknown, try "ip -help".', "/sbin/ip")
    assert facts["available"] is False
    assert (
        facts["reason"] == 'ip -force -batch failed as a whole (exit 255): Option "-force" is unknown, try "ip -help".'
    )
    assert facts["veth"] == {"works": None, "error": facts["reason"]}


def test_batch_with_failed_commands_is_available():
    facts = ht.netlink_facts_from_batch(1, GVISOR_IP_BATCH_STDERR, "/usr/sbin/ip")
    assert facts["available"] is True and facts["ip_path"] == "/usr/sbin/ip"
    assert facts["route_del"]["works"] is False


def test_netlink_not_tested_shape():
    facts = ht.netlink_not_tested("no ip")
    assert facts["available"] is False and facts["reason"] == "no ip"
    assert all(facts[step] == {"works": None, "error": "no ip"} for step in ht.NETLINK_STEPS)


@given(st.text())
def test_ip_batch_results_cover_every_step_and_a_failure_names_its_command(stderr):
    results = ht.netlink_step_results(stderr)
    assert set(results) == set(ht.NETLINK_STEPS)
    commands = [f"ip {command}: " for _, command in ht.NETLINK_BATCH]
    for result in results.values():
        # Works, or failed naming a command of the batch; a step is never untested here.
        assert (result["works"] is True and result["error"] is None) or (
            result["works"] is False and any(result["error"].startswith(c) for c in commands)), result
    # Text that names no failed batch line fails nothing.
    if not ht.parse_ip_batch_failures(stderr):
        assert all(result["works"] for result in results.values())
