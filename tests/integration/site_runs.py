# SPDX-License-Identifier: Apache-2.0
"""What the tests that run the whole site.yml on a node share."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

from conftest import REPO, VENV_BIN

PAUSE = "localhost/k3s-gvisor/pause:1"
PROBE = "localhost/k3s-gvisor/probe:1"
VENV_PYTHON = "/opt/k3s-gvisor/cri-client/bin/python"
SOCKET = "/run/containerd/containerd.sock"
VERIFY_TASK = "Run the probe pod over CRI"
# The task whose result holds the probe's facts and the decision record (the last that ran: the runtime
# stage decides again after installing a runtime the probe could not check).
DECIDE_TASK = "Decide what the host gets, and keep the record"


def prepare_for_site(node, summary_dir: Path) -> None:
    """The engine's own pause image pinned (built and imported by the engine stage, never pulled: the
    node is offline); the run summary out of the work tree."""
    node.add_host_vars(engine_sandbox_image=PAUSE, verify_summary_path=str(summary_dir / f"{node.name}.json"))


COLLECTION = "k3s_gvisor.node."


def task_name(task: dict) -> str:
    """A task's name as 'role : task' (the collection's prefix dropped) or, outside a role, 'task'."""
    name = task["task"]["name"]
    return name[len(COLLECTION):] if name.startswith(COLLECTION) else name


def changed_tasks(run) -> list[str]:
    """'play: task' for every task that reported a change on the run's host."""
    return [f"{play['play']['name']}: {task_name(task)}" for play in run.result["plays"]
            for task in play["tasks"] if task["hosts"].get(run.host, {}).get("changed")]


def failed_tasks(run) -> list[str]:
    """'task: message' for every task that failed on the run's host; for a loop, each failed item's too."""
    return [f"{task_name(task)}: {failure_message(task['hosts'][run.host])[:2000]}"
            for play in run.result["plays"] for task in play["tasks"]
            if task["hosts"].get(run.host, {}).get("failed")]


def failure_message(result: dict) -> str:
    items = [f"{item.get('item')}: {item.get('msg')}" for item in result.get("results") or [] if item.get("failed")]
    return "; ".join([str(result.get("msg"))] + items)


def assert_verified(run) -> dict:
    """The run converged without a failure and its probe pod ran; the verify result."""
    assert run.returncode == 0, run.stderr + json.dumps(run.stats) + "\n" + "\n".join(failed_tasks(run))
    result = run.task(VERIFY_TASK)
    assert result["ok"], result.get("failure") or result
    return result


def converged_kubernetes_node(node_factory, suffix: str):
    """A fresh sid node converged by site.yml with the kubernetes engine, and verified."""
    node = node_factory(suffix)
    node.add_host_vars(container_engine="kubernetes")
    converge_verified(node)
    return node


def converge_verified(node, *args: str):
    """site.yml on NODE (any engine) ran without a failure and its verify said READY; the run."""
    run = node.playbook("site.yml", *args)
    assert run.returncode == 0, run.stderr + json.dumps(run.stats) + "\n" + "\n".join(failed_tasks(run))
    assert f"verify on {node.name}: READY" in run.task("Report the verify result")["msg"]
    return run


# Everything a pod leaves when it is not cleaned up, counted on the node with
# the CRI client's python: sandboxes and containers over CRI, containerd's
# containers, runc's state directories, pod cgroups, mounts of containerd's
# tasks and snapshots, running shims, pod log directories, and snapshots.
LEFTOVERS_SCRIPT = r"""
import glob, json, os, subprocess
import grpc
from cri_api.v1 import api_pb2 as api, api_pb2_grpc
stub = api_pb2_grpc.RuntimeServiceStub(grpc.insecure_channel("unix://%(socket)s"))
def lines(*argv):
    return [l for l in subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines() if l.strip()]
def comm(pid):
    try:
        return open(f"/proc/{pid}/comm").read().strip(), open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0]
    except OSError:
        return "", ""
procs = [comm(p) for p in os.listdir("/proc") if p.isdigit()]
print(json.dumps({
    "cri_sandboxes": len(stub.ListPodSandbox(api.ListPodSandboxRequest(), timeout=30).items),
    "cri_containers": len(stub.ListContainers(api.ListContainersRequest(), timeout=30).containers),
    "containerd_containers": len(lines("ctr", "-n", "k8s.io", "containers", "ls", "-q")),
    "runc_state_dirs": len(glob.glob("/run/containerd/runc/k8s.io/*")),
    "pod_cgroups": len(glob.glob("/sys/fs/cgroup/*/k8s.io/*/")),
    "task_mounts": sum(("/run/containerd/io.containerd.runtime" in l or "snapshots" in l) for l in open("/proc/self/mountinfo")),
    "running_shims": sum(c.startswith("containerd-shim") and s != "Z" for c, s in procs),
    "pod_log_dirs": len(glob.glob("/var/log/pods/*")),
    "snapshots": len(lines("ctr", "-n", "k8s.io", "snapshots", "--snapshotter", "native", "ls")),
}))
""" % {"socket": SOCKET}


def leftovers(node) -> dict:
    result = node.exec(VENV_PYTHON, "-c", LEFTOVERS_SCRIPT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def module(node, name: str, python: str = VENV_PYTHON, **args) -> dict:
    """Run one of the collection's modules (k3s_gvisor.node.NAME) on the node, ad hoc (by default with the
    CRI client's python); its result."""
    name = name if "." in name else f"k3s_gvisor.node.{name}"
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    proc = subprocess.run(
        [str(VENV_BIN / "ansible"), "-i", str(node.inventory), node.name, "-m", name, "-a", json.dumps(args),
         "-e", f"ansible_python_interpreter={python}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    try:
        return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"][node.name]
    except (json.JSONDecodeError, KeyError, IndexError):
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-3000:]) from None


SHIPPED = "/tmp/k3s-gvisor-burst"
# The verify role's CRI code and what it imports, as Ansible names them.
MODULE_UTILS = ("gvisor_blockers", "host_text", "linux_calls", "forked_child", "runtime_check", "oci_image",
                "verify_images", "cri_pod_sandbox")


def ship_burst(node, scripts=("cri_burst.py",)) -> None:
    """SCRIPTS (of tests/integration) and the module_utils they import, written from inside the node (see docs/NODES.md)."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for script in (*scripts, "node_counts.py"):
            tar.add(REPO / "tests/integration" / script, arcname=script)
        for name in MODULE_UTILS:
            tar.add(REPO / "plugins" / "module_utils" / f"{name}.py",
                    arcname=f"ansible_collections/k3s_gvisor/node/plugins/module_utils/{name}.py")
    subprocess.run(["docker", "exec", "-i", node.name, "sh", "-c", f"rm -rf {SHIPPED} && mkdir {SHIPPED} && tar -x -C {SHIPPED}"],
                   input=archive.getvalue(), check=True, timeout=120)
