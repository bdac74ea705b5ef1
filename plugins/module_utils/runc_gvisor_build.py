# SPDX-License-Identifier: Apache-2.0
"""Build the patched runc, the runc-gvisor wrapper and the CNI plugins once
per fleet, cached.

Pure parts (cache keys, cache validation, the commands) are separate from
the parts that run them, so unit tests can exercise them on real files.

The Go programs (the wrapper, gvisor-bridge, upstream's loopback plugin) are
built natively with the build host's go and the pinned toolchain
(GOTOOLCHAIN), their modules pinned by go.sum: no docker. runc is built by
build-runc.sh: natively from its Go module (source "module", the default),
or in a docker container from Debian's source package or a release tarball.

Cache layout on the build host:
    CACHE/runc/KEY/{runc, runc.sha256, build-info.txt}
    CACHE/wrapper/KEY/{runc-gvisor, runc-gvisor.sha256}
    CACHE/cni/KEY/{gvisor-bridge, gvisor-bridge.sha256}
    CACHE/cni-loopback/KEY/{loopback, loopback.sha256}
    CACHE/kubernetes/KEY/{kubelet, kubelet.sha256}   (one entry per Kubernetes command)
    CACHE/kine/KEY/{kine, kine.sha256}
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
GO_RECIPE = "native, CGO_ENABLED=0, -trimpath, -s -w, -mod=readonly, -buildvcs=false"
# The loopback plugin's version variable (upstream's release builds set it).
CNI_BUILD_VERSION = "github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion"
CNI_PLUGINS_MODULE = "github.com/containernetworking/plugins"
LOOPBACK_PACKAGE = CNI_PLUGINS_MODULE + "/plugins/main/loopback"
# The kubernetes engine's binaries: Kubernetes's commands from its module (the
# build module repeats its staging replace block), and kine from its own.
KUBERNETES_MODULE = "k8s.io/kubernetes"
KUBERNETES_COMMANDS = ("kubelet", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubeadm",
                       "kube-proxy")
KINE_MODULE = "github.com/k3s-io/kine"
# Services and DNS where there is no netfilter: our proxy, and CoreDNS from its module.
COREDNS_MODULE = "github.com/coredns/coredns"


def kubernetes_version_stamps(version: str) -> dict[str, str]:
    """The -X values Kubernetes's own release build sets, so that `kubectl
    version` and the node's kubeletVersion show the release (a fixed build date
    keeps the build reproducible)."""
    major, minor = version.lstrip("v").split(".")[:2]
    base = "k8s.io/component-base/version"
    return {f"{base}.gitVersion": version, f"{base}.gitMajor": major, f"{base}.gitMinor": minor,
            f"{base}.gitTreeState": "clean", f"{base}.buildDate": "1970-01-01T00:00:00Z",
            "k8s.io/client-go/pkg/version.gitVersion": version}


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
    kind: str  # "runc", "wrapper", "cni" or "cni-loopback"
    binary_name: str
    key: str
    cache_dir: str
    src: str = ""  # a Go program's module directory
    package: str = "."  # the Go package to build, in that module
    version: str | None = None  # the -X value of its version variable (default: the cache key)
    stamps: dict = field(default_factory=dict)  # -X variable=value pairs instead of the version variable
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
    def __init__(self, message: str, log: str = ""):
        super().__init__(message)
        self.log = log


def go_sources(src: str) -> list[str]:
    """What a Go program is built from: its non-test Go files, go.mod and go.sum."""
    return [os.path.join(src, rel) for rel in files_under(src)
            if rel.endswith((".go", "go.mod", "go.sum")) and not rel.endswith("_test.go")]


def required_version(go_mod: str, module: str) -> str | None:
    """The version go.mod requires of module (its require line)."""
    with open(go_mod, encoding="utf-8") as stream:
        for line in stream:
            words = line.split()
            if words[:1] == ["require"]:
                words = words[1:]
            if len(words) >= 2 and words[0] == module:
                return words[1]
    return None


# Linked statically into runc (cgo: nsenter, libseccomp): their versions are
# part of its key, or an upgraded libseccomp would stay stale in the cache.
C_BUILD_PACKAGES = ("gcc", "libc6-dev", "libseccomp-dev")


def c_build_versions(run=subprocess.run) -> str:
    """"pkg=version ..." of the C build dependencies on this build host: dpkg's,
    or apt's candidate for one that build-runc.sh fetches (libseccomp-dev)."""
    versions = []
    for package in C_BUILD_PACKAGES:
        installed = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev} ${Version}", package],
                        capture_output=True, text=True, check=False).stdout.split()
        if installed[:1] == ["ii"] and len(installed) > 1:
            versions.append(f"{package}={installed[1]}")
            continue
        policy = run(["apt-cache", "policy", package], capture_output=True, text=True, check=False).stdout
        candidate = next((line.split(":", 1)[1].strip() for line in policy.splitlines()
                          if line.strip().startswith("Candidate:")), "none")
        versions.append(f"{package}={candidate} (apt)")
    return " ".join(versions)


def go_environment(toolchain: str) -> dict:
    """The environment of every go command here: the pinned toolchain, static
    pure-Go binaries, modules as go.sum pins them. The user's proxy, module
    cache and checksum settings are kept (offline hosts point them at a
    module cache or a file proxy)."""
    return dict(os.environ, GOTOOLCHAIN=toolchain, CGO_ENABLED="0", GOWORK="off",
                GOFLAGS="-mod=readonly -buildvcs=false")


@dataclass
class FleetBuild:
    """What to build and how."""

    cache_dir: str
    go_toolchain: str
    wrapper_src: str | None = None
    cni_src: str | None = None
    kubernetes_src: str | None = None
    kine_src: str | None = None
    service_proxy_src: str | None = None
    coredns_src: str | None = None
    build_script: str | None = None
    patches: list[str] = field(default_factory=list)
    runc_source: str = "module"
    runc_version: str = ""
    runc_module_src: str | None = None
    upstream_tarball: str | None = None
    build_image: str = ""
    cache_image: str = ""
    arch: str = field(default_factory=lambda: os.uname().machine)
    docker: str = "docker"
    go: str = "go"

    def c_versions(self) -> str:
        try:
            return c_build_versions()
        except OSError:  # no dpkg: not Debian; the build says what is missing
            return "unknown"

    # -- what is built, and its key ------------------------------------------

    def runc_artifact(self) -> Artifact:
        parts = ["runc", self.runc_source, self.runc_version, self.arch]
        inputs = [self.build_script, *self.patches]
        if self.runc_source == "module":
            parts += [self.go_toolchain, self.c_versions()]
            inputs += [os.path.join(self.runc_module_src, name) for name in ("go.mod", "go.sum")]
        if self.upstream_tarball:
            inputs.append(self.upstream_tarball)
        return Artifact("runc", "runc", cache_key(parts, inputs), self.cache_dir)

    def wrapper_artifact(self) -> Artifact:
        return self.go_artifact("wrapper", "runc-gvisor", self.wrapper_src)

    def cni_artifact(self) -> Artifact:
        return self.go_artifact("cni", "gvisor-bridge", self.cni_src)

    def cni_loopback_artifact(self) -> Artifact:
        """Upstream's loopback plugin, built from the CNI module's pinned plugins release."""
        version = required_version(os.path.join(self.cni_src, "go.mod"), CNI_PLUGINS_MODULE)
        return self.go_artifact("cni-loopback", "loopback", self.cni_src, LOOPBACK_PACKAGE, version)

    def kubernetes_artifacts(self, commands=KUBERNETES_COMMANDS) -> list[Artifact]:
        """Kubernetes's commands at the release the build module requires, version-stamped."""
        version = required_version(os.path.join(self.kubernetes_src, "go.mod"), KUBERNETES_MODULE)
        stamps = kubernetes_version_stamps(version)
        return [self.go_artifact("kubernetes", command, self.kubernetes_src, f"{KUBERNETES_MODULE}/cmd/{command}",
                                 version, stamps) for command in commands]

    def kine_artifact(self) -> Artifact:
        version = required_version(os.path.join(self.kine_src, "go.mod"), KINE_MODULE)
        return self.go_artifact("kine", "kine", self.kine_src, KINE_MODULE, version,
                                {f"{KINE_MODULE}/pkg/version.Version": version})

    def service_proxy_artifact(self) -> Artifact:
        return self.go_artifact("service-proxy", "gvisor-service-proxy", self.service_proxy_src)

    def coredns_artifact(self) -> Artifact:
        """CoreDNS with the cluster's plugins, at the release its build module requires."""
        version = required_version(os.path.join(self.coredns_src, "go.mod"), COREDNS_MODULE)
        return self.go_artifact("coredns", "coredns", self.coredns_src, ".", version)

    def go_artifact(self, kind: str, binary_name: str, src: str, package: str = ".",
                    version: str | None = None, stamps: dict | None = None) -> Artifact:
        """A Go program, keyed by its sources (not its tests), the toolchain and the recipe."""
        parts = [kind, GO_RECIPE, self.arch, self.go_toolchain, package, version or "",
                 *sorted(f"{name}={value}" for name, value in (stamps or {}).items())]
        return Artifact(kind, binary_name, cache_key(parts, go_sources(src)), self.cache_dir, src=src,
                        package=package, version=version, stamps=stamps or {})

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
        """Run the build's command; its output is kept only to explain a failure."""
        if artifact.kind == "runc":
            argv, env, cwd = self.runc_command(out_dir)
        else:
            argv, env, cwd = self.go_command(artifact, out_dir)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=env, cwd=cwd)
        except FileNotFoundError as error:
            raise BuildFailed(self.missing_tool_message(artifact, error.filename)) from None
        if proc.returncode != 0:
            raise BuildFailed(f"building {artifact.kind} failed (exit {proc.returncode}): {' '.join(argv)}"
                              f"{self.offline_hint(proc.stdout + proc.stderr)}", proc.stdout + proc.stderr)

    def missing_tool_message(self, artifact: Artifact, tool: str | None) -> str:
        if tool == self.go or artifact.kind != "runc":
            return (f"building {artifact.kind} needs Go on the build host: no '{self.go}' in PATH. Install Go "
                    f"(Debian: golang-go; any go >= 1.21 runs the pinned toolchain {self.go_toolchain}, which it "
                    "takes from the module cache or the Go module proxy), or build on another host "
                    "(runc_gvisor_build_host)")
        return f"building {artifact.kind}: {tool} is missing on the build host"

    @staticmethod
    def offline_hint(output: str) -> str:
        """A plain word for the most common failure of an offline build host."""
        if "dial tcp" in output or "module lookup disabled" in output or "no such host" in output:
            return (". The Go module proxy cannot be reached and the module cache lacks what go.sum pins: "
                    "fill the module cache on a host that can reach it (GOMODCACHE, or GOPROXY=file://...)")
        return ""

    def go_command(self, artifact: Artifact, out_dir: str) -> tuple[list[str], dict, str]:
        """(argv, env, cwd) that build a Go program natively, static and pure Go. Its
        version variable names the exact build (the cache key, unless given)."""
        variable = "main.version" if artifact.package == "." else CNI_BUILD_VERSION
        stamps = artifact.stamps or {variable: artifact.version or artifact.key}
        ldflags = " ".join(["-s -w", *(f"-X {name}={value}" for name, value in stamps.items())])
        argv = [self.go, "build", "-trimpath", "-ldflags", ldflags,
                "-o", os.path.join(os.path.abspath(out_dir), artifact.binary_name), artifact.package]
        return argv, go_environment(self.go_toolchain), artifact.src

    def runc_command(self, out_dir: str) -> tuple[list[str], dict, str | None]:
        patch_dir = self._patch_dir(out_dir)
        if self.runc_source == "module":
            argv = [self.build_script, "--mode", "module", "--module-dir", self.runc_module_src, patch_dir, out_dir]
            return argv, dict(os.environ, RUNC_GO_TOOLCHAIN=self.go_toolchain), None
        argv = [self.build_script, "--docker", self.build_image, "--cache-image", self.cache_image,
                "--mode", self.runc_source]
        if self.upstream_tarball:
            argv += ["--source", self.upstream_tarball]
        return argv + [patch_dir, out_dir], dict(os.environ), None

    def _patch_dir(self, out_dir: str) -> str:
        """The chosen patches, side by side, for the build script to apply in order."""
        patch_dir = os.path.join(out_dir, ".patches")
        os.makedirs(patch_dir, exist_ok=True)
        for patch in self.patches:
            shutil.copy(patch, patch_dir)
        return patch_dir
