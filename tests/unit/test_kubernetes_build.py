# SPDX-License-Identifier: Apache-2.0
"""The kubernetes engine's binaries: the build modules pin one Kubernetes
release (every k8s.io staging module at the same one, the engine's version
variable the same), kine's module likewise, the fleet build keys and stamps
each command, and the verify's reading of containerd's runtime options."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ansible_collections.k3s_gvisor.node.plugins.module_utils import kubernetes_services as ks
from ansible_collections.k3s_gvisor.node.plugins.module_utils import kubernetes_verify as kv
from ansible_collections.k3s_gvisor.node.plugins.module_utils import runc_gvisor_build as rb

REPO = Path(__file__).resolve().parents[2]
KUBERNETES_BUILD = REPO / "roles/runc_gvisor/files/kubernetes-build"
KINE_BUILD = REPO / "roles/runc_gvisor/files/kine-build"
COREDNS_BUILD = REPO / "roles/runc_gvisor/files/coredns-build"
TOOLCHAIN = subprocess.run([str(REPO / "scripts/go-toolchain")], capture_output=True, text=True, check=True).stdout.strip()
needs_go = pytest.mark.skipif(shutil.which("go") is None, reason="no Go (scripts/bootstrap installs it)")


def replaced(go_mod: str) -> dict[str, str]:
    """{module: version} of go.mod's replace block."""
    return dict(re.findall(r"^\s*(k8s\.io/\S+) => \1 (v\S+)$", go_mod, re.M))


def test_one_kubernetes_release_everywhere():
    go_mod = (KUBERNETES_BUILD / "go.mod").read_text()
    version = rb.required_version(str(KUBERNETES_BUILD / "go.mod"), rb.KUBERNETES_MODULE)
    defaults = yaml.safe_load((REPO / "roles/engine/defaults/main.yml").read_text())
    assert defaults["engine_kubernetes_version"] == version == "v1.35.4"
    staging = replaced(go_mod)
    # Kubernetes v1.35's own go.mod replaces these 31 modules with ./staging/src.
    assert len(staging) == 31 and "k8s.io/api" in staging and "k8s.io/kubelet" in staging
    assert set(staging.values()) == {"v0.35.4"}
    go_sum = (KUBERNETES_BUILD / "go.sum").read_text()
    assert f"k8s.io/kubernetes {version} h1:" in go_sum
    for command in rb.KUBERNETES_COMMANDS:
        assert f"tool k8s.io/kubernetes/cmd/{command}\n" in go_mod


def test_kine_is_pinned_by_its_module():
    version = rb.required_version(str(KINE_BUILD / "go.mod"), rb.KINE_MODULE)
    assert version == "v0.17.5"
    assert f"github.com/k3s-io/kine {version} h1:" in (KINE_BUILD / "go.sum").read_text()


def test_coredns_is_pinned_by_its_module_at_the_kubernetes_release():
    version = rb.required_version(str(COREDNS_BUILD / "go.mod"), rb.COREDNS_MODULE)
    defaults = yaml.safe_load((REPO / "roles/engine/defaults/main.yml").read_text())
    assert version == "v" + defaults["engine_coredns_version"] == "v1.14.7"
    assert f"github.com/coredns/coredns {version} h1:" in (COREDNS_BUILD / "go.sum").read_text()
    # Every k8s.io module CoreDNS links is the one the Kubernetes build pins.
    k8s = dict(re.findall(r"^\s*(k8s\.io/(?:api|apimachinery|client-go)) (v\S+)", (COREDNS_BUILD / "go.mod").read_text(), re.M))
    assert k8s == {"k8s.io/api": "v0.35.4", "k8s.io/apimachinery": "v0.35.4", "k8s.io/client-go": "v0.35.4"}


def test_each_command_has_its_own_key_and_the_release_stamped(tmp_path):
    build = rb.FleetBuild(cache_dir=str(tmp_path), go_toolchain=TOOLCHAIN, kubernetes_src=str(KUBERNETES_BUILD),
                          kine_src=str(KINE_BUILD))
    artifacts = build.kubernetes_artifacts() + [build.kine_artifact()]
    assert len({artifact.key for artifact in artifacts}) == len(artifacts) == 8
    kubelet = artifacts[0]
    assert kubelet.binary_name == "kubelet" and kubelet.package == "k8s.io/kubernetes/cmd/kubelet"
    assert kubelet.stamps["k8s.io/component-base/version.gitVersion"] == "v1.35.4"
    assert kubelet.stamps["k8s.io/component-base/version.gitMinor"] == "35"
    argv, env, cwd = build.go_command(kubelet, str(tmp_path / "out"))
    ldflags = argv[argv.index("-ldflags") + 1]
    assert "-X k8s.io/component-base/version.gitVersion=v1.35.4" in ldflags and ldflags.startswith("-s -w")
    assert env["CGO_ENABLED"] == "0" and cwd == str(KUBERNETES_BUILD)
    kine = artifacts[-1]
    assert kine.stamps == {"github.com/k3s-io/kine/pkg/version.Version": "v0.17.5"}
    # Another toolchain is another build.
    other = rb.FleetBuild(cache_dir=str(tmp_path), go_toolchain="go1.27.2", kubernetes_src=str(KUBERNETES_BUILD))
    assert other.kubernetes_artifacts(["kubelet"])[0].key != kubelet.key


@needs_go
@pytest.mark.parametrize("src", [KUBERNETES_BUILD, KINE_BUILD, COREDNS_BUILD], ids=["kubernetes", "kine", "coredns"])
def test_build_modules_are_tidy(src):
    """go.mod and go.sum pin exactly what the commands need (the module cache
    fills from the Go module proxy the first time)."""
    env = dict(os.environ, GOTOOLCHAIN=TOOLCHAIN, GOFLAGS="-mod=readonly -buildvcs=false")
    proc = subprocess.run(["go", "mod", "tidy", "-diff"], cwd=src, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def options(message: bytes) -> dict:
    return {"type_url": "containerd.runc.v1.Options", "value": base64.b64encode(message).decode()}


def test_the_runtime_binary_is_read_from_containerds_runc_options():
    # What `ctr containers info` printed for a Pod's container on a kubernetes-engine node.
    seen = {"type_url": "containerd.runc.v1.Options", "value": "EAEyGi91c3IvbG9jYWwvYmluL3J1bmMtZ3Zpc29y"}
    assert kv.runc_options_binary_name(seen) == "/usr/local/bin/runc-gvisor"
    # Field 2 (no_new_keyring, varint) before field 6 (binary_name); a field after it.
    assert kv.runc_options_binary_name(options(b"\x10\x01\x32\x03abc\x3a\x01x")) == "abc"
    assert kv.runc_options_binary_name(options(b"\x10\x01")) == ""
    with pytest.raises(ValueError):
        kv.runc_options_binary_name(options(b"\x15\x00\x00\x00\x00"))


def test_the_checks_manifests_place_pods_on_the_node_and_pull_nothing():
    check = kv.KubernetesCheck(kubectl=["kubectl"], ctr=["ctr"], node="node-1", image="localhost/k3s-gvisor/probe:1",
                               wrapper="/usr/local/bin/runc-gvisor", marker="abc123")
    pod = check.pod_manifest()
    assert pod["spec"]["nodeName"] == "node-1"
    container = pod["spec"]["containers"][0]
    assert container["imagePullPolicy"] == "Never"
    assert {"name": "K3S_GVISOR_MARKER", "value": "abc123"} in container["env"]
    assert "shareProcessNamespace" not in pod["spec"]  # B9
    deployment = check.deployment_manifest(3)
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "node-1"}
    assert deployment["spec"]["selector"]["matchLabels"] == deployment["spec"]["template"]["metadata"]["labels"]


def services_check() -> ks.ServicesCheck:
    check = kv.KubernetesCheck(kubectl=["kubectl"], ctr=["ctr"], node="node-1", image="localhost/k3s-gvisor/probe:1",
                               wrapper="/usr/local/bin/runc-gvisor", marker="abc123")
    return ks.ServicesCheck(check)


def test_the_services_check_serves_a_placed_deployment_behind_a_nodeport_service():
    services = services_check()
    deployment, service, sticky = services.web_manifests(2)["items"]
    assert deployment["spec"]["replicas"] == 2
    template = deployment["spec"]["template"]
    assert template["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "node-1"}
    assert template["spec"]["containers"][0]["imagePullPolicy"] == "Never"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"] == template["metadata"]["labels"]
    assert service["spec"]["type"] == "NodePort" and service["spec"]["ports"][0]["targetPort"] == ks.WEB_PORT
    assert sticky["spec"]["selector"] == service["spec"]["selector"] and sticky["spec"]["sessionAffinity"] == "ClientIP"
    assert services.fqdn == "k3s-gvisor-verify-deploy-abc123-web.default.svc.cluster.local"
    # Its steps run between exec and the Deployment's, each named once.
    names = [name for name, _ in services.run_steps()]
    assert names[0] == "dns_ready" and names[-1] == "services_cleanup" and len(set(names)) == len(names)


def test_only_answers_well_after_their_endpoints_removal_are_late():
    removed = {"web-a": 10.0}
    answers = [ks.Answer(11.9, "web-a"), ks.Answer(12.5, "web-a"), ks.Answer(12.5, "web-b"), ks.Answer(13.0, None)]
    assert ks.late_answers(answers, removed) == [answers[1]]
    assert ks.late_answers(answers, {}) == []
