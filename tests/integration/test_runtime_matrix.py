# SPDX-License-Identifier: Apache-2.0
"""The runtime on real gVisor: runc-gvisor + the patched runc against stock runc.

The upstream experiment's progressive matrix, automated. Bundles are run with
`runc run` directly inside a gVisor 20240729 node (sid image: runc 1.3.6)
after site.yml's probe and runtime stages installed the wrapper and the
patched runc. Each spec is run as is and with /proc/sys/kernel masked, which
hides cap_last_cap from runc init: the honest way to exercise B2 where the
host has the file.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess

import pytest

from conftest import REPO, VENV_BIN

STOCK_RUNC = "/usr/bin/runc"
WRAPPER = "/usr/local/bin/runc-gvisor"
WORK = "/tmp/matrix"

B1 = "cgroup namespaces aren't enabled in the kernel"
B2 = "open /proc/sys/kernel/cap_last_cap: no such file or directory"
B3 = "unsafe procfs detected: incorrect procfs root inode number"
B8 = ('can\'t mask dir "/sys/firmware": mount src=tmpfs, dst=/sys/firmware, flags=MS_RDONLY, '
      "data=nr_blocks=1,nr_inodes=1: invalid argument")

FULL_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
             "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_NET_ADMIN",
             "CAP_SYS_CHROOT", "CAP_SYS_ADMIN", "CAP_MKNOD", "CAP_AUDIT_WRITE", "CAP_SETFCAP"]
# containerd's CRI masks and read-only paths (internal/cri/opts/spec_linux_opts.go).
CRI_MASKED = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
              "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
              "/sys/firmware", "/sys/devices/virtual/powercap"]
CRI_READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def base_spec(case: str) -> dict:
    """What `runc spec` makes, with a busybox rootfs and a process that reports."""
    return {
        "ociVersion": "1.2.0",
        "process": {
            "terminal": False, "user": {"uid": 0, "gid": 0}, "cwd": "/",
            "args": ["/bin/sh", "-c", f"echo MARK-{case}; grep CapEff /proc/self/status"],
            "env": ["PATH=/bin"],
            "capabilities": {key: ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
                             for key in ("bounding", "effective", "permitted")},
            "noNewPrivileges": True,
        },
        "root": {"path": f"{WORK}/rootfs", "readonly": True},
        "hostname": "matrix",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/kcore", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys"],
        },
    }


def spec_for(case: str) -> dict:
    spec = base_spec(case)
    linux = spec["linux"]
    if case in ("network", "user", "cgroup"):
        linux["namespaces"].append({"type": "network"})
    if case == "user":
        linux["namespaces"].append({"type": "user"})
        linux["uidMappings"] = linux["gidMappings"] = [{"containerID": 0, "hostID": 0, "size": 65536}]
    if case == "cgroup":
        linux["namespaces"].append({"type": "cgroup"})
    if case == "capabilities":
        spec["process"]["capabilities"] = {key: FULL_CAPS for key in ("bounding", "effective", "permitted")}
    if case == "cri":
        linux["namespaces"].append({"type": "network"})
        linux["maskedPaths"], linux["readonlyPaths"] = list(CRI_MASKED), list(CRI_READONLY)
        linux["cgroupsPath"] = "/k3s-gvisor-matrix/cri"
        linux["resources"] = {"devices": [{"allow": False, "access": "rwm"}], "cpu": {"shares": 2}}
        spec["process"]["oomScoreAdj"] = -998
        spec["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
        spec["annotations"] = {"io.kubernetes.cri.container-type": "sandbox"}
    return spec


def masked_kernel(spec: dict) -> dict:
    spec = copy.deepcopy(spec)
    spec["linux"]["maskedPaths"].append("/proc/sys/kernel")
    return spec


CASES = ["minimal", "network", "user", "cgroup", "capabilities", "cri"]
MATRIX = [(case, masked) for case in CASES for masked in (False, True)]


def bundle_name(case: str, masked: bool) -> str:
    return f"{case}-masked" if masked else case


def make_bundles(node, specs: dict[str, dict]) -> None:
    """Bundles share one read-only busybox rootfs inside the node (written from inside: see docs/NODES.md)."""
    setup = (f"set -e; rm -rf {WORK}; mkdir -p {WORK}/rootfs/bin {WORK}/rootfs/proc {WORK}/rootfs/dev "
             f"{WORK}/rootfs/sys {WORK}/state; cp /bin/busybox {WORK}/rootfs/bin/; "
             f"for tool in sh echo grep cat; do ln -s busybox {WORK}/rootfs/bin/$tool; done")
    assert node.exec("sh", "-c", setup).returncode == 0
    for name, spec in specs.items():
        make_extra_bundle(node, name, spec)


def run_bundle(node, runc: str, name: str, container_id: str) -> subprocess.CompletedProcess:
    return node.exec(runc, "--root", f"{WORK}/state", "run", "--bundle", f"{WORK}/{name}", container_id)


@pytest.fixture(scope="module")
def gvisor_runtime(node_factory):
    node = node_factory("runtime-sid")
    run = node.playbook("site.yml", "--tags", "probe,runtime")
    assert run.returncode == 0, run.stderr
    make_bundles(node, {bundle_name(c, m): (masked_kernel(spec_for(c)) if m else spec_for(c)) for c, m in MATRIX})
    return node


@pytest.mark.parametrize("case,masked", MATRIX)
def test_runc_gvisor_runs_every_case(gvisor_runtime, case, masked):
    name = bundle_name(case, masked)
    result = run_bundle(gvisor_runtime, WRAPPER, name, f"ok-{name}")
    assert result.returncode == 0, result.stderr
    assert f"MARK-{case}" in result.stdout
    assert "CapEff:" in result.stdout


def error_text(result: subprocess.CompletedProcess) -> str:
    """runc's stderr with the quoting of its log format undone."""
    return result.stderr.replace('\\"', '"')


@pytest.mark.parametrize("case,masked", MATRIX)
def test_stock_runc_fails_with_the_blocker_text(gvisor_runtime, case, masked):
    # runc 1.3.6 checks procfs before anything else, so every spec stops there.
    name = bundle_name(case, masked)
    result = run_bundle(gvisor_runtime, STOCK_RUNC, name, f"stock-{name}")
    assert result.returncode != 0
    assert B3 in error_text(result)


@pytest.mark.parametrize("masked", [False, True])
def test_patched_runc_without_the_wrapper_hits_b1(gvisor_runtime, masked):
    """B1 is the wrapper's to fix: the patched runc alone refuses the cgroup namespace."""
    # A bundle of its own: the wrapper rewrites the config.json of those it runs.
    name = "direct-" + bundle_name("cgroup", masked)
    make_extra_bundle(gvisor_runtime, name, masked_kernel(spec_for("cgroup")) if masked else spec_for("cgroup"))
    result = run_bundle(gvisor_runtime, "/usr/local/lib/runc-gvisor/runc", name, name)
    assert result.returncode != 0
    assert B1 in error_text(result)


def test_wrapper_refuses_a_pid_namespace_join_naming_b9(gvisor_runtime):
    spec = spec_for("minimal")
    spec["linux"]["namespaces"][0] = {"type": "pid", "path": "/proc/1/ns/pid"}
    make_extra_bundle(gvisor_runtime, "pid-join", spec)
    result = run_bundle(gvisor_runtime, WRAPPER, "pid-join", "pid-join")
    assert result.returncode != 0
    assert "B9" in result.stderr


def make_extra_bundle(node, name: str, spec: dict) -> None:
    script = f"mkdir -p {WORK}/{name} && cat > {WORK}/{name}/config.json"
    subprocess.run(["docker", "exec", "-i", node.name, "sh", "-c", script], input=json.dumps(spec),
                   text=True, check=True)


def build_runc(patch_names: list[str]) -> str:
    """A runc with only these patches, through the role's own cached build module."""
    patches = [str(REPO / "roles/runc_gvisor/files/patches" / name) for name in patch_names]
    args = {
        "cache_dir": os.path.expanduser("~/.cache/k3s-gvisor"), "patches": patches,
        "build_script": str(REPO / "roles/runc_gvisor/files/build-runc.sh"),
        "wrapper_src": str(REPO / "roles/runc_gvisor/files/wrapper"),
        "runc_version": "1.3.6+ds1-1", "build_image": "k3s-gvisor/node:sid",
        "cache_image": "k3s-gvisor/runc-build:sid",
    }
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    proc = subprocess.run([str(VENV_BIN / "ansible"), "localhost", "-m", "runc_gvisor_build", "-a", json.dumps(args)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert not result.get("failed"), result.get("msg")
    return result["runc"]["path"]


def install_test_runc(node, path: str, dest: str) -> None:
    with open(path, "rb") as binary:
        subprocess.run(["docker", "exec", "-i", node.name, "sh", "-c", f"cat > {dest} && chmod 0755 {dest}"],
                       stdin=binary, check=True)


def test_b8_without_the_maskdir_patch(gvisor_runtime):
    """With B3 relaxed but not B8, every spec with a masked directory fails with B8's text."""
    install_test_runc(gvisor_runtime, build_runc(["0001-capability-lastcap-prctl-fallback.patch",
                                                  "0002-securejoin-gvisor-procfs-root.patch"]), f"{WORK}/runc-no-b8")
    result = run_bundle(gvisor_runtime, f"{WORK}/runc-no-b8", "minimal", "no-b8")
    assert result.returncode != 0
    assert B8 in error_text(result)


# Every patch the role applies (it takes the directory's *.patch in order).
ALL_PATCHES = sorted(path.name for path in (REPO / "roles/runc_gvisor/files/patches").glob("*.patch"))


# runc create, then SIGURG (which Go's runtime handles with SA_RESTART) to
# runc init while it blocks opening its exec FIFO, then runc start.
SIGNALS_BEFORE_START = """
R="$0 --root {work}/state"
$R create --bundle {work}/minimal --pid-file {work}/$1.pid $1 || exit 90
pid=$(cat {work}/$1.pid)
for i in 1 2 3 4 5 6 7 8 9 10; do kill -URG $pid 2>/dev/null; sleep 0.05; done
$R start $1; code=$?
sleep 1; $R delete --force $1
exit $code
""".format(work=WORK)
# What runc init says when gVisor fails that open with EINTR (google/gvisor#14849).
FIFO_EINTR = "reopen exec fifo: reopen fd"


def create_signal_start(node, runc: str, container_id: str) -> subprocess.CompletedProcess:
    return node.exec("sh", "-c", SIGNALS_BEFORE_START, runc, container_id)


def assert_runc_init_died_of_the_eintr(result: subprocess.CompletedProcess, fifo_words: str) -> None:
    """runc create succeeded, runc start failed, and runc init said why (its stderr)."""
    assert result.returncode not in (0, 90), result.stdout + result.stderr
    assert fifo_words in result.stderr and "interrupted system call" in result.stderr, result.stderr


def test_runc_init_outlives_signals_before_start(gvisor_runtime):
    """Patch 0005: the shipped runc starts a container whose init was signalled while waiting for start."""
    result = create_signal_start(gvisor_runtime, "/usr/local/lib/runc-gvisor/runc", "signalled")
    assert result.returncode == 0, result.stderr
    assert "MARK-minimal" in result.stdout


def test_without_patch_0005_a_signal_before_start_kills_runc_init(gvisor_runtime):
    """The same without 0005: runc init dies of the EINTR, as one pod in twenty did under load."""
    others = [name for name in ALL_PATCHES if not name.startswith("0005-")]
    install_test_runc(gvisor_runtime, build_runc(others), f"{WORK}/runc-no-0005")
    assert_runc_init_died_of_the_eintr(create_signal_start(gvisor_runtime, f"{WORK}/runc-no-0005", "signalled-no-0005"),
                                       FIFO_EINTR)


def test_trixies_stock_runc_dies_of_a_signal_before_start(node_factory):
    """Not only runc 1.3: trixie's runc 1.1.15, which the role keeps there (no blocker asks for the
    patched runc), dies the same way (docs/RUNTIME.md: runc_gvisor_patched_runc: always gives 0005)."""
    node = node_factory("runtime-trixie", image="trixie")
    make_bundles(node, {"minimal": spec_for("minimal")})
    # runc 1.1.15 opens the FIFO directly: "open exec fifo /proc/self/fd/5: interrupted system call".
    assert_runc_init_died_of_the_eintr(create_signal_start(node, STOCK_RUNC, "signalled-trixie"), "open exec fifo")


@pytest.fixture(scope="module")
def plain_runtime(node_factory, tmp_path_factory):
    """A plain-kernel container (docker's runc) where runc can run nested; probed, runtime installed, summarised."""
    node = node_factory("runtime-plain", runtime="runc")
    node.summary = tmp_path_factory.mktemp("summary") / "plain.json"
    node.add_host_vars(verify_summary_path=str(node.summary))
    # Docker mounts /sys and the cgroup tree read-only in a container that is
    # not --privileged; nested runc needs them writable.
    remount = ("mount -o remount,rw /sys && for d in /sys/fs/cgroup /sys/fs/cgroup/*; "
               "do mount -o remount,rw $d 2>/dev/null || true; done")
    assert node.exec("sh", "-c", remount).returncode == 0
    run = node.playbook("site.yml", "--tags", "probe,runtime,summary")
    assert run.returncode == 0, run.stderr
    make_bundles(node, {"minimal": spec_for("minimal"), "minimal-masked": masked_kernel(spec_for("minimal"))})
    return node, run


def test_plain_host_gets_nothing_relaxed(plain_runtime):
    node, run = plain_runtime
    profile = json.loads(node.exec("cat", "/etc/runc-gvisor/profile.json").stdout)
    assert profile == {"runc": "/usr/bin/runc", "adaptations": []}
    assert node.exec("test", "-e", "/usr/local/lib/runc-gvisor/runc").returncode != 0
    assert "nothing on this host is relaxed" in run.task("Report the runtime")["msg"]
    # Blockers it may have (B7: overlay in docker's overlay) are mitigated without relaxing anything.
    assert "relaxations: none (nothing on this host is relaxed)" in run.task("Print the run summary")["msg"]
    record = json.loads(node.summary.read_text())["hosts"][0]
    assert record["relaxations"] == [] and record["patched_runc"] is False, record
    result = run_bundle(node, WRAPPER, "minimal", "plain-wrapper")
    assert result.returncode == 0 and "MARK-minimal" in result.stdout, result.stderr


def test_b2_stock_runc_on_a_plain_kernel(plain_runtime):
    node, _ = plain_runtime
    result = run_bundle(node, STOCK_RUNC, "minimal-masked", "stock-masked")
    assert result.returncode != 0
    assert B2 in error_text(result)


def test_b2_patched_runc_on_a_plain_kernel(plain_runtime):
    node, _ = plain_runtime
    install_test_runc(node, build_runc(ALL_PATCHES), f"{WORK}/runc-patched")
    result = run_bundle(node, f"{WORK}/runc-patched", "minimal-masked", "patched-masked")
    assert result.returncode == 0, result.stderr
    assert "MARK-minimal" in result.stdout
