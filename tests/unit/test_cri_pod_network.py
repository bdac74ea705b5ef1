# SPDX-License-Identifier: Apache-2.0
"""Unit tests for the pure parts of the verify role's pod-network check
(module_utils/cri_pod_network.py): the busybox scripts (run here with the
host's sh and a fake nc), the IP checks and the leftovers. The check against
a real engine and CNI is tests/integration/test_pod_network.py."""

from __future__ import annotations

import subprocess

import pytest

from verify_module_utils import load

net = load("cri_pod_network")


@pytest.fixture()
def fake_busybox(tmp_path, monkeypatch):
    """A /bin/busybox stand-in: `nc` prints what NC_REPLY holds (empty: fails, as nc with no listener), `sleep` returns."""
    script = tmp_path / "busybox"
    script.write_text('#!/bin/sh\ncase "$1" in\n  nc) [ -n "$NC_REPLY" ] && echo "$NC_REPLY"; echo "$*" >> "$NC_CALLS";'
                      ' [ -n "$NC_REPLY" ];;\n  sleep) :;;\n  sh) shift; exec sh "$@";;\nesac\n')
    script.chmod(0o755)
    monkeypatch.setattr(net, "BUSYBOX", str(script))
    return tmp_path


def run_client(fake_busybox, reply: str, attempts: int = 3):
    calls = fake_busybox / "calls"
    command = net.client_command("10.42.0.2", 8080, attempts)
    proc = subprocess.run(["sh", "-c", command[-1]], capture_output=True, text=True,
                          env={"NC_REPLY": reply, "NC_CALLS": str(calls), "PATH": "/usr/bin:/bin"}, timeout=30)
    return proc, calls.read_text().splitlines()


def test_the_client_prints_the_reply_it_read_and_succeeds(fake_busybox):
    proc, calls = run_client(fake_busybox, "k3s-gvisor-verify-abc")
    assert proc.returncode == 0
    assert net.client_reply([("stdout", line) for line in proc.stdout.splitlines()]) == "k3s-gvisor-verify-abc"
    assert calls == ["nc 10.42.0.2 8080"]


def test_the_client_retries_then_fails_naming_the_server(fake_busybox):
    proc, calls = run_client(fake_busybox, "", attempts=3)
    assert proc.returncode == 1 and len(calls) == 3
    assert "no reply from 10.42.0.2:8080 in 3 attempts" in proc.stdout
    assert net.client_reply([("stdout", line) for line in proc.stdout.splitlines()]) is None


def test_the_server_is_a_persistent_nc_answering_the_reply():
    assert net.server_command(8080, "k3s-gvisor-verify-abc") == [
        net.BUSYBOX, "nc", "-ll", "-p", "8080", "-e", net.BUSYBOX, "echo", "k3s-gvisor-verify-abc"]


@pytest.mark.parametrize(("ips", "problem"), [
    ({"server": "10.42.0.2", "client": "10.42.0.3"}, None),
    ({"server": "10.42.0.2", "client": ""}, "pod client has no IP"),
    ({"server": "10.42.1.2", "client": "10.42.0.3"}, "pod server has 10.42.1.2, outside 10.42.0.0/24"),
    ({"server": "10.42.0.1", "client": "10.42.0.3"}, "the bridge's (gateway) address"),
    ({"server": "10.42.0.5", "client": "10.42.0.5"}, "pods share an IP"),
])
def test_pod_ips_must_be_distinct_and_in_the_range(ips, problem):
    problems = net.pod_ip_problems(ips, "10.42.0.0/24")
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0], problems


def test_leftovers_are_new_links_but_the_bridge_and_reserved_ips():
    reserved = {"/var/lib/cni/networks/k3s-gvisor/10.42.0.3"}
    found = net.leftovers(["lo", "eth0"], ["lo", "eth0", "gvbr0", "gvb0123456789ab"], "gvbr0",
                          ["10.42.0.2", "10.42.0.3", ""], "/var/lib/cni/networks/k3s-gvisor", exists=reserved.__contains__)
    assert found == ["link gvb0123456789ab", "IPAM reservation /var/lib/cni/networks/k3s-gvisor/10.42.0.3"]
    assert net.leftovers(["lo"], ["lo", "gvbr0"], "gvbr0", ["10.42.0.2"], "/x", exists=lambda _path: False) == []


def test_node_to_pod_retries_until_the_server_answers_then_gives_the_evidence():
    answers = iter([ConnectionRefusedError(111, "Connection refused"), "k3s-gvisor-verify-r1"])

    def read(ip, port, timeout):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    clock = iter(range(100))
    settings = net.NetworkSettings(sandbox_image="", probe_image="p", run_id="r1", timeout=5)
    check = net.PodNetworkCheck(None, None, settings, sleep=lambda _s: None, clock=lambda: next(clock), read=read)
    check.ips["server"] = "10.42.0.2"
    assert check.node_to_pod() == "k3s-gvisor-verify-r1"

    check.read = lambda *_args: "something else"
    with pytest.raises(net.StepFailed, match=r"node -> server pod 10.42.0.2:8080: read 'something else', expected"):
        check.node_to_pod()
