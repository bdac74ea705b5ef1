#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gvisor_probe
short_description: Probe a host for what k3s needs from a gVisor sandbox
description:
  - Gathers facts about a host that is meant to become a k3s node, with a focus on gVisor sandboxes.
  - Detects gVisor from its kernel log, reads cgroup, capability and procfs properties, and tries the kernel
    features that containerd, runc and CNI plugins rely on (child subreaper, session keyring, overlayfs, the
    size-limited tmpfs runc masks directories with, joining a PID namespace, netlink link, address and route
    changes).
  - Evaluates the known blockers (B1 to B22, docs/PROBE.md) of the project's field notes from those facts and returns them with
    evidence and a remedy.
  - Facts only - what the host gets is decided from them by M(k3s_gvisor.node.gvisor_decide).
  - Every test with a side effect runs in a forked child that dies afterwards. Scratch mounts are made in a
    private mount namespace, netlink changes in a scratch network namespace, the scratch directories are removed,
    and all helper processes are reaped. The host is left as it was, so the module reports C(changed=false) and
    runs in check mode as well.
version_added: "0.1.0"
author:
  - k3s-gvisor contributors
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
extends_documentation_fragment:
  - k3s_gvisor.node.attributes
  - k3s_gvisor.node.attributes.facts
options:
  scratch_dir:
    description:
      - Directory in which a temporary directory for the overlayfs and tmpfs tests is created and removed again.
      - When no temporary directory can be made there, both tests report V(null) with the reason, and the rest of
        the probe runs.
      - Keep it on the filesystem containerd will use, because the overlayfs result is only meaningful for that
        filesystem. V(/var/lib/containerd) is on the root filesystem on most hosts, like the default. No tmpfs is
        mounted under it.
    type: path
    default: /var/tmp
  skip:
    description:
      - Tests not to run. A skipped test is reported as not tried (V(null)), its error text says it was skipped,
        and it raises no blocker.
    type: list
    elements: str
    choices:
      - child_subreaper
      - keyring
      - overlayfs
      - tmpfs_size_options
      - pid_namespace_join
      - netlink
      - runtime_check
      - mount_peer_unmount
    default: []
  timeout:
    description:
      - Seconds each forked test may take before it is killed and reported as untested.
    type: float
    default: 5.0
notes:
  - Needs root (C(become=true)). The namespace and mount tests need C(CAP_SYS_ADMIN), reading the kernel log needs
    C(CAP_SYSLOG) where C(kernel.dmesg_restrict) is set.
  - Linux only. Runs on Python 3.11 to 3.14 with the standard library alone.
  - RV(ansible_facts.gvisor.is_gvisor) is true only when the kernel log, read with the C(syslog) system call, starts with
    C(Starting gVisor...). The fixed C(/proc/version) string of gVisor is reported as supporting evidence but never
    decides alone; when the kernel log cannot be read, RV(ansible_facts.gvisor.is_gvisor) is false.
  - Version-based blocker rules (B2, B3, B5, B8) assume the bundled binaries of k3s (a recent runc, containerd 2.x)
    when runc or containerd is not found, and say so in the evidence. They compare upstream version numbers, so a
    distribution runc with the CVE-2025-52881 fixes backported to an older version number is not recognised.
  - Within a gVisor sandbox the whole probe takes well under 2 seconds; it starts at most three processes
    (C(containerd --version), C(runc --version), one C(ip -batch)).
seealso:
  - name: gVisor
    description: The application kernel this project runs k3s in.
    link: https://gvisor.dev/
"""

EXAMPLES = r"""
- name: Probe the host
  gvisor_probe:
  become: true

- name: Probe without the netlink and PID namespace tests, with a shorter timeout
  gvisor_probe:
    skip:
      - netlink
      - pid_namespace_join
    timeout: 3
  become: true

- name: Try overlayfs where containerd keeps its snapshots
  gvisor_probe:
    scratch_dir: /var/lib/containerd
  become: true

- name: Stop when no pod can run on the host
  ansible.builtin.assert:
    that:
      - ansible_facts.gvisor.blockers | selectattr('fatal') | list | length == 0
    fail_msg: "{{ ansible_facts.gvisor.blockers | selectattr('fatal') | map(attribute='remedy') | join('; ') }}"

- name: Use the native snapshotter where overlayfs does not work (B7)
  ansible.builtin.set_fact:
    k3s_gvisor_snapshotter: "{{ 'native' if 'B7' in (ansible_facts.gvisor.blockers | map(attribute='id')) else 'overlayfs' }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts about the host.
  returned: always
  type: dict
  contains:
    gvisor:
      description: Everything the probe found.
      returned: always
      type: dict
      contains:
        is_gvisor:
          description: Whether the host is a gVisor sandbox (the kernel log starts with C(Starting gVisor...)).
          returned: always
          type: bool
          sample: true
        gvisor_evidence:
          description: Observations behind RV(ansible_facts.gvisor.is_gvisor), for and against.
          returned: always
          type: list
          elements: str
          sample:
            - "kernel log (syslog(2) READ_ALL) starts with 'Starting gVisor...'"
            - "/proc/version is gVisor's fixed string 'Linux version 4.4.0 #1 SMP Sun Jan 10 15:06:54 PST 2016' (supporting evidence only)"
        kernel_release:
          description: The kernel release as reported by C(uname -r) (gVisor reports a fixed one).
          returned: always
          type: str
          sample: 4.4.0
        kernel_version_tuple:
          description: Major, minor and patch number of RV(ansible_facts.gvisor.kernel_release).
          returned: always
          type: list
          elements: int
          sample: [4, 4, 0]
        init_system:
          description: What runs as PID 1.
          returned: always
          type: dict
          contains:
            name:
              description: C(/proc/1/comm).
              type: str
              sample: sleep
            systemd:
              description: Whether PID 1 is systemd and C(/run/systemd/system) exists.
              type: bool
              sample: false
        cgroup:
          description:
            - Mounted cgroup hierarchies, from C(/proc/self/mountinfo).
            - A host with any cgroup v1 controller mounted is version 1, also when a cgroup2 hierarchy is mounted
              beside it (hybrid), as containerd and runc treat it. Version 2 means only cgroup2 is mounted.
          returned: always
          type: dict
          contains:
            version:
              description: 1, 2, or V(null) when no cgroup hierarchy is mounted.
              type: int
              sample: 1
            controllers:
              description: Sorted controller names (v1 super options, or the v2 C(cgroup.controllers) file).
              type: list
              elements: str
              sample: [cpu, cpuacct, cpuset, devices, job, memory, pids]
        cgroup_namespace:
          description: Whether C(/proc/self/ns/cgroup) exists (B1 when false).
          returned: always
          type: bool
          sample: false
        cap_last_cap:
          description: The last capability number (B2 when the file is absent).
          returned: always
          type: dict
          contains:
            file_present:
              description: Whether C(/proc/sys/kernel/cap_last_cap) exists.
              type: bool
              sample: true
            file_value:
              description: Its value, V(null) when absent.
              type: int
              sample: 40
            probed:
              description: Highest capability for which C(prctl) with C(PR_CAPBSET_READ) does not fail with C(EINVAL).
              type: int
              sample: 40
        procfs_root_inode:
          description: Inode number of C(/proc) (1 on Linux; B3 when not 1 and runc checks it).
          returned: always
          type: int
          sample: 86
        procfs_is_procfs:
          description: Whether C(statfs) of C(/proc) reports C(PROC_SUPER_MAGIC).
          returned: always
          type: bool
          sample: true
        dev_kmsg:
          description: Whether C(/dev/kmsg) exists and opens for reading.
          returned: always
          type: bool
          sample: false
        netfilter_conntrack_sysctls:
          description: Whether C(/proc/sys/net/netfilter) exists.
          returned: always
          type: bool
          sample: false
        kubelet_tunables:
          description:
            - The kernel tunables the kubelet sets, by name under C(/proc/sys), each C({value, error}) - error says why the
              kubelet could not have its value (missing, or unwritable where the value differs; tried by writing back
              the value read, which changes nothing). B16 when any has one.
          returned: always
          type: dict
          contains:
            vm/overcommit_memory: {description: "C({value, error}) of /proc/sys/vm/overcommit_memory.", type: dict}
            vm/panic_on_oom: {description: "C({value, error}) of /proc/sys/vm/panic_on_oom.", type: dict}
            kernel/panic: {description: "C({value, error}) of /proc/sys/kernel/panic.", type: dict}
            kernel/panic_on_oops: {description: "C({value, error}) of /proc/sys/kernel/panic_on_oops.", type: dict}
            kernel/keys/root_maxkeys: {description: "C({value, error}) of /proc/sys/kernel/keys/root_maxkeys.", type: dict}
            kernel/keys/root_maxbytes: {description: "C({value, error}) of /proc/sys/kernel/keys/root_maxbytes.", type: dict}
        mount_peer_unmount:
          description:
            - C({works, error}) - whether a mount made under a shared mount, and so propagated into a second mount
              namespace, unmounts where it was made (B17 when not); tried in a forked child's private mount namespace.
          returned: always
          type: dict
          contains:
            works: {description: True, false (EBUSY), or null when not tried., type: bool}
            error: {description: What failed., type: str}
        cgroup_freezer:
          description:
            - Whether the cgroup v1 freezer directory (C(/sys/fs/cgroup/freezer)) exists (B18 when false); V(null) on
              hosts without cgroup v1. One that k3s-gvisor-node made counts as absent.
          returned: always
          type: bool
        cpuacct_usage_percpu:
          description: Whether C(/sys/fs/cgroup/cpuacct/cpuacct.usage_percpu) exists (B21 when false); V(null) without cgroup v1.
          returned: always
          type: bool
        default_route:
          description: Whether C(/proc/net/route) holds an IPv4 default route (B19 when false).
          returned: always
          type: bool
        child_subreaper:
          description: Whether C(prctl) with C(PR_SET_CHILD_SUBREAPER) works (B4 when false); V(null) when not tested.
          returned: always
          type: bool
          sample: true
        child_subreaper_error:
          description: Why the test failed or was not run.
          returned: always
          type: str
          sample: "EINVAL: Invalid argument"
        keyring:
          description:
            - Joining a new session keyring with C(keyctl) C(KEYCTL_JOIN_SESSION_KEYRING) in a child (B6 when false),
              and whether that keyring outlives the child (B15 when kept).
          returned: always
          type: dict
          contains:
            session_keyring_join:
              description: Whether it worked; V(null) when not tested.
              type: bool
              sample: true
            error:
              description: Why it failed or was not run.
              type: str
              sample: "EACCES: Permission denied"
            kept_after_exit:
              description:
                - Whether C(KEYCTL_DESCRIBE) still finds the child's keyring 3 s after it exited (Linux frees it at
                  once; gVisor never does); V(null) when not joined.
              type: bool
              sample: true
            kept_answer:
              description: What C(KEYCTL_DESCRIBE) last answered (ENOKEY once freed).
              type: str
              sample: "EACCES: Permission denied"
        overlayfs:
          description:
            - Whether an overlay mount on the filesystem of O(scratch_dir) works, including a write through it
              (B7 when it does not).
          returned: always
          type: dict
          contains:
            works:
              description: True or false; V(null) when not tested (skipped, or no scratch directory could be made).
              type: bool
              sample: false
            error:
              description: Why it failed or was not tested.
              type: str
              sample: "mount -t overlay: EINVAL: Invalid argument"
        tmpfs_size_options:
          description:
            - Whether a read-only tmpfs with C(nr_blocks=1,nr_inodes=1) mounts, as the C(maskDir) function of runc
              does (B8 when it does not and runc is affected).
          returned: always
          type: dict
          contains:
            works:
              description: True or false; V(null) when not tested.
              type: bool
              sample: false
            error:
              description: Why it failed or was not tested.
              type: str
              sample: "mount -t tmpfs -o ro,nr_blocks=1,nr_inodes=1: EINVAL: Invalid argument"
        pid_namespace_join:
          description:
            - Whether a process can C(setns) into another process's PID namespace and fork there, as runc does for
              a container sharing its pod's PID namespace (B9 when it cannot).
          returned: always
          type: dict
          contains:
            works:
              description: True or false; V(null) when not tested.
              type: bool
              sample: false
            error:
              description: Why it failed or was not tested.
              type: str
              sample: "setns(CLONE_NEWPID): EINVAL: Invalid argument"
        netlink:
          description:
            - Netlink operations CNI plugins need, tried with one C(ip -force -batch) in a scratch network namespace.
            - Each step is a dictionary with C(works) (V(null) when not tried) and C(error).
          returned: always
          type: dict
          contains:
            available:
              description: Whether the steps could be tried (C(ip) found, scratch network namespace created).
              type: bool
              sample: true
            reason:
              description: Why the steps were not tried.
              type: str
              sample: null
            ip_path:
              description: The C(ip) command used.
              type: str
              sample: /usr/sbin/ip
            veth:
              description: C(ip link add ... type veth peer name ...).
              type: dict
              contains:
                works:
                  description: Whether it worked; V(null) when not tried.
                  type: bool
                  sample: true
                error:
                  description: The failing command and its message, or why the steps were not tried.
                  type: str
            bridge:
              description: Creating a bridge and enslaving a veth to it.
              type: dict
              contains:
                works:
                  description: Whether it worked; V(null) when not tried.
                  type: bool
                  sample: true
                error:
                  description: The failing command and its message, or why the steps were not tried.
                  type: str
            address:
              description: Adding an IPv4 address to the bridge.
              type: dict
              contains:
                works:
                  description: Whether it worked; V(null) when not tried.
                  type: bool
                  sample: true
                error:
                  description: The failing command and its message, or why the steps were not tried.
                  type: str
            route_add:
              description: Setting the links up and adding a route through the bridge.
              type: dict
              contains:
                works:
                  description: Whether it worked; V(null) when not tried.
                  type: bool
                  sample: true
                error:
                  description: The failing command and its message, or why the steps were not tried.
                  type: str
            route_del:
              description: Deleting that route.
              type: dict
              contains:
                works:
                  description: Whether it worked; V(null) when not tried.
                  type: bool
                  sample: false
                error:
                  description: The failing command and its message, or why the steps were not tried.
                  type: str
                  sample: "ip route del 10.255.1.0/24 dev kgp-br: RTNETLINK answers: Operation not supported"
        containerd:
          description: The containerd binary found in C(/usr/local/bin), C(/usr/bin), C(/usr/sbin), C(/usr/local/sbin) or E(PATH).
          returned: always
          type: dict
          contains:
            found:
              description: Whether a containerd binary was found.
              type: bool
              sample: true
            path:
              description: Its path.
              type: str
              sample: /usr/bin/containerd
            version:
              description: Version from C(containerd --version), with any distribution suffix.
              type: str
              sample: 2.1.9
            version_tuple:
              description: Major, minor and patch number of the version.
              type: list
              elements: int
              sample: [2, 1, 9]
        runc:
          description: The runc binary, searched like containerd.
          returned: always
          type: dict
          contains:
            found:
              description: Whether a runc binary was found.
              type: bool
              sample: true
            path:
              description: Its path.
              type: str
              sample: /usr/sbin/runc
            version:
              description: Version from C(runc --version), with any distribution suffix.
              type: str
              sample: 1.3.6+ds1
            version_tuple:
              description: Major, minor and patch number of the version.
              type: list
              elements: int
              sample: [1, 3, 6]
        crun:
          description: The crun binary, searched like containerd.
          returned: always
          type: dict
          contains:
            found:
              description: Whether a crun binary was found.
              type: bool
              sample: true
            path:
              description: Its path.
              type: str
              sample: /usr/bin/crun
            version:
              description: Version from C(crun --version).
              type: str
              sample: "1.28"
            version_tuple:
              description: Major, minor and patch number of the version.
              type: list
              elements: int
              sample: [1, 28, 0]
        crun_from_apt:
          description:
            - Where no crun is installed, what the host's apt offers (read from its lists, with a HEAD request to the
              mirror; nothing is downloaded). V(null) when crun is installed.
          returned: always
          type: dict
          contains:
            candidate:
              description: The version apt would install, V(null) when it offers none.
              type: str
              sample: 1.28-1
            uri:
              description: Where apt would fetch it.
              type: str
            reachable:
              description: Whether the mirror answered for that file.
              type: bool
              sample: false
        runtime_check:
          description:
            - For each of the host's own crun and runc (keys V(crun), V(runc)), which shapes of container it ran - a
              bundle per shape, shaped as containerd's CRI makes containers, created, started, waited for and deleted
              in a forked child with the container's cgroup and the bundle removed again.
            - Shapes - V(cri) (own PID namespace, the pod's network namespace joined by path, CRI's masked and
              read-only paths, a cgroup with limits), V(cgroup_namespace) (the same with a cgroup namespace, B1),
              V(pid_namespace_join) (joining an existing PID namespace, B9), V(signal_before_start) (its init gets
              SIGURG ten times between create and start, B11). Each is C({works, error}).
          returned: always
          type: dict
          sample: {"crun": {"cri": {"works": true, "error": null}}}
        blockers:
          description: Known blockers (B1 to B22, docs/PROBE.md) that apply to this host.
          returned: always
          type: list
          elements: dict
          contains:
            id:
              description: Blocker id.
              type: str
              sample: B3
            title:
              description: What the blocker is.
              type: str
              sample: runc's procfs root inode check rejects gVisor's procfs
            evidence:
              description: The observed values that raise it.
              type: str
              sample: procfs root inode is 86, runc 1.3.6+ds1 verifies st_ino == 1
            remedy:
              description: What removes or avoids it.
              type: str
            fixable:
              description: Whether this project can work around it at the runtime level.
              type: bool
              sample: true
            fatal:
              description:
                - Whether no pod at all can run on the host and nothing here repairs it (B4).
                - B9 is not fixable but not fatal, it only rules out pods that share a PID namespace.
              type: bool
              sample: false
            error_text:
              description: The error the blocker produces, as seen or read upstream.
              type: str
              sample: "runc create failed: unsafe procfs detected: incorrect procfs root inode number 86"
        probe_seconds:
          description: Wall time of the whole probe.
          returned: always
          type: float
          sample: 0.25
"""

import os
import platform
import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.k3s_gvisor.node.plugins.module_utils.gvisor_facts import SKIPPABLE_TESTS, HostProbe


def main():
    module = AnsibleModule(
        argument_spec=dict(
            scratch_dir=dict(type="path", default="/var/tmp"),
            skip=dict(type="list", elements="str", choices=list(SKIPPABLE_TESTS), default=[]),
            timeout=dict(type="float", default=5.0),
        ),
        supports_check_mode=True,
    )
    params = module.params

    if platform.system() != "Linux":
        module.fail_json(msg="gvisor_probe only runs on Linux, not %s" % platform.system())
    if os.geteuid() != 0:
        module.fail_json(msg="gvisor_probe needs root (become: true): its namespace and mount tests need CAP_SYS_ADMIN")
    if params["timeout"] <= 0:
        module.fail_json(msg="timeout must be positive, got %s" % params["timeout"])

    # The probe changes nothing that outlives it, so check mode runs it whole.
    try:
        facts = HostProbe(scratch_dir=params["scratch_dir"], skip=params["skip"], timeout=params["timeout"]).collect()
    except Exception as exc:  # report any probe bug as a task failure with its traceback
        module.fail_json(msg="gvisor probe failed: %s" % exc, exception=traceback.format_exc())
    module.exit_json(changed=False, ansible_facts={"gvisor": facts})


if __name__ == "__main__":
    main()
