# SPDX-License-Identifier: Apache-2.0
"""Unit tests for the verify role's CRI check (module_utils/cri_pod_sandbox.py).

The CRI messages are the real ones (cri_api.v1.api_pb2 of the pinned
container-runtime-interface-api); only the runtime service is a fake: a
small in-memory engine that keeps sandboxes and containers with their
labels, writes the probe's log as containerd would, and fails where a test
tells it to, with the engine's own words. What a real engine does is tested
in tests/integration/test_verify.py.
"""

from __future__ import annotations

import os

import pytest
from cri_api.v1 import api_pb2 as api

from verify_module_utils import load

blockers = load("gvisor_blockers")
cri = load("cri_pod_sandbox")

HOST_PID_NS = "pid:[4026531836]"
# containerd 2.1.9's RunPodSandbox error with stock runc 1.3.6 on gVisor 20240729 (B3).
B3_ERROR = ('failed to start sandbox "18021a": failed to create containerd task: failed to create shim task: '
            "OCI runtime create failed: runc create failed: unsafe procfs detected: incorrect procfs root inode number 86")


class RpcError(Exception):
    """Shaped like grpc.RpcError: code() and details()."""

    class Code:
        name = "UNKNOWN"

    def __init__(self, details: str):
        super().__init__(details)
        self._details = details

    def code(self):
        return self.Code()

    def details(self):
        return self._details


class FakeRuntime:
    """An in-memory CRI runtime service: fail={method: error text}; leave_sandbox: RunPodSandbox fails after making one."""

    def __init__(self, fail=None, probe_output=None, never_ready=False, leave_sandbox=False):
        self.fail = fail or {}
        self.probe_output = probe_output
        self.never_ready = never_ready
        self.leave_sandbox = leave_sandbox
        self.sandboxes, self.containers, self.calls = {}, {}, []

    def _call(self, method):
        self.calls.append(method)
        if method in self.fail:
            raise RpcError(self.fail[method])

    def RunPodSandbox(self, request, timeout=None):
        sandbox_id = f"sb{len(self.sandboxes)}"
        if self.leave_sandbox:
            self.sandboxes[sandbox_id] = request.config
        self._call("RunPodSandbox")
        self.sandboxes[sandbox_id] = request.config
        self.last_run = request
        return api.RunPodSandboxResponse(pod_sandbox_id=sandbox_id)

    def PodSandboxStatus(self, request, timeout=None):
        self._call("PodSandboxStatus")
        state = api.SANDBOX_NOTREADY if self.never_ready else api.SANDBOX_READY
        return api.PodSandboxStatusResponse(status=api.PodSandboxStatus(id=request.pod_sandbox_id, state=state))

    def CreateContainer(self, request, timeout=None):
        self._call("CreateContainer")
        container_id = f"c{len(self.containers)}"
        log = os.path.join(self.sandboxes[request.pod_sandbox_id].log_directory, request.config.log_path)
        self.containers[container_id] = {"config": request.config, "log": log, "started": False}
        self.last_create = request
        return api.CreateContainerResponse(container_id=container_id)

    def StartContainer(self, request, timeout=None):
        self._call("StartContainer")
        container = self.containers[request.container_id]
        marker = {env.key: env.value for env in container["config"].envs}["K3S_GVISOR_MARKER"]
        output = self.probe_output if self.probe_output is not None else [
            f"{marker} begin", "pid=1", "uid=0", "hostname=node", "capeff=00000000a80425fb",
            "ns.pid=pid:[8]", "ns.net=net:[1]", f"{marker} end"]
        with open(container["log"], "w") as handle:
            handle.writelines(f"2026-11-28T17:08:18.7Z stdout F {line}\n" for line in output)
        container["started"] = True
        return api.StartContainerResponse()

    def ContainerStatus(self, request, timeout=None):
        self._call("ContainerStatus")
        container = self.containers[request.container_id]
        state = api.CONTAINER_EXITED if container["started"] else api.CONTAINER_CREATED
        return api.ContainerStatusResponse(status=api.ContainerStatus(
            id=request.container_id, state=state, exit_code=0, log_path=container["log"]))

    def ListContainers(self, request, timeout=None):
        self._call("ListContainers")
        wanted = dict(request.filter.label_selector)
        return api.ListContainersResponse(containers=[
            api.Container(id=cid, labels=c["config"].labels) for cid, c in self.containers.items()
            if wanted.items() <= dict(c["config"].labels).items()])

    def ListPodSandbox(self, request, timeout=None):
        self._call("ListPodSandbox")
        wanted = dict(request.filter.label_selector)
        return api.ListPodSandboxResponse(items=[
            api.PodSandbox(id=sid, labels=config.labels) for sid, config in self.sandboxes.items()
            if wanted.items() <= dict(config.labels).items()])

    def StopContainer(self, request, timeout=None):
        self._call("StopContainer")

    def RemoveContainer(self, request, timeout=None):
        self._call("RemoveContainer")
        self.containers.pop(request.container_id, None)

    def StopPodSandbox(self, request, timeout=None):
        self._call("StopPodSandbox")

    def RemovePodSandbox(self, request, timeout=None):
        self._call("RemovePodSandbox")
        self.sandboxes.pop(request.pod_sandbox_id, None)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def check(runtime, tmp_path, **settings):
    clock = FakeClock()
    options = dict(sandbox_image="localhost/k3s-gvisor/pause:1", probe_image="localhost/k3s-gvisor/probe:1",
                   log_root=str(tmp_path), timeout=2.0, run_id="0123456789ab")
    options.update(settings)
    return cri.PodSandboxCheck(runtime, api, cri.CheckSettings(**options), HOST_PID_NS,
                               sleep=clock.sleep, clock=clock).run()


def assert_nothing_left(runtime, tmp_path):
    assert runtime.sandboxes == {} and runtime.containers == {}
    assert os.listdir(tmp_path) == []


def test_a_probe_pod_runs_end_to_end_and_leaves_nothing(tmp_path):
    runtime = FakeRuntime()
    result = check(runtime, tmp_path)
    assert result["ok"] and result["failure"] is None
    assert result["sandbox_state"] == "SANDBOX_READY"
    assert list(result["timings"]) == list(cri.STEPS)
    assert result["probe"]["capeff"] == "00000000a80425fb" and result["own_pid_namespace"]
    assert result["cleanup_errors"] == []
    assert_nothing_left(runtime, tmp_path)


def test_the_pod_asks_for_what_kubelet_asks_for_an_ordinary_pod(tmp_path):
    runtime = FakeRuntime()
    check(runtime, tmp_path)
    for options in (runtime.last_run.config.linux.security_context.namespace_options,
                    runtime.last_create.config.linux.security_context.namespace_options):
        assert options.pid == api.CONTAINER  # not POD, the zero value: B9 on gVisor
        assert options.network == api.NODE
    assert runtime.last_run.config.hostname == ""  # runc refuses a hostname without a UTS namespace
    assert runtime.last_run.runtime_handler == ""
    assert runtime.last_create.config.image.image == "localhost/k3s-gvisor/probe:1"


def test_pod_network_and_a_handler_are_passed_on(tmp_path):
    runtime = FakeRuntime()
    result = check(runtime, tmp_path, network="pod", runtime_handler="runc-stock")
    assert runtime.last_run.config.linux.security_context.namespace_options.network == api.POD
    assert runtime.last_run.config.hostname == "verify-0123456789ab"
    assert runtime.last_run.runtime_handler == "runc-stock"
    assert result["runtime_handler"] == "runc-stock" and result["network"] == "pod"


def test_a_known_blocker_is_named_with_its_remedy_and_everything_is_removed(tmp_path):
    runtime = FakeRuntime(fail={"StartContainer": B3_ERROR})
    result = check(runtime, tmp_path)
    assert not result["ok"]
    assert result["failure"] == {"step": "start_container", "blocker": "B3",
                                 "title": blockers.BLOCKER_CATALOGUE["B3"].title,
                                 "evidence": "UNKNOWN: " + B3_ERROR, "remedy": blockers.BLOCKER_CATALOGUE["B3"].remedy}
    assert list(result["timings"]) == ["run_pod_sandbox", "sandbox_ready", "create_container", "start_container", "cleanup"]
    assert runtime.calls.count("RemoveContainer") == 1 and runtime.calls.count("RemovePodSandbox") == 1
    assert_nothing_left(runtime, tmp_path)


def test_a_sandbox_the_engine_left_after_a_failed_run_is_found_by_label_and_removed(tmp_path):
    runtime = FakeRuntime(fail={"RunPodSandbox": B3_ERROR}, leave_sandbox=True)
    result = check(runtime, tmp_path)
    assert result["failure"]["step"] == "run_pod_sandbox" and result["failure"]["blocker"] == "B3"
    assert_nothing_left(runtime, tmp_path)


def test_the_wrappers_own_blocker_words_are_recognised(tmp_path):
    text = ("runc create failed: real runc ...: blocker B9: this host (gVisor) cannot join an existing PID namespace; "
            "the container asks for the pod's PID namespace /proc/42/ns/pid (shareProcessNamespace)")
    result = check(FakeRuntime(fail={"CreateContainer": text}), tmp_path)
    assert result["failure"]["blocker"] == "B9" and result["failure"]["step"] == "create_container"


def test_an_unknown_error_is_returned_verbatim_with_its_step(tmp_path):
    text = 'failed to pull image "registry.k8s.io/pause:3.10": dial tcp: lookup registry.k8s.io: no such host'
    result = check(FakeRuntime(fail={"RunPodSandbox": text}), tmp_path)
    assert result["failure"] == {"step": "run_pod_sandbox", "blocker": None, "title": None,
                                 "evidence": "UNKNOWN: " + text, "remedy": None}


def test_a_sandbox_that_never_gets_ready_times_out_and_is_removed(tmp_path):
    runtime = FakeRuntime(never_ready=True)
    result = check(runtime, tmp_path)
    assert result["failure"]["step"] == "sandbox_ready"
    assert "SANDBOX_READY not reached within 2 s" in result["failure"]["evidence"]
    assert_nothing_left(runtime, tmp_path)


def test_a_log_without_this_runs_marker_fails_the_check(tmp_path):
    runtime = FakeRuntime(probe_output=["k3s-gvisor-verify-old begin", "pid=1", "k3s-gvisor-verify-old end"])
    result = check(runtime, tmp_path)
    assert result["failure"]["step"] == "read_log" and result["failure"]["blocker"] is None
    assert "marker k3s-gvisor-verify-0123456789ab not in" in result["failure"]["evidence"]
    assert "k3s-gvisor-verify-old end" in result["failure"]["evidence"]  # the log's end is shown
    assert_nothing_left(runtime, tmp_path)


def test_a_probe_in_the_nodes_pid_namespace_fails_the_check(tmp_path):
    runtime = FakeRuntime(probe_output=["k3s-gvisor-verify-0123456789ab begin", "pid=7", f"ns.pid={HOST_PID_NS}",
                                        "k3s-gvisor-verify-0123456789ab end"])
    result = check(runtime, tmp_path)
    assert not result["ok"] and result["marker_found"] and not result["own_pid_namespace"]
    assert "own PID namespace" in result["failure"]["evidence"]


def test_cleanup_errors_are_reported_and_do_not_stop_the_rest(tmp_path):
    runtime = FakeRuntime(fail={"StopContainer": "context deadline exceeded"})
    result = check(runtime, tmp_path)
    assert result["ok"]
    assert result["cleanup_errors"] == ["UNKNOWN: context deadline exceeded"]
    assert runtime.sandboxes == {}  # the sandbox was still removed


@pytest.mark.parametrize("blocker_id", sorted(blockers.BLOCKER_CATALOGUE))
def test_every_catalogue_entry_is_found_inside_the_engines_longer_message(blocker_id):
    words = blockers.BLOCKER_CATALOGUE[blocker_id].error_text
    found = cri.match_blocker(f"rpc error: code = Unknown desc = failed to create shim task: {words}: exit status 1")
    assert found["blocker"] == blocker_id


def test_an_error_without_a_catalogue_entry_matches_nothing():
    assert cri.match_blocker("runc create failed: unable to set hostname without a private UTS namespace") is None


def leave_an_earlier_run(runtime, tmp_path, run_id="feedfacecafe"):
    """What a run killed after StartContainer leaves: its sandbox, container and log directory."""
    settings = cri.CheckSettings(sandbox_image="p", probe_image="q", log_root=str(tmp_path), run_id=run_id)
    earlier = cri.PodSandboxCheck(runtime, api, settings, HOST_PID_NS)
    os.makedirs(settings.log_directory)
    earlier.run_pod_sandbox()
    earlier.create_container()
    earlier.start_container()
    return earlier


def test_what_an_earlier_run_left_is_removed_and_nothing_else(tmp_path):
    runtime = FakeRuntime()
    earlier = leave_an_earlier_run(runtime, tmp_path)
    runtime.sandboxes["someone-elses"] = api.PodSandboxConfig(labels={"app": "web"})
    (tmp_path / "default_web_1234").mkdir()
    removed = cri.remove_earlier_runs(runtime, api, str(tmp_path), timeout=2.0)
    assert removed == {"containers": [earlier.container_id], "sandboxes": [earlier.sandbox_id],
                       "log_directories": [earlier.settings.log_directory], "errors": []}
    assert list(runtime.sandboxes) == ["someone-elses"] and runtime.containers == {}
    assert os.listdir(tmp_path) == ["default_web_1234"]


def test_removing_earlier_runs_on_a_clean_node_removes_nothing(tmp_path):
    runtime = FakeRuntime()
    assert cri.remove_earlier_runs(runtime, api, str(tmp_path / "absent"), timeout=2.0) == cri.NO_EARLIER_RUNS
    assert "RemovePodSandbox" not in runtime.calls


def test_an_earlier_runs_pod_the_engine_cannot_remove_is_reported(tmp_path):
    runtime = FakeRuntime()
    leave_an_earlier_run(runtime, tmp_path)
    runtime.fail = {"StopPodSandbox": "failed to stop sandbox: context deadline exceeded"}
    removed = cri.remove_earlier_runs(runtime, api, str(tmp_path), timeout=2.0)
    assert removed["errors"] == ["UNKNOWN: failed to stop sandbox: context deadline exceeded"]


def test_a_second_verify_run_waits_for_the_lock_and_then_says_who_holds_it(tmp_path):
    lock, clock = str(tmp_path / "verify.lock"), FakeClock()
    with cri.verify_lock(lock, timeout=2.0):
        with pytest.raises(cri.StepFailed, match=f"another verify run has held {lock} for 2 s"):
            with cri.verify_lock(lock, timeout=2.0, sleep=clock.sleep, clock=clock):
                pass
        assert clock.now >= 102.0
    with cri.verify_lock(lock, timeout=2.0):
        pass


def test_what_runc_init_wrote_to_the_containers_log_before_start_failed_is_in_the_evidence(tmp_path):
    """runc init fails after `runc create` returned: its stderr is in the container's log, not in the error."""
    runtime = FakeRuntime(fail={"StartContainer": "failed to start containerd task: cannot start a stopped process"})
    original_create = runtime.CreateContainer

    def create_and_fail_init(request, timeout=None):
        response = original_create(request, timeout)
        with open(runtime.containers[response.container_id]["log"], "w") as handle:
            handle.write("2026-11-28T17:08:18.7Z stderr F reopen exec fifo: interrupted system call\n")
        return response

    runtime.CreateContainer = create_and_fail_init
    failure = check(runtime, tmp_path)["failure"]
    assert failure["step"] == "start_container"
    assert failure["evidence"] == ("UNKNOWN: failed to start containerd task: cannot start a stopped process; "
                                   "the container's log ends: reopen exec fifo: interrupted system call")
    assert_nothing_left(runtime, tmp_path)


class ShimGoingAway(FakeRuntime):
    """StopPodSandbox meets a shim whose ttrpc connection closed, `times` times, then works (as containerd does)."""

    def __init__(self, times: int, **kwargs):
        super().__init__(**kwargs)
        self.times = times

    def StopPodSandbox(self, request, timeout=None):
        if self.times > 0:
            self.times -= 1
            self.calls.append("StopPodSandbox")
            raise RpcError('failed to stop container "c0": failed to kill container "c0": ttrpc: closed')
        return super().StopPodSandbox(request, timeout)


def test_teardown_retries_a_closed_shim_and_says_so_without_failing_the_check(tmp_path, monkeypatch):
    monkeypatch.setattr(cri.time, "sleep", lambda seconds: None)
    runtime = ShimGoingAway(times=1)
    result = check(runtime, tmp_path)
    assert result["ok"] and result["failure"] is None and result["cleanup_errors"] == []
    assert len(result["cleanup_retries"]) == 1 and "ttrpc: closed" in result["cleanup_retries"][0]
    assert runtime.sandboxes == {} and runtime.calls.count("StopPodSandbox") == 2


def test_teardown_gives_up_after_its_attempts_and_reports_teardown_not_the_check(tmp_path, monkeypatch):
    monkeypatch.setattr(cri.time, "sleep", lambda seconds: None)
    runtime = ShimGoingAway(times=cri.TEARDOWN_ATTEMPTS + 1)
    result = check(runtime, tmp_path)
    # The pod ran: the thing under test passed; teardown's own error is apart.
    assert result["ok"] and result["failure"] is None
    assert len(result["cleanup_errors"]) == 1 and "ttrpc: closed" in result["cleanup_errors"][0]
    assert len(result["cleanup_retries"]) == cri.TEARDOWN_ATTEMPTS - 1


def test_teardown_does_not_retry_what_is_not_transient(tmp_path):
    runtime = FakeRuntime(fail={"StopContainer": "context deadline exceeded"})
    result = check(runtime, tmp_path)
    assert result["cleanup_retries"] == [] and runtime.calls.count("StopContainer") == 1
