# SPDX-License-Identifier: Apache-2.0
"""The containerd engine on real gVisor nodes (sid: containerd 2.1.9; trixie: 1.7.24).

Converged by site.yml's probe, runtime and engine stages, with a boot hook
(engine_boot_hook): containerd runs under k3s-gvisor-supervise (the nodes'
PID 1 is `sleep infinity`), serves CRI, and runs pods through runc-gvisor by
default, with the settings of the probe's decision record. Then, on each
node in file order: the daemon is killed (the supervisor restarts it); the
supervisor and the daemon are killed (the boot hook's `resume` brings them
back); a second converge changes nothing; check mode changes nothing, also
with the engine stopped, where it reports the start it would make; and reset,
once while the supervisor waits to restart a killed daemon and once after the
supervisor itself was killed with its containerd left running, must leave the
node as it was, twice in a row.
"""

from __future__ import annotations

import datetime
import json
import time
import tomllib

import pytest

from site_runs import DECIDE_TASK, changed_tasks, failed_tasks

STAGES = ("--tags", "probe,runtime,engine")
SUPERVISE = "/usr/local/bin/k3s-gvisor-supervise"
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
BOOT_HOOK = "/etc/profile.d/k3s-gvisor.sh"
BOOT_HOOK_MARKER = "k3s-gvisor: restart the engine under the supervisor when the host starts"
START_TASK = "engine : Start the engine's processes under the supervisor"
PAUSE_TASK = "engine : Build and import the pause image"
# The supervisor's backoff doubles from 1 s to 30 s while the daemon dies within a minute of its start.
KILLS, LAST_BACKOFF_SECONDS = 6, 30
# Everything the probe, runtime and engine stages write on a containerd node.
INSTALLED = ["/usr/local/bin/runc-gvisor", "/usr/local/lib/runc-gvisor", "/etc/runc-gvisor",
             "/usr/lib/cni/gvisor-bridge", "/usr/lib/cni/loopback", "/etc/cni/net.d/10-k3s-gvisor.conflist",
             "/var/lib/cni/networks/k3s-gvisor", SUPERVISE, "/run/k3s-gvisor", "/var/log/k3s-gvisor",
             "/var/lib/k3s-gvisor/supervise",
             CONTAINERD_CONFIG + ".k3s-gvisor-orig", CONTAINERD_CONFIG + ".k3s-gvisor-absent"]


# Every path under the trees a converge writes to, for a before/after comparison (containerd's own
# state, and apt's and dpkg's, left out).
FOOTPRINT = ("find /usr/local /usr/lib/cni /etc /var/lib /var/log /run /opt -xdev 2>/dev/null "
             "| grep -v -E '^/var/lib/(containerd|dpkg|apt)(/|$)|^/run/containerd(/|$)' | sort")
# What containerd itself leaves once it has run, whoever started it: its CRI makes its CNI conf_dir
# when it starts, its NRI socket stays behind it.
CONTAINERDS_OWN = {"/etc/cni", "/etc/cni/net.d", "/run/nri", "/run/nri/nri.sock"}


def footprint(node) -> set[str]:
    result = node.exec("sh", "-c", FOOTPRINT)
    return set(result.stdout.split())


def config_before(node) -> str | None:
    result = node.exec("cat", CONTAINERD_CONFIG)
    return result.stdout if result.returncode == 0 else None


def present(node, paths=INSTALLED) -> list[str]:
    return [path for path in paths if node.exec("test", "-e", path).returncode == 0]


def converge(node, *args: str):
    run = node.playbook("site.yml", *STAGES, *args)
    assert run.returncode == 0, run.stderr + json.dumps(run.stats) + "\n" + "\n".join(failed_tasks(run))
    return run


# trixie (containerd 1.7, the patched runc) is in the slow tier: molecule's trixie scenario converges and
# verifies it in CI, and these engine behaviours are the same code on both.
@pytest.fixture(scope="module", params=["sid", pytest.param("trixie", marks=pytest.mark.slow)])
def engine_node(request, node_factory):
    node = node_factory(f"engine-{request.param}", image=request.param)
    node.add_host_vars(engine_boot_hook=BOOT_HOOK)
    original = config_before(node)
    before = present(node)
    node.footprint = footprint(node)
    run = converge(node)
    node.record = run.task(DECIDE_TASK)["ansible_facts"]["gvisor"]["decisions"]
    return node, original, before


def supervisor_state(node) -> tuple[int, dict]:
    result = node.exec(SUPERVISE, "status", "containerd")
    return result.returncode, json.loads(result.stdout or "{}")


def cri_plugin_status(node) -> list[str]:
    lines = node.exec("ctr", "plugins", "ls").stdout.splitlines()
    return [line for line in lines if line.startswith(("io.containerd.grpc.v1", "io.containerd.cri.v1"))
            and (" cri " in line or " runtime " in line)]


def running_containerds(node) -> list[str]:
    """containerd processes that run (PID 1 reaps nothing: a daemon killed after its supervisor is a zombie)."""
    lines = node.exec("ps", "-eo", "pid=,stat=,comm=").stdout.splitlines()
    return [line for line in lines if line.split()[2:] == ["containerd"] and not line.split()[1].startswith("Z")]


def wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} within {seconds} s")


def serving(node) -> bool:
    code, _ = supervisor_state(node)
    statuses = cri_plugin_status(node)
    return code == 0 and bool(statuses) and all(line.split()[-1] == "ok" for line in statuses)


def test_containerd_runs_under_the_supervisor(engine_node):
    node, _, _ = engine_node
    code, state = supervisor_state(node)
    assert code == 0, state
    assert state["command"][0] == "containerd"
    assert node.exec("test", "-d", f"/proc/{state['daemon_pid']}").returncode == 0


def test_cri_plugin_is_loaded(engine_node):
    node, _, _ = engine_node
    statuses = cri_plugin_status(node)
    assert statuses and all(line.split()[-1] == "ok" for line in statuses), statuses


def test_runc_gvisor_is_the_default_runtime_with_the_records_settings(engine_node):
    node, _, _ = engine_node
    dump = tomllib.loads(node.exec("containerd", "config", "dump").stdout)
    plugins = dump["plugins"]
    if dump["version"] >= 3:
        cri = plugins["io.containerd.cri.v1.runtime"]["containerd"]
        images = plugins["io.containerd.cri.v1.images"]
        snapshotter, sandbox = images["snapshotter"], images["pinned_images"]["sandbox"]
    else:
        cri = plugins["io.containerd.grpc.v1.cri"]["containerd"]
        snapshotter, sandbox = cri["snapshotter"], plugins["io.containerd.grpc.v1.cri"]["sandbox_image"]
    assert cri["default_runtime_name"] == "runc-gvisor"
    runtime = cri["runtimes"]["runc-gvisor"]
    assert runtime["runtime_type"] == "io.containerd.runc.v2"
    assert runtime["options"]["BinaryName"] == "/usr/local/bin/runc-gvisor"
    # gVisor keeps every session keyring (B15): containers keep the shim's instead of spending the quota.
    assert node.record["engine"]["no_new_keyring"] == {"value": True, "answers": ["B15"],
                                                      "why": "session keyrings are never freed: one per container "
                                                             "would spend the quota"}
    assert runtime["options"]["NoNewKeyring"] is True
    assert runtime["options"]["SystemdCgroup"] is False
    assert snapshotter == node.record["engine"]["snapshotter"]["value"] == "native"  # B7 on gVisor
    # The engine made its own pause image and pinned it.
    assert sandbox == "localhost/k3s-gvisor/pause:1"
    images = node.exec("ctr", "--namespace", "k8s.io", "images", "ls", "-q").stdout.split()
    assert sandbox in images, images


def test_the_boot_hook_holds_the_resume_block(engine_node):
    node, _, _ = engine_node
    hook = node.exec("cat", BOOT_HOOK).stdout
    assert f"# BEGIN {BOOT_HOOK_MARKER}" in hook and f"# END {BOOT_HOOK_MARKER}" in hook, hook
    assert f"{SUPERVISE} resume" in hook, hook


def test_killed_containerd_comes_back(engine_node):
    node, _, _ = engine_node
    _, before = supervisor_state(node)
    assert node.exec("kill", "-9", str(before["daemon_pid"])).returncode == 0

    def restarted():
        code, after = supervisor_state(node)
        return after if code == 0 and after["daemon_pid"] != before["daemon_pid"] and serving(node) else None

    after = wait_for(restarted, 30, "the supervisor did not restart containerd")
    assert after["supervisor_pid"] == before["supervisor_pid"]
    assert after["restarts"] == before["restarts"] + 1


def test_the_boot_hook_brings_back_a_killed_supervisor_and_its_daemon(engine_node):
    """As after a restart of the sandbox: nothing supervises containerd until the hook runs `resume`."""
    node, _, _ = engine_node
    _, before = supervisor_state(node)
    assert node.exec("kill", "-9", str(before["supervisor_pid"]), str(before["daemon_pid"])).returncode == 0
    wait_for(lambda: not running_containerds(node), 10, "containerd did not die")
    code, state = supervisor_state(node)
    assert code == 3, state
    hook = node.exec("sh", BOOT_HOOK)
    assert hook.returncode == 0, hook.stderr
    wait_for(lambda: serving(node), 60, "the boot hook's resume did not bring containerd back")
    _, after = supervisor_state(node)
    assert after["supervisor_pid"] != before["supervisor_pid"] and after["daemon_pid"] != before["daemon_pid"]
    assert after["command"] == before["command"] and after["restarts"] == 0


def test_second_converge_changes_nothing(engine_node):
    node, _, _ = engine_node
    run = converge(node)
    assert run.stats["changed"] == 0, changed_tasks(run)


def test_check_mode_on_a_converged_node_reports_nothing_to_do(engine_node):
    node, _, _ = engine_node
    run = converge(node, "--check", "--diff")
    assert run.stats["changed"] == 0, changed_tasks(run)


def test_check_mode_with_the_engine_stopped_reports_the_start_and_changes_nothing(engine_node):
    node, _, _ = engine_node
    assert node.exec(SUPERVISE, "stop", "containerd").returncode == 0
    assert supervisor_state(node)[0] == 3 and not running_containerds(node)
    try:
        run = converge(node, "--check", "--diff")
        changed = [name.split(": ", 1)[1] for name in changed_tasks(run)]
        assert START_TASK in changed, changed
        said = run.task("Start the engine's processes under the supervisor")["results"][0]
        assert said["stdout"].startswith("would start containerd"), said
        # What check mode cannot ask a stopped engine (is the pause image there?) it reports as to do.
        assert set(changed) <= {START_TASK, PAUSE_TASK}, changed
        assert supervisor_state(node)[0] == 3 and not running_containerds(node), "check mode started the engine"
    finally:
        # The converge does what check mode said, and no more (the pause image is still in containerd's store).
        started = converge(node)
    assert [name.split(": ", 1)[1] for name in changed_tasks(started)] == [START_TASK]
    assert serving(node)


@pytest.fixture(scope="module")
def fresh_node(node_factory):
    return node_factory("engine-check")


def test_check_mode_on_a_fresh_node_changes_nothing(fresh_node):
    node = fresh_node
    before = present(node)
    original = config_before(node)
    run = node.playbook("site.yml", *STAGES, "--check", "--diff")
    assert run.returncode == 0, run.stderr + json.dumps(run.stats) + "\n" + "\n".join(failed_tasks(run))
    assert run.stats["changed"] > 0  # it says what it would do
    assert present(node) == before
    assert config_before(node) == original
    assert not running_containerds(node)


HAND_WRITTEN = 'version = 2\n# mine\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n'


def test_a_hand_written_containerd_config_is_refused_and_kept(fresh_node):
    """The role writes containerd's whole config: a file neither Debian's nor its own would lose its settings."""
    node = fresh_node
    assert node.exec("sh", "-c", f"printf '%s' '{HAND_WRITTEN}' > {CONTAINERD_CONFIG}").returncode == 0
    run = node.playbook("site.yml", *STAGES, "--check")
    assert run.returncode != 0
    failures = failed_tasks(run)
    assert len(failures) == 1 and failures[0].startswith("engine : Refuse a containerd config that is not the package's"), failures
    assert CONTAINERD_CONFIG in failures[0] and "Nothing was changed" in failures[0], failures
    assert config_before(node) == HAND_WRITTEN


def assert_no_trace(node, original, before) -> None:
    assert present(node) == before
    now = footprint(node)
    assert sorted(node.footprint - now) == [], "reset removed what the node had before"
    assert sorted(now - node.footprint - CONTAINERDS_OWN) == [], "reset left these"
    assert config_before(node) == original
    assert not running_containerds(node)
    assert node.exec("pgrep", "-f", SUPERVISE).returncode == 1, node.exec("ps", "-ef").stdout
    hook = node.exec("cat", BOOT_HOOK).stdout
    assert BOOT_HOOK_MARKER not in hook, hook


def reset_twice(node, first=None) -> None:
    first = first or node.playbook("playbooks/reset.yml")
    assert first.returncode == 0, first.stderr + "\n".join(failed_tasks(first))
    assert first.stats["changed"] > 0
    again = node.playbook("playbooks/reset.yml")
    assert again.returncode == 0, again.stderr + "\n".join(failed_tasks(again))
    assert again.stats["changed"] == 0, changed_tasks(again)


def test_reset_while_the_supervisor_restarts_a_killed_daemon_leaves_no_trace(engine_node):
    """Killed six times within a minute, the daemon waits 30 s for its next start (backoff 1, 2, 4, 8, 16,
    30 s; status 1, the supervisor alive, the daemon down): reset runs then, and must stop it as it is."""
    node, original, before = engine_node
    for kill in range(1, KILLS + 1):
        _, state = supervisor_state(node)
        assert node.exec("kill", "-9", str(state["daemon_pid"])).returncode == 0
        killed_at = datetime.datetime.now(datetime.timezone.utc)
        wait_for(lambda: supervisor_state(node)[0] == 1, 10, "the supervisor did not notice the kill")
        if kill < KILLS:
            wait_for(lambda: supervisor_state(node)[0] == 0, 40, "the supervisor did not restart containerd")
    code, state = supervisor_state(node)
    assert code == 1 and state["running"] is False and state["restarts"] >= KILLS, state
    first = node.playbook("playbooks/reset.yml")
    # It was still waiting when reset stopped it.
    stop = [task["task"] for play in first.result["plays"] for task in play["tasks"]
            if task["task"]["name"].endswith("Stop the engines under the supervisor and forget their commands")]
    started = datetime.datetime.fromisoformat(stop[0]["duration"]["start"].replace("Z", "+00:00"))
    assert (started - killed_at).total_seconds() < LAST_BACKOFF_SECONDS, (started, killed_at)
    reset_twice(node, first)
    assert_no_trace(node, original, before)


def test_reset_after_the_supervisor_was_killed_leaves_no_trace(engine_node):
    """The supervisor SIGKILLed, its containerd left running unsupervised (status 3): reset stops that one too."""
    node, original, before = engine_node
    converge(node)
    _, state = supervisor_state(node)
    assert node.exec("kill", "-9", str(state["supervisor_pid"])).returncode == 0
    wait_for(lambda: supervisor_state(node)[0] == 3, 10, "the supervisor did not die")
    assert [line.split()[0] for line in running_containerds(node)] == [str(state["daemon_pid"])]
    reset_twice(node)
    assert_no_trace(node, original, before)
