# SPDX-License-Identifier: Apache-2.0
"""containerd itself reads what the engine role writes as its config.

For each node image (sid: containerd 2.1.9; trixie: 1.7.24; bookworm: 1.6.20), the
role's template is rendered for that containerd with the settings a record
gives (tests/containerd_template.py renders it as the role does), written
into a throwaway container started with plain runc, and read back with
`containerd --config FILE config dump`. The dump is containerd's view after
its own decoding, so the assertions check the keys containerd actually sees.
A key containerd does not know would be ignored with a warning on containerd
2.x; none may appear.

No gVisor needed: plain runc containers, about 10 of them, a few seconds.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from containerd_template import ROLE_VARS, SANDBOX_IMAGE, WRAPPER, cri_view, render

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "containerd"
IMAGES = {"sid": "k3s-gvisor/node:sid", "trixie": "k3s-gvisor/node:trixie", "bookworm": "k3s-gvisor/node:bookworm"}
# What the field notes and the probe saw in these images.
EXPECTED_CONTAINERD = {"sid": (2, 1, 9), "trixie": (1, 7, 24), "bookworm": (1, 6, 20)}
SEPARATOR = "\n=====8<=====k3s-gvisor=====8<=====\n"
ABSENT = "k3s-gvisor: no /etc/containerd/config.toml"


def image_present(image: str) -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0


def docker_sh(image: str, script: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", "run", "--rm", "-i", "--runtime=runc", "--network=none", image, "sh", "-c", script],
        input=stdin, capture_output=True, text=True, timeout=120,
    )


def config_dump(image: str, text: str) -> subprocess.CompletedProcess:
    return docker_sh(image, "cat > /tmp/c.toml && containerd --config /tmp/c.toml config dump", text)


@pytest.fixture(scope="module", params=sorted(IMAGES))
def node_image(request):
    """(name, image, containerd release, shipped config or None, `containerd config default`)."""
    name = request.param
    image = IMAGES[name]
    if not image_present(image):
        pytest.skip(f"no docker image {image} here (scripts/gvisor-node builds it)")
    sep = SEPARATOR.strip("\n")
    proc = docker_sh(
        image,
        f"containerd --version; echo '{sep}'; "
        f"cat /etc/containerd/config.toml 2>/dev/null || printf '%s\\n' '{ABSENT}'; echo; echo '{sep}'; "
        "containerd config default",
    )
    assert proc.returncode == 0, proc.stderr
    version_line, shipped, default = proc.stdout.split(SEPARATOR)
    # "containerd github.com/containerd/containerd/v2 2.1.9+unknown " / "... 1.7.24~ds1 1.7.24~ds1-6+deb13u1",
    # read with the role's own pattern.
    release = tuple(int(part) for part in re.search(ROLE_VARS["engine_containerd_release_pattern"], version_line).group(0).split("."))
    assert release == EXPECTED_CONTAINERD[name]
    shipped = None if shipped.strip() == ABSENT else shipped[:-1]  # the `echo` after cat
    return name, image, release, shipped, default



def dump(image: str, text: str) -> dict:
    proc = config_dump(image, text)
    assert proc.returncode == 0, proc.stderr
    assert "unknown key" not in proc.stderr.lower(), proc.stderr
    return tomllib.loads(proc.stdout)


def test_containerd_reads_the_records_settings(node_image):
    name, image, release, _shipped, _default = node_image
    seen = dump(image, render(release))
    assert seen["version"] == (3 if release[0] == 2 else 2)
    view = cri_view(seen)
    assert view["default"] == "runc-gvisor"
    ours = view["runtimes"]["runc-gvisor"]
    assert ours["runtime_type"] == "io.containerd.runc.v2"
    assert ours["options"]["BinaryName"] == WRAPPER
    assert ours["options"].get("NoNewKeyring", False) is False
    assert ours["options"]["SystemdCgroup"] is False
    assert (view["snapshotter"], view["sandbox"], view["ports"], view["icmp"]) == ("native", SANDBOX_IMAGE, False, False)
    # runc, containerd's built-in runtime, is still there (containerd 1.x only has it because the file names it).
    assert view["runtimes"]["runc"]["runtime_type"] == "io.containerd.runc.v2"
    # Where Debian's file puts the opt plugin's directory, not containerd's /opt/containerd.
    assert seen["plugins"]["io.containerd.internal.v1.opt"]["path"] == ROLE_VARS["engine_packaged_opt_dir"]


def test_no_new_keyring_and_extra_runtimes_reach_containerd(node_image):
    """B6's and B15's answer (a relaxation) reaches every runtime, the extra handlers included."""
    _name, image, release, _shipped, _default = node_image
    extra = [{"name": "runc-stock", "binary": "/usr/bin/runc"}]
    view = cri_view(dump(image, render(release, no_new_keyring=True, extra_runtimes=extra)))
    assert view["runtimes"]["runc-gvisor"]["options"]["NoNewKeyring"] is True
    assert view["runtimes"]["runc-stock"]["options"]["BinaryName"] == "/usr/bin/runc"
    assert view["runtimes"]["runc-stock"]["options"]["NoNewKeyring"] is True
    assert view["default"] == "runc-gvisor"


def test_without_a_pod_network_the_packaged_cni_directories_stay(node_image):
    """Where the role writes no pod network it keeps what Debian's file set (the role's vars say which)."""
    name, image, release, shipped, _default = node_image
    if shipped is None:
        pytest.skip(f"{image} ships no /etc/containerd/config.toml")
    packaged = cri_view(dump(image, shipped))["cni"]
    dirs = {"cni_conf_dir": ROLE_VARS["engine_packaged_cni_conf_dir"], "cni_bin_dir": ROLE_VARS["engine_packaged_cni_bin_dir"]}
    ours = cri_view(dump(image, render(release, dirs)))["cni"]
    assert ours["conf_dir"] == packaged["conf_dir"]
    assert (ours.get("bin_dirs") or [ours["bin_dir"]])[0] == (packaged.get("bin_dirs") or [packaged["bin_dir"]])[0]


def test_cni_directories_land_where_containerd_reads_them(node_image):
    _name, image, release, _shipped, _default = node_image
    seen = cri_view(dump(image, render(release, {"cni_conf_dir": "/etc/k3s-cni/net.d", "cni_bin_dir": "/opt/k3s-cni/bin"})))["cni"]
    if release[:2] >= (2, 1):
        assert seen["bin_dirs"] == ["/opt/k3s-cni/bin"] and seen["bin_dir"] == ""
    else:
        assert seen["bin_dir"] == "/opt/k3s-cni/bin"
    assert seen["conf_dir"] == "/etc/k3s-cni/net.d"


def test_config_dump_rejects_what_is_broken(node_image):
    """The checks above can fail: containerd refuses a wrong type and bad TOML, and flags unknown keys."""
    _name, image, release, _shipped, _default = node_image
    good = render(release)
    assert "enable_unprivileged_ports = false" in good
    proc = config_dump(image, good.replace("enable_unprivileged_ports = false", 'enable_unprivileged_ports = "false"'))
    assert proc.returncode != 0 and "bool" in proc.stderr.lower(), proc.stderr
    proc = config_dump(image, good.replace("]", "", 1))  # the first table header left open
    assert proc.returncode != 0, proc.stderr
    if release[0] == 2:
        misspelled = good.replace("enable_unprivileged_icmp = false", "enable_unprivileged_icmp = false\n  enable_unprivileged_portz = false")
        proc = config_dump(image, misspelled)
        assert "unknown key" in proc.stderr.lower() and "enable_unprivileged_portz" in proc.stderr, proc.stderr


def test_the_schema_follows_the_release(node_image):
    """containerd 1.7 refuses version 3 and 1.6 silently ignores its tables: the schema must follow the release."""
    _name, image, release, _shipped, _default = node_image
    if release[0] != 1:
        pytest.skip("containerd 2.x reads version 3")
    proc = config_dump(image, render((2, 1, 9)))
    if release[:2] >= (1, 7):
        assert proc.returncode != 0 and "unsupported config version `3`" in proc.stderr, proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        cri = tomllib.loads(proc.stdout)["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]
        assert cri["default_runtime_name"] == "runc" and "runc-gvisor" not in cri["runtimes"]
