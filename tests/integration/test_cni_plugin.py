# SPDX-License-Identifier: Apache-2.0
"""gvisor-bridge, the CNI plugin for gVisor hosts, on a real gVisor 20240729 node.

site.yml's probe and runtime stages build and install it (the probe's
decision record names it where netlink cannot delete routes, B10); then it is
run the way containerd runs a plugin: CNI_COMMAND, CNI_CONTAINERID,
CNI_NETNS, CNI_IFNAME and CNI_PATH in the environment, the network
configuration on stdin, pod namespaces made with `ip netns add`, and
addresses from host-local's allocator, which is linked in: CNI_PATH holds no
IPAM plugin (the node images have no CNI plugins; the runtime stage installs
gvisor-bridge and upstream's loopback plugin, nothing else).
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import textwrap

import pytest

from site_runs import DECIDE_TASK, failed_tasks

PLUGIN = "/usr/lib/cni/gvisor-bridge"
CNI_PATH = "/usr/lib/cni"
SUBNET = "10.89.0.0/24"
GATEWAY = "10.89.0.1"
IPAM_DIR = "/run/kg-cni-test/ipam"
NETWORK = "kg-test"
BRIDGE = "kgbr0"


def network_config(version: str = "1.0.0", **extra) -> dict:
    return {"cniVersion": version, "name": NETWORK, "type": "gvisor-bridge", "bridge": BRIDGE,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]], "dataDir": IPAM_DIR}, **extra}


class Call:
    """One plugin run: its exit status and the JSON it printed."""

    def __init__(self, proc: subprocess.CompletedProcess):
        self.returncode = proc.returncode
        self.stderr = proc.stderr
        self.output = json.loads(proc.stdout) if proc.stdout.strip() else None

    def __repr__(self) -> str:
        return f"Call(rc={self.returncode}, output={self.output}, stderr={self.stderr!r})"


def cni(node, command: str, pod: str, config: dict, netns: str | None = None, ifname: str = "eth0") -> Call:
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": pod, "CNI_IFNAME": ifname, "CNI_PATH": CNI_PATH,
           "CNI_NETNS": f"/run/netns/{pod}" if netns is None else netns}
    flags = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    proc = subprocess.run(["docker", "exec", "-i", *flags, node.name, PLUGIN], input=json.dumps(config),
                          capture_output=True, text=True, timeout=60)
    return Call(proc)


def sh(node, script: str) -> subprocess.CompletedProcess:
    return node.exec("sh", "-c", script)


def pod_address(result: dict) -> str:
    """The address containerd would report: the IP on the interface that has a sandbox."""
    sandboxed = [i for i, iface in enumerate(result["interfaces"]) if iface.get("sandbox")]
    assert len(sandboxed) == 1, result
    ips = [ip for ip in result["ips"] if ip.get("interface") == sandboxed[0]]
    assert len(ips) == 1, result
    return ips[0]["address"].split("/")[0]


def host_veths(node) -> list[str]:
    """The host ends of pod veths: gvb and 12 hex digits (not the bridge)."""
    names = [line.split(":")[1].strip() for line in sh(node, "ip -o link show").stdout.splitlines()]
    return [name for name in names if re.fullmatch(r"gvb[0-9a-f]{12}", name)]


def links(node) -> list[str]:
    """Every link as one line; sorted, since gVisor lists them in no fixed order."""
    return sorted(sh(node, "ip -o link show").stdout.splitlines())


def reservations(node) -> list[str]:
    listing = sh(node, f"ls {IPAM_DIR}/{NETWORK} 2>/dev/null").stdout.split()
    return [name for name in listing if name[0].isdigit()]


def tcp_reply(node, server_ns: str | None, client_ns: str | None, address: str, port: int) -> str:
    """Serve one TCP reply on port (in server_ns, or on the node) and read it from client_ns."""
    run_in = lambda ns: f"ip netns exec {ns} " if ns else ""  # noqa: E731
    marker = f"reply-{port}"
    sh(node, f"{run_in(server_ns)}busybox nc -l -p {port} -e echo {marker} >/dev/null 2>&1 &")
    client = sh(node, f"for i in $(seq 30); do out=$(echo hi | {run_in(client_ns)}busybox nc -w 2 {address} {port}) "
                      f"&& [ -n \"$out\" ] && echo \"$out\" && exit 0; sleep 0.2; done; exit 1")
    return client.stdout.strip()


def json_documents(text: str) -> list:
    """The JSON documents printed one after another (the plugin indents its results)."""
    decoder, documents, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        at += len(text[at:]) - len(text[at:].lstrip())
        document, at = decoder.raw_decode(text, at)
        documents.append(document)
    return documents


def make_pods(node, *pods: str) -> None:
    for pod in pods:
        assert sh(node, f"ip netns add {pod}").returncode == 0


@pytest.fixture(scope="module")
def node(node_factory):
    node = node_factory("cni-plugin")
    run = node.playbook("site.yml", "--tags", "probe,runtime")
    assert run.returncode == 0, run.stderr + str(run.result.get("stats")) + "\n" + "\n".join(failed_tasks(run))
    assert run.task(DECIDE_TASK)["ansible_facts"]["gvisor"]["decisions"]["cni_plugin"]["value"] == "gvisor-bridge"
    recorded = run.task("Record where the runtime is on this host")["ansible_facts"]["runc_gvisor_result"]
    assert recorded["cni_bin_dir"] == CNI_PATH
    # host-local's allocator is linked in: no IPAM plugin is there to run.
    assert node.exec("test", "-e", f"{CNI_PATH}/host-local").returncode == 1
    return node


def test_version_lists_the_spec_versions(node):
    call = cni(node, "VERSION", "unused", {"cniVersion": "1.0.0"})
    assert call.returncode == 0, call
    assert call.output["supportedVersions"] == ["0.4.0", "1.0.0"]
    assert node.exec(PLUGIN, "--version").stdout.startswith("gvisor-bridge ")


def test_two_pods_talk_tcp_over_their_ips_and_del_cleans_up(node):
    make_pods(node, "pod-a", "pod-b")
    added = {pod: cni(node, "ADD", pod, network_config()) for pod in ("pod-a", "pod-b")}
    for pod, call in added.items():
        assert call.returncode == 0, (pod, call)
        iface = call.output["interfaces"][call.output["ips"][0]["interface"]]
        assert iface == {"name": "eth0", "mac": iface["mac"], "sandbox": f"/run/netns/{pod}"}
        assert call.output["ips"][0]["gateway"] == GATEWAY
        assert {"dst": "0.0.0.0/0", "gw": GATEWAY} in call.output["routes"]
    ip_a, ip_b = pod_address(added["pod-a"].output), pod_address(added["pod-b"].output)
    assert ip_a != ip_b
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(SUBNET) for ip in (ip_a, ip_b))
    assert sorted(reservations(node)) == sorted([ip_a, ip_b])

    assert tcp_reply(node, "pod-b", "pod-a", ip_b, 7001) == "reply-7001"   # pod to pod
    assert tcp_reply(node, "pod-a", None, ip_a, 7002) == "reply-7002"      # node to pod
    assert tcp_reply(node, None, "pod-b", GATEWAY, 7003) == "reply-7003"   # pod to node

    for pod in ("pod-a", "pod-b"):
        assert cni(node, "DEL", pod, network_config()).returncode == 0
    assert host_veths(node) == []
    assert reservations(node) == []
    for pod in ("pod-a", "pod-b"):
        again = cni(node, "DEL", pod, network_config())
        assert again.returncode == 0, again
        sh(node, f"ip netns del {pod}")
        gone = cni(node, "DEL", pod, network_config())   # namespace gone too
        assert gone.returncode == 0, gone


def test_check_passes_on_a_healthy_pod_and_fails_on_a_broken_one(node):
    make_pods(node, "pod-c")
    added = cni(node, "ADD", "pod-c", network_config())
    assert added.returncode == 0, added
    with_prev = network_config(prevResult=added.output)
    healthy = cni(node, "CHECK", "pod-c", with_prev)
    assert healthy.returncode == 0, healthy

    veths = host_veths(node)
    assert len(veths) == 1
    assert sh(node, f"ip link del {veths[0]}").returncode == 0
    broken = cni(node, "CHECK", "pod-c", with_prev)
    assert broken.returncode == 1
    assert broken.output["code"] == 100 and "is missing" in broken.output["msg"], broken

    assert cni(node, "DEL", "pod-c", network_config()).returncode == 0
    assert reservations(node) == []
    sh(node, "ip netns del pod-c")


def test_a_0_4_0_config_gets_a_0_4_0_result(node):
    make_pods(node, "pod-d")
    added = cni(node, "ADD", "pod-d", network_config("0.4.0"))
    assert added.returncode == 0, added
    assert added.output["cniVersion"] == "0.4.0"
    assert added.output["ips"][0]["version"] == "4"
    assert cni(node, "CHECK", "pod-d", network_config("0.4.0", prevResult=added.output)).returncode == 0
    assert cni(node, "DEL", "pod-d", network_config("0.4.0")).returncode == 0
    assert host_veths(node) == [] and reservations(node) == []
    sh(node, "ip netns del pod-d")


def test_twenty_adds_at_once_get_unique_addresses_all_released_by_del(node):
    pods = [f"burst-{i}" for i in range(20)]
    make_pods(node, *pods)
    config = json.dumps(network_config())
    # Started together inside the node, as a runtime starting 20 pods would.
    script = textwrap.dedent(f"""\
        mkdir -p /tmp/burst && cd /tmp/burst && rm -f ./*
        printf '%s' '{config}' > conf.json
        for pod in {' '.join(pods)}; do
          CNI_COMMAND=$1 CNI_CONTAINERID=$pod CNI_NETNS=/run/netns/$pod CNI_IFNAME=eth0 CNI_PATH={CNI_PATH} \\
            {PLUGIN} < conf.json > $pod.out 2>&1 &
        done
        wait
        cat ./*.out
        """)
    added = sh(node, f"cat > /tmp/burst.sh <<'EOF'\n{script}EOF\nsh /tmp/burst.sh ADD")
    results = json_documents(added.stdout)
    assert len(results) == 20 and all("ips" in r for r in results), added.stdout
    addresses = [pod_address(r) for r in results]
    assert len(set(addresses)) == 20
    assert sorted(reservations(node)) == sorted(addresses)
    assert len(host_veths(node)) == 20

    deleted = sh(node, "sh /tmp/burst.sh DEL")
    assert deleted.stdout.strip() == "", deleted.stdout
    assert host_veths(node) == []
    assert reservations(node) == []
    sh(node, "for pod in " + " ".join(pods) + "; do ip netns del $pod; done")


def test_a_failed_add_gives_its_address_back(node):
    call = cni(node, "ADD", "pod-e", network_config(), netns="/run/netns/no-such-pod")
    assert call.returncode == 1
    assert call.output["code"] == 5 and "/run/netns/no-such-pod" in call.output["msg"], call
    assert "network namespace" in call.output["msg"], call
    assert host_veths(node) == []
    assert reservations(node) == []


@pytest.mark.parametrize("change,code,words", [
    # skel's version check: the message says what, the details why.
    ({"cniVersion": "0.3.1"}, 1, 'incompatible CNI versions config is "0.3.1", plugin supports ["0.4.0" "1.0.0"]'),
    ({"ipam": {}}, 7, "ipam.type is missing (gvisor-bridge does host-local)"),
    ({"bridge": "a-bridge-name-too-long"}, 7, "interface name is too long"),
    # No other IPAM plugin is run (none is installed, and none but host-local was tried on gVisor).
    ({"ipam": {"type": "no-such-ipam"}}, 7, 'ipam.type "no-such-ipam" is not supported'),
])
def test_bad_config_is_refused_naming_what_and_the_host_is_untouched(node, change, code, words):
    make_pods(node, "pod-f")
    try:
        links_before = links(node)
        call = cni(node, "ADD", "pod-f", {**network_config(), "bridge": "kgbad0", **change})
        assert call.returncode == 1
        said = " ".join(filter(None, (call.output.get("msg"), call.output.get("details"))))
        assert call.output["code"] == code and words in said, call
        assert links(node) == links_before
        assert reservations(node) == []
    finally:
        sh(node, "ip netns del pod-f")


def test_a_plain_kernel_keeps_the_standard_plugins(node_factory):
    """No B10 on a plain kernel: the record names the standard bridge plugin, the runtime stage installs
    neither gvisor-bridge nor loopback, and the engine stage installs Debian's containernetworking-plugins."""
    plain = node_factory("cni-plain", runtime="runc")
    run = plain.playbook("site.yml", "--tags", "probe,runtime,engine")
    assert run.returncode == 0, run.stderr + str(run.result.get("stats")) + "\n" + "\n".join(failed_tasks(run))
    facts = run.task(DECIDE_TASK)["ansible_facts"]["gvisor"]
    assert "B10" not in {b["id"] for b in facts["blockers"]}
    assert facts["decisions"]["cni_plugin"]["value"] == "bridge"
    assert plain.exec("test", "-e", PLUGIN).returncode == 1
    # Nothing of ours in CNI_PATH: the runtime stage recorded no plugin as its own.
    installed = json.loads(plain.exec("cat", "/etc/runc-gvisor/installed.json").stdout)
    assert not [path for path in installed["files"] if path.startswith(CNI_PATH)], installed
    # The engine stage brought the standard plugins from the host's apt (loopback among them), and its
    # network names bridge.
    assert plain.exec("dpkg-query", "-W", "-f", "${Status}", "containernetworking-plugins").stdout == "install ok installed"
    assert plain.exec("dpkg", "-S", f"{CNI_PATH}/loopback").stdout.startswith("containernetworking-plugins:")
    for plugin in ("bridge", "host-local", "loopback"):
        assert plain.exec("test", "-x", f"{CNI_PATH}/{plugin}").returncode == 0, plugin
    conflist = json.loads(plain.exec("cat", "/etc/cni/net.d/10-k3s-gvisor.conflist").stdout)
    assert [plugin["type"] for plugin in conflist["plugins"]] == ["bridge"]
