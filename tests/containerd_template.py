# SPDX-License-Identifier: Apache-2.0
"""Renders the engine role's containerd config template as the role does
(Ansible's template module: Jinja with trim_blocks), for the unit tests and
for the tests that have a real containerd read it. The template uses plain
Jinja only, so no Ansible is needed here; the role's own converges
(test_engine, Molecule) render it through Ansible."""

from __future__ import annotations

from pathlib import Path

import jinja2
import yaml

REPO = Path(__file__).resolve().parents[1]
ROLE = REPO / "roles" / "engine"
ROLE_VARS = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
WRAPPER = "/usr/local/bin/runc-gvisor"
SANDBOX_IMAGE = "localhost/k3s-gvisor/pause:1"

# What a gVisor 20240729 node's record gives the template: the native
# snapshotter (B7), unprivileged ports and ICMP off (B5), the local pause image,
# each container with its own keyring, the pod network's directories.
GVISOR = {
    "snapshotter": "native",
    "unprivileged_ports_icmp": False,
    "sandbox_image": SANDBOX_IMAGE,
    "cni_conf_dir": "/etc/cni/net.d",
    "cni_bin_dir": "/usr/local/lib/k3s-gvisor/cni",
    "opt_dir": ROLE_VARS["engine_packaged_opt_dir"],
}


def render(release: tuple, cri: dict | None = None, no_new_keyring: bool = False, extra_runtimes=()) -> str:
    """The file the role writes for a containerd release with these record settings."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLE / "templates"), trim_blocks=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    runtimes = [{"name": "runc-gvisor", "binary": WRAPPER}, *extra_runtimes]
    return env.get_template("containerd-config.toml.j2").render(
        _engine_containerd={"release": list(release), "schema": 3 if release[0] >= 2 else 2,
                            "cni_bin_dirs": tuple(release[:2]) >= (2, 1)},
        _engine_cri=dict(GVISOR, **(cri or {})),
        _engine_containerd_runtimes=[dict(runtime, no_new_keyring=no_new_keyring) for runtime in runtimes],
        engine_runtime_name="runc-gvisor",
        engine_written_header=ROLE_VARS["engine_written_header"],
        engine_config_original_suffix=ROLE_VARS["engine_config_original_suffix"],
    )


def cri_view(config: dict) -> dict:
    """The settings that matter here, from a config or a `containerd config dump` of either schema."""
    plugins = config["plugins"]
    if config["version"] == 3:
        runtime = plugins["io.containerd.cri.v1.runtime"]
        images = plugins["io.containerd.cri.v1.images"]
        return {
            "default": runtime["containerd"]["default_runtime_name"],
            "runtimes": runtime["containerd"]["runtimes"],
            "snapshotter": images["snapshotter"],
            "sandbox": images.get("pinned_images", {}).get("sandbox"),
            "ports": runtime.get("enable_unprivileged_ports"),
            "icmp": runtime.get("enable_unprivileged_icmp"),
            "cni": runtime["cni"],
        }
    cri = plugins["io.containerd.grpc.v1.cri"]
    return {
        "default": cri["containerd"]["default_runtime_name"],
        "runtimes": cri["containerd"]["runtimes"],
        "snapshotter": cri["containerd"]["snapshotter"],
        "sandbox": cri.get("sandbox_image"),
        "ports": cri.get("enable_unprivileged_ports"),
        "icmp": cri.get("enable_unprivileged_icmp"),
        "cni": cri["cni"],
    }
