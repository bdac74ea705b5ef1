# SPDX-License-Identifier: Apache-2.0
"""Real gVisor nodes for integration tests, made with scripts/gvisor-node.

Nodes are docker containers run by runsc (gVisor 20240729, or 20221219 as
runtime runsc-legacy on bookworm machines) or by plain runc. Tests drive them
with the project's own playbooks over the community.docker.docker connection.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
GVISOR_NODE = REPO / "scripts" / "gvisor-node"
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin"
# Another prefix lets a second pytest session run beside this one without sharing nodes.
NODE_PREFIX = os.environ.get("K3S_GVISOR_TEST_NODE_PREFIX", "kg-it-")


def gvisor_node(*args: str) -> str:
    result = subprocess.run([str(GVISOR_NODE), *args], capture_output=True, text=True)
    assert result.returncode == 0, f"scripts/gvisor-node {' '.join(args)}: exit {result.returncode}: {result.stderr}"
    return result.stdout


def runtime_registered(runtime: str) -> bool:
    return any(
        line.split("\t")[0] == runtime for line in gvisor_node("runtimes").splitlines()
    )


def skip_unless_registered(runtime: str) -> None:
    """Skip the test where docker lacks RUNTIME (runsc-legacy exists on bookworm machines only)."""
    if runtime != "runc" and not runtime_registered(runtime):
        pytest.skip(f"docker has no runtime {runtime} on this machine "
                    "(runsc-legacy, gVisor 20221219, exists on bookworm machines only)")


def molecule_test(scenario: str) -> str:
    """`molecule test --scenario-name SCENARIO` as a user runs it; its whole output is a failure's text."""
    # Molecule sets ANSIBLE_CONFIG to the config it generates (pipelining: .config/molecule/config.yml).
    env = dict(os.environ, PY_COLORS="0", ANSIBLE_FORCE_COLOR="0")
    proc = subprocess.run([str(VENV_BIN / "molecule"), "test", "--scenario-name", scenario],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, failure_excerpt(output) + "\n--- the output's end ---\n" + output[-20000:]
    return output


# What names a failed run's cause in Ansible's and Molecule's output.
FAILURE_MARKERS = ("fatal:", "FAILED!", "ERROR!", "[ERROR]", "Traceback", "Unexpected Exception", "UNREACHABLE!")


def failure_excerpt(output: str, context: int = 12) -> str:
    """The lines that name a failure, with what follows each, first in an
    assertion's text: a report that keeps only a message's head and tail
    still shows the cause (an unexpected exception's traceback is mid-output)."""
    lines = output.splitlines()
    starts = [number for number, line in enumerate(lines) if any(marker in line for marker in FAILURE_MARKERS)]
    kept: list[str] = []
    last = -1
    for start in starts[:6]:
        if start <= last:
            continue
        last = min(len(lines), start + context)
        kept.extend(line[:400] for line in lines[start:last])
    return "\n".join(kept) or "(no failure marker in the output)"


class Node:
    """A node container and how to run the project's playbooks against it."""

    def __init__(self, name: str, image: str, runtime: str, workdir: Path):
        self.name = name
        self.image = image
        self.runtime = runtime
        self.inventory = workdir / f"{name}.yml"
        self.inventory.write_text(yaml.safe_dump(self._inventory()))

    def _inventory(self) -> dict:
        host_vars = {
            "ansible_connection": "community.docker.docker",
            "ansible_python_interpreter": "/usr/bin/python3",
            "container_engine": "containerd",
        }
        return {
            "k3s_cluster": {
                "children": {
                    "server": {"hosts": {self.name: host_vars}},
                    "agent": {"hosts": {}},
                }
            }
        }

    def add_host_vars(self, **host_vars) -> None:
        """More host vars in this node's inventory."""
        inventory = yaml.safe_load(self.inventory.read_text())
        inventory["k3s_cluster"]["children"]["server"]["hosts"][self.name].update(host_vars)
        self.inventory.write_text(yaml.safe_dump(inventory))

    def playbook_command(self, playbook: str, *args: str,
                         callback: str = "ansible.posix.json") -> tuple[list[str], dict]:
        """argv and environment that run PLAYBOOK against this node (cwd: REPO)."""
        env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK=callback,
                   ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
        argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(self.inventory),
                str(REPO / playbook), *args]
        return argv, env

    def playbook(self, playbook: str, *args: str) -> "PlaybookRun":
        """Run a playbook with the JSON callback and return its parsed result."""
        argv, env = self.playbook_command(playbook, *args)
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        return PlaybookRun(self.name, proc)

    def exec(self, *command: str) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "exec", self.name, *command],
                              capture_output=True, text=True, timeout=120)

    def ship(self, files: dict[str, str], dest: str) -> None:
        """Files {arcname: local path} into dest, written from inside the node (docs/NODES.md)."""
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            for arcname, path in files.items():
                tar.add(path, arcname=arcname, recursive=True)
        subprocess.run(["docker", "exec", "-i", self.name, "sh", "-c", f"mkdir -p {dest} && tar -x -C {dest}"],
                       input=archive.getvalue(), check=True, timeout=600)


class PlaybookRun:
    def __init__(self, host: str, proc: subprocess.CompletedProcess):
        self.host = host
        self.returncode = proc.returncode
        self.stderr = proc.stderr
        try:
            self.result = json.loads(proc.stdout)
        except json.JSONDecodeError as error:
            raise AssertionError(
                f"playbook printed no JSON ({error}):\n{proc.stdout}\n{proc.stderr}"
            ) from None

    def task(self, name: str) -> dict:
        """The result on this host of the last task called NAME (role prefix ignored) that ran, else
        of the last one skipped: a stage playbook's include of the probe role has the probe task's
        name and is skipped when an earlier play probed."""
        results = [task["hosts"][self.host] for play in self.result["plays"] for task in play["tasks"]
                   if task["task"]["name"].split(" : ", 1)[-1] == name and self.host in task["hosts"]]
        if not results:
            raise AssertionError(f"no task {name!r} ran on {self.host}")
        ran = [result for result in results if not result.get("skipped")]
        return (ran or results)[-1]

    @property
    def stats(self) -> dict:
        return self.result["stats"][self.host]


@pytest.fixture(scope="session", autouse=True)
def installed_collection():
    """The playbooks run the collection as installed from this tree's tarball."""
    subprocess.run([str(REPO / "scripts" / "install-collection")], check=True, capture_output=True, text=True)


@pytest.fixture(scope="session")
def node_factory(tmp_path_factory):
    """make(suffix, image=..., runtime=...) -> Node; all destroyed at the end."""
    workdir = tmp_path_factory.mktemp("nodes")
    made: list[str] = []

    def make(suffix: str, image: str = "sid", runtime: str = "runsc") -> Node:
        skip_unless_registered(runtime)
        name = f"{NODE_PREFIX}{suffix}"
        gvisor_node("destroy", name)
        gvisor_node("create", name, "--image", image, "--runtime", runtime)
        made.append(name)
        return Node(name, image, runtime, workdir)

    yield make
    if made:
        gvisor_node("destroy", *made)
