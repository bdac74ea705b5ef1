# SPDX-License-Identifier: Apache-2.0
"""The Go programs the fleet build makes natively: gvisor-bridge and
upstream's loopback plugin from the CNI module, the wrapper and
gvisor-service-proxy from their own, each cached under its own key; and
their Go checks (gofmt, vet, staticcheck, tidy, their tests), run from here."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ansible_collections.k3s_gvisor.node.plugins.module_utils import runc_gvisor_build as rb  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CNI_SRC = REPO / "roles/runc_gvisor/files/cni"
WRAPPER_SRC = REPO / "roles/runc_gvisor/files/wrapper"
SERVICE_PROXY_SRC = REPO / "roles/runc_gvisor/files/service-proxy"
TOOLCHAIN = subprocess.run([str(REPO / "scripts/go-toolchain")], capture_output=True, text=True, check=True).stdout.strip()
needs_go = pytest.mark.skipif(shutil.which("go") is None, reason="no Go (scripts/bootstrap installs it)")


def fleet(tmp_path, cni_src=CNI_SRC) -> rb.FleetBuild:
    return rb.FleetBuild(cache_dir=str(tmp_path / "cache"), go_toolchain=TOOLCHAIN, wrapper_src=str(WRAPPER_SRC),
                         cni_src=str(cni_src))


def is_static_elf(path: str) -> bool:
    """An ELF file without a program interpreter (PT_INTERP) needs no dynamic loader."""
    with open(path, "rb") as stream:
        data = stream.read()
    return data[:4] == b"\x7fELF" and b"/lib64/ld-linux" not in data and b"/lib/ld-linux" not in data


def test_each_program_has_its_own_key_and_place_in_the_cache(tmp_path):
    build = fleet(tmp_path)
    build.service_proxy_src = str(SERVICE_PROXY_SRC)
    artifacts = [build.wrapper_artifact(), build.cni_artifact(), build.cni_loopback_artifact(),
                 build.service_proxy_artifact()]
    assert len({a.key for a in artifacts}) == 4
    assert [Path(a.path).relative_to(tmp_path / "cache").parts[0] for a in artifacts] == [
        "wrapper", "cni", "cni-loopback", "service-proxy"]


def test_key_follows_sources_go_sum_and_toolchain_not_tests(tmp_path):
    src = tmp_path / "cni"
    shutil.copytree(CNI_SRC, src)
    before = fleet(tmp_path, src).cni_artifact().key
    (src / "main_test.go").write_text("package main\n")
    assert fleet(tmp_path, src).cni_artifact().key == before
    (src / "go.sum").write_text((src / "go.sum").read_text() + "\n")
    after_sum = fleet(tmp_path, src).cni_artifact().key
    assert after_sum != before
    other_toolchain = rb.FleetBuild(cache_dir=str(tmp_path), go_toolchain="go1.26.8", cni_src=str(src))
    assert other_toolchain.cni_artifact().key != after_sum


def test_loopback_is_upstreams_release_named_by_the_modules_pin():
    version = rb.required_version(str(CNI_SRC / "go.mod"), rb.CNI_PLUGINS_MODULE)
    assert version and version.startswith("v1.")
    artifact = fleet(Path("/nonexistent")).cni_loopback_artifact()
    assert artifact.package == rb.LOOPBACK_PACKAGE and artifact.version == version


def test_check_mode_builds_nothing(tmp_path):
    build = fleet(tmp_path)
    artifact = build.ensure(build.cni_artifact(), check_mode=True)
    assert artifact.built and artifact.sha256 is None
    assert not (tmp_path / "cache").exists()


@needs_go
def test_native_builds_are_static_versioned_and_cached(tmp_path):
    build = fleet(tmp_path)
    made = {name: build.ensure(artifact, check_mode=False)
            for name, artifact in (("bridge", build.cni_artifact()), ("loopback", build.cni_loopback_artifact()))}
    for artifact in made.values():
        assert artifact.built and is_static_elf(artifact.path)
    bridge = subprocess.run([made["bridge"].path, "--version"], capture_output=True, text=True, check=True)
    assert made["bridge"].key in bridge.stdout
    # Run bare, a CNI plugin says what it is (skel's "about" text).
    loopback = subprocess.run([made["loopback"].path], capture_output=True, text=True, env={})
    assert made["loopback"].version in loopback.stderr + loopback.stdout
    again = build.ensure(build.cni_artifact(), check_mode=False)
    assert not again.built and again.sha256 == made["bridge"].sha256


def test_a_build_host_without_go_is_told_what_to_install(tmp_path):
    build = rb.FleetBuild(cache_dir=str(tmp_path / "cache"), go_toolchain=TOOLCHAIN, cni_src=str(CNI_SRC),
                          go="go-that-is-not-installed")
    with pytest.raises(rb.BuildFailed) as error:
        build.ensure(build.cni_artifact(), check_mode=False)
    assert "needs Go on the build host" in str(error.value) and "golang-go" in str(error.value)


GO_CHECKS = {
    "gofmt": ["gofmt", "-l", "."],
    "vet": ["go", "vet", "./..."],
    "staticcheck": ["go", "tool", "staticcheck", "./..."],
    # go.mod and go.sum pin exactly what the sources need.
    "tidy": ["go", "mod", "tidy", "-diff"],
    "test": ["go", "test", "./..."],
}


@needs_go
@pytest.mark.parametrize("command", list(GO_CHECKS.values()), ids=list(GO_CHECKS))
@pytest.mark.parametrize("src", [CNI_SRC, WRAPPER_SRC, SERVICE_PROXY_SRC], ids=["cni", "wrapper", "service-proxy"])
def test_go_sources(src, command):
    env = dict(os.environ, GOTOOLCHAIN=TOOLCHAIN, GOFLAGS="-mod=readonly -buildvcs=false")
    proc = subprocess.run(command, cwd=src, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert command[0] != "gofmt" or proc.stdout == "", f"not gofmt-formatted: {proc.stdout}"
