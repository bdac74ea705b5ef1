# SPDX-License-Identifier: Apache-2.0
"""The k3s engine on real gVisor nodes (sid image, runsc), with a STAND-IN for k3s.

The k3s binary cannot be downloaded on our machines, so these tests install a
stand-in as engine_k3s_local_file: tests/fixtures/k3s-standin/k3s, a Python
script that prints a version for `--version`, and for `server`/`agent`
records its argv and the config.yaml it would read, then sleeps. It is NOT
k3s and runs no pods. What these tests prove is what the role does around
k3s on a gVisor host: the checksummed install, config.yaml with the flags
the probe's decision record names (and the pinned pause image), the
containerd template for the release with the runtime's wrapper in it, the
token (made once, 0600, never printed), a server and an agent that joins it,
k3s under the supervisor (argv, restart after kill -9, restart on a config
change and only then), the pause image made and imported through `k3s ctr`
(the stand-in keeps an image store for it), check mode, and reset. Not
proven here: that a real k3s starts with these flags inside gVisor.

Nodes: a server and an agent in one inventory (module-scoped, shared by the
tests in file order, reset last), and a fresh node for check mode.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time

import pytest
import yaml

from conftest import REPO, VENV_BIN, PlaybookRun
from site_runs import DECIDE_TASK, failed_tasks, task_name

STAGES = ("--tags", "probe,runtime,engine")
STANDIN = REPO / "tests" / "fixtures" / "k3s-standin" / "k3s"
K3S_VERSION = "v1.35.0+k3s1"  # what the stand-in reports; the role's default release
K3S = "/usr/local/bin/k3s"
CONFIG = "/etc/rancher/k3s/config.yaml"
TOKEN_FILE = "/var/lib/rancher/k3s-gvisor/token"
TEMPLATE_DIR = "/var/lib/rancher/k3s/agent/etc/containerd"
SUPERVISE = "/usr/local/bin/k3s-gvisor-supervise"
STANDIN_RUN = "/var/lib/rancher/k3s/stand-in/run.json"
STANDIN_IMAGES = "/var/lib/rancher/k3s/stand-in/images.json"
PAUSE = "localhost/k3s-gvisor/pause:1"
# What a converge leaves and reset must remove (the runtime's own paths are
# test_engine's to check).
NODE_SCRIPT = "/usr/local/bin/k3s-gvisor-node"
KUBELET_DROPIN = "/var/lib/rancher/k3s/agent/etc/kubelet.conf.d/10-k3s-gvisor.conf"
K3S_PATHS = [K3S, NODE_SCRIPT, "/etc/systemd/system/k3s.service",
             "/etc/rancher", "/var/lib/rancher", "/run/k3s", "/var/lib/kubelet", "/run/flannel",
             SUPERVISE, "/run/k3s-gvisor", "/var/log/k3s-gvisor"]


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Cluster:
    """Nodes in one inventory (groups server and agent), driven by the project's playbooks."""

    def __init__(self, servers, agents, workdir, standin):
        self.servers, self.agents = servers, agents
        self.inventory = workdir / f"cluster-{servers[0].name}.yml"
        common = {"ansible_connection": "community.docker.docker",
                  "ansible_python_interpreter": "/usr/bin/python3",
                  "container_engine": "k3s",
                  "engine_k3s_local_file": str(standin),
                  "engine_k3s_sha256": {"amd64": sha256(standin)}}
        self.inventory.write_text(yaml.safe_dump({"k3s_cluster": {
            "children": {"server": {"hosts": {n.name: {} for n in servers}},
                         "agent": {"hosts": {n.name: {} for n in agents}}},
            "vars": common}}))

    @property
    def nodes(self):
        return self.servers + self.agents

    def run(self, playbook: str, *args: str, callback: str = "ansible.posix.json") -> subprocess.CompletedProcess:
        env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK=callback, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
        return subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(self.inventory),
                               str(REPO / playbook), *args],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=900)

    def play(self, playbook: str, *args: str) -> dict[str, PlaybookRun]:
        proc = self.run(playbook, *args)
        return {node.name: PlaybookRun(node.name, proc) for node in self.nodes}


def changed_tasks(run: PlaybookRun, role: str | None = None) -> list[str]:
    """'role : task' of every changed task (of ROLE's only, when given)."""
    names = []
    for play in run.result["plays"]:
        for task in play["tasks"]:
            result = task["hosts"].get(run.host, {})
            name = task_name(task)
            if result.get("changed") and (role is None or name.startswith(f"{role} : ")):
                names.append(name)
    return names


def read(node, path: str) -> str:
    result = node.exec("cat", path)
    assert result.returncode == 0, f"{path} on {node.name}: {result.stderr}"
    return result.stdout


def mode(node, path: str) -> str:
    return node.exec("stat", "-c", "%a", path).stdout.strip()


def supervised_k3s(node) -> tuple[int, dict]:
    result = node.exec(SUPERVISE, "status", "k3s")
    return result.returncode, json.loads(result.stdout or "{}")


def exists(node, paths) -> dict[str, bool]:
    return {path: node.exec("test", "-e", path).returncode == 0 for path in paths}


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    path = tmp_path_factory.mktemp("k3s-standin") / "k3s"
    shutil.copy(STANDIN, path)
    return path


@pytest.fixture(scope="module")
def cluster(node_factory, standin, tmp_path_factory):
    """A server and an agent, converged once; the first run is -vvv, kept for the token test."""
    server = node_factory("k3s-srv")
    agent = node_factory("k3s-agt")
    cluster = Cluster([server], [agent], tmp_path_factory.mktemp("k3s-cluster"), standin)
    first = cluster.run("site.yml", *STAGES, "-vvv", callback="default")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    cluster.first_output = first.stdout + first.stderr
    cluster.token = read(server, TOKEN_FILE).strip()
    return cluster


@pytest.fixture(scope="module")
def record(cluster):
    """The decision record of the server (the agent's is the same image's), from a probe-only run."""
    run = cluster.play("playbooks/probe.yml")[cluster.servers[0].name]
    assert run.returncode == 0, run.stderr + "\n".join(failed_tasks(run))
    return run.task(DECIDE_TASK)["ansible_facts"]["gvisor"]["decisions"]


def test_check_mode_on_a_fresh_node_runs_through_and_changes_nothing(node_factory, standin, tmp_path_factory):
    node = node_factory("k3s-check")
    cluster = Cluster([node], [], tmp_path_factory.mktemp("k3s-check"), standin)
    before = exists(node, K3S_PATHS)
    # An older release, whose embedded containerd 1.7 reads only config.toml.tmpl:
    # both templates are written (docs/K3S.md). No binary is asked in check mode.
    run = cluster.play("site.yml", *STAGES, "--check", "--diff", "-e", "engine_k3s_version=v1.30.14+k3s1")[node.name]
    assert run.returncode == 0, run.stderr + "\n".join(failed_tasks(run))
    assert run.stats["failures"] == 0
    assert "engine : Install k3s from the controller" in changed_tasks(run)  # it says what it would do
    assert "engine : Write k3s's config.yaml" in changed_tasks(run)
    templates = run.task("Write the containerd template for k3s v1.30.14+k3s1")["results"]
    assert {(item["item"], item["changed"]) for item in templates} == {
        ("config-v3.toml.tmpl", True), ("config.toml.tmpl", True)}
    assert exists(node, K3S_PATHS) == before


def test_k3s_is_installed_with_its_checksum(cluster, standin):
    for node in cluster.nodes:
        assert node.exec("sha256sum", K3S).stdout.split()[0] == sha256(standin)
        assert mode(node, K3S) == "755"
        assert node.exec(K3S, "--version").stdout.startswith(f"k3s version {K3S_VERSION} ")


def test_server_config_has_the_flags_the_record_names(cluster, record):
    server = cluster.servers[0]
    config = yaml.safe_load(read(server, CONFIG))
    for flag in record["k3s"]["flags"]:
        assert {key: config.get(key) for key in flag["value"]} == flag["value"], flag
    assert config["snapshotter"] == "native"  # B7 on this node, the engine's decision
    assert config["node-ip"] == "10.42.0.1"  # no default route (B19): the pod bridge's gateway
    assert config["pause-image"] == PAUSE  # the engine's own pause image, pinned
    assert config["flannel-backend"] == "none"
    # No netfilter on gVisor (B13): k3s's source stops k3s on a kube-proxy or network policy error.
    assert record["kubernetes"]["service_proxy"]["value"] == "gvisor-service-proxy"
    assert config["disable-kube-proxy"] is True and config["disable-network-policy"] is True
    assert "kube-proxy-arg" not in config
    assert "default-runtime" not in config  # the template makes runc-gvisor the default
    assert "server" not in config and "cluster-init" not in config  # one server: it starts the cluster
    assert config["token"] == cluster.token
    assert mode(server, CONFIG) == "600"


def test_agent_joins_the_first_server_with_the_same_token(cluster):
    server, agent = cluster.servers[0], cluster.agents[0]
    config = yaml.safe_load(read(agent, CONFIG))
    assert config["server"] == f"https://{server.name}:6443"
    assert config["token"] == cluster.token
    assert "flannel-backend" not in config  # a server flag
    assert config["snapshotter"] == "native"
    assert mode(agent, CONFIG) == "600"
    assert not exists(agent, [TOKEN_FILE])[TOKEN_FILE]  # only the first server keeps it


def test_containerd_template_for_the_release(cluster):
    for node in cluster.nodes:
        # v1.35 embeds containerd 2.x: config-v3 only (docs/K3S.md, "Which template").
        assert exists(node, [f"{TEMPLATE_DIR}/config-v3.toml.tmpl", f"{TEMPLATE_DIR}/config.toml.tmpl"]) == {
            f"{TEMPLATE_DIR}/config-v3.toml.tmpl": True, f"{TEMPLATE_DIR}/config.toml.tmpl": False}
        template = read(node, f"{TEMPLATE_DIR}/config-v3.toml.tmpl")
        assert "[%" not in template and "%]" not in template  # Jinja rendered every variable
        assert '{{ template "base" . }}' in template
        assert 'BinaryName = "/usr/local/bin/runc-gvisor"' in template
        assert 'default_runtime_name = "runc-gvisor"' in template
        assert 'ne .NodeConfig.AgentConfig.Snapshotter "native"' in template  # checked against B7


def test_k3s_runs_under_the_supervisor_behind_the_node_preparation(cluster, record):
    options = [step["value"] for step in record["kubernetes"]["node"]]
    assert options == ["--private-mount-namespace", "--kernel-tunables", "--dev-kmsg", "--cgroup-freezer",
                       "--node-bridge"]  # B17, B16, B12, B18, B19
    for node, role in ((cluster.servers[0], "server"), (cluster.agents[0], "agent")):
        code, state = supervised_k3s(node)
        assert code == 0, state
        # k3s-gvisor-node prepares the node and execs k3s on every (re)start.
        assert state["command"] == [NODE_SCRIPT, *options[:-1], "--node-bridge=gvbr0=10.42.0.1/24", "--", K3S, role]
        run = json.loads(read(node, STANDIN_RUN))
        assert run["argv"] == [K3S, role] and run["pid"] == state["daemon_pid"]
        # k3s's own mount namespace: /var/lib/kubelet rshared, / not, the views and the kmsg bind.
        mounts = {line.split()[4]: line for line in read(node, f"/proc/{run['pid']}/mountinfo").splitlines()}
        assert " shared:" in mounts["/var/lib/kubelet"] and " shared:" not in mounts["/"]
        assert {"/dev/kmsg", "/proc/sys/vm", "/proc/sys/kernel"} <= set(mounts)
        # Outside it, the host is as it was but for the freezer directory and the bridge.
        assert "/dev/kmsg" not in read(node, "/proc/self/mountinfo")
        assert exists(node, ["/sys/fs/cgroup/freezer"]) == {"/sys/fs/cgroup/freezer": True}
        assert " 10.42.0.1/24 " in node.exec("ip", "-4", "-o", "addr", "show", "dev", "gvbr0").stdout
        # The record's kubelet settings reach k3s's kubelet through its kubelet.conf.d.
        dropin = yaml.safe_load(read(node, KUBELET_DROPIN))
        assert dropin["failCgroupV1"] is False and dropin["localStorageCapacityIsolation"] is False


def test_the_pause_image_is_made_and_imported_through_k3s_ctr(cluster):
    for node in cluster.nodes:
        store = json.loads(read(node, STANDIN_IMAGES))
        assert list(store) == [PAUSE] and store[PAUSE].startswith("sha256:"), store
        listed = node.exec(K3S, "ctr", "--namespace", "k8s.io", "images", "ls", f"name=={PAUSE}").stdout
        assert store[PAUSE] in listed, listed


def test_token_is_never_printed_and_kept_0600(cluster):
    assert len(cluster.token) == 64
    assert cluster.token not in cluster.first_output  # -vvv, stdout and stderr
    server = cluster.servers[0]
    assert mode(server, TOKEN_FILE) == "600"
    assert mode(server, os.path.dirname(TOKEN_FILE)) == "700"
    assert mode(server, STANDIN_RUN) == "600"  # the stand-in's copy of the config


def test_killed_k3s_comes_back(cluster):
    node = cluster.servers[0]
    _, before = supervised_k3s(node)
    assert node.exec("kill", "-9", str(before["daemon_pid"])).returncode == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        code, after = supervised_k3s(node)
        if code == 0 and after["daemon_pid"] != before["daemon_pid"]:
            break
        time.sleep(1)
    assert after["daemon_pid"] != before["daemon_pid"]
    assert after["restarts"] == before["restarts"] + 1
    assert json.loads(read(node, STANDIN_RUN))["argv"] == [K3S, "server"]


def test_second_converge_changes_nothing(cluster):
    runs = cluster.play("site.yml", *STAGES)
    for run in runs.values():
        assert run.returncode == 0, run.stderr + "\n".join(failed_tasks(run))
        # The engine's own tasks; the other stages' idempotence is their tests' to check.
        assert changed_tasks(run, role="engine") == []


def test_changing_a_variable_restarts_only_k3s_on_that_node(cluster):
    server, agent = cluster.servers[0], cluster.agents[0]
    pids = {node.name: supervised_k3s(node)[1]["daemon_pid"] for node in cluster.nodes}
    runs = cluster.play("site.yml", *STAGES, "-e", json.dumps(
        {"engine_k3s_server_config": {"node-label": ["k3s-gvisor/test=1"]}}))
    assert runs[server.name].returncode == 0, runs[server.name].stderr
    assert changed_tasks(runs[server.name], role="engine") == [
        "engine : Write k3s's config.yaml", "engine : Restart the engine's processes under the supervisor"]
    assert changed_tasks(runs[agent.name], role="engine") == []
    assert yaml.safe_load(read(server, CONFIG))["node-label"] == ["k3s-gvisor/test=1"]
    assert supervised_k3s(server)[1]["daemon_pid"] != pids[server.name]
    assert supervised_k3s(agent)[1]["daemon_pid"] == pids[agent.name]


def test_wrong_sha256_fails_before_installing(cluster, standin, tmp_path):
    server = cluster.servers[0]
    other = tmp_path / "k3s"
    other.write_bytes(standin.read_bytes() + b"# not the pinned binary\n")
    before = {path: read(server, path) for path in (CONFIG, f"{TEMPLATE_DIR}/config-v3.toml.tmpl")}
    _, state = supervised_k3s(server)
    runs = cluster.play("site.yml", *STAGES, "-e", f"engine_k3s_local_file={other}")
    run = runs[server.name]
    assert run.returncode != 0
    message = run.task("Compare the local k3s binary with its pinned sha256")["msg"]
    assert str(other) in message and sha256(other) in message and sha256(standin) in message
    assert changed_tasks(run, role="engine") == []
    assert server.exec("sha256sum", K3S).stdout.split()[0] == sha256(standin)
    assert {path: read(server, path) for path in before} == before
    assert supervised_k3s(server)[1]["daemon_pid"] == state["daemon_pid"]


def test_reset_leaves_no_trace(cluster):
    """Runs last in the module: it undoes the converge. Checks K3S_PATHS, the mounts, the processes."""
    first = cluster.play("playbooks/reset.yml")
    for node in cluster.nodes:
        assert first[node.name].returncode == 0, first[node.name].stderr
        assert exists(node, K3S_PATHS) == dict.fromkeys(K3S_PATHS, False)
        mountinfo = read(node, "/proc/self/mountinfo").splitlines()
        assert not any(line.split()[4] in ("/dev/kmsg", "/run/k3s") for line in mountinfo)
        root = [line for line in mountinfo if line.split()[4] == "/"][-1]
        assert " shared:" not in root  # private again, as the sandbox started
        assert "k3s" not in node.exec("ps", "-eo", "comm").stdout.split()
    again = cluster.play("playbooks/reset.yml")
    for node in cluster.nodes:
        assert again[node.name].returncode == 0 and again[node.name].stats["changed"] == 0
