"""The fleet build's cache: keys, integrity, leftovers of killed builds."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "roles" / "runc_gvisor" / "module_utils"))

import runc_gvisor_build as rb  # noqa: E402

PATCHES = sorted((REPO / "roles/runc_gvisor/files/patches").glob("*.patch"))


def test_key_follows_patch_content_not_location(tmp_path):
    copies = []
    for patch in PATCHES:
        copy = tmp_path / patch.name
        copy.write_bytes(patch.read_bytes())
        copies.append(str(copy))
    parts = ["runc", "debian", "1.3.6+ds1-1", "x86_64"]
    assert rb.cache_key(parts, [str(p) for p in PATCHES]) == rb.cache_key(parts, copies)
    Path(copies[0]).write_bytes(PATCHES[0].read_bytes() + b"\n")
    assert rb.cache_key(parts, [str(p) for p in PATCHES]) != rb.cache_key(parts, copies)


def test_key_follows_version_arch_and_patch_set():
    files = [str(p) for p in PATCHES]
    base = rb.cache_key(["runc", "debian", "1.3.6+ds1-1", "x86_64"], files)
    assert base != rb.cache_key(["runc", "debian", "1.3.7+ds1-1", "x86_64"], files)
    assert base != rb.cache_key(["runc", "debian", "1.3.6+ds1-1", "aarch64"], files)
    assert base != rb.cache_key(["runc", "debian", "1.3.6+ds1-1", "x86_64"], files[:2])


def fake_build(tmp_path, content=b"runc binary") -> Path:
    binary = tmp_path / "runc"
    binary.write_bytes(content)
    (tmp_path / "runc.sha256").write_text(f"{hashlib.sha256(content).hexdigest()}  runc\n")
    return binary


def test_intact_cached_build_is_reused(tmp_path):
    binary = fake_build(tmp_path)
    assert rb.verify_cached(str(binary)) == hashlib.sha256(b"runc binary").hexdigest()


def test_missing_build_or_record_means_build_again(tmp_path):
    assert rb.verify_cached(str(tmp_path / "runc")) is None
    binary = fake_build(tmp_path)
    (tmp_path / "runc.sha256").unlink()
    assert rb.verify_cached(str(binary)) is None


def test_corrupted_cached_build_names_the_file_and_both_checksums(tmp_path):
    binary = fake_build(tmp_path)
    binary.write_bytes(b"tampered")
    with pytest.raises(rb.CacheCorrupted) as error:
        rb.verify_cached(str(binary))
    message = str(error.value)
    assert str(binary) in message
    assert hashlib.sha256(b"tampered").hexdigest() in message
    assert hashlib.sha256(b"runc binary").hexdigest() in message


def test_leftovers_of_killed_builds_are_removed(tmp_path):
    (tmp_path / ".partial-abc-123").mkdir()
    (tmp_path / ".partial-abc-123" / "runc").write_bytes(b"half")
    (tmp_path / "abc").mkdir()
    assert rb.remove_partial_builds(str(tmp_path)) == [".partial-abc-123"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["abc"]


def test_a_failed_build_leaves_no_cache_entry(tmp_path):
    failing = tmp_path / "fail.sh"
    failing.write_text("#!/bin/sh\necho compiling; echo broken >&2; exit 3\n")
    failing.chmod(0o755)
    fleet = rb.FleetBuild(cache_dir=str(tmp_path / "cache"), patches=[str(p) for p in PATCHES],
                          build_script=str(failing), wrapper_src=str(REPO / "roles/runc_gvisor/files/wrapper"),
                          build_image="unused", cache_image="unused")
    artifact = fleet.runc_artifact()
    with pytest.raises(rb.BuildFailed) as error:
        fleet.ensure(artifact, check_mode=False)
    assert "exit 3" in str(error.value) and "broken" in error.value.log
    assert list((tmp_path / "cache" / "runc").iterdir()) == []


def test_check_mode_builds_nothing(tmp_path):
    fleet = rb.FleetBuild(cache_dir=str(tmp_path / "cache"), patches=[], build_script="/bin/false",
                          wrapper_src=str(REPO / "roles/runc_gvisor/files/wrapper"),
                          build_image="unused", cache_image="unused")
    artifact = fleet.ensure(fleet.wrapper_artifact(), check_mode=True)
    assert artifact.built and artifact.sha256 is None
    assert not (tmp_path / "cache").exists()


def test_wrapper_key_ignores_tests_and_built_binaries(tmp_path):
    src = tmp_path / "wrapper"
    (src / "internal").mkdir(parents=True)
    (src / "go.mod").write_text("module x\n")
    (src / "main.go").write_text("package main\n")
    fleet = rb.FleetBuild(cache_dir=str(tmp_path), patches=[], build_script="", wrapper_src=str(src),
                          build_image="", cache_image="")
    before = fleet.wrapper_artifact().key
    (src / "main_test.go").write_text("package main\n")
    (src / "runc-gvisor").write_bytes(b"\x7fELF")
    assert fleet.wrapper_artifact().key == before
    (src / "internal" / "adapt.go").write_text("package internal\n")
    assert fleet.wrapper_artifact().key != before
