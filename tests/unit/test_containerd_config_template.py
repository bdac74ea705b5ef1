# SPDX-License-Identifier: Apache-2.0
"""The engine's containerd config template, rendered as the role renders it
and read back as TOML. tests/integration/test_containerd_config_dump.py has
real containerd 1.7 and 2.1 read the same files."""

from __future__ import annotations

import tomllib

import pytest
from containerd_template import ROLE_VARS, SANDBOX_IMAGE, WRAPPER, cri_view, render

RELEASES = [(1, 6, 20), (1, 7, 24), (2, 0, 5), (2, 1, 9)]


@pytest.mark.parametrize("release", RELEASES, ids=lambda r: ".".join(map(str, r)))
def test_the_records_settings_in_the_schema_of_each_release(release):
    text = render(release)
    config = tomllib.loads(text)
    assert text.splitlines()[0] == ROLE_VARS["engine_written_header"]
    assert config["version"] == (3 if release[0] == 2 else 2)
    view = cri_view(config)
    assert view["default"] == "runc-gvisor"
    ours = view["runtimes"]["runc-gvisor"]
    assert ours == {"runtime_type": "io.containerd.runc.v2",
                    "options": {"BinaryName": WRAPPER, "NoNewKeyring": False, "SystemdCgroup": False}}
    assert (view["snapshotter"], view["sandbox"], view["ports"], view["icmp"]) == ("native", SANDBOX_IMAGE, False, False)
    # containerd 1.x replaces its runtimes with the file's table: runc must be in it.
    assert ("runc" in view["runtimes"]) == (release[0] == 1)


@pytest.mark.parametrize("release, cni", [
    ((1, 7, 24), {"bin_dir": "/opt/cni", "conf_dir": "/etc/cni/x"}),
    ((2, 0, 5), {"bin_dir": "/opt/cni", "conf_dir": "/etc/cni/x"}),
    # containerd 2.1 replaced bin_dir with bin_dirs and refuses both set.
    ((2, 1, 9), {"bin_dirs": ["/opt/cni"], "conf_dir": "/etc/cni/x"}),
])
def test_cni_directories_in_the_key_each_release_reads(release, cni):
    view = cri_view(tomllib.loads(render(release, {"cni_conf_dir": "/etc/cni/x", "cni_bin_dir": "/opt/cni"})))
    assert view["cni"] == cni


@pytest.mark.parametrize("release", RELEASES, ids=lambda r: ".".join(map(str, r)))
def test_settings_the_record_leaves_are_left_to_containerd(release):
    view = cri_view(tomllib.loads(render(release, {"unprivileged_ports_icmp": None, "sandbox_image": ""})))
    assert (view["ports"], view["icmp"], view["sandbox"]) == (None, None, None)


@pytest.mark.parametrize("release", RELEASES, ids=lambda r: ".".join(map(str, r)))
def test_keyring_relaxation_and_extra_runtimes(release):
    extra = [{"name": "runc.stock", "binary": "/usr/bin/runc"}]
    view = cri_view(tomllib.loads(render(release, no_new_keyring=True, extra_runtimes=extra)))
    assert view["runtimes"]["runc-gvisor"]["options"]["NoNewKeyring"] is True
    # A dotted name is one quoted key, not a nested table.
    assert view["runtimes"]["runc.stock"]["options"] == {"BinaryName": "/usr/bin/runc", "NoNewKeyring": True,
                                                        "SystemdCgroup": False}
    assert view["default"] == "runc-gvisor"


def test_values_are_quoted_not_spliced():
    """A value with quotes or a newline stays one TOML string."""
    image = 'evil"\n[plugins]\nx = "y'
    view = cri_view(tomllib.loads(render((2, 1, 9), {"sandbox_image": image})))
    assert view["sandbox"] == image
