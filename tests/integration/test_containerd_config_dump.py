# SPDX-License-Identifier: Apache-2.0
"""containerd itself reads what containerd_config writes.

For each node image (sid: containerd 2.1.9; trixie: containerd 1.7.24), the
image's own /etc/containerd/config.toml, its `containerd config default`, an
empty file and the hand-edited fixtures are merged with the module's logic
(the pure function the action plugin runs on the controller, called here),
written into a throwaway container started with plain runc, and read back
with `containerd --config FILE config dump`.
The dump is containerd's view after its own decoding (and, on containerd 2.x,
after converting a version 2 file to version 3), so the assertions check the
keys containerd actually sees. A key containerd does not know would be
ignored with a warning on containerd 2.x; none may appear.

No gVisor needed: plain runc containers, about 15 of them, a few seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "containerd"

from ansible_collections.k3s_gvisor.node.plugins.module_utils import containerd_toml as ct  # noqa: E402

IMAGES = {"sid": "k3s-gvisor/node:sid", "trixie": "k3s-gvisor/node:trixie"}
# What the field notes and the probe saw in these images.
EXPECTED_CONTAINERD = {"sid": "2.1.9", "trixie": "1.7.24"}
SANDBOX_IMAGE = "k3s-gvisor/pause:3.10"
# What the engine sets on a gVisor 20240729 node from its decision record: the
# native snapshotter (B7), unprivileged ports and ICMP off (B5), its own pause
# image. Its keyring setting is a record's without B6 or B15 (each container
# keeps its own session keyring); KEYRING below is the other.
GVISOR = ct.GvisorSettings(
    snapshotter="native",
    unprivileged_ports_icmp=False,
    sandbox_image=SANDBOX_IMAGE,
)
# A host whose record names B6 or B15 (gVisor 20221219 fails the join; 20240729 keeps every keyring).
KEYRING = ct.GvisorSettings(snapshotter="native", unprivileged_ports_icmp=False, no_new_keyring=True)
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
    """(name, image, containerd version, shipped config or None, `containerd config default`)."""
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
    # "containerd github.com/containerd/containerd/v2 2.1.9+unknown " / "... 1.7.24~ds1 1.7.24~ds1-6+deb13u1"
    version = version_line.split()[2]
    assert ct.parse_containerd_version(version)[:3] == ct.parse_containerd_version(EXPECTED_CONTAINERD[name])
    shipped = None if shipped.strip() == ABSENT else shipped[:-1]  # the `echo` after cat
    return name, image, version, shipped, default


def sources(name: str, shipped: str | None, default: str) -> dict:
    found = {
        "shipped": shipped if shipped is not None else "",
        "default": default,
        "empty": "",
        "hand-edited-v2": (FIXTURES / "hand-edited-v2.toml").read_text(),
    }
    if name == "sid":
        found["hand-edited-v3"] = (FIXTURES / "hand-edited-v3.toml").read_text()
    return found


def gvisor_view(dump: dict) -> dict:
    """The settings that matter here, from a dump of either schema."""
    plugins = dump["plugins"]
    if dump["version"] == 3:
        runtime = plugins["io.containerd.cri.v1.runtime"]
        images = plugins["io.containerd.cri.v1.images"]
        return {
            "default": runtime["containerd"]["default_runtime_name"],
            "runtimes": runtime["containerd"]["runtimes"],
            "snapshotter": images["snapshotter"],
            "sandbox": images["pinned_images"]["sandbox"],
            "ports": runtime["enable_unprivileged_ports"],
            "icmp": runtime["enable_unprivileged_icmp"],
        }
    cri = plugins["io.containerd.grpc.v1.cri"]
    return {
        "default": cri["containerd"]["default_runtime_name"],
        "runtimes": cri["containerd"]["runtimes"],
        "snapshotter": cri["containerd"]["snapshotter"],
        "sandbox": cri["sandbox_image"],
        "ports": cri["enable_unprivileged_ports"],
        "icmp": cri["enable_unprivileged_icmp"],
    }


def test_containerd_reads_every_merged_config(node_image):
    name, image, version, shipped, default = node_image
    for source, text in sources(name, shipped, default).items():
        result = ct.merge_containerd_config(text, GVISOR, version)
        proc = config_dump(image, result.text)
        assert proc.returncode == 0, f"{name}/{source}: {proc.stderr}"
        assert "unknown key" not in proc.stderr.lower(), f"{name}/{source}: {proc.stderr}"
        dump = tomllib.loads(proc.stdout)
        # containerd 2.x converts a version 2 file on load and dumps version 3.
        assert dump["version"] == (3 if version.startswith("2.") else 2), source
        view = gvisor_view(dump)
        assert view["default"] == "runc-gvisor", source
        ours = view["runtimes"]["runc-gvisor"]
        assert ours["runtime_type"] == "io.containerd.runc.v2", source
        assert ours["options"]["BinaryName"] == "/usr/local/bin/runc-gvisor", source
        assert ours["options"].get("NoNewKeyring", False) is False, source
        assert ours["options"]["SystemdCgroup"] is False, source
        assert view["snapshotter"] == "native", source
        assert view["ports"] is False and view["icmp"] is False, source
        assert view["sandbox"] == SANDBOX_IMAGE, source
        # The stock runc runtime is still there, as it was.
        assert view["runtimes"]["runc"]["runtime_type"] == "io.containerd.runc.v2", source


def test_no_new_keyring_only_where_the_record_asks_for_it(node_image):
    """B6's and B15's answer (a relaxation) reaches containerd, and is taken back when the record no longer names it."""
    name, image, version, _shipped, default = node_image
    relaxed = ct.merge_containerd_config(default, KEYRING, version).text
    view = gvisor_view(tomllib.loads(config_dump(image, relaxed).stdout))
    assert view["runtimes"]["runc-gvisor"]["options"]["NoNewKeyring"] is True
    kept = ct.merge_containerd_config(relaxed, GVISOR, version).text
    view = gvisor_view(tomllib.loads(config_dump(image, kept).stdout))
    assert view["runtimes"]["runc-gvisor"]["options"].get("NoNewKeyring", False) is False


def test_the_shipped_config_keeps_its_own_settings(node_image):
    """Debian's file sets the CNI directories and the opt plugin's path: still so after the merge."""
    name, image, version, shipped, _default = node_image
    if shipped is None:
        pytest.skip(f"{image} ships no /etc/containerd/config.toml")
    merged = ct.merge_containerd_config(shipped, GVISOR, version)
    assert merged.schema_version == tomllib.loads(shipped)["version"]  # the file's version wins
    dump = tomllib.loads(config_dump(image, merged.text).stdout)
    assert dump["plugins"]["io.containerd.internal.v1.opt"]["path"] == "/var/lib/containerd/opt"
    if dump["version"] == 3:
        cni = dump["plugins"]["io.containerd.cri.v1.runtime"]["cni"]
        assert cni["bin_dirs"] == ["/usr/lib/cni"] and cni["conf_dir"] == "/etc/cni/net.d"
    else:
        cni = dump["plugins"]["io.containerd.grpc.v1.cri"]["cni"]
        assert cni["bin_dir"] == "/usr/lib/cni" and cni["conf_dir"] == "/etc/cni/net.d"


def test_cni_directories_land_where_containerd_reads_them(node_image):
    name, image, version, _shipped, default = node_image
    cni = ct.GvisorSettings(cni_conf_dir="/etc/k3s-cni/net.d", cni_bin_dir="/opt/k3s-cni/bin")
    dump = tomllib.loads(config_dump(image, ct.merge_containerd_config(default, cni, version).text).stdout)
    if dump["version"] == 3:
        seen = dump["plugins"]["io.containerd.cri.v1.runtime"]["cni"]
        assert seen["bin_dirs"] == ["/opt/k3s-cni/bin"] and seen["bin_dir"] == ""
    else:
        seen = dump["plugins"]["io.containerd.grpc.v1.cri"]["cni"]
        assert seen["bin_dir"] == "/opt/k3s-cni/bin"
    assert seen["conf_dir"] == "/etc/k3s-cni/net.d"


def test_config_dump_rejects_what_is_broken(node_image):
    """The checks above can fail: containerd refuses a wrong type and bad TOML, and flags unknown keys."""
    name, image, version, _shipped, default = node_image
    good = ct.merge_containerd_config(default, GVISOR, version).text
    assert "enable_unprivileged_ports = false" in good
    wrong_type = good.replace("enable_unprivileged_ports = false", 'enable_unprivileged_ports = "false"')
    proc = config_dump(image, wrong_type)
    assert proc.returncode != 0 and "bool" in proc.stderr.lower(), proc.stderr
    proc = config_dump(image, good.replace("[plugins]", "[plugins", 1))
    assert proc.returncode != 0, proc.stderr
    if version.startswith("2."):
        misspelled = good.replace("enable_unprivileged_icmp = false", "enable_unprivileged_icmp = false\n    enable_unprivileged_portz = false")
        proc = config_dump(image, misspelled)
        assert "unknown key" in proc.stderr.lower() and "enable_unprivileged_portz" in proc.stderr, proc.stderr


def test_version_3_refused_by_containerd_1_7_and_by_the_module(node_image):
    name, image, version, _shipped, _default = node_image
    if not version.startswith("1."):
        pytest.skip("containerd 2.x reads version 3")
    v3 = (FIXTURES / "containerd-2.1.9-config-default.toml").read_text()
    proc = config_dump(image, v3)
    assert proc.returncode != 0 and "unsupported config version `3`" in proc.stderr, proc.stderr
    with pytest.raises(ct.SchemaError, match="cannot read"):
        ct.merge_containerd_config(v3, GVISOR, version)


def test_runtime_for_a_runtime_class_only(node_image):
    """default_runtime=false: runc stays the default and still exists (containerd 1.x would drop it)."""
    name, image, version, shipped, _default = node_image
    only_class = ct.GvisorSettings(default_runtime=False)
    for source, text in (("shipped", shipped or ""), ("empty", "")):
        proc = config_dump(image, ct.merge_containerd_config(text, only_class, version).text)
        assert proc.returncode == 0, proc.stderr
        view = gvisor_view(tomllib.loads(proc.stdout))
        assert view["default"] == "runc", source
        assert view["runtimes"]["runc"]["runtime_type"] == "io.containerd.runc.v2", source
        assert view["runtimes"]["runc-gvisor"]["options"]["BinaryName"] == "/usr/local/bin/runc-gvisor", source
