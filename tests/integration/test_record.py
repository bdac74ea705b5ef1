# SPDX-License-Identifier: Apache-2.0
"""The decision record is decided once and kept on the host (module
gvisor_decide): a host whose crun comes from apt converges twice to the same
record, wrapper profile and summary, and the first run already refuses what
crun's own check showed (B14). Before the record was kept, the first converge
wrote the profile [drop_cgroup_namespace, refuse_pid_namespace_join] and the
second [refuse_masked_under_readonly, refuse_pid_namespace_join].

The node (sid-dev-nocrun, offline like every node) gets its crun from apt as
an offline sandbox does: from a local repository in its sources. That
repository holds Debian sid's crun 1.28-1 and the two libraries it needs
beyond the image, repacked from the sid-dev image where apt installed them
(with no mirror reachable there is nothing to download them from).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from site_runs import DECIDE_TASK, PAUSE, assert_verified, changed_tasks

RECORD = "/etc/k3s-gvisor/record.json"
PROFILE = "/etc/runc-gvisor/profile.json"
REPOSITORY = "/var/local/k3s-gvisor-apt"
PACKAGES = ("crun", "libblake3-0", "libjson-c5")
# Each package as dpkg installed it, back into a .deb (what dpkg-repack does),
# and the flat repository's index, in a throwaway runc container of the image.
REPACK = r"""set -eu
for pkg in "$@"; do
  root=/tmp/repack/$pkg
  mkdir -p "$root/DEBIAN"
  dpkg-query -L "$pkg" | while read -r path; do
    if [ -L "$path" ] || [ -f "$path" ]; then cp -a --parents "$path" "$root"; fi
  done
  dpkg-query -s "$pkg" | grep -v -E '^(Status|Conffiles):' >"$root/DEBIAN/control"
  dpkg-deb --root-owner-group --build "$root" /out/ >/dev/null
done
python3 - <<'EOF'
import hashlib, pathlib, subprocess
entries = []
for deb in sorted(pathlib.Path("/out").glob("*.deb")):
    control = subprocess.run(["dpkg-deb", "-f", str(deb)], check=True, capture_output=True, text=True).stdout
    data = deb.read_bytes()
    entries.append(control.rstrip("\n") + f"\nFilename: ./{deb.name}\nSize: {len(data)}\n"
                   f"SHA256: {hashlib.sha256(data).hexdigest()}\n")
pathlib.Path("/out/Packages").write_text("\n".join(entries))
EOF
"""


@pytest.fixture(scope="module")
def crun_repository(tmp_path_factory):
    out = tmp_path_factory.mktemp("apt")
    subprocess.run(["docker", "run", "--rm", "--runtime=runc", "--network=none", "-v", f"{out}:/out",
                    "k3s-gvisor/node:sid-dev", "bash", "-c", REPACK, "repack", *PACKAGES],
                   check=True, capture_output=True, timeout=300)
    return out


def converge(node):
    run = node.playbook("site.yml")
    assert_verified(run)
    return run


def kept(node) -> tuple[dict, dict]:
    record = node.exec("cat", RECORD)
    profile = node.exec("cat", PROFILE)
    assert record.returncode == 0 and profile.returncode == 0, record.stderr + profile.stderr
    return json.loads(record.stdout), json.loads(profile.stdout)


@pytest.fixture(scope="module")
def twice(node_factory, crun_repository, tmp_path_factory):
    node = node_factory("record-apt-crun", image="sid-dev-nocrun")
    assert node.exec("sh", "-c", "command -v crun").returncode != 0
    node.ship({path.name: str(path) for path in crun_repository.iterdir()}, REPOSITORY)
    # The sandbox's apt: the local repository alone (its mirror is unreachable offline).
    sources = node.exec("sh", "-c", f"echo 'deb [trusted=yes] file:{REPOSITORY} ./' >/etc/apt/sources.list"
                                    " && apt-get update -q")
    assert sources.returncode == 0, sources.stdout + sources.stderr
    summaries = tmp_path_factory.mktemp("summaries")
    node.add_host_vars(engine_sandbox_image=PAUSE, verify_summary_path=str(summaries / "first.json"))
    first = converge(node)
    first_kept = kept(node)
    first_summary = json.loads((summaries / "first.json").read_text())
    node.add_host_vars(verify_summary_path=str(summaries / "second.json"))
    second = converge(node)
    return node, (first, first_kept, first_summary), (second, kept(node),
                                                      json.loads((summaries / "second.json").read_text()))


def test_the_first_run_installs_crun_from_apt_and_decides_again_with_its_check(twice):
    node, (first, (record, profile), _), _ = twice
    probe = first.task("Probe the host")["ansible_facts"]["gvisor"]
    assert not probe["crun"]["found"] and probe["crun_from_apt"]["reachable"], probe["crun_from_apt"]
    assert probe["crun_from_apt"]["candidate"] == "1.28-1"
    assert node.exec("crun", "--version").returncode == 0
    # The runtime stage's decision, with crun's own check: the one kept.
    decisions = first.task(DECIDE_TASK)["ansible_facts"]["gvisor"]["decisions"]
    assert decisions == record["decisions"]
    assert record["facts"]["runtime_check"]["crun"]["cri"]["works"] is True
    assert decisions["runtime"]["value"] == "crun" and decisions["runtime"]["path"] == "/usr/bin/crun"
    assert profile == {"runc": "/usr/bin/crun", "adaptations": ["refuse_masked_under_readonly",
                                                                "refuse_new_network_namespace",
                                                                "refuse_pid_namespace_join"]}
    installed = json.loads(node.exec("cat", "/etc/runc-gvisor/installed.json").stdout)
    assert installed["packages"] == ["crun"]


def test_the_second_run_decides_from_the_kept_record_and_changes_nothing(twice):
    _, (_, first_kept, first_summary), (second, second_kept, second_summary) = twice
    assert second_kept == first_kept
    assert second.task(DECIDE_TASK)["decided_from"] == "record"
    assert not second.task(DECIDE_TASK)["changed"]
    for key in ("runtime", "runtime_path", "patches", "adaptations", "relaxations", "blockers"):
        assert second_summary["hosts"][0][key] == first_summary["hosts"][0][key], key
    assert [task for task in changed_tasks(second) if "record" in task.lower() or "profile" in task.lower()] == []


def test_reset_removes_the_record_and_the_crun_it_installed(twice):
    node, _, _ = twice
    run = node.playbook("playbooks/reset.yml")
    assert run.returncode == 0, run.stderr
    assert node.exec("test", "-e", RECORD).returncode == 1
    assert node.exec("test", "-e", "/etc/k3s-gvisor").returncode == 1
    assert node.exec("sh", "-c", "command -v crun").returncode != 0
