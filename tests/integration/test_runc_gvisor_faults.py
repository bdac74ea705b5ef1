# SPDX-License-Identifier: Apache-2.0
"""Faults in the runtime stage's build, on real gVisor nodes (issue #7, item 3):
a runc build killed half-way is rebuilt cleanly by the next run, and a cached
build whose content no longer matches its recorded sha256 fails the run
before anything is installed, naming the file and both checksums.

One test, in order, because each step starts from what the one before left:
a build cache of its own (never the user's), empty at first. The nodes are
sid nodes with runc_gvisor_runtime=runc-patched (by default the record
chooses crun there, which needs no build): the patched runc 1.3.6 with
0002 0003 0005, built natively from its Go module on the controller.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import REPO, VENV_BIN
from site_runs import task_name

# The build task's name starts so, whatever else the role builds beside runc.
BUILD_TASK = "Build the patched runc"
INSTALLED = ["/usr/local/lib/runc-gvisor/runc", "/usr/local/bin/runc-gvisor", "/etc/runc-gvisor/profile.json"]
STAGE_ARGS = ("--tags", "probe,runtime", "-e", "runc_gvisor_runtime=runc-patched")


def stage_args(cache: Path) -> tuple[str, ...]:
    return (*STAGE_ARGS, "-e", f"runc_gvisor_cache_dir={cache}")


def runtime_stage(node, cache: Path) -> list[str]:
    return [str(VENV_BIN / "ansible-playbook"), "-i", str(node.inventory), str(REPO / "site.yml"), *stage_args(cache)]


def build_result(run) -> dict:
    """The build module's result for the one patch set (0002 0003 0005): it runs once, for the first host
    of the play, in a loop over the fleet's patch sets."""
    for play in run.result["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"].split(" : ", 1)[-1].startswith(BUILD_TASK):
                (result,) = task["hosts"].values()
                (item,) = result["results"]
                assert [name[:4] for name in item["item"]] == ["0002", "0003", "0005"], item["item"]
                return item
    raise AssertionError(f"no task {BUILD_TASK}... ran")


def installed_state(node) -> str:
    """What the runtime stage installs, with checksums and times: equal means unchanged. The probe
    stage's kept decision record (/etc/k3s-gvisor, and /etc's own entry, which it changes) is not an
    install: it is written before any build."""
    return node.exec("sh", "-c", f"sha256sum {' '.join(INSTALLED)} 2>&1; "
                     "find /usr/local /etc -xdev -mindepth 1 -path /etc/k3s-gvisor -prune "
                     "-o -printf '%p %s %m %T@\\n' | sort").stdout


def complete_builds(kind_dir: Path) -> list[str]:
    return sorted(p.name for p in kind_dir.iterdir() if not p.name.startswith(".")) if kind_dir.is_dir() else []


def partial_builds(kind_dir: Path) -> list[str]:
    return sorted(p.name for p in kind_dir.iterdir() if p.name.startswith(".partial-")) if kind_dir.is_dir() else []


def build_processes(cache: Path) -> list[int]:
    """Processes of the native build (the build script, go, the compilers) working in this test's cache."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if str(cache) in cmdline or cwd.startswith(str(cache)):
            found.append(int(pid))
    return found


def stop_build_processes(cache: Path) -> list[int]:
    """What of the killed play's build is still running, killed (each by its pid: they are this test's)."""
    left = build_processes(cache)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def kill_during_runc_build(node, cache: Path) -> None:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    play = subprocess.Popen(runtime_stage(node, cache), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while not partial_builds(cache / "runc"):
        assert play.poll() is None, f"the play ended (exit {play.returncode}) before runc's build started"
        assert time.monotonic() < deadline, "runc's build never started"
        time.sleep(0.2)
    time.sleep(5)  # well inside the build (it takes tens of seconds), not at its first step
    os.killpg(play.pid, signal.SIGKILL)
    play.wait()


def test_killed_build_is_rebuilt_and_a_corrupted_cache_installs_nothing(node_factory, tmp_path):
    node = node_factory("runc-build-faults")
    cache = tmp_path / "cache"
    before = installed_state(node)

    # 1. The play is killed while runc is being built.
    kill_during_runc_build(node, cache)
    try:
        assert partial_builds(cache / "runc"), "the killed build left no partial directory"
        assert complete_builds(cache / "runc") == [], "a killed build was taken for a finished one"
        assert installed_state(node) == before, "something was installed before the build finished"
    finally:
        left = stop_build_processes(cache)
        print(f"\nbuild processes left by the killed play: {len(left)}")

    # 2. The next run removes the leftover, builds again and installs that build.
    rerun = node.playbook("site.yml", *stage_args(cache))
    assert rerun.returncode == 0, rerun.stderr
    build = build_result(rerun)
    assert build["runc"]["built"] is True
    assert partial_builds(cache / "runc") == []
    assert complete_builds(cache / "runc") == [build["runc"]["key"]]
    cached = Path(build["runc"]["path"])
    recorded = (cached.parent / "runc.sha256").read_text().split()[0]
    assert recorded == build["runc"]["sha256"] == hashlib.sha256(cached.read_bytes()).hexdigest()
    installed = node.exec("sha256sum", INSTALLED[0]).stdout.split()[0]
    assert installed == recorded

    # 3. The cached runc changes behind the cache's back: the next run fails at
    #    the build, before installing, on a converged node and on a fresh one.
    fresh = node_factory("runc-build-faults-fresh")
    converged_before, fresh_before = installed_state(node), installed_state(fresh)
    with cached.open("ab") as stream:
        stream.write(b"\0tampered")
    actual = hashlib.sha256(cached.read_bytes()).hexdigest()
    failed = node.playbook("site.yml", *stage_args(cache), "-i", str(fresh.inventory))
    assert failed.returncode != 0
    message = build_result(failed)["msg"]
    assert str(cached) in message and recorded in message and actual in message, message
    assert installed_state(node) == converged_before
    assert installed_state(fresh) == fresh_before
    installs = [task for play in failed.result["plays"] for task in play["tasks"]
                if task_name(task).startswith("runc_gvisor : Install")]
    assert installs == [], "an install task ran after the build failed"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == actual, "the corrupted build was replaced"
