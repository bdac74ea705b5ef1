"""Build the patched runc, the runc-gvisor wrapper and the gvisor-bridge CNI
plugin once per fleet, cached.

Pure parts (cache keys, cache validation) are separate from the parts that
run docker, so unit tests can exercise them on real files.

Cache layout on the build host:
    CACHE/runc/KEY/{runc, runc.sha256, build-info.txt}
    CACHE/wrapper/KEY/{runc-gvisor, runc-gvisor.sha256}
    CACHE/cni/KEY/{gvisor-bridge, gvisor-bridge.sha256}
A build writes into CACHE/KIND/.partial-KEY-PID and is renamed into place only
when complete, so a build killed half-way is never taken for a finished one;
the next run removes the leftover and builds again. Builds of one kind hold
CACHE/KIND/.lock, so two runs sharing the cache build once and never take
each other's work in progress for a leftover.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

CHUNK = 1 << 20
# Part of the Go programs' cache keys: change it when the way they are built changes.
GO_RECIPE = "static, -trimpath, -s -w, main.version=cache key"


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def files_under(root: str) -> list[str]:
    """Every regular file below root, sorted, as paths relative to root."""
    found = []
    for parent, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            found.append(os.path.relpath(os.path.join(parent, name), root))
    return found


def cache_key(parts: list[str], files: list[str]) -> str:
    """A digest of the build's parameters and the content of its input files."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() + b"\0")
    for path in files:
        digest.update(os.path.basename(path).encode() + b"\0")
        digest.update(sha256_file(path).encode() + b"\0")
    return digest.hexdigest()[:16]


class CacheCorrupted(Exception):
    """A cached binary whose content does not match its recorded checksum."""


def read_recorded_sha256(record: str) -> str:
    with open(record, encoding="ascii") as stream:
        return stream.read().split()[0]


def verify_cached(binary: str) -> str | None:
    """The binary's sha256 when its build is cached and intact; None when absent.

    Raises CacheCorrupted, naming the file and both checksums, when the
    content differs from what the build recorded.
    """
    record = binary + ".sha256"
    if not (os.path.isfile(binary) and os.path.isfile(record)):
        return None
    expected, actual = read_recorded_sha256(record), sha256_file(binary)
    if expected != actual:
        raise CacheCorrupted(
            f"cached build {binary} has sha256 {actual}, but its build recorded {expected} in {record}; "
            f"nothing was installed. Remove {os.path.dirname(binary)} to rebuild it"
        )
    return actual


@contextmanager
def build_lock(kind_dir: str) -> Iterator[None]:
    """Serialize builds of one kind on this build host (two plays sharing a
    cache). The kernel drops the lock when its holder dies, so a killed build
    never blocks the next one."""
    with open(os.path.join(kind_dir, ".lock"), "a", encoding="ascii") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def remove_partial_builds(kind_dir: str) -> list[str]:
    """Leftovers of builds that were killed before they finished."""
    removed = []
    if os.path.isdir(kind_dir):
        for name in sorted(os.listdir(kind_dir)):
            if name.startswith(".partial-"):
                shutil.rmtree(os.path.join(kind_dir, name), ignore_errors=True)
                removed.append(name)
    return removed


@dataclass
class Artifact:
    kind: str  # "runc", "wrapper" or "cni"
    binary_name: str
    key: str
    cache_dir: str
    src: str = ""  # a Go program's module directory
    built: bool = False
    sha256: str | None = None
    seconds: float = 0.0

    @property
    def directory(self) -> str:
        return os.path.join(self.cache_dir, self.kind, self.key)

    @property
    def path(self) -> str:
        return os.path.join(self.directory, self.binary_name)

    def as_dict(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "key": self.key, "built": self.built,
                "seconds": round(self.seconds, 1)}


class BuildFailed(Exception):
    def __init__(self, message: str, log: str):
        super().__init__(message)
        self.log = log


@dataclass
class FleetBuild:
    """What to build and how. The build runs in docker containers on plain runc."""

    cache_dir: str
    patches: list[str]
    build_script: str
    wrapper_src: str
    build_image: str
    cache_image: str
    runc_source: str = "debian"
    runc_version: str = ""
    upstream_tarball: str | None = None
    cni_src: str | None = None
    arch: str = field(default_factory=lambda: os.uname().machine)
    docker: str = "docker"

    def runc_artifact(self) -> Artifact:
        parts = ["runc", self.runc_source, self.runc_version, self.arch]
        inputs = [self.build_script, *self.patches]
        if self.upstream_tarball:
            inputs.append(self.upstream_tarball)
        return Artifact("runc", "runc", cache_key(parts, inputs), self.cache_dir)

    def wrapper_artifact(self) -> Artifact:
        return self.go_artifact("wrapper", "runc-gvisor", self.wrapper_src)

    def cni_artifact(self) -> Artifact:
        return self.go_artifact("cni", "gvisor-bridge", self.cni_src)

    def go_artifact(self, kind: str, binary_name: str, src: str) -> Artifact:
        """A Go program of the role, keyed by its sources (not its tests)."""
        sources = [os.path.join(src, rel) for rel in files_under(src)
                   if not rel.endswith("_test.go") and rel.endswith((".go", "go.mod"))]
        return Artifact(kind, binary_name, cache_key([kind, GO_RECIPE, self.arch], sources), self.cache_dir, src=src)

    # -- building ------------------------------------------------------------

    def ensure(self, artifact: Artifact, check_mode: bool) -> Artifact:
        """Reuse the cached build, or build it (not in check mode)."""
        artifact.sha256 = verify_cached(artifact.path)
        if artifact.sha256 is not None:
            return artifact
        artifact.built = True
        if check_mode:
            return artifact
        kind_dir = os.path.dirname(artifact.directory)
        os.makedirs(kind_dir, exist_ok=True)
        with build_lock(kind_dir):
            # Another run on this build host may have finished it while we waited.
            artifact.sha256 = verify_cached(artifact.path)
            if artifact.sha256 is not None:
                artifact.built = False
                return artifact
            return self._build_into_cache(artifact, kind_dir)

    def _build_into_cache(self, artifact: Artifact, kind_dir: str) -> Artifact:
        """Build in a partial directory and rename it into place when complete.

        Runs under the kind's build lock, so every partial directory found
        here is a leftover of a run that was killed, never one in progress.
        """
        remove_partial_builds(kind_dir)
        # An entry without its binary or its record is not a build; the rename
        # below cannot replace a directory that is not empty.
        shutil.rmtree(artifact.directory, ignore_errors=True)
        partial = os.path.join(kind_dir, f".partial-{artifact.key}-{os.getpid()}")
        os.makedirs(partial)
        started = time.monotonic()
        try:
            self._build(artifact, partial)
            digest = sha256_file(os.path.join(partial, artifact.binary_name))
            with open(os.path.join(partial, artifact.binary_name + ".sha256"), "w", encoding="ascii") as stream:
                stream.write(f"{digest}  {artifact.binary_name}\n")
            os.rename(partial, artifact.directory)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        artifact.seconds = time.monotonic() - started
        artifact.sha256 = digest
        return artifact

    def _build(self, artifact: Artifact, out_dir: str) -> None:
        """Run the build's commands; their output is kept only to explain a failure."""
        if artifact.kind == "runc":
            commands = [self.runc_command(out_dir)]
        else:
            commands = [self.build_image_command(), self.go_command(artifact, out_dir)]
        log = ""
        for command in commands:
            proc = subprocess.run(command, capture_output=True, text=True, check=False)
            log += proc.stdout + proc.stderr
            if proc.returncode != 0:
                raise BuildFailed(f"building {artifact.kind} failed (exit {proc.returncode}): {' '.join(command)}", log)

    def build_image_command(self) -> list[str]:
        """Make sure the build image (with Go and runc's build dependencies) exists."""
        return [self.build_script, "--docker", self.build_image, "--cache-image", self.cache_image, "--prepare-only"]

    def runc_command(self, out_dir: str) -> list[str]:
        command = [self.build_script, "--docker", self.build_image, "--cache-image", self.cache_image,
                   "--mode", self.runc_source]
        if self.upstream_tarball:
            command += ["--source", self.upstream_tarball]
        patch_dir = self._patch_dir(out_dir)
        return command + [patch_dir, out_dir]

    def _patch_dir(self, out_dir: str) -> str:
        """The chosen patches, side by side, for the build script to apply in order."""
        patch_dir = os.path.join(out_dir, ".patches")
        os.makedirs(patch_dir, exist_ok=True)
        for patch in self.patches:
            shutil.copy(patch, patch_dir)
        return patch_dir

    def go_command(self, artifact: Artifact, out_dir: str) -> list[str]:
        # Static and stdlib-only: the Go of the runc build image builds it
        # offline (GOPROXY=off), and the binary runs on every node. Its version
        # is its cache key, so --runc-gvisor-info / --version name the exact build.
        script = ("cd /src && CGO_ENABLED=0 GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local GOCACHE=/tmp/go-cache "
                  f"go build -trimpath -ldflags '-s -w -X main.version={artifact.key}' -o /out/{artifact.binary_name} .")
        return [self.docker, "run", "--rm", "--runtime=runc", "--network=none",
                "-v", f"{os.path.abspath(artifact.src)}:/src:ro", "-v", f"{os.path.abspath(out_dir)}:/out",
                self.cache_image, "sh", "-c", script]
