"""gvisor-bridge, the CNI plugin: built the wrapper's way by the fleet build,
and its own Go tests (gofmt, go vet, go test) run from here."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CNI_SRC = REPO / "roles/runc_gvisor/files/cni"
sys.path.insert(0, str(REPO / "roles" / "runc_gvisor" / "module_utils"))

import runc_gvisor_build as rb  # noqa: E402


def fleet(tmp_path, cni_src) -> rb.FleetBuild:
    return rb.FleetBuild(cache_dir=str(tmp_path / "cache"), patches=[], build_script="/bin/false",
                         wrapper_src=str(REPO / "roles/runc_gvisor/files/wrapper"), build_image="unused",
                         cache_image="k3s-gvisor/runc-build:sid", cni_src=str(cni_src))


def test_plugin_is_cached_beside_the_wrapper_under_its_own_key(tmp_path):
    build = fleet(tmp_path, CNI_SRC)
    cni, wrapper = build.cni_artifact(), build.wrapper_artifact()
    assert cni.path == str(tmp_path / "cache" / "cni" / cni.key / "gvisor-bridge")
    assert cni.key != wrapper.key


def test_plugin_key_follows_its_sources_not_its_tests(tmp_path):
    src = tmp_path / "cni"
    shutil.copytree(CNI_SRC, src)
    before = fleet(tmp_path, src).cni_artifact().key
    (src / "main_test.go").write_text("package main\n")
    assert fleet(tmp_path, src).cni_artifact().key == before
    (src / "internal" / "bridge" / "bridge.go").write_text("package bridge\n")
    assert fleet(tmp_path, src).cni_artifact().key != before


def test_plugin_is_built_like_the_wrapper_static_offline_versioned_by_its_key(tmp_path):
    build = fleet(tmp_path, CNI_SRC)
    cni, wrapper = build.cni_artifact(), build.wrapper_artifact()
    cni_command = build.go_command(cni, str(tmp_path / "out"))
    wrapper_command = build.go_command(wrapper, str(tmp_path / "out"))
    assert f"{CNI_SRC}:/src:ro" in cni_command
    script = cni_command[-1]
    assert "CGO_ENABLED=0" in script and "GOPROXY=off" in script
    assert f"-X main.version={cni.key}" in script and script.endswith("-o /out/gvisor-bridge .")
    # One recipe: the two commands differ only in source, version and output name.
    assert script.replace(cni.key, "KEY").replace("gvisor-bridge", "BIN") == \
        wrapper_command[-1].replace(wrapper.key, "KEY").replace("runc-gvisor", "BIN")


def test_check_mode_builds_no_plugin(tmp_path):
    build = fleet(tmp_path, CNI_SRC)
    artifact = build.ensure(build.cni_artifact(), check_mode=True)
    assert artifact.built and artifact.sha256 is None
    assert not (tmp_path / "cache").exists()


@pytest.mark.skipif(shutil.which("go") is None, reason="no Go toolchain (scripts/bootstrap installs it)")
@pytest.mark.parametrize("command", [["gofmt", "-l", "."], ["go", "vet", "./..."], ["go", "test", "./..."]])
def test_go_sources(command):
    proc = subprocess.run(command, cwd=CNI_SRC, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert command[0] != "gofmt" or proc.stdout == "", f"not gofmt-formatted: {proc.stdout}"
