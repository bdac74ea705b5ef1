# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0
"""Run a function in a forked child that reports back as JSON and dies:
whatever a test changes in its process (mounts in a private mount namespace,
a scratch network namespace, a subreaper flag, a session keyring) dies with
the child. A child that does not answer in time is killed with its process
group.

Only the standard library: this runs on the target.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time
from ansible_collections.k3s_gvisor.node.plugins.module_utils.host_text import outcome
from ansible_collections.k3s_gvisor.node.plugins.module_utils.linux_calls import exception_text

# Extra time a forked child gets beyond the per-test timeout to report back
# after its own inner timeout (e.g. the ip subprocess) expired.
CHILD_REPORT_GRACE = 1.0


def write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def read_until_eof(fd: int, deadline: float) -> bytes | None:
    """Everything written to fd until EOF, or None when the deadline passed."""
    chunks = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def reap_within(pid: int, deadline: float) -> int:
    """Wait for pid until the deadline, then kill its process group and it."""
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.002)
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return os.waitpid(pid, 0)[1]


def _child_main(function, write_fd: int) -> None:
    """Body of a forked child: run function, send its result as JSON, _exit.

    os._exit skips the parent's atexit handlers and buffered output. The
    child leads its own process group so a timeout kills its helpers too.
    """
    code = 0
    try:
        os.setpgid(0, 0)
        result = function()
    except BaseException as exc:  # a child must always report and exit
        result = {"error": exception_text(exc)}
        code = 1
    try:
        write_all(write_fd, json.dumps(result).encode())
    finally:
        os._exit(code)


def flush_std_streams() -> None:
    # Anything buffered before fork() would otherwise be written twice.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass


def run_forked(function, timeout: float) -> dict:
    """Run function() in a forked child and return the dict it returned.

    The child is killed (with its process group) when it does not answer
    within timeout seconds; the result is then {"error": "..."}.
    """
    read_fd, write_fd = os.pipe()
    flush_std_streams()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child_main(function, write_fd)
    os.close(write_fd)
    deadline = time.monotonic() + timeout
    try:
        data = read_until_eof(read_fd, deadline)
    finally:
        os.close(read_fd)
        status = reap_within(pid, deadline if data is not None else time.monotonic())
    if data is None:
        return {"error": f"no answer within {timeout:.1f} s (killed)"}
    try:
        return json.loads(data.decode())
    except ValueError:
        return {"error": f"child died (wait status {status}) without a result"}


def outcome_from_child(result: dict) -> dict:
    """A child's {works, error}; a child that crashed or timed out is untested (works None)."""
    if "works" in result:
        return outcome(result["works"], result.get("error"))
    return outcome(None, result.get("error", "no result"))
