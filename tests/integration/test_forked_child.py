# SPDX-License-Identifier: Apache-2.0
"""plugins/module_utils/forked_child.py with real processes: a child's
result, its exception, a hanging child killed with its process group, a
child that dies without a word. No docker or root needed; here rather than
in the unit tests because they fork."""

from __future__ import annotations

import errno
import os
import signal
import time

from child_processes import children_of_this_process, no_child_left

from ansible_collections.k3s_gvisor.node.plugins.module_utils import forked_child as fc
from ansible_collections.k3s_gvisor.node.plugins.module_utils.linux_calls import SyscallError, exception_text, read_text

# ---------------------------------------------------------------------------
# Forked children (real processes, small)
# ---------------------------------------------------------------------------


def test_run_forked_returns_the_child_result():
    assert fc.run_forked(lambda: {"pid": os.getpid()}, 2)["pid"] != os.getpid()
    assert no_child_left()


def test_run_forked_reports_exceptions():
    def fail():
        raise ValueError("nope")

    assert fc.run_forked(fail, 2)["error"] == "ValueError: nope"
    assert fc.run_forked(lambda: os.open("/nonexistent/x", os.O_RDONLY), 2)["error"] == (
        "ENOENT: No such file or directory (/nonexistent/x)"
    )
    assert exception_text(SyscallError(errno.EPERM, "unshare(CLONE_NEWNS) failed: EPERM: ...")) == (
        "unshare(CLONE_NEWNS) failed: EPERM: ..."
    )


def process_is_gone(pid: int) -> bool:
    stat = read_text("/proc/%d/stat" % pid)
    return stat is None or stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_run_forked_kills_a_hanging_child_and_its_group(tmp_path):
    pid_file = tmp_path / "grandchild.pid"

    def hang():
        grandchild = os.fork()
        if grandchild == 0:  # in the child's process group
            time.sleep(30)
            os._exit(0)
        pid_file.write_text(str(grandchild))
        time.sleep(30)
        return {}

    started = time.monotonic()
    result = fc.run_forked(hang, 0.5)
    assert "no answer within 0.5 s" in result["error"]
    assert time.monotonic() - started < 2
    grandchild = int(pid_file.read_text())
    # The child is reaped; the killed grandchild is an orphan, adopted by
    # PID 1 at some point after the kill.
    assert children_of_this_process() <= {grandchild}
    deadline = time.monotonic() + 2
    while not process_is_gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process_is_gone(grandchild)
    if os.getpid() == 1:  # this test runs as PID 1 (e.g. under `runsc do`): the orphan is ours to reap
        reap_when_adopted(grandchild, time.monotonic() + 2)


def reap_when_adopted(pid: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            pass  # not adopted yet
        time.sleep(0.01)


def test_run_forked_child_dying_silently():
    result = fc.run_forked(lambda: os.kill(os.getpid(), signal.SIGKILL), 2)
    assert "without a result" in result["error"]
