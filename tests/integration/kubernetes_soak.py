# SPDX-License-Identifier: Apache-2.0
"""Run on a kubernetes-engine server: pod lifecycles driven through
Kubernetes, in waves, counted; one JSON object on stdout per call.

    python3 kubernetes_soak.py setup
    python3 kubernetes_soak.py deployment N    scale the Deployment 0 -> N -> 0
    python3 kubernetes_soak.py job N           a Job of N completions, then deleted
    python3 kubernetes_soak.py kill NAME       SIGKILL a component; wait until it is back, alone
    python3 kubernetes_soak.py count [--like JSON]   what pods leave behind (--like: wait until equal)

A wave's report: the pods Kubernetes made (by uid), those never seen
Running (lost), those beyond the wave's size or with a container restarted
(recreated), and each pod's startup in seconds from the API's own
timestamps (creation to Ready, or to its container's start for a Job's
pods; one-second resolution). kubectl calls are retried for as long as a
killed apiserver or kine may take to come back. Standard library only:
it runs on the node's python3 with the built kubectl and containerd's ctr.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime

from node_counts import host_veths, percentile, processes

KUBECTL = ["/usr/local/bin/kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", "--request-timeout", "20s"]
CTR = ["ctr", "--address", "/run/containerd/containerd.sock", "--namespace", "k8s.io"]
SUPERVISE = "/usr/local/bin/k3s-gvisor-supervise"
NAMESPACE = "k3s-gvisor-soak"
IMAGE = "localhost/k3s-gvisor/probe:1"
JOB_PARALLELISM = 10
POLL_SECONDS = 1
WAVE_TIMEOUT = 900
API_BACK_SECONDS = 180
SETTLE_SECONDS = 180
# host-local's reservations for the engine's pod network (engine_cni_ipam_dir).
IPAM_DIR = "/var/lib/cni/networks/k3s-gvisor"
DATASTORE = "/var/lib/k3s-gvisor/kine/state.db"
MOUNT_ROOTS = ("/run/containerd/", "/var/lib/containerd/", "/var/lib/kubelet/pods/", "/run/netns/", "/var/run/netns/")
# Every snapshotter's snapshots (the record picks the snapshotter).
SNAPSHOTS = "/var/lib/containerd/io.containerd.snapshotter.v1.*/snapshots/*"
SERVICE_PROXIES = ("gvisor-service-proxy", "kube-proxy")


def kubectl(*args: str, stdin: str | None = None) -> str:
    """kubectl's stdout; retried while the API does not answer (a component was killed)."""
    deadline = time.monotonic() + API_BACK_SECONDS
    while True:
        proc = subprocess.run([*KUBECTL, *args], input=stdin, capture_output=True, text=True)
        if proc.returncode == 0:
            return proc.stdout
        if time.monotonic() > deadline:
            raise SystemExit(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        time.sleep(POLL_SECONDS)


def apply(document: dict) -> None:
    kubectl("apply", "-f", "-", stdin=json.dumps(document))


def pods(selector: str) -> list[dict]:
    return json.loads(kubectl("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "json"))["items"]


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def condition(pod: dict, kind: str) -> dict | None:
    return next((c for c in pod.get("status", {}).get("conditions", []) if c["type"] == kind), None)


def started_at(pod: dict) -> str | None:
    """When the pod's container started, running or since ended."""
    for status in pod.get("status", {}).get("containerStatuses", []):
        for state in ("running", "terminated"):
            if status.get("state", {}).get(state, {}).get("startedAt"):
                return status["state"][state]["startedAt"]
    return None


class Tally:
    """Every pod a wave's polls saw, by uid: whether it ran, its startup, its restarts."""

    def __init__(self):
        self.seen: dict[str, dict] = {}

    def add(self, items: list[dict], ran_when: str) -> None:
        for pod in items:
            entry = self.seen.setdefault(pod["metadata"]["uid"], {"ran": False, "startup": None, "restarts": 0})
            ready = ran_when == "ready" and (condition(pod, "Ready") or {}).get("status") == "True"
            start = started_at(pod)
            if ready or (ran_when == "started" and start):
                entry["ran"] = True
                moment = condition(pod, "Ready")["lastTransitionTime"] if ran_when == "ready" else start
                entry["startup"] = stamp(moment) - stamp(pod["metadata"]["creationTimestamp"])
            entry["restarts"] = max(entry["restarts"], sum(s.get("restartCount", 0) for s in
                                                           pod.get("status", {}).get("containerStatuses", [])))

    def report(self, size: int, started: float) -> dict:
        startups = sorted(entry["startup"] for entry in self.seen.values() if entry["startup"] is not None)
        return {"size": size, "pods": len(self.seen), "seconds": round(time.monotonic() - started, 1),
                "lost": sum(not entry["ran"] for entry in self.seen.values()),
                "recreated": max(0, len(self.seen) - size) + sum(entry["restarts"] > 0 for entry in self.seen.values()),
                "startup_p50": percentile(startups, 0.5), "startup_p99": percentile(startups, 0.99),
                "startup_max": startups[-1] if startups else None}


def wait(until, what: str) -> None:
    deadline = time.monotonic() + WAVE_TIMEOUT
    while not until():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {WAVE_TIMEOUT} s")
        time.sleep(POLL_SECONDS)


def setup() -> dict:
    apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    container = {"name": "sleep", "image": IMAGE, "imagePullPolicy": "Never", "command": ["/bin/sleep", "2147483647"]}
    apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "soak", "namespace": NAMESPACE},
           "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "soak"}},
                    "template": {"metadata": {"labels": {"app": "soak"}},
                                 "spec": {"terminationGracePeriodSeconds": 0, "containers": [container]}}}})
    return {"namespace": NAMESPACE}


def deployment_wave(size: int) -> dict:
    tally, started = Tally(), time.monotonic()
    kubectl("scale", "-n", NAMESPACE, "deployment/soak", f"--replicas={size}")

    def all_ready() -> bool:
        items = pods("app=soak")
        tally.add(items, "ready")
        return sum((condition(pod, "Ready") or {}).get("status") == "True" for pod in items) == size

    wait(all_ready, f"{size} pods of the Deployment Ready")
    at_peak = count()
    kubectl("scale", "-n", NAMESPACE, "deployment/soak", "--replicas=0")
    wait(lambda: not pods("app=soak"), "the Deployment's pods gone")
    return {**tally.report(size, started), "at_peak": at_peak}


def job_wave(size: int) -> dict:
    tally, started, name = Tally(), time.monotonic(), f"soak-{int(time.time())}"
    apply({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NAMESPACE},
           "spec": {"completions": size, "parallelism": JOB_PARALLELISM, "backoffLimit": size,
                    "template": {"metadata": {"labels": {"soak-job": name}},
                                 "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                                          "containers": [{"name": "once", "image": IMAGE, "imagePullPolicy": "Never",
                                                          "command": ["/bin/sleep", "1"]}]}}}})

    status: dict = {}

    def complete() -> bool:
        tally.add(pods(f"soak-job={name}"), "started")
        status.update(json.loads(kubectl("get", "job", "-n", NAMESPACE, name, "-o", "json"))["status"])
        return status.get("succeeded", 0) >= size

    wait(complete, f"the Job's {size} completions")
    tally.add(pods(f"soak-job={name}"), "started")
    kubectl("delete", "job", "-n", NAMESPACE, name, "--cascade=foreground", "--wait=true")
    wait(lambda: not pods(f"soak-job={name}"), "the Job's pods gone")
    # The Job's own count of pods that failed (each replaced by another).
    return {**tally.report(size, started), "failed_pods": status.get("failed", 0)}


def supervised(name: str) -> dict:
    proc = subprocess.run([SUPERVISE, "status", name], capture_output=True, text=True)
    return {"code": proc.returncode, **(json.loads(proc.stdout) if proc.stdout.strip() else {})}


def pids(name: str) -> list[int]:
    """Processes whose program is NAME (argv[0]'s base name: containerd's shims are not containerd)."""
    found = []
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(path, "rb") as stream:
                program = stream.read().split(b"\0", 1)[0].decode()
        except OSError:  # it ended between the glob and the read
            continue
        if os.path.basename(program) == name:
            found.append(int(path.split("/")[2]))
    return found


def kill(name: str) -> dict:
    """SIGKILL a component, as a crash would; wait until a new one, and only one,
    runs beside one kubelet and one containerd.

    'service-proxy' is whichever proxy the record runs; 'k3s-gvisor-node' is
    the kubelet's launcher (containerd and the kubelet are its children and
    must go and come back with it)."""
    if name == "service-proxy":
        name = next(proxy for proxy in SERVICE_PROXIES if supervised(proxy)["code"] == 0)
    watched = "kubelet" if name == "k3s-gvisor-node" else name
    (old,) = pids(watched)
    os.kill(supervised("kubelet")["daemon_pid"] if name == "k3s-gvisor-node" else old, signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() - killed < API_BACK_SECONDS:
        time.sleep(POLL_SECONDS)
        now = pids(watched)
        # The kubelet starts only once a new containerd is ready: wait for the pair.
        engine = {"kubelets": len(pids("kubelet")), "containerds": len(pids("containerd"))}
        if len(now) == 1 and now[0] != old and engine == {"kubelets": 1, "containerds": 1}:
            return {"name": name, "killed_pid": old, "new_pid": now[0],
                    "back_seconds": round(time.monotonic() - killed, 1), **engine}
    raise SystemExit(f"{name}: {watched} not back alone, with one kubelet and one containerd, within "
                     f"{API_BACK_SECONDS} s of SIGKILL: {pids(watched)}, {engine}")


def lines(*argv: str) -> int:
    return len(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines())


def engine_mount_points() -> list[str]:
    """Mount points in the engine's own mount namespace (k3s-gvisor-node's), where containerd and the kubelet mount."""
    kubelets = pids("kubelet")
    with open(f"/proc/{kubelets[0] if kubelets else 'self'}/mountinfo", encoding="utf-8") as stream:
        return [line.split()[4] for line in stream]


def keyrings() -> int | None:
    """Lines of /proc/keys (one per key the node holds), or None where gVisor has no such file."""
    try:
        with open("/proc/keys", encoding="utf-8") as stream:
            return len(stream.read().splitlines())
    except FileNotFoundError:
        return None


def count() -> dict:
    """What a pod can leave behind on the node."""
    mount_points = engine_mount_points()
    states = processes()
    return {
        "containerd_tasks": lines(*CTR, "tasks", "ls", "-q"),
        "containerd_containers": lines(*CTR, "containers", "ls", "-q"),
        "containerd_snapshots": len(glob.glob(SNAPSHOTS)),
        "mounts": sum(point.startswith(MOUNT_ROOTS) for point in mount_points),
        "live_shims": sum(comm.startswith("containerd-shim") and state != "Z" for comm, state in states),
        "zombies": sum(state == "Z" for _, state in states),
        "veths": host_veths(),
        "ipam_reservations": len([name for name in os.listdir(IPAM_DIR) if name[0].isdigit()])
        if os.path.isdir(IPAM_DIR) else 0,
        "kubelet_pod_dirs": len(glob.glob("/var/lib/kubelet/pods/*")),
        "pod_log_dirs": len(glob.glob("/var/log/pods/*")),
        "keyrings": keyrings(),
    }


def settled_count(like: dict) -> dict:
    """Counts once they equal LIKE (a pod's shim and directories go after the pod), or at the deadline."""
    started = time.monotonic()
    like = {key: value for key, value in like.items() if key not in ("settle_seconds", "datastore_bytes")}
    while True:
        now = count()
        if now == like or time.monotonic() - started > SETTLE_SECONDS:
            return {**now, "settle_seconds": round(time.monotonic() - started, 1),
                    "datastore_bytes": os.path.getsize(DATASTORE)}
        time.sleep(POLL_SECONDS)


def main() -> None:
    command, *args = sys.argv[1:]
    if command == "setup":
        report = setup()
    elif command == "deployment":
        report = deployment_wave(int(args[0]))
    elif command == "job":
        report = job_wave(int(args[0]))
    elif command == "kill":
        report = kill(args[0])
    elif command == "count" and args[:1] == ["--like"]:
        report = settled_count(json.loads(args[1]))
    elif command == "count":
        report = {**count(), "datastore_bytes": os.path.getsize(DATASTORE)}
    else:
        raise SystemExit(__doc__)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
