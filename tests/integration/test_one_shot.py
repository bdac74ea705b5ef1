# SPDX-License-Identifier: Apache-2.0
"""One-shot setup of the machine you are on, inside a gVisor sandbox with no
docker and no network: the project and an offline bundle (scripts/offline-bundle)
are copied into an offline gVisor node, which then converges itself with
`ansible-playbook site.yml` (inventory/local.yml, connection local), as a
user inside such a sandbox would, and must end verified.

The node images carry the distribution's containerd, runc and Python, and a
Go toolchain with C build tools as a developer sandbox has them; nothing of
ours. With crun (sid-dev) the record chooses crun; without it
(sid-dev-nocrun) the patched runc, built natively inside the node from the
bundle's module cache. The plain sid image has no Go at all: the wrapper and
the CNI plugins come built in the bundle's build cache.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import REPO

PROJECT = "/root/k3s-gvisor"
BUNDLE = "/opt/k3s-gvisor-bundle"
SUMMARY = f"{PROJECT}/artifacts/k3s-gvisor-summary.json"
CONVERGE_TIMEOUT = 2400


def tracked_files() -> list[str]:
    """This tree as git sees it: tracked files and untracked ones it does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, check=True, capture_output=True).stdout
    return [path for path in listed.decode().split("\0") if path and (REPO / path).is_file()]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """The offline bundle for the node images' Python (sid: 3.14)."""
    path = tmp_path_factory.mktemp("bundle")
    subprocess.run([str(REPO / "scripts/offline-bundle"), str(path), "--python", "3.14"], check=True,
                   capture_output=True, timeout=900)
    return path


def converge_from_inside(node, bundle) -> subprocess.CompletedProcess:
    node.ship({path: str(REPO / path) for path in tracked_files()}, PROJECT)
    node.ship({name: str(bundle / name) for name in ("wheels", "cri-wheels", "gomodcache", "builds", "env")}, BUNDLE)
    script = f"""set -e
cd {PROJECT}
python3 -m venv .venv
.venv/bin/pip install --quiet --no-index --find-links {BUNDLE}/wheels -r requirements.txt
scripts/install-collection
. {BUNDLE}/env
.venv/bin/ansible-playbook site.yml -e container_engine=containerd \\
  -e verify_wheel_cache=$K3S_GVISOR_BUNDLE/cri-wheels -e runc_gvisor_cache_dir=$K3S_GVISOR_BUNDLE/builds
"""
    return subprocess.run(["docker", "exec", "-i", node.name, "bash", "-s"], input=script, text=True,
                          capture_output=True, timeout=CONVERGE_TIMEOUT)


def summary_of(node) -> dict:
    (host,) = json.loads(node.exec("cat", SUMMARY).stdout)["hosts"]
    return host


def assert_offline_without_docker(node) -> None:
    assert node.exec("sh", "-c", "command -v docker dockerd").returncode != 0
    # runsc --network=none: the node's only interface is its loopback.
    links = node.exec("ip", "-o", "link", "show").stdout
    assert [line.split(":")[1].strip() for line in links.splitlines() if "gvbr0" not in line
            and not line.split(":")[1].strip().startswith("gvb")] == ["lo"]


@pytest.mark.parametrize("image, runtime", [("sid-dev", "crun"), ("sid-dev-nocrun", "runc-patched"), ("sid", "crun")])
def test_a_sandbox_converges_itself_offline_and_ends_verified(node_factory, bundle, image, runtime):
    node = node_factory(f"oneshot-{image}", image=image)
    assert_offline_without_docker(node)
    if image == "sid":
        assert node.exec("sh", "-c", "command -v go gcc").returncode != 0  # no Go: the bundle's builds serve
    run = converge_from_inside(node, bundle)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    host = summary_of(node)
    assert host["host"] == "localhost" and host["verify_status"] == "READY", json.dumps(host, indent=1)
    assert host["runtime"] == runtime
    if runtime == "runc-patched":
        # Built in the node from the bundle: nothing but its module cache was used.
        assert host["patches"] and all(name.endswith(".patch") for name in host["patches"])
        version = node.exec("/usr/local/lib/runc-gvisor/runc", "--version").stdout
        assert "1.3.6+k3sgvisor" in version
    assert host["verify"]["pod_network"]["ok"], json.dumps(host["verify"], indent=1)
    assert_offline_without_docker(node)
