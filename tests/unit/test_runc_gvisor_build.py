# SPDX-License-Identifier: Apache-2.0
"""The fleet build's cache: keys, integrity, leftovers of killed builds."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

from ansible_collections.k3s_gvisor.node.plugins.module_utils import runc_gvisor_build as rb  # noqa: E402

PATCHES = sorted((REPO / "roles/runc_gvisor/files/patches").glob("*.patch"))
RUNC_MODULE = REPO / "roles/runc_gvisor/files/runc-module"
TOOLCHAIN = "go1.27.3"


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
    fleet = rb.FleetBuild(cache_dir=str(tmp_path / "cache"), go_toolchain=TOOLCHAIN, patches=[str(p) for p in PATCHES],
                          build_script=str(failing), runc_module_src=str(RUNC_MODULE))
    artifact = fleet.runc_artifact()
    with pytest.raises(rb.BuildFailed) as error:
        fleet.ensure(artifact, check_mode=False)
    assert "exit 3" in str(error.value) and "broken" in error.value.log
    assert [p.name for p in (tmp_path / "cache" / "runc").iterdir()] == [".lock"]


def test_check_mode_builds_nothing(tmp_path):
    fleet = rb.FleetBuild(cache_dir=str(tmp_path / "cache"), go_toolchain=TOOLCHAIN,
                          wrapper_src=str(REPO / "roles/runc_gvisor/files/wrapper"))
    artifact = fleet.ensure(fleet.wrapper_artifact(), check_mode=True)
    assert artifact.built and artifact.sha256 is None
    assert not (tmp_path / "cache").exists()


def test_wrapper_key_ignores_tests_and_built_binaries(tmp_path):
    src = tmp_path / "wrapper"
    (src / "internal").mkdir(parents=True)
    (src / "go.mod").write_text("module x\n")
    (src / "main.go").write_text("package main\n")
    fleet = rb.FleetBuild(cache_dir=str(tmp_path), go_toolchain=TOOLCHAIN, wrapper_src=str(src))
    before = fleet.wrapper_artifact().key
    (src / "main_test.go").write_text("package main\n")
    (src / "runc-gvisor").write_bytes(b"\x7fELF")
    assert fleet.wrapper_artifact().key == before
    (src / "internal" / "adapt.go").write_text("package internal\n")
    assert fleet.wrapper_artifact().key != before


# -- faults: a corrupted cache, a build killed half-way, two runs at once ------

from tree_collection import COLLECTION_ROOT  # noqa: E402
# Stands in for build-runc.sh: its last argument is the output directory. It
# counts its runs, writes the binary in two halves and, when asked, stops
# between them (where a killed build leaves a half-written binary).
FAKE_BUILD = """#!/bin/sh
for out; do :; done
echo build >> "$FAKE_BUILD_COUNTER"
printf 'half a runc' > "$out/runc"
if [ -n "$FAKE_BUILD_HANG" ]; then touch "$FAKE_BUILD_HANG"; exec sleep 600; fi
sleep "${FAKE_BUILD_SECONDS:-0}"
printf ' and the rest' >> "$out/runc"
"""
ENSURE_RUNC = """
import json, sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.k3s_gvisor.node.plugins.module_utils import runc_gvisor_build as rb
fleet = rb.FleetBuild(**json.loads(sys.argv[2]))
print(json.dumps(fleet.ensure(fleet.runc_artifact(), check_mode=False).as_dict()))
"""


@pytest.fixture
def fake_fleet(tmp_path, monkeypatch):
    """FleetBuild arguments with the fake build script, and its run counter."""
    script = tmp_path / "build-runc.sh"
    script.write_text(FAKE_BUILD)
    script.chmod(0o755)
    counter = tmp_path / "builds"
    monkeypatch.setenv("FAKE_BUILD_COUNTER", str(counter))
    args = dict(cache_dir=str(tmp_path / "cache"), go_toolchain=TOOLCHAIN, patches=[str(p) for p in PATCHES],
                build_script=str(script), runc_module_src=str(RUNC_MODULE))
    return args, counter


def builds_run(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def ensure_in_child(args: dict, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", ENSURE_RUNC, COLLECTION_ROOT, json.dumps(args)],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, text=True, start_new_session=True)


def test_a_corrupted_cached_build_fails_before_any_rebuild_and_stays_as_it_was(fake_fleet):
    args, counter = fake_fleet
    fleet = rb.FleetBuild(**args)
    built = fleet.ensure(fleet.runc_artifact(), check_mode=False)
    recorded = Path(built.path + ".sha256").read_text()
    Path(built.path).write_bytes(b"runc with a byte changed")
    with pytest.raises(rb.CacheCorrupted) as error:
        fleet.ensure(fleet.runc_artifact(), check_mode=False)
    message = str(error.value)
    assert built.path in message and built.sha256 in message
    assert hashlib.sha256(b"runc with a byte changed").hexdigest() in message
    assert builds_run(counter) == 1, "a corrupted cache must fail, not be silently rebuilt"
    assert Path(built.path).read_bytes() == b"runc with a byte changed"
    assert Path(built.path + ".sha256").read_text() == recorded


def test_a_build_killed_half_way_is_rebuilt_cleanly(fake_fleet, tmp_path):
    args, counter = fake_fleet
    started = tmp_path / "half-written"
    child = ensure_in_child(args, FAKE_BUILD_HANG=str(started))
    deadline = time.monotonic() + 30
    while not started.exists():
        assert child.poll() is None and time.monotonic() < deadline, "the build never started"
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)  # the module and its build script, as a killed play leaves them
    child.wait()
    kind_dir = Path(args["cache_dir"]) / "runc"
    leftovers = [p.name for p in kind_dir.iterdir() if p.name.startswith(".partial-")]
    assert len(leftovers) == 1 and (kind_dir / leftovers[0] / "runc").read_bytes() == b"half a runc"
    fleet = rb.FleetBuild(**args)
    assert rb.verify_cached(fleet.runc_artifact().path) is None, "a half-finished build counts as no build"

    artifact = fleet.ensure(fleet.runc_artifact(), check_mode=False)
    assert artifact.built and builds_run(counter) == 2
    assert Path(artifact.path).read_bytes() == b"half a runc and the rest"
    assert rb.verify_cached(artifact.path) == artifact.sha256
    assert sorted(p.name for p in kind_dir.iterdir()) == [".lock", artifact.key]


def test_an_entry_without_its_record_is_rebuilt(fake_fleet):
    args, counter = fake_fleet
    fleet = rb.FleetBuild(**args)
    artifact = fleet.runc_artifact()
    os.makedirs(artifact.directory)
    Path(artifact.path).write_bytes(b"a binary whose build never recorded it")
    rebuilt = fleet.ensure(artifact, check_mode=False)
    assert rebuilt.built and builds_run(counter) == 1
    assert rb.verify_cached(rebuilt.path) == hashlib.sha256(b"half a runc and the rest").hexdigest()


def test_two_runs_sharing_the_cache_build_once(fake_fleet):
    args, counter = fake_fleet
    runs = [ensure_in_child(args, FAKE_BUILD_SECONDS="1") for _ in range(2)]
    results = [json.loads(run.communicate(timeout=60)[0]) for run in runs]
    assert all(run.returncode == 0 for run in runs)
    assert builds_run(counter) == 1
    assert sorted(result["built"] for result in results) == [False, True]
    assert results[0]["sha256"] == results[1]["sha256"] == rb.verify_cached(results[0]["path"])
