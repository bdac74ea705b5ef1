# SPDX-License-Identifier: Apache-2.0
"""What bench/pod_cycle and bench/runtime share: one gVisor node converged by
site.yml (its default runtime path: runc-gvisor in front of the runtime the
probe chose), and beside it, behind copies of the same wrapper, the two
paths it is measured against:

- `runc-stock`, the baseline: trixie's runc 1.1.15 (Debian's; it needs none
  of the patches there);
- `runc-patched`: runc 1.3.6 with the patches a sid gVisor host needs (0002,
  0003, 0005), built by the role's own build module.

Each wrapper copy reads a profile of its own (built in with -X
main.profilePath) naming its runtime and the adaptations that runtime needs
on this host; the default path's profile is the one site.yml wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
STOCK_IMAGE = "k3s-gvisor/node:trixie"  # its runc is Debian's 1.1.15 (dynamic: libc, libseccomp)
PROFILE = "/etc/runc-gvisor/profile.json"
# name -> (runtime in the node, wrapper copy, its profile)
PATHS = {
    "runc-stock": ("/usr/local/lib/runc-stock/runc", "/usr/local/bin/runc-gvisor-stock", "/etc/runc-gvisor/profile-stock.json"),
    "runc-patched": ("/usr/local/lib/runc-patched/runc", "/usr/local/bin/runc-gvisor-patched",
                     "/etc/runc-gvisor/profile-patched.json"),
}
# What runc needs from the wrapper inside gVisor (docs/PROBE.md: B1, B9).
RUNC_ADAPTATIONS = ["drop_cgroup_namespace", "refuse_pid_namespace_join"]
PATCHES = ["0002-securejoin-gvisor-procfs-root.patch", "0003-maskdir-retry-without-size-options.patch",
           "0005-exec-fifo-open-retry-eintr.patch"]
# Withdrawn from the role (docs/RUNTIME.md), measured here on request: the
# patched runc plus patch 0004 (a read-only bind mount instead of the memfd copy).
PATCH_0004 = REPO / "bench/patches/0004-exeseal-readonly-bind-mount.patch"
PATH_0004 = ("runc-0004", ("/usr/local/lib/runc-0004/runc", "/usr/local/bin/runc-gvisor-0004",
                           "/etc/runc-gvisor/profile-0004.json"))


def paths(with_0004: bool) -> dict:
    return dict(PATHS, **dict([PATH_0004])) if with_0004 else dict(PATHS)


def run(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("capture_output", True)
    proc = subprocess.run(argv, text=True, **kwargs)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv[:6])} ... failed (exit {proc.returncode}):\n{(proc.stdout or '')[-3000:]}\n"
                 f"{(proc.stderr or '')[-3000:]}")
    return proc


class Node:
    def __init__(self, name: str):
        self.name = name

    def exec(self, *argv: str, stdin: bytes | None = None) -> str:
        proc = subprocess.run(["docker", "exec", "-i", self.name, *argv], input=stdin, capture_output=True)
        if proc.returncode != 0:
            sys.exit(f"on {self.name}: {' '.join(argv)} failed: {proc.stderr.decode(errors='replace')[-2000:]}")
        return proc.stdout.decode()

    def put(self, data: bytes, dest: str, mode: str = "0644") -> None:
        # Written from inside: gVisor may not see a `docker cp` over a file it has cached.
        self.exec("sh", "-c", f'mkdir -p "$(dirname {dest})" && cat > {dest}.tmp && chmod {mode} {dest}.tmp && '
                  f"mv {dest}.tmp {dest}", stdin=data)

    def exists(self) -> bool:
        return subprocess.run(["docker", "inspect", self.name], capture_output=True).returncode == 0

    def create(self, runtime: str = "runsc") -> None:
        run(str(REPO / "scripts/gvisor-node"), "destroy", self.name)
        run(str(REPO / "scripts/gvisor-node"), "create", self.name, "--image", "sid", "--runtime", runtime)

    def destroy(self) -> None:
        run(str(REPO / "scripts/gvisor-node"), "destroy", self.name)

    def converge(self, *args: str, engine: str = "containerd") -> None:
        """site.yml with the containerd engine (or another), as the tests run it."""
        host = {"ansible_connection": "community.docker.docker", "ansible_python_interpreter": "/usr/bin/python3",
                "container_engine": engine}
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            inventory = Path(tmp) / "inventory.yml"
            inventory.write_text(yaml.safe_dump({"k3s_cluster": {"children": {"server": {"hosts": {self.name: host}}}}}))
            print(f"converging {self.name} with site.yml {' '.join(args)} ...", file=sys.stderr, flush=True)
            run(str(REPO / ".venv/bin/ansible-playbook"), "-i", str(inventory), "site.yml",
                "-e", f"verify_summary_path={Path(tmp) / 'summary.json'}", *args, cwd=REPO,
                env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg")), timeout=3600)


def toolchain() -> str:
    return run(str(REPO / "scripts/go-toolchain")).stdout.strip()


def build_module(**args) -> dict:
    """The role's build module on this machine (the controller), as an ad hoc task."""
    args = dict(cache_dir=os.path.expanduser("~/.cache/k3s-gvisor"), go_toolchain=toolchain(), **args)
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    proc = run(str(REPO / ".venv/bin/ansible"), "localhost", "-m", "k3s_gvisor.node.runc_gvisor_build",
               "-a", json.dumps(args), cwd=REPO, env=env, timeout=1800)
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    if result.get("failed"):
        sys.exit(f"build failed: {result.get('msg')}")
    return result


def patched_runc(extra: list[Path] = ()) -> str:
    files = REPO / "roles/runc_gvisor/files"
    patches = sorted([files / "patches" / name for name in PATCHES] + list(extra), key=lambda path: path.name)
    return build_module(build_runc=True, patches=[str(path) for path in patches],
                        build_script=str(files / "build-runc.sh"), runc_module_src=str(files / "runc-module"),
                        runc_version="1.3.6")["runc"]["path"]


def stock_runc(workdir: Path) -> Path:
    holder = f"kg-bench-stock-runc-{os.getpid()}"
    run("docker", "create", "--name", holder, STOCK_IMAGE)
    try:
        run("docker", "cp", f"{holder}:/usr/sbin/runc", str(workdir / "runc"))
    finally:
        run("docker", "rm", "-f", holder)
    return workdir / "runc"


def wrapper_copy(profile: str, workdir: Path) -> Path:
    """The wrapper's own source, with another profile path built in."""
    out = workdir / f"runc-gvisor-{Path(profile).stem}"
    env = dict(os.environ, GOTOOLCHAIN=toolchain(), CGO_ENABLED="0", GOFLAGS="-mod=readonly -buildvcs=false")
    run("go", "build", "-trimpath", "-ldflags", f"-s -w -X main.profilePath={profile}", "-o", str(out), ".",
        cwd=REPO / "roles/runc_gvisor/files/wrapper", env=env)
    return out


def install_paths(node: Node, compared: dict) -> dict:
    """The comparison paths on the node; {name: version line} of every runtime, the default's included."""
    with tempfile.TemporaryDirectory(prefix="bench-runtimes-") as tmp:
        workdir = Path(tmp)
        binaries = {"runc-stock": stock_runc(workdir), "runc-patched": Path(patched_runc())}
        if PATH_0004[0] in compared:
            binaries[PATH_0004[0]] = Path(patched_runc([PATCH_0004]))
        for name, (runtime, wrapper, profile) in compared.items():
            node.put(binaries[name].read_bytes(), runtime, "0755")
            node.put(wrapper_copy(profile, workdir).read_bytes(), wrapper, "0755")
            node.put(json.dumps({"runc": runtime, "adaptations": RUNC_ADAPTATIONS}).encode() + b"\n", profile)
    default = json.loads(node.exec("cat", PROFILE))
    versions = {name: node.exec(runtime, "--version").splitlines()[0] for name, (runtime, _, _) in compared.items()}
    versions["runc-gvisor"] = node.exec(default["runc"], "--version").splitlines()[0] + \
        f" (the probe's choice, adaptations {', '.join(default['adaptations']) or 'none'})"
    return versions


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])
