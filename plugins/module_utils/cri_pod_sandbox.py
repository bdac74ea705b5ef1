# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0
"""A pod over CRI, end to end, timed step by step, with a diagnosis on failure.

PodSandboxCheck drives a CRI runtime service (a RuntimeServiceStub of the
container-runtime-interface-api package, or anything with the same methods)
through what kubelet does for an ordinary pod: RunPodSandbox, PodSandboxStatus
until READY, CreateContainer and StartContainer of the probe container (its
own PID namespace, pid: CONTAINER, as kubelet asks for a pod without
shareProcessNamespace), wait for it to exit, read its log file, then stop and
remove the container and the sandbox. Whatever happens, everything this run
made is found again by its label and removed (try/finally).

A failed step is matched against the probe's blocker catalogue
(gvisor_facts.BLOCKER_CATALOGUE, roles/gvisor_preflight): the engine passes
runc's error text through, and each blocker records the words it shows.

The CRI message classes come in as a module (`api`, cri_api.v1.api_pb2) so
this file imports neither grpc nor protobuf and its logic is unit-tested with
fakes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field

from ansible_collections.k3s_gvisor.node.plugins.module_utils.gvisor_blockers import BLOCKER_CATALOGUE
from ansible_collections.k3s_gvisor.node.plugins.module_utils.verify_images import MARKER_VARIABLE, own_pid_namespace, parse_cri_log, parse_probe_output

RUN_LABEL = "k3s-gvisor.io/verify-run"
POD_NAMESPACE = "k3s-gvisor-verify"
CONTAINER_LOG = "probe.log"
POLL_INTERVAL = 0.1
# Held by a verify module while it runs: one verify run at a time per node, so
# that removing earlier runs' pods never removes a running one's.
VERIFY_LOCK = "/run/k3s-gvisor-verify.lock"

# Steps in order; "cleanup" always runs and is timed too.
STEPS = ("run_pod_sandbox", "sandbox_ready", "create_container", "start_container", "container_exit", "read_log", "cleanup")

# A wrapper or tool that already knows the blocker says so ("blocker B9: ...").
_NAMED_BLOCKER = re.compile(r"\bblocker (B\d+):")


class StepFailed(Exception):
    """A step did not give what the next one needs; the message says what was seen."""


def match_blocker(error_text: str, catalogue=None) -> dict | None:
    """{blocker, title, evidence, remedy} when the error shows a known blocker's words, else None."""
    catalogue = BLOCKER_CATALOGUE if catalogue is None else catalogue
    named = _NAMED_BLOCKER.search(error_text)
    for blocker_id, info in catalogue.items():
        if (named and named.group(1) == blocker_id) or info.matches(error_text):
            return {"blocker": blocker_id, "title": info.title, "evidence": error_text, "remedy": info.remedy}
    return None


def diagnose(step: str, error_text: str, catalogue=None) -> dict:
    """The failure record: the blocker's diagnosis, or the error verbatim with blocker None."""
    found = match_blocker(error_text, catalogue)
    if found:
        return dict(found, step=step)
    return {"step": step, "blocker": None, "title": None, "evidence": error_text, "remedy": None}


def error_text(exc: BaseException) -> str:
    """A gRPC error's details (the engine's own words), else the exception's text."""
    details = getattr(exc, "details", None)
    if callable(details):
        code = exc.code() if callable(getattr(exc, "code", None)) else None
        text = details() or ""
        return f"{getattr(code, 'name', code)}: {text}" if code is not None else text
    return f"{type(exc).__name__}: {exc}"


def read_cri_log(path: str) -> list:
    """[(stream, text)] of a container log file in the CRI format."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        return parse_cri_log(handle.read())


def shown_ending(lines, count: int = 10) -> str:
    return " | ".join(text for _stream, text in lines[-count:])


def log_ending(path: str) -> str:
    """The last lines of a container log, '' when it is absent or empty."""
    try:
        return shown_ending(read_cri_log(path))
    except OSError:
        return ""


# What containerd answers when a call met a shim that was going away (its
# ttrpc connection closed) or a daemon restarting: a later call succeeds, and
# kubelet retries exactly these. Teardown retries them too, and says so.
TRANSIENT_TEARDOWN = ("ttrpc: closed", "UNAVAILABLE:")
TEARDOWN_ATTEMPTS = 3
TEARDOWN_RETRY_SECONDS = 0.5


def call_quietly(errors: list, call, request, timeout: float, retried: list | None = None,
                 sleep=time.sleep) -> None:
    """call(request); an error other than "not found" is appended to errors, none stops the caller.

    A transient error (TRANSIENT_TEARDOWN) is retried up to TEARDOWN_ATTEMPTS
    times, each retry noted in retried; only the last error is an error."""
    for attempt in range(1, TEARDOWN_ATTEMPTS + 1):
        try:
            call(request, timeout=timeout)
            return
        except Exception as exc:  # noqa: BLE001 - every cleanup error is reported, none stops the rest
            text = error_text(exc)
        if "not found" in text.lower():
            return
        if attempt == TEARDOWN_ATTEMPTS or not any(words in text for words in TRANSIENT_TEARDOWN):
            errors.append(text)
            return
        if retried is not None:
            retried.append(text)
        sleep(TEARDOWN_RETRY_SECONDS)


def remove_pods(stub, api, container_ids, sandbox_ids, timeout: float, retried: list | None = None) -> list[str]:
    """Stop and remove the containers, then the sandboxes; [errors] (retries noted in retried)."""
    errors: list = []
    for container_id in sorted(container_ids):
        call_quietly(errors, stub.StopContainer, api.StopContainerRequest(container_id=container_id, timeout=5),
                     timeout, retried)
        call_quietly(errors, stub.RemoveContainer, api.RemoveContainerRequest(container_id=container_id), timeout,
                     retried)
    for sandbox_id in sorted(sandbox_ids):
        call_quietly(errors, stub.StopPodSandbox, api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout,
                     retried)
        call_quietly(errors, stub.RemovePodSandbox, api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout,
                     retried)
    return errors


def remove_earlier_runs(stub, api, log_root: str, timeout: float) -> dict:
    """Remove what earlier verify runs left: their containers, sandboxes and pod log directories.

    A run ends by removing its own pods, but a run whose engine or play was
    killed half-way cannot; the next run removes them here. Call it holding
    VERIFY_LOCK: every pod with the verify label is then an earlier run's.
    """
    def labelled(items):
        return {item.id for item in items if RUN_LABEL in item.labels}

    containers = labelled(stub.ListContainers(api.ListContainersRequest(), timeout=timeout).containers)
    sandboxes = labelled(stub.ListPodSandbox(api.ListPodSandboxRequest(), timeout=timeout).items)
    errors = remove_pods(stub, api, containers, sandboxes, timeout)
    log_directories = []
    if os.path.isdir(log_root):
        for name in sorted(os.listdir(log_root)):
            if name.startswith(f"{POD_NAMESPACE}_"):
                path = os.path.join(log_root, name)
                log_directories.append(path)
                try:
                    shutil.rmtree(path)
                except OSError as exc:
                    errors.append(f"log directory {exc.filename or path}: {exc.strerror}")
    return {"containers": sorted(containers), "sandboxes": sorted(sandboxes), "log_directories": log_directories,
            "errors": errors}


@contextlib.contextmanager
def verify_lock(path: str, timeout: float, sleep=time.sleep, clock=time.monotonic):
    """Hold an exclusive flock on path; StepFailed when another run holds it for longer than timeout."""
    with open(path, "a", encoding="utf-8") as handle:  # "a": made if absent, never truncated
        deadline = clock() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if clock() >= deadline:
                    raise StepFailed(f"another verify run has held {path} for {timeout:g} s") from None
                sleep(POLL_INTERVAL)
        yield


@dataclass
class CheckSettings:
    """What the check runs and how long it waits (seconds)."""

    sandbox_image: str
    probe_image: str
    runtime_handler: str = ""
    network: str = "host"
    log_root: str = "/var/log/pods"
    timeout: float = 60.0
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def marker(self) -> str:
        return f"k3s-gvisor-verify-{self.run_id}"

    @property
    def log_directory(self) -> str:
        # kubelet's layout: <namespace>_<name>_<uid>.
        return os.path.join(self.log_root, f"{POD_NAMESPACE}_probe-{self.run_id}_{self.run_id}")


class Timer:
    """Seconds per step, rounded to the millisecond."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.seconds: dict = {}

    def run(self, step: str, function):
        started = self.clock()
        try:
            return function()
        finally:
            self.seconds[step] = round(self.clock() - started, 3)


class PodSandboxCheck:
    """One probe pod through a CRI runtime service; see the module docstring."""

    def __init__(self, stub, api, settings: CheckSettings, host_pid_namespace: str, sleep=time.sleep, clock=time.monotonic):
        self.stub = stub
        self.api = api
        self.settings = settings
        self.host_pid_namespace = host_pid_namespace
        self.sleep = sleep
        self.clock = clock
        self.timer = Timer(clock)
        self.cleanup_retries: list[str] = []
        self.sandbox_id = None
        self.container_id = None

    # ---- CRI messages ----------------------------------------------------

    def _namespace_options(self):
        api = self.api
        network = api.NODE if self.settings.network == "host" else api.POD
        return api.NamespaceOption(network=network, pid=api.CONTAINER, ipc=api.POD)

    def _labels(self) -> dict:
        return {RUN_LABEL: self.settings.run_id}

    def sandbox_config(self):
        api, run_id = self.api, self.settings.run_id
        return api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=f"probe-{run_id}", uid=run_id, namespace=POD_NAMESPACE, attempt=0),
            # A pod on the node's network has the node's UTS namespace and
            # hostname (kubelet sends none); runc refuses to set one there.
            hostname="" if self.settings.network == "host" else f"verify-{run_id}",
            log_directory=self.settings.log_directory,
            labels=self._labels(),
            linux=api.LinuxPodSandboxConfig(
                security_context=api.LinuxSandboxSecurityContext(namespace_options=self._namespace_options())
            ),
        )

    def container_config(self):
        api = self.api
        return api.ContainerConfig(
            metadata=api.ContainerMetadata(name="probe", attempt=0),
            image=api.ImageSpec(image=self.settings.probe_image),
            envs=[api.KeyValue(key=MARKER_VARIABLE, value=self.settings.marker)],
            labels=self._labels(),
            log_path=CONTAINER_LOG,
            linux=api.LinuxContainerConfig(
                security_context=api.LinuxContainerSecurityContext(namespace_options=self._namespace_options())
            ),
        )

    # ---- steps -----------------------------------------------------------

    def _wait_for(self, what: str, probe):
        """probe() returns a truthy result when done; StepFailed after the timeout."""
        deadline = self.clock() + self.settings.timeout
        while True:
            result = probe()
            if result:
                return result
            if self.clock() >= deadline:
                raise StepFailed(f"{what} not reached within {self.settings.timeout:g} s")
            self.sleep(POLL_INTERVAL)

    def run_pod_sandbox(self):
        request = self.api.RunPodSandboxRequest(config=self.sandbox_config(), runtime_handler=self.settings.runtime_handler)
        self.sandbox_id = self.stub.RunPodSandbox(request, timeout=self.settings.timeout).pod_sandbox_id

    def sandbox_ready(self) -> str:
        def ready():
            status = self.stub.PodSandboxStatus(self.api.PodSandboxStatusRequest(pod_sandbox_id=self.sandbox_id)).status
            return self.api.PodSandboxState.Name(status.state) if status.state == self.api.SANDBOX_READY else None

        return self._wait_for("sandbox state SANDBOX_READY", ready)

    def create_container(self):
        request = self.api.CreateContainerRequest(
            pod_sandbox_id=self.sandbox_id, config=self.container_config(), sandbox_config=self.sandbox_config()
        )
        self.container_id = self.stub.CreateContainer(request, timeout=self.settings.timeout).container_id

    def start_container(self):
        try:
            self.stub.StartContainer(self.api.StartContainerRequest(container_id=self.container_id),
                                     timeout=self.settings.timeout)
        except Exception as exc:
            # runc init reports a failure after `runc create` has returned on
            # its stderr, which the engine sends to the container's log.
            ending = log_ending(os.path.join(self.settings.log_directory, CONTAINER_LOG))
            if not ending:
                raise
            raise StepFailed(f"{error_text(exc)}; the container's log ends: {ending}") from None

    def container_exit(self) -> dict:
        def exited():
            status = self.stub.ContainerStatus(self.api.ContainerStatusRequest(container_id=self.container_id)).status
            return status if status.state == self.api.CONTAINER_EXITED else None

        status = self._wait_for("probe container exit", exited)
        return {"exit_code": status.exit_code, "reason": status.reason, "log_path": status.log_path}

    def read_log(self, log_path: str) -> dict:
        try:
            lines = read_cri_log(log_path)
        except OSError as exc:
            raise StepFailed(f"probe log {log_path}: {exc.strerror}") from None
        parsed = parse_probe_output(lines, self.settings.marker)
        if not parsed["marker_found"]:
            raise StepFailed(f"marker {self.settings.marker} not in {log_path}; the log ends: {shown_ending(lines) or '(empty)'}")
        return parsed["facts"]

    # ---- cleanup ---------------------------------------------------------

    def _ours(self, items) -> list[str]:
        return [item.id for item in items if item.labels.get(RUN_LABEL) == self.settings.run_id]

    def cleanup(self) -> list[str]:
        """Stop and remove every container and sandbox of this run; [errors]."""
        api, selector = self.api, self._labels()
        listed = self.stub.ListContainers(api.ListContainersRequest(filter=api.ContainerFilter(label_selector=selector)))
        containers = set(self._ours(listed.containers)) | ({self.container_id} - {None})
        listed = self.stub.ListPodSandbox(api.ListPodSandboxRequest(filter=api.PodSandboxFilter(label_selector=selector)))
        sandboxes = set(self._ours(listed.items)) | ({self.sandbox_id} - {None})
        return remove_pods(self.stub, api, containers, sandboxes, self.settings.timeout, self.cleanup_retries)

    def _remove_log_directory(self, errors: list) -> None:
        directory = self.settings.log_directory
        for name in (CONTAINER_LOG,):
            path = os.path.join(directory, name)
            if os.path.lexists(path):
                os.unlink(path)
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            pass
        except OSError as exc:
            errors.append(f"log directory {directory}: {exc.strerror}")

    # ---- the whole check -------------------------------------------------

    def run(self) -> dict:
        result = {"ok": False, "run_id": self.settings.run_id, "marker": self.settings.marker,
                  "network": self.settings.network, "pid_namespace": "container",
                  "runtime_handler": self.settings.runtime_handler or "(engine default)", "failure": None}
        step = STEPS[0]
        try:
            os.makedirs(self.settings.log_directory, mode=0o755, exist_ok=True)
            for step, function in self._steps(result):
                self.timer.run(step, function)
            result["ok"] = result["own_pid_namespace"]
            if not result["ok"]:
                result["failure"] = diagnose("read_log", "the probe did not run as PID 1 of its own PID namespace: "
                                             f"{result['probe']}")
        except Exception as exc:  # noqa: BLE001 - any failure is diagnosed, then cleaned up after
            result["failure"] = diagnose(step, str(exc) if isinstance(exc, StepFailed) else error_text(exc))
        finally:
            errors = self.timer.run("cleanup", self._cleanup_all)
            # The thing under test is result["failure"]; teardown's own trouble is reported apart.
            result["cleanup_errors"] = errors
            result["cleanup_retries"] = list(self.cleanup_retries)
            result["timings"] = dict(self.timer.seconds)
            result["total_seconds"] = round(sum(self.timer.seconds.values()), 3)
        return result

    def _cleanup_all(self) -> list[str]:
        try:
            errors = self.cleanup()
        except Exception as exc:  # noqa: BLE001 - e.g. the engine died: say so, still remove the logs
            errors = [f"listing this run's containers and sandboxes: {error_text(exc)}"]
        self._remove_log_directory(errors)
        return errors

    def _steps(self, result: dict):
        def ready():
            result["sandbox_state"] = self.sandbox_ready()

        def exit_():
            result["container"] = self.container_exit()

        def log():
            facts = self.read_log(result["container"]["log_path"])
            result["probe"] = facts
            result["marker_found"] = True
            result["own_pid_namespace"] = own_pid_namespace(facts, self.host_pid_namespace)

        return (
            ("run_pod_sandbox", self.run_pod_sandbox),
            ("sandbox_ready", ready),
            ("create_container", self.create_container),
            ("start_container", self.start_container),
            ("container_exit", exit_),
            ("read_log", log),
        )


# ---- the Ansible modules' shared glue (library/cri_pod_sandbox.py, cri_pod_network.py) ----

# The options every CRI check module takes.
CRI_ARGUMENTS = {
    "socket": {"type": "path", "required": True},
    "probe_image": {"type": "str", "required": True},
    "runtime_handler": {"type": "str", "default": ""},
    "log_root": {"type": "path", "default": "/var/log/pods"},
    "timeout": {"type": "float", "default": 60.0},
}

# What the CRI check modules return about earlier runs' leftovers (remove_earlier_runs).
NO_EARLIER_RUNS = {"containers": [], "sandboxes": [], "log_directories": [], "errors": []}


def run_over_cri(module, base: dict, timeout: float, make_check, would_run: str, empty: dict) -> None:
    """Exit the module with make_check(stub, api).run()'s result over module.params['socket'].

    Not run in check mode (would_run says what a run does); a missing socket or a
    silent engine is a diagnosed failure with the empty results `empty`.
    """
    from ansible.module_utils.basic import missing_required_lib
    try:
        import grpc
        from cri_api.v1 import api_pb2, api_pb2_grpc
    except ImportError as exc:
        module.fail_json(msg=missing_required_lib("container-runtime-interface-api (with grpcio and protobuf)"),
                         exception=str(exc))
    if module.check_mode:
        module.exit_json(ok=False, checked=False, failure=None, msg=f"check mode: no pod was run (a run would {would_run})",
                         **base)
    socket_path = module.params["socket"]
    failed = dict(empty, ok=False, checked=True, timings={}, total_seconds=0, cleanup_errors=[],
                  earlier_runs=NO_EARLIER_RUNS, **base)
    if not os.path.exists(socket_path):
        module.exit_json(failure=diagnose("connect", f"{socket_path} does not exist: the engine is not running"), **failed)
    with grpc.insecure_channel(f"unix://{socket_path}") as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError as exc:
            module.exit_json(failure=diagnose("connect", f"no CRI answer on {socket_path} within {timeout:g} s: {error_text(exc)}"),
                             **failed)
        stub = api_pb2_grpc.RuntimeServiceStub(channel)
        try:
            with verify_lock(VERIFY_LOCK, timeout):
                earlier = remove_earlier_runs(stub, api_pb2, module.params["log_root"], timeout)
                result = make_check(stub, api_pb2).run()
        except StepFailed as exc:
            module.exit_json(failure=diagnose("lock", str(exc)), **failed)
    removed = earlier["containers"] or earlier["sandboxes"] or earlier["log_directories"]
    module.exit_json(checked=True, earlier_runs=earlier, **dict(base, changed=bool(removed), **result))
