# SPDX-License-Identifier: Apache-2.0
"""The runtime on real gVisor: runc-gvisor in front of each runtime the probe can choose.

Bundles are run with `RUNTIME run` directly inside gVisor 20240729 nodes
after site.yml's probe and runtime stages installed the wrapper and what the
decision record chose:

  - crun (Debian sid's 1.28, /usr/bin/crun) on a default sid node, with the
    adaptations refuse_masked_under_readonly (B14), refuse_new_network_namespace
    (B22) and refuse_pid_namespace_join (B9);
  - the patched runc 1.3.6 (0002 0003 0005) on a sid node converged with
    runc_gvisor_runtime=runc-patched, with drop_cgroup_namespace (B1) and
    refuse_pid_namespace_join;
  - the patched runc on trixie, where the record chooses it by itself.

Each bundle has the shapes CRI makes: the pod's network namespace is joined
by path (made with `ip netns add`, as CNI's netns is), never made by the
runtime (CRI never asks for one). Around the matrix: what each blocker looks
like without its answer (stock runc's B3, B1 without the wrapper, B8 without
patch 0003, B11 without patch 0005, B14 and B22 with crun alone), the
wrapper's refusals (B9, B14, B22), the patched runc running what crun
cannot, and a plain kernel, where nothing is relaxed and B2 shows only with
stock runc 1.3.6.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import REPO, VENV_BIN
from site_runs import DECIDE_TASK

STOCK_RUNC = "/usr/bin/runc"
CRUN = "/usr/bin/crun"
PATCHED_RUNC = "/usr/local/lib/runc-gvisor/runc"
WRAPPER = "/usr/local/bin/runc-gvisor"
PROFILE = "/etc/runc-gvisor/profile.json"
WORK = "/tmp/matrix"
# The pod's network namespace, as CNI makes it (containerd: /var/run/netns/cni-...).
POD_NETNS = "/run/netns/matrix-pod"

B1 = "cgroup namespaces aren't enabled in the kernel"
B2 = "open /proc/sys/kernel/cap_last_cap: no such file or directory"
B3 = "unsafe procfs detected: incorrect procfs root inode number"
B8 = ('can\'t mask dir "/sys/firmware": mount src=tmpfs, dst=/sys/firmware, flags=MS_RDONLY, '
      "data=nr_blocks=1,nr_inodes=1: invalid argument")
# What runc init says when gVisor fails its exec FIFO open with EINTR (google/gvisor#14849).
FIFO_EINTR = "reopen exec fifo: reopen fd"
# The line a container prints when it wrote into the masked /proc/sys/fs.
MASK_WRITTEN = "MASK-WRITABLE"

FULL_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
             "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_NET_ADMIN",
             "CAP_SYS_CHROOT", "CAP_SYS_ADMIN", "CAP_MKNOD", "CAP_AUDIT_WRITE", "CAP_SETFCAP"]
# containerd's CRI masks and read-only paths (internal/cri/opts/spec_linux_opts.go).
CRI_MASKED = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
              "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
              "/sys/firmware", "/sys/devices/virtual/powercap"]
CRI_READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
# containerd's default capabilities for a CRI container (oci.defaultUnixCaps).
CRI_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
            "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
            "CAP_AUDIT_WRITE"]

# Every patch there is (the record names a subset per host).
PATCHES = sorted(path.name for path in (REPO / "roles/runc_gvisor/files/patches").glob("*.patch"))


def patch(number: str) -> str:
    (name,) = [name for name in PATCHES if name.startswith(number + "-")]
    return name


def base_spec(case: str, netns: str = POD_NETNS) -> dict:
    """A CRI-shaped container with a busybox rootfs and a process that reports."""
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
            # Own PID, IPC, UTS and mount namespaces; the pod's network namespace joined by path.
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")] + [{"type": "network", "path": netns}],
            "maskedPaths": ["/proc/kcore", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys"],
        },
    }


def spec_for(case: str) -> dict:
    spec = base_spec(case)
    linux = spec["linux"]
    if case == "user":
        linux["namespaces"].append({"type": "user"})
        linux["uidMappings"] = linux["gidMappings"] = [{"containerID": 0, "hostID": 0, "size": 65536}]
    if case == "cgroup":
        linux["namespaces"].append({"type": "cgroup"})
    if case == "capabilities":
        spec["process"]["capabilities"] = {key: FULL_CAPS for key in ("bounding", "effective", "permitted")}
    if case == "cri":
        linux["maskedPaths"], linux["readonlyPaths"] = list(CRI_MASKED), list(CRI_READONLY)
        spec["process"]["capabilities"] = {key: CRI_CAPS for key in ("bounding", "effective", "permitted")}
        linux["cgroupsPath"] = "/k3s-gvisor-matrix/cri"
        linux["resources"] = {"devices": [{"allow": False, "access": "rwm"}], "cpu": {"shares": 2},
                              "pids": {"limit": 64}}
        spec["process"]["oomScoreAdj"] = -998
        spec["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
        spec["annotations"] = {"io.kubernetes.cri.container-type": "sandbox"}
    return spec


def masked_under_readonly_spec() -> dict:
    """B14's shape: /proc/sys/fs masked inside the read-only /proc/sys; the container (root with CRI's
    capabilities, CAP_DAC_OVERRIDE among them) tries to write there."""
    spec = spec_for("cri")
    spec["linux"]["maskedPaths"].append("/proc/sys/fs")
    spec["linux"]["cgroupsPath"] = "/k3s-gvisor-matrix/b14"
    spec["process"]["args"] = ["/bin/sh", "-c", "echo MARK-b14; if (echo x > /proc/sys/fs/k3s-gvisor-matrix) "
                               f"2>/dev/null; then echo {MASK_WRITTEN}; fi"]
    return spec


def pid_join_spec() -> dict:
    """B9's shape: the container joins an existing PID namespace (a pod with shareProcessNamespace)."""
    spec = spec_for("minimal")
    spec["linux"]["namespaces"][0] = {"type": "pid", "path": "/proc/1/ns/pid"}
    return spec


def own_network_namespace_spec() -> dict:
    """B22's shape: a network namespace of the container's own, as `runc spec` and `ctr run` make it."""
    spec = base_spec("own-netns")
    spec["linux"]["namespaces"] = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")]
    spec["process"]["args"] = ["/bin/sh", "-c", "echo MARK-own-netns"]
    return spec


def masked_kernel(spec: dict) -> dict:
    """/proc/sys/kernel masked, which hides cap_last_cap from runc init: B2 where the host has the file."""
    spec = json.loads(json.dumps(spec))
    spec["linux"]["maskedPaths"].append("/proc/sys/kernel")
    return spec


CASES = ["minimal", "network", "user", "cgroup", "capabilities", "cri"]


def make_bundles(node, specs: dict[str, dict]) -> None:
    """Bundles share one read-only busybox rootfs inside the node (written from inside: see docs/NODES.md),
    and one pod network namespace."""
    setup = (f"set -e; rm -rf {WORK}; mkdir -p {WORK}/rootfs/bin {WORK}/rootfs/proc {WORK}/rootfs/dev "
             f"{WORK}/rootfs/sys {WORK}/state; cp /bin/busybox {WORK}/rootfs/bin/; "
             f"for tool in sh echo grep cat; do ln -s busybox {WORK}/rootfs/bin/$tool; done; "
             f"[ -e {POD_NETNS} ] || ip netns add {os.path.basename(POD_NETNS)}")
    result = node.exec("sh", "-c", setup)
    assert result.returncode == 0, result.stderr
    for name, spec in specs.items():
        make_bundle(node, name, spec)


def make_bundle(node, name: str, spec: dict) -> None:
    script = f"rm -rf {WORK}/{name} && mkdir -p {WORK}/{name} && cat > {WORK}/{name}/config.json"
    subprocess.run(["docker", "exec", "-i", node.name, "sh", "-c", script], input=json.dumps(spec),
                   text=True, check=True)


def run_bundle(node, runtime: str, name: str, container_id: str) -> subprocess.CompletedProcess:
    """RUNTIME run in bundle NAME; its state is removed afterwards, whatever happened."""
    result = node.exec(runtime, "--root", f"{WORK}/state", "run", "--bundle", f"{WORK}/{name}", container_id)
    node.exec(runtime, "--root", f"{WORK}/state", "delete", "--force", container_id)
    return result


def error_text(result: subprocess.CompletedProcess) -> str:
    """The runtime's stderr with the quoting of runc's log format undone."""
    return result.stderr.replace('\\"', '"')


# runc create, then SIGURG (which Go's runtime handles with SA_RESTART) to
# the container's init while it waits for start, then start.
SIGNALS_BEFORE_START = """
R="$0 --root {work}/state"
$R create --bundle {work}/minimal --pid-file {work}/$1.pid $1 || exit 90
pid=$(cat {work}/$1.pid)
for i in 1 2 3 4 5 6 7 8 9 10; do kill -URG $pid 2>/dev/null; sleep 0.05; done
$R start $1; code=$?
sleep 1; $R delete --force $1
exit $code
""".format(work=WORK)


def create_signal_start(node, runtime: str, container_id: str) -> subprocess.CompletedProcess:
    return node.exec("sh", "-c", SIGNALS_BEFORE_START, runtime, container_id)


def assert_runc_init_died_of_the_eintr(result: subprocess.CompletedProcess, fifo_words: str) -> None:
    """create succeeded, start failed, and runc init said why (its stderr)."""
    assert result.returncode not in (0, 90), result.stdout + result.stderr
    assert fifo_words in result.stderr and "interrupted system call" in result.stderr, result.stderr


def build_runc(patch_names: list[str]) -> str:
    """runc 1.3.6 with only these patches, built natively by the role's own cached build module."""
    files = REPO / "roles/runc_gvisor/files"
    args = {
        "cache_dir": os.path.expanduser("~/.cache/k3s-gvisor"), "go_toolchain": "go1.27.3",
        "build_runc": True, "patches": [str(files / "patches" / name) for name in patch_names],
        "build_script": str(files / "build-runc.sh"), "runc_source": "module",
        "runc_module_src": str(files / "runc-module"), "runc_version": "1.3.6",
    }
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    proc = subprocess.run([str(VENV_BIN / "ansible"), "localhost", "-m", "k3s_gvisor.node.runc_gvisor_build",
                           "-a", json.dumps(args)], cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    try:
        result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (json.JSONDecodeError, KeyError, IndexError):
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-3000:]) from None
    assert not result.get("failed"), result.get("msg")
    return result["runc"]["path"]


def install_test_runc(node, path: str, dest: str) -> None:
    with open(path, "rb") as binary:
        subprocess.run(["docker", "exec", "-i", node.name, "sh", "-c", f"cat > {dest} && chmod 0755 {dest}"],
                       stdin=binary, check=True)


def profile(node) -> dict:
    return json.loads(node.exec("cat", PROFILE).stdout)


# --- the nodes: one per runtime the probe can choose -----------------------------

# name: (image, extra arguments, runtime path, adaptations the record must give)
RUNTIMES = {
    "crun-sid": ("sid", (), CRUN, ["refuse_masked_under_readonly", "refuse_new_network_namespace",
                                   "refuse_pid_namespace_join"]),
    "patched-sid": ("sid", ("-e", "runc_gvisor_runtime=runc-patched"), PATCHED_RUNC,
                    ["drop_cgroup_namespace", "refuse_pid_namespace_join"]),
    "patched-trixie": ("trixie", (), PATCHED_RUNC, ["drop_cgroup_namespace", "refuse_pid_namespace_join"]),
}
# trixie's node is in the slow tier: in CI, molecule's trixie scenario converges and verifies the patched
# runc there, and patched-sid runs the same binary through this matrix.
SLOW = {"patched-trixie"}


def tiered(names) -> list:
    """NAMES as parameters, those in SLOW marked slow."""
    return [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name for name in names]


RUNTIME_NAMES = tiered(RUNTIMES)
PATCHED_NAMES = tiered(["patched-sid", "patched-trixie"])
SPECS = {**{case: spec_for(case) for case in CASES}, "b14": masked_under_readonly_spec(),
         "pid-join": pid_join_spec(), "own-netns": own_network_namespace_spec()}


@pytest.fixture(scope="module")
def nodes(node_factory):
    """{name: node}, each converged by site.yml's probe and runtime stages, made on first use."""
    made = {}

    def get(name: str):
        if name not in made:
            image, args, _, _ = RUNTIMES[name]
            node = node_factory(f"runtime-{name}", image=image)
            run = node.playbook("site.yml", "--tags", "probe,runtime", *args)
            assert run.returncode == 0, run.stderr + json.dumps(run.stats)
            node.facts = run.task(DECIDE_TASK)["ansible_facts"]["gvisor"]
            node.record = node.facts["decisions"]
            make_bundles(node, SPECS)
            made[name] = node
        return made[name]

    return get


@pytest.mark.parametrize("name", RUNTIME_NAMES)
def test_the_record_and_the_profile_name_the_runtime(nodes, name):
    node = nodes(name)
    _, _, path, adaptations = RUNTIMES[name]
    assert node.record["runtime"]["path"] == path
    assert [a["value"] for a in node.record["wrapper_adaptations"]] == adaptations
    assert profile(node) == {"runc": path, "adaptations": adaptations}
    if path == PATCHED_RUNC:
        assert [p["name"][:4] for p in node.record["runtime"]["patches"]] == ["0002", "0003", "0005"]
        assert "1.3.6+k3sgvisor" in node.exec(PATCHED_RUNC, "--version").stdout
    else:
        assert node.exec("test", "-e", PATCHED_RUNC).returncode != 0


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", RUNTIME_NAMES)
def test_runc_gvisor_runs_every_case(nodes, name, case):
    node = nodes(name)
    result = run_bundle(node, WRAPPER, case, f"ok-{case}")
    assert result.returncode == 0, result.stderr
    assert f"MARK-{case}" in result.stdout
    assert "CapEff:" in result.stdout


@pytest.mark.parametrize("name", RUNTIME_NAMES)
def test_runc_gvisor_survives_signals_before_start(nodes, name):
    """B11: crun's init takes no signals while it waits; the patched runc carries 0005."""
    result = create_signal_start(nodes(name), WRAPPER, "signalled")
    assert result.returncode == 0, result.stderr
    assert "MARK-minimal" in result.stdout


@pytest.mark.parametrize("name", RUNTIME_NAMES)
def test_wrapper_refuses_a_pid_namespace_join_naming_b9(nodes, name):
    result = run_bundle(nodes(name), WRAPPER, "pid-join", "pid-join")
    assert result.returncode != 0
    assert "blocker B9" in result.stderr, result.stderr


def test_wrapper_refuses_a_mask_under_a_readonly_path_naming_b14(nodes):
    """With crun the profile refuses it; the refusal names both paths."""
    node = nodes("crun-sid")
    result = run_bundle(node, WRAPPER, "b14", "b14-wrapped")
    assert result.returncode != 0
    assert "blocker B14" in result.stderr and "/proc/sys/fs" in result.stderr, result.stderr
    assert "MARK-b14" not in result.stdout


def test_crun_alone_leaves_a_mask_under_a_readonly_path_writable(nodes):
    """Why B14 is refused: crun without the wrapper runs the spec, and the container writes into its mask."""
    result = run_bundle(nodes("crun-sid"), CRUN, "b14", "b14-crun")
    assert result.returncode == 0, result.stderr
    assert "MARK-b14" in result.stdout and MASK_WRITTEN in result.stdout, result.stdout


@pytest.mark.parametrize("name", PATCHED_NAMES)
def test_the_patched_runc_keeps_a_mask_under_a_readonly_path_unwritable(nodes, name):
    """Another runtime answers B14: no refusal, and the mask stays read-only."""
    result = run_bundle(nodes(name), WRAPPER, "b14", "b14-runc")
    assert result.returncode == 0, result.stderr
    assert "MARK-b14" in result.stdout and MASK_WRITTEN not in result.stdout, result.stdout


def test_wrapper_refuses_a_network_namespace_of_its_own_naming_b22(nodes):
    """With crun the profile refuses it, saying how to join one instead."""
    result = run_bundle(nodes("crun-sid"), WRAPPER, "own-netns", "own-netns-wrapped")
    assert result.returncode != 0
    assert "blocker B22" in result.stderr and "--net-host" in result.stderr, result.stderr
    assert "MARK-own-netns" not in result.stdout


def test_crun_alone_cannot_bring_up_its_own_network_namespace(nodes):
    """Why B22 is refused: crun without the wrapper fails with the raw ioctl error."""
    result = run_bundle(nodes("crun-sid"), CRUN, "own-netns", "own-netns-crun")
    assert result.returncode != 0
    assert "ioctl SIOCSIFFLAGS: Inappropriate ioctl for device" in error_text(result), result.stderr


@pytest.mark.parametrize("name", PATCHED_NAMES)
def test_the_patched_runc_runs_a_network_namespace_of_its_own(nodes, name):
    """Another runtime answers B22: runc brings the loopback up over netlink, which gVisor serves."""
    result = run_bundle(nodes(name), WRAPPER, "own-netns", "own-netns-runc")
    assert result.returncode == 0, result.stderr
    assert "MARK-own-netns" in result.stdout, result.stdout


def test_crun_alone_runs_a_cgroup_namespace(nodes):
    """Why crun needs no drop_cgroup_namespace: it runs the spec as it is (in the node's cgroup namespace)."""
    result = run_bundle(nodes("crun-sid"), CRUN, "cgroup", "cgroup-crun")
    assert result.returncode == 0, result.stderr
    assert "MARK-cgroup" in result.stdout


@pytest.mark.parametrize("name", PATCHED_NAMES)
def test_patched_runc_without_the_wrapper_hits_b1(nodes, name):
    """B1 is the wrapper's to fix for runc: the patched runc alone refuses the cgroup namespace."""
    node = nodes(name)
    # A bundle of its own: the wrapper rewrote the config.json of the one it ran.
    make_bundle(node, "direct-cgroup", spec_for("cgroup"))
    result = run_bundle(node, PATCHED_RUNC, "direct-cgroup", "direct-cgroup")
    assert result.returncode != 0
    assert B1 in error_text(result)


@pytest.mark.parametrize("case", CASES)
def test_stock_runc_fails_with_b3(nodes, case):
    """sid's runc 1.3.6 checks procfs before it starts anything, so every spec stops there; the one with
    a cgroup namespace stops even earlier, at runc's spec validation, with B1 (crun's profile drops
    nothing, so the bundle still asks for one)."""
    node = nodes("crun-sid")
    result = run_bundle(node, STOCK_RUNC, case, f"stock-{case}")
    assert result.returncode != 0
    assert (B1 if case == "cgroup" else B3) in error_text(result), result.stderr


def test_b8_without_the_maskdir_patch(nodes):
    """With B3 relaxed but not B8, a spec with a masked directory fails with B8's text."""
    node = nodes("patched-sid")
    install_test_runc(node, build_runc([patch("0002")]), f"{WORK}/runc-no-0003")
    result = run_bundle(node, f"{WORK}/runc-no-0003", "minimal", "no-0003")
    assert result.returncode != 0
    assert B8 in error_text(result)


def test_the_shipped_patched_runc_outlives_signals_before_start(nodes):
    """Patch 0005, without the wrapper: runc init survives being signalled while it waits for start."""
    result = create_signal_start(nodes("patched-sid"), PATCHED_RUNC, "signalled-patched")
    assert result.returncode == 0, result.stderr
    assert "MARK-minimal" in result.stdout


def test_without_patch_0005_a_signal_before_start_kills_runc_init(nodes):
    """The same without 0005: runc init dies of the EINTR, as one pod in twenty did under load."""
    node = nodes("patched-sid")
    install_test_runc(node, build_runc([patch("0002"), patch("0003")]), f"{WORK}/runc-no-0005")
    assert_runc_init_died_of_the_eintr(create_signal_start(node, f"{WORK}/runc-no-0005", "signalled-no-0005"),
                                       FIFO_EINTR)


@pytest.mark.slow
def test_trixies_stock_runc_dies_of_a_signal_before_start(nodes):
    """Not only runc 1.3: trixie's runc 1.1.15 dies the same way, which is why the record
    passes it over for the patched runc there (its probe: signal_before_start fails)."""
    node = nodes("patched-trixie")
    assert "interrupted system call" in node.facts["runtime_check"]["runc"]["signal_before_start"]["error"]
    # runc 1.1.15 opens the FIFO directly: "open exec fifo /proc/self/fd/5: interrupted system call".
    assert_runc_init_died_of_the_eintr(create_signal_start(node, STOCK_RUNC, "signalled-trixie"), "open exec fifo")


# --- a plain kernel ----------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_runtime(node_factory, tmp_path_factory):
    """A plain-kernel container (docker's runc) where runtimes can run nested; probed, runtime installed, summarised."""
    node = node_factory("runtime-plain", runtime="runc")
    node.summary = tmp_path_factory.mktemp("summary") / "plain.json"
    node.add_host_vars(verify_summary_path=str(node.summary))
    # Docker mounts /sys and the cgroup tree read-only in a container that is
    # not --privileged; nested runtimes need them writable.
    remount = ("mount -o remount,rw /sys && for d in /sys/fs/cgroup /sys/fs/cgroup/*; "
               "do mount -o remount,rw $d 2>/dev/null || true; done")
    assert node.exec("sh", "-c", remount).returncode == 0
    run = node.playbook("site.yml", "--tags", "probe,runtime,summary")
    assert run.returncode == 0, run.stderr + json.dumps(run.stats)
    node.record = run.task(DECIDE_TASK)["ansible_facts"]["gvisor"]["decisions"]
    make_bundles(node, {"minimal": spec_for("minimal"), "minimal-masked": masked_kernel(spec_for("minimal"))})
    return node, run


def test_plain_host_gets_nothing_relaxed(plain_runtime):
    node, run = plain_runtime
    record = node.record
    assert record["runtime"]["value"] in ("crun", "runc") and record["runtime"]["patches"] == []
    assert record["wrapper_adaptations"] == [] and record["relaxations"] == []
    assert profile(node) == {"runc": record["runtime"]["path"], "adaptations": []}
    assert node.exec("test", "-e", PATCHED_RUNC).returncode != 0
    assert "\n  relaxations: none" in run.task("Report what the host can do and what it gets")["msg"]
    # Blockers it may have (B7: overlay in docker's overlay) are answered without relaxing anything.
    assert "relaxations: none (nothing on this host is relaxed)" in run.task("Print the run summary")["msg"]
    (host,) = json.loads(node.summary.read_text())["hosts"]
    assert host["relaxations"] == [] and host["patches"] == [] and host["adaptations"] == [], host
    assert host["runtime"] == record["runtime"]["value"] and host["runtime_installed"] is True, host
    result = run_bundle(node, WRAPPER, "minimal", "plain-wrapper")
    assert result.returncode == 0 and "MARK-minimal" in result.stdout, result.stderr


def test_b2_stock_runc_on_a_plain_kernel(plain_runtime):
    node, _ = plain_runtime
    result = run_bundle(node, STOCK_RUNC, "minimal-masked", "stock-masked")
    assert result.returncode != 0
    assert B2 in error_text(result)


def test_b2_patched_runc_on_a_plain_kernel(plain_runtime):
    node, _ = plain_runtime
    install_test_runc(node, build_runc(PATCHES), f"{WORK}/runc-patched")
    result = run_bundle(node, f"{WORK}/runc-patched", "minimal-masked", "patched-masked")
    assert result.returncode == 0, result.stderr
    assert "MARK-minimal" in result.stdout
