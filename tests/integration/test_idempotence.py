# SPDX-License-Identifier: Apache-2.0
"""Idempotence and check mode of the whole site.yml (probe, runtime, engine,
verify and the summary) on one gVisor 20240729 node (sid image,
container_engine=containerd), in file order:

  1. `--check --diff` on the fresh node runs through, reports changes in
     every role that will change something, and leaves the node as it was;
  2. the first converge; every change check mode reported is one it made;
  3. a second converge changes nothing (changed=0, per role), on disk too;
  4. `--check --diff` on the converged node reports nothing and changes nothing.

"As it was" is node_state(): every file and directory under the paths our
roles write (path, type, mode, size, mtime), the installed packages, the
images in containerd's k8s.io namespace, and the running programs.
test_engine.py covers the probe, runtime and engine stages alone and
test_verify.py the probe pod; here the four stages run together.
"""

from __future__ import annotations

import collections

import pytest

from site_runs import assert_verified, changed_tasks, prepare_for_site, task_name

# Slow (a fresh converge or more per test): run by `scripts/test -m slow tests/integration`, not by CI.
pytestmark = pytest.mark.slow

ROLES = ("gvisor_preflight", "runc_gvisor", "engine", "verify")
# Everything site.yml writes on a containerd node (roles' defaults and vars): the wrapper and its
# profile, the CNI plugins and the pod network's config, the supervisor with its state, log and
# recorded commands, containerd's config, the CRI client, the pods' logs.
WRITTEN = ("/usr/local/bin/runc-gvisor", "/usr/local/lib/runc-gvisor", "/etc/runc-gvisor", "/usr/lib/cni",
           "/etc/cni", "/var/lib/cni", "/usr/local/bin/k3s-gvisor-supervise", "/run/k3s-gvisor",
           "/var/log/k3s-gvisor", "/var/lib/k3s-gvisor", "/etc/containerd", "/opt/k3s-gvisor", "/var/log/pods")
NODE_STATE = (
    f"find {' '.join(WRITTEN)} -printf '%p %y %m %s %T@\\n' 2>/dev/null | sort; "
    "echo '--- packages'; dpkg-query -W -f '${Package} ${Version} ${db:Status-Abbrev}\\n'; "
    "echo '--- images'; ctr -n k8s.io images ls -q 2>&1; "
    "echo '--- programs'; ps -eo comm= | sort -u"
)
# Bookkeeping of the daemon itself (log lines, its state file), not of a run.
DAEMON_OWN = ("/var/log/k3s-gvisor/", "/run/k3s-gvisor/")
# The probe pods' log directories and host-local's lock and reservations come and go in every run,
# which touches their parents.
POD_LOG_ROOT = ("/var/log/pods d ", "/var/lib/cni/networks/k3s-gvisor")


def node_state(node, ignore: tuple[str, ...] = ()) -> list[str]:
    result = node.exec("sh", "-c", NODE_STATE)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if not line.startswith(ignore)]


def changes_per_role(run) -> dict:
    """Changed tasks counted per role ('site' for tasks of no role)."""
    counts: collections.Counter = collections.Counter()
    for name in changed_tasks(run):
        task = name.split(": ", 1)[1]
        counts[task.split(" : ", 1)[0] if " : " in task else "site"] += 1
    return dict(counts)


@pytest.fixture(scope="module")
def node(node_factory, tmp_path_factory):
    node = node_factory("idem-sid", image="sid")
    prepare_for_site(node, tmp_path_factory.mktemp("summary"))
    return node


@pytest.fixture(scope="module")
def fresh_check(node):
    before = node_state(node)
    run = node.playbook("site.yml", "--check", "--diff")
    return before, run, node_state(node)


@pytest.fixture(scope="module")
def first_converge(node, fresh_check):
    run = node.playbook("site.yml")
    assert_verified(run)
    print(f"\nfirst converge: changes per role {changes_per_role(run)}")
    return run


def test_1_check_mode_on_a_fresh_node_runs_through_and_changes_nothing(fresh_check):
    before, run, after = fresh_check
    assert run.returncode == 0 and run.stats["failures"] == 0, run.stderr + str(run.stats)
    assert run.stats["changed"] > 0
    assert after == before


def test_2_check_mode_told_the_truth_about_the_first_converge(fresh_check, first_converge):
    _, check, _ = fresh_check
    predicted, made = set(changed_tasks(check)), set(changed_tasks(first_converge))
    print(f"\ncheck mode predicted {len(predicted)} changed tasks; the converge changed {len(made)}")
    assert predicted <= made, sorted(predicted - made)
    # Each role that changed the node said so in check mode (later tasks of a
    # role may be skipped there, as they read what earlier ones would have made).
    assert set(changes_per_role(first_converge)) <= set(changes_per_role(check)), (
        changes_per_role(first_converge), changes_per_role(check))


def test_3_a_second_converge_changes_nothing(node, first_converge):
    before = node_state(node, ignore=DAEMON_OWN + POD_LOG_ROOT)
    run = node.playbook("site.yml")
    assert_verified(run)
    assert run.stats["changed"] == 0, changed_tasks(run)
    ran = {task_name(task).split(" : ", 1)[0] for play in run.result["plays"] for task in play["tasks"]}
    assert set(ROLES) <= ran, ran
    assert node_state(node, ignore=DAEMON_OWN + POD_LOG_ROOT) == before


def test_4_check_mode_on_a_converged_node_reports_and_changes_nothing(node, first_converge):
    before = node_state(node, ignore=DAEMON_OWN)
    run = node.playbook("site.yml", "--check", "--diff")
    assert run.returncode == 0 and run.stats["failures"] == 0, run.stderr + str(run.stats)
    assert run.stats["changed"] == 0, changed_tasks(run)
    assert node_state(node, ignore=DAEMON_OWN) == before
