# SPDX-License-Identifier: Apache-2.0
"""Faults injected into a real gVisor 20240729 node (sid image, container_engine=containerd)
while site.yml converges it, each followed by the run that must repair it.

The tests run in file order on one node, each leaving it converged:
  1. SIGINT to ansible-playbook (its whole process group, as Ctrl-C) at a
     task chosen at random from the seed printed; run again: converged and verified.
  2. containerd killed (SIGKILL) in the middle of verify, once the probe pod's
     sandbox exists: the supervisor restarts it, and the next site.yml run
     ends verified, having first removed the killed run's pod (its shim,
     runc state, mounts and cgroups go with it).
  3. The node container restarted (`docker restart`): its PID 1 is `sleep
     infinity`, which starts nothing, and runsc keeps a container's root
     filesystem in memory, so the node comes back as its image was: the engine
     does not come back by itself; the next converge starts it (and says so:
     a changed "Start the engine..." or, on a fresh node, "Restart the
     engine..." handler task) and verifies.

Reproduce a run of test 1 with K3S_GVISOR_FAULT_SEED=SEED.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess

import pytest

from conftest import REPO
from site_runs import SOCKET, VENV_PYTHON, VERIFY_TASK, assert_verified, changed_tasks, prepare_for_site

# Slow (a fresh converge or more per test): run by `scripts/test -m slow tests/integration`, not by CI.
pytestmark = pytest.mark.slow

SUPERVISE = "/usr/local/bin/k3s-gvisor-supervise"
# The engine role's tasks that start the engine under the supervisor.
ENGINE_STARTS = ("engine : Start the engine's processes under the supervisor",
                 "engine : Restart the engine's processes under the supervisor")
# A first converge prints about 80 task banners; the interrupt lands at one of
# the first INTERRUPT_TASKS (the verify stage's included tasks come after),
# a random fraction of INTERRUPT_LATE_SECONDS after its banner.
INTERRUPT_TASKS = 70
INTERRUPT_LATE_SECONDS = 3.0
TASK_BANNER = re.compile(r"^TASK \[(.+?)\] \*+$")

# Run on the node: wait until the verify module runs and a new pod sandbox
# (the probe pod's) has a runc state directory, then SIGKILL containerd.
KILL_MID_VERIFY = r"""
import json, os, time
RUNC_ROOT = "/run/containerd/runc/k8s.io"
def module_running():
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as stream:
                if b"AnsiballZ_cri_pod_sandbox" in stream.read():
                    return True
        except OSError:
            pass
    return False
def sandboxes():
    return set(os.listdir(RUNC_ROOT)) if os.path.isdir(RUNC_ROOT) else set()
deadline, seen, old = time.monotonic() + 600, False, sandboxes()
while time.monotonic() < deadline:
    new = sandboxes() - old
    running = module_running()
    if seen and not running:
        break
    seen = seen or running
    if new and running:
        with open("/run/k3s-gvisor/containerd.json") as stream:
            state = json.load(stream)
        os.kill(state["daemon_pid"], 9)
        print(json.dumps({"killed_pid": state["daemon_pid"], "runc_state_dirs": sorted(new)}))
        raise SystemExit
    time.sleep(0.1)
print(json.dumps({"killed_pid": None, "module_seen": seen}))
"""

# Run on the node with the CRI client's venv: the verify runs' pod sandboxes.
VERIFY_SANDBOXES = r"""
import grpc
from cri_api.v1 import api_pb2 as api, api_pb2_grpc
stub = api_pb2_grpc.RuntimeServiceStub(grpc.insecure_channel("unix://%s"))
items = stub.ListPodSandbox(api.ListPodSandboxRequest(), timeout=60).items
print(len([item for item in items if "k3s-gvisor.io/verify-run" in item.labels]))
""" % SOCKET


@pytest.fixture(scope="module")
def seen() -> dict:
    """What a test saw that a later one checks."""
    return {}


@pytest.fixture(scope="module")
def node(node_factory, tmp_path_factory):
    node = node_factory("fault-sid", image="sid")
    prepare_for_site(node, tmp_path_factory.mktemp("summary"))
    return node


def supervisor_state(node) -> dict:
    return json.loads(node.exec(SUPERVISE, "status", "containerd").stdout or "{}")


def interrupt_at_random_task(node, seed: int) -> tuple[str, int, str]:
    """Run site.yml, SIGINT it at the seed's task; (that task, exit code, output)."""
    chooser = random.Random(seed)
    banner_index, late = chooser.randint(1, INTERRUPT_TASKS), chooser.uniform(0, INTERRUPT_LATE_SECONDS)
    print(f"\nseed {seed}: SIGINT {late:.1f} s after task banner {banner_index}")
    argv, env = node.playbook_command("site.yml", callback="default")
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines, task = [], None
    for line in proc.stdout:
        lines.append(line)
        banner = TASK_BANNER.match(line.strip())
        if banner and (banner_index := banner_index - 1) == 0:
            task = banner.group(1)
            try:
                proc.wait(timeout=late)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGINT)
            break
    output = "".join(lines) + proc.communicate(timeout=300)[0]
    assert task is not None, f"the play ended before the chosen task:\n{output[-3000:]}"
    return task, proc.returncode, output


def test_1_an_interrupted_converge_converges_when_run_again(node):
    seed = int(os.environ.get("K3S_GVISOR_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    task, code, output = interrupt_at_random_task(node, seed)
    print(f"interrupted at task {task!r}: exit {code}")
    assert code != 0, f"the interrupt did not stop the play:\n{output[-3000:]}"
    assert_verified(node.playbook("site.yml"))


def test_2_containerd_killed_mid_verify_is_restarted_and_the_next_run_verifies(node, seen):
    before = supervisor_state(node)
    watcher = subprocess.Popen(["docker", "exec", node.name, "python3", "-c", KILL_MID_VERIFY],
                               stdout=subprocess.PIPE, text=True)
    killed_run = node.playbook("site.yml")
    killed = json.loads(watcher.communicate(timeout=120)[0])
    assert killed["killed_pid"] == before["daemon_pid"], killed
    failure = killed_run.task(VERIFY_TASK)["failure"]
    print(f"\nkilled containerd pid {killed['killed_pid']} with sandbox {killed['runc_state_dirs']}; "
          f"that run's verify: {failure}")
    after = supervisor_state(node)
    assert after["supervisor_pid"] == before["supervisor_pid"]
    assert after["restarts"] == before["restarts"] + 1 and after["daemon_pid"] != before["daemon_pid"]
    seen["killed"], seen["repair"] = killed, assert_verified(node.playbook("site.yml"))


def test_3_the_next_run_removed_the_killed_runs_pod(node, seen):
    """The killed run could not remove its sandbox; the repairing run removed it first and said so."""
    earlier = seen["repair"]["earlier_runs"]
    print(f"\nthe repairing run removed first: {earlier}")
    assert earlier["errors"] == []
    assert set(seen["killed"]["runc_state_dirs"]) <= set(earlier["sandboxes"]), (seen["killed"], earlier)
    count = node.exec(VENV_PYTHON, "-c", VERIFY_SANDBOXES)
    assert count.returncode == 0, count.stderr
    assert int(count.stdout) == 0
    state_dirs = node.exec("ls", "-A", "/run/containerd/runc/k8s.io").stdout.split()
    assert not set(seen["killed"]["runc_state_dirs"]) & set(state_dirs), state_dirs
    assert "containerd-shim" not in node.exec("ps", "-eo", "comm").stdout, "a shim outlived its pod"


def test_4_after_a_node_restart_the_next_converge_starts_the_engine(node):
    subprocess.run(["docker", "restart", node.name], check=True, capture_output=True, timeout=300)
    assert node.exec("cat", "/proc/1/comm").stdout.strip() == "sleep"
    assert "containerd" not in node.exec("ps", "-eo", "comm").stdout.split(), "the engine came back by itself"
    kept = node.exec("test", "-e", SUPERVISE).returncode == 0
    print(f"\nafter docker restart: engine not running; the converge's files {'kept' if kept else 'gone'} "
          "(runsc keeps a container's root filesystem changes in memory)")
    run = node.playbook("site.yml")
    assert_verified(run)
    # A fresh node's converge starts the engine from the config handler, else from the run task.
    started = [name for name in changed_tasks(run) if name.endswith(ENGINE_STARTS)]
    print(f"the converge says: {started}")
    assert started
    assert supervisor_state(node)["restarts"] == 0
