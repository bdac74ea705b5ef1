#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gvisor_decide
short_description: Decide once what a gVisor host gets, and keep the decision record on the host
description:
  - Takes the facts of M(k3s_gvisor.node.gvisor_probe) and the user's policy and decides what the host gets - the
    decision record (RV(ansible_facts.gvisor.decisions)), each entry citing the blocker ids it answers. Every later
    role and the run summary read that record and nothing else.
  - The record is kept on the host in O(path) with the facts it was decided from. Where that file exists, the
    decisions are made from the facts it holds, not from this run's probe - the collection changes the host (a crun
    it installed, /dev/null bound over /dev/kmsg), and a rerun must decide as the first run did. A changed policy is
    applied to the kept facts.
  - The runtime stage calls it once more with O(checked_runtime) after installing a runtime the probe could not
    check (Debian's crun from apt). The kept facts take that runtime's check, and the record is decided again from
    them, so the first run's wrapper profile is the one every later run finds.
version_added: "0.8.0"
author:
  - k3s-gvisor contributors
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
extends_documentation_fragment:
  - k3s_gvisor.node.attributes
  - k3s_gvisor.node.attributes.facts
options:
  facts:
    description: The probe's facts (C(ansible_facts.gvisor) as M(k3s_gvisor.node.gvisor_probe) set them).
    type: dict
    required: true
  path:
    description: Where the record is kept (a JSON file, mode 0644; its directory is made 0755 where missing).
    type: path
    default: /etc/k3s-gvisor/record.json
  redecide:
    description:
      - Decide from this run's probe even where a record is kept, and keep that. For a host that changed under the
        record (another gVisor release, a containerd upgrade); resetting the host removes the record too.
    type: bool
    default: false
  checked_runtime:
    description:
      - A runtime the runtime stage installed and checked - C(name) (V(crun) or V(runc)), C(binary) (C({found, path,
        version, version_tuple}) as the probe reports a runtime) and C(shapes) (M(k3s_gvisor.node.oci_runtime_check)'s
        RV(k3s_gvisor.node.oci_runtime_check#module:shapes)).
      - In check mode, where nothing was installed, it is ignored.
    type: dict
  runtime:
    description:
      - Which OCI runtime the record puts behind runc-gvisor.
      - V(auto) takes the distribution's crun where the runtime check shows it runs CRI's shapes (or Debian's crun
        from apt where the mirror answers and offers a release known to work), else the distribution's runc where it
        does, else the patched runc with the patches this host's blockers call for.
      - V(crun), V(runc) and V(runc-patched) force that choice; a forced runtime the host cannot use is an error in
        RV(ansible_facts.gvisor.decisions.errors).
    type: str
    choices: [auto, crun, runc, runc-patched]
    default: auto
  relax_procfs_check:
    description:
      - Whether the patched runc may carry patch 0002, which relaxes runc's procfs root inode check on gVisor (B3).
        A security relaxation (docs/SECURITY.md). Where the patched runc is needed for B3 and this is false, the
        record holds an error.
    type: bool
    default: true
  pid_namespace_per_container:
    description:
      - On hosts with B9, give a container that asks for its pod's PID namespace one of its own instead of
        refusing it (opt-in).
    type: bool
    default: false
  cni_plugin:
    description:
      - The pod network's CNI plugin. V(auto) chooses gvisor-bridge where netlink cannot delete routes (B10), the
        standard bridge plugin elsewhere; V(always) gvisor-bridge everywhere; V(never) the standard plugin.
    type: str
    choices: [auto, always, never]
    default: auto
  container_engine:
    description:
      - The engine the host gets. The record's node preparation and kubelet settings (B12, B13, B16 to B21) are made
        for the engines that run a kubelet (V(k3s), V(kubernetes)); V(containerd) runs none and needs none of them.
    type: str
    choices: [k3s, kubernetes, containerd]
    default: k3s
  patched_runc_dir:
    description: Where the runtime stage installs the patched runc (C(runc_gvisor_install_dir)), for the record's path.
    type: path
    default: /usr/local/lib/runc-gvisor
notes:
  - Runs with Python's standard library alone. Deciding is pure (facts and policy in, record out); the only change
    it makes is the record file.
  - A record with errors or a fatal blocker (RV(ansible_facts.gvisor.decisions.errors),
    RV(ansible_facts.gvisor.decisions.fatal)) is not kept - the play stops the host before anything changes.
seealso:
  - module: k3s_gvisor.node.gvisor_probe
"""

EXAMPLES = r"""
- name: Probe the host
  k3s_gvisor.node.gvisor_probe:
  become: true

- name: Decide what it gets, and keep that
  k3s_gvisor.node.gvisor_decide:
    facts: "{{ ansible_facts.gvisor }}"
    container_engine: kubernetes
  become: true

- name: Decide again from the host as it is now (after a gVisor upgrade)
  k3s_gvisor.node.gvisor_decide:
    facts: "{{ ansible_facts.gvisor }}"
    redecide: true
  become: true
"""

RETURN = r"""
ansible_facts:
  description: Facts to add to ansible_facts.
  returned: always
  type: complex
  contains:
    gvisor:
      description:
        - The facts the record was decided from (the kept record's where there is one, else O(facts)), with the
          decision record added.
      returned: always
      type: complex
      contains:
        decisions:
          description:
            - The decision record - what this host gets, each entry with the blocker ids it answers
              (RV(ansible_facts.gvisor.decisions.runtime.answers) and so on) and why.
          returned: always
          type: dict
          contains:
            runtime:
              description:
                - The OCI runtime behind runc-gvisor - V(value) crun, runc or runc-patched, its V(path), the apt
                  V(install_package) the runtime stage installs first (or V(null)), the V(patches) of the patched runc
                  (each C({name, answers})), V(answers) and V(why).
              type: dict
            wrapper_adaptations:
              description: What runc-gvisor changes in each spec, each C({value, answers, why}).
              type: list
              elements: dict
            cni_plugin:
              description: The pod network's CNI plugin (V(gvisor-bridge) or V(bridge)), C({value, answers, why}).
              type: dict
            engine:
              description: The engine's settings - V(snapshotter), V(unprivileged_ports_icmp), V(no_new_keyring), each C({value, answers, why}).
              type: dict
            container_engine:
              description: The engine the record was decided for.
              type: str
            kubernetes:
              description:
                - Null on engines without a kubelet. Else V(node) (k3s-gvisor-node's options, redone before every start),
                  V(kubelet) (KubeletConfiguration fragments) and V(service_proxy) (V(gvisor-service-proxy) where netfilter
                  is missing, else V(kube-proxy)), each C({value, answers, why}).
              type: dict
            k3s:
              description: Null unless the engine is k3s. Its config.yaml V(flags), each C({value, answers, why}).
              type: dict
            relaxations:
              description: What is relaxed on this host and what it gives up (docs/SECURITY.md), each C({value, answers, why}).
              type: list
              elements: dict
            answered_by:
              description: For each blocker id of the kept facts, what answers it (for the summary).
              type: dict
            unanswered:
              description: Blocker ids nothing answers on this host (B4 is fatal; the play stops).
              type: list
              elements: str
            fatal:
              description: Blocker ids under which no pod runs and nothing here repairs (B4); the play stops the host.
              type: list
              elements: str
            gvisor_release:
              description: The gVisor release as far as the facts tell (the summary's, where the inventory names none).
              type: str
              sample: 20240729 or newer (child subreaper works)
            errors:
              description: Policy the host cannot follow (a forced runtime it cannot run, B3 with the relaxation refused); the play stops.
              type: list
              elements: str
decided_from:
  description: V(record) where the kept record's facts were decided from, V(probe) where this run's probe's were.
  returned: always
  type: str
  sample: record
path:
  description: Where the record is kept.
  returned: always
  type: str
  sample: /etc/k3s-gvisor/record.json
"""

import json
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.k3s_gvisor.node.plugins.module_utils.gvisor_decisions import (
    RUNTIMES, Policy, decide, probe_basis, record_document, recorded_basis, with_checked_runtime)


def read_record(path: str):
    """The kept record as text and parsed; (None, None) where there is none."""
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except FileNotFoundError:
        return None, None
    try:
        return text, json.loads(text)
    except ValueError:
        return text, None  # not ours to read: decided afresh and replaced


def write_record(module: AnsibleModule, path: str, text: str) -> None:
    """Written beside the record and moved over it: a run killed midway leaves the old record or the new."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".record-")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write(text)
    module.atomic_move(temporary, path)
    module.set_mode_if_different(path, "0644", False)


def policy_from(params: dict) -> Policy:
    return Policy(runtime=params["runtime"], relax_procfs_check=params["relax_procfs_check"],
                  pid_namespace_per_container=params["pid_namespace_per_container"],
                  cni_plugin=params["cni_plugin"], engine=params["container_engine"],
                  patched_runc_dir=params["patched_runc_dir"])


def choose_basis(module: AnsibleModule, recorded) -> tuple[dict, str]:
    """The facts to decide from, and where they come from."""
    params = module.params
    kept = None if params["redecide"] else recorded_basis(recorded)
    basis, decided_from = (kept, "record") if kept is not None else (probe_basis(params["facts"]), "probe")
    checked = params["checked_runtime"]
    if checked and not module.check_mode:
        if sorted(checked) != ["binary", "name", "shapes"] or checked["name"] not in ("crun", "runc"):
            module.fail_json(msg="checked_runtime needs name (crun or runc), binary and shapes; got %s"
                                 % json.dumps(checked, sort_keys=True)[:500])
        basis = with_checked_runtime(basis, checked["name"], checked["binary"], checked["shapes"])
    return basis, decided_from


def main():
    module = AnsibleModule(
        argument_spec=dict(
            facts=dict(type="dict", required=True),
            path=dict(type="path", default="/etc/k3s-gvisor/record.json"),
            redecide=dict(type="bool", default=False),
            checked_runtime=dict(type="dict"),
            runtime=dict(type="str", choices=["auto", *RUNTIMES], default="auto"),
            relax_procfs_check=dict(type="bool", default=True),
            pid_namespace_per_container=dict(type="bool", default=False),
            cni_plugin=dict(type="str", choices=["auto", "always", "never"], default="auto"),
            container_engine=dict(type="str", choices=["k3s", "kubernetes", "containerd"], default="k3s"),
            patched_runc_dir=dict(type="path", default="/usr/local/lib/runc-gvisor"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if "blockers" not in params["facts"]:
        module.fail_json(msg="facts must be the probe's (ansible_facts.gvisor from k3s_gvisor.node.gvisor_probe): "
                             "they have no blockers")
    before, recorded = read_record(params["path"])
    basis, decided_from = choose_basis(module, recorded)
    policy = policy_from(params)
    decisions = decide(basis, policy)
    after = json.dumps(record_document(basis, policy, decisions), indent=2, sort_keys=True) + "\n"
    # A record the play stops on (a policy the host cannot follow, a fatal
    # blocker) is not kept: the host stays as it was, and the next run decides afresh.
    keep = not decisions["errors"] and not decisions["fatal"]
    changed = keep and after != before
    if changed and not module.check_mode:
        write_record(module, params["path"], after)
    result = {
        "changed": changed,
        "decided_from": decided_from,
        "path": params["path"],
        # Later stages see the facts the record was decided from.
        "ansible_facts": {"gvisor": dict(params["facts"], **basis, decisions=decisions)},
    }
    if module._diff:
        result["diff"] = {"before": before or "", "after": after if keep else before or "",
                          "before_header": params["path"], "after_header": params["path"]}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
