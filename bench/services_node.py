# SPDX-License-Identifier: Apache-2.0
"""bench/services's node side: one JSON line per measurement on stdout.

    python3 services_node.py setup | teardown
    python3 services_node.py targets
    python3 services_node.py http IP:PORT COUNT
    python3 services_node.py dns SERVER NAME COUNT

setup applies a one-replica busybox httpd Deployment behind a ClusterIP
Service (placed on this node, the verify stage's probe image) and waits
until its endpoint is ready; targets prints the Service's ClusterIP, the
endpoint's pod IP and CoreDNS's pod IP; teardown deletes it all.
http: COUNT requests one after another, each on a new connection (busybox
httpd closes it): requests per second, and the TCP connect time's p50 and
p99. dns: COUNT A queries one after another over UDP: queries per second and
the round trip's p50 and p99. Standard library only (the node's python).
"""

from __future__ import annotations

import json
import random
import socket
import struct
import subprocess
import sys
import time

KUBECTL = ["/usr/local/bin/kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf"]
IMAGE = "localhost/k3s-gvisor/probe:1"
NAME = "k3s-gvisor-bench-web"
PORT = 8080
WEB = ["/bin/busybox", "sh", "-c", f"mkdir -p /tmp/www && head -c 1024 /dev/zero > /tmp/www/index.html && "
       f"exec /bin/busybox httpd -f -p {PORT} -h /tmp/www"]


def kubectl(*args: str, stdin: str | None = None) -> str:
    return subprocess.run([*KUBECTL, *args], input=stdin, capture_output=True, text=True, check=True).stdout


def setup() -> None:
    node = socket.gethostname().lower()
    labels = {"app": NAME}
    manifests = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": NAME},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels},
                               "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                                        "terminationGracePeriodSeconds": 1,
                                        "containers": [{"name": "web", "image": IMAGE, "imagePullPolicy": "Never",
                                                        "command": WEB,
                                                        "readinessProbe": {"tcpSocket": {"port": PORT},
                                                                           "periodSeconds": 1}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": NAME},
         "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": PORT}]}}]}
    kubectl("apply", "-f", "-", stdin=json.dumps(manifests))
    kubectl("rollout", "status", f"deployment/{NAME}", "--timeout=300s")
    deadline = time.monotonic() + 60
    while not targets().get("pod") and time.monotonic() < deadline:
        time.sleep(0.5)


def targets() -> dict:
    service = json.loads(kubectl("get", "service", NAME, "-o", "json"))
    pods = json.loads(kubectl("get", "pods", "-l", f"app={NAME}", "-o", "json"))["items"]
    dns = json.loads(kubectl("get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-dns", "-o", "json"))["items"]
    ready = [p["status"].get("podIP") for p in pods
             if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]
    return {"cluster_ip": service["spec"]["clusterIP"], "pod": ready[0] if ready else None,
            "coredns": dns[0]["status"].get("podIP") if dns else None}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def http(target: str, count: int) -> dict:
    host, port = target.rsplit(":", 1)
    connects = []
    request = f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode()
    started = time.monotonic()
    for _ in range(count):
        before = time.monotonic()
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            connects.append(time.monotonic() - before)
            conn.sendall(request)
            while conn.recv(65536):
                pass
    elapsed = time.monotonic() - started
    return {"per_second": count / elapsed, "p50": percentile(connects, 0.5), "p99": percentile(connects, 0.99)}


def dns_query(name: str) -> bytes:
    header = struct.pack("!HHHHHH", random.getrandbits(16), 0x0100, 1, 0, 0, 0)
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    return header + question + struct.pack("!HH", 1, 1)


def dns(server: str, name: str, count: int) -> dict:
    rtts = []
    started = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.connect((server, 53))
        for _ in range(count):
            query = dns_query(name)
            before = time.monotonic()
            sock.send(query)
            answer = sock.recv(4096)
            rtts.append(time.monotonic() - before)
            if answer[:2] != query[:2] or struct.unpack("!H", answer[6:8])[0] < 1:
                sys.exit(f"no answer for {name} from {server}: {answer!r}")
    elapsed = time.monotonic() - started
    return {"per_second": count / elapsed, "p50": percentile(rtts, 0.5), "p99": percentile(rtts, 0.99)}


def main(argv: list[str]) -> int:
    mode = argv[0]
    if mode == "setup":
        setup()
    elif mode == "teardown":
        kubectl("delete", "deployment,service", NAME, "--ignore-not-found", "--wait=true")
    elif mode == "targets":
        print(json.dumps(targets()))
    elif mode == "http":
        print(json.dumps(http(argv[1], int(argv[2]))))
    elif mode == "dns":
        print(json.dumps(dns(argv[1], argv[2], int(argv[3]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
