# SPDX-License-Identifier: Apache-2.0
"""Unit tests for plugins/module_utils/containerd_toml.py (and its module's glue).

Fed with real files from tests/fixtures/containerd/: the output of
`containerd config default` of containerd 2.1.9 (version 3) and 1.7.24
(version 2), the /etc/containerd/config.toml Debian ships with both, and two
hand-edited configs full of comments. Results are checked by parsing them with
the standard library's tomllib (not with tomlkit, which wrote them), and
comments are checked on the text.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import os
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "containerd"

from tree_collection import COLLECTION_ROOT  # noqa: E402
from ansible_collections.k3s_gvisor.node.plugins.module_utils import containerd_toml as ct  # noqa: E402

V3_DEFAULT = (FIXTURES / "containerd-2.1.9-config-default.toml").read_text()
V2_DEFAULT = (FIXTURES / "containerd-1.7.24-config-default.toml").read_text()
DEBIAN = (FIXTURES / "debian-etc-containerd-config.toml").read_text()
HAND_V2 = (FIXTURES / "hand-edited-v2.toml").read_text()
HAND_V3 = (FIXTURES / "hand-edited-v3.toml").read_text()

# What a gVisor node with B5 and B7 gets.
GVISOR = ct.GvisorSettings(
    no_new_keyring=True,
    snapshotter="native",
    unprivileged_ports_icmp=False,
    sandbox_image="k3s-gvisor/pause:3.10",
    cni_conf_dir="/var/lib/rancher/k3s/agent/etc/cni/net.d",
    cni_bin_dir="/var/lib/rancher/k3s/data/cni",
)

# (fixture text, containerd version) for every real input.
REAL_INPUTS = {
    "v3-default@2.1.9": (V3_DEFAULT, "2.1.9"),
    "v2-default@1.7.24": (V2_DEFAULT, "1.7.24"),
    "v2-default@2.1.9": (V2_DEFAULT, "2.1.9"),
    "debian@2.1.9": (DEBIAN, "2.1.9+ds1-5"),
    "debian@1.7.24": (DEBIAN, "1.7.24~ds1"),
    "hand-v2@1.7.24": (HAND_V2, "1.7.24"),
    "hand-v3@2.1.9": (HAND_V3, "2.1.9"),
    "hand-v3@2.0.5": (HAND_V3, "2.0.5"),
    "empty@2.1.9": ("", "2.1.9"),
    "empty@1.7.24": ("", "1.7.24"),
}


def merge(text: str, version: str, settings: ct.GvisorSettings = GVISOR) -> ct.MergeResult:
    return ct.merge_containerd_config(text, settings, version)


def runtime_v3(data: dict) -> dict:
    return data["plugins"]["io.containerd.cri.v1.runtime"]


def images_v3(data: dict) -> dict:
    return data["plugins"]["io.containerd.cri.v1.images"]


def cri_v2(data: dict) -> dict:
    return data["plugins"]["io.containerd.grpc.v1.cri"]


def comments(text: str) -> list[str]:
    """Every comment in the text, in order (the fixtures have no '#' inside strings)."""
    return [match.group(0).rstrip() for match in re.finditer(r"#[^\n]*", text)]


def reference_merge(data: dict, schema: int, settings: ct.GvisorSettings, version: str) -> dict:
    """What the merge must do to the parsed data, done on plain dicts."""
    out = copy.deepcopy(data)
    for op in ct.desired_operations(schema, settings, ct.parse_containerd_version(version)):
        table = out
        if isinstance(op, ct.SetKey):
            for part in op.table:
                table = table.setdefault(part, {})
            table[op.key] = op.value
            continue
        if isinstance(op, ct.SetKeyIfAbsent):
            for part in op.table:
                table = table.setdefault(part, {})
            table.setdefault(op.key, op.value)
            continue
        for part in op.table:
            table = table.get(part, {})
        if isinstance(op, ct.ClearKey) and op.key in table and table[op.key] != "":
            table[op.key] = ""
        if isinstance(op, ct.DropKeyIfEquals) and table.get(op.key) == op.value:
            del table[op.key]
    return out


# ---------------------------------------------------------------------------
# The keys, per schema, read back with tomllib
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", [V3_DEFAULT, HAND_V3, ""], ids=["default", "hand-edited", "empty"])
def test_version_3_keys(text):
    result = merge(text, "2.1.9")
    assert result.schema_version == 3
    data = tomllib.loads(result.text)
    assert data["version"] == 3
    runtime = runtime_v3(data)
    assert runtime["containerd"]["default_runtime_name"] == "runc-gvisor"
    ours = runtime["containerd"]["runtimes"]["runc-gvisor"]
    assert ours["runtime_type"] == "io.containerd.runc.v2"
    assert ours["options"] == {
        "BinaryName": "/usr/local/bin/runc-gvisor",
        "NoNewKeyring": True,
        "SystemdCgroup": False,
    }
    assert runtime["enable_unprivileged_ports"] is False
    assert runtime["enable_unprivileged_icmp"] is False
    assert runtime["cni"]["conf_dir"] == "/var/lib/rancher/k3s/agent/etc/cni/net.d"
    # containerd 2.1 reads bin_dirs and refuses a non-empty bin_dir beside it.
    assert runtime["cni"]["bin_dirs"] == ["/var/lib/rancher/k3s/data/cni"]
    assert runtime["cni"].get("bin_dir", "") == ""
    assert images_v3(data)["snapshotter"] == "native"
    assert images_v3(data)["pinned_images"]["sandbox"] == "k3s-gvisor/pause:3.10"
    assert "io.containerd.grpc.v1.cri" not in data.get("plugins", {}) or "sandbox_image" not in cri_v2(data)


@pytest.mark.parametrize(
    "text,version",
    [(V2_DEFAULT, "1.7.24"), (HAND_V2, "1.7.24"), (DEBIAN, "1.7.24"), (DEBIAN, "2.1.9"), ("", "1.6.20")],
    ids=["default", "hand-edited", "debian@1.7", "debian@2.1", "empty@1.6"],
)
def test_version_2_keys(text, version):
    result = merge(text, version)
    assert result.schema_version == 2
    data = tomllib.loads(result.text)
    assert data["version"] == 2
    cri = cri_v2(data)
    assert cri["containerd"]["default_runtime_name"] == "runc-gvisor"
    ours = cri["containerd"]["runtimes"]["runc-gvisor"]
    assert ours["runtime_type"] == "io.containerd.runc.v2"
    assert ours["options"] == {
        "BinaryName": "/usr/local/bin/runc-gvisor",
        "NoNewKeyring": True,
        "SystemdCgroup": False,
    }
    assert cri["containerd"]["snapshotter"] == "native"
    assert cri["sandbox_image"] == "k3s-gvisor/pause:3.10"
    assert cri["enable_unprivileged_ports"] is False
    assert cri["enable_unprivileged_icmp"] is False
    assert cri["cni"] == {
        **cri["cni"],
        "bin_dir": "/var/lib/rancher/k3s/data/cni",
        "conf_dir": "/var/lib/rancher/k3s/agent/etc/cni/net.d",
    }
    assert "bin_dirs" not in cri["cni"]
    assert "io.containerd.cri.v1.runtime" not in data["plugins"]


def test_containerd_2_0_gets_bin_dir_not_bin_dirs():
    """containerd 2.0 has no cni.bin_dirs (2.1 added it)."""
    data = tomllib.loads(merge(HAND_V3, "2.0.5").text)
    assert runtime_v3(data)["cni"]["bin_dir"] == "/var/lib/rancher/k3s/data/cni"
    assert "bin_dirs" not in runtime_v3(data)["cni"]


@pytest.mark.parametrize("name", sorted(REAL_INPUTS))
def test_only_the_managed_keys_change(name):
    text, version = REAL_INPUTS[name]
    result = merge(text, version)
    before = tomllib.loads(text)
    assert tomllib.loads(result.text) == reference_merge(before, result.schema_version, GVISOR, version)


def test_settings_left_null_leave_the_file_alone():
    for text, version, schema in ((V3_DEFAULT, "2.1.9", 3), (V2_DEFAULT, "1.7.24", 2)):
        result = merge(text, version, ct.GvisorSettings())
        data = tomllib.loads(result.text)
        assert data == reference_merge(tomllib.loads(text), schema, ct.GvisorSettings(), version)
        if schema == 3:
            assert images_v3(data)["snapshotter"] == "overlayfs"
            assert images_v3(data)["pinned_images"]["sandbox"] == "registry.k8s.io/pause:3.10"
            assert runtime_v3(data)["enable_unprivileged_ports"] is True
            assert runtime_v3(data)["cni"]["bin_dirs"] == ["/usr/lib/cni", "/opt/cni/bin"]
        else:
            assert cri_v2(data)["containerd"]["snapshotter"] == "overlayfs"
            assert cri_v2(data)["sandbox_image"] == "registry.k8s.io/pause:3.8"
            assert cri_v2(data)["cni"]["bin_dir"] == "/usr/lib/cni"
        left_alone = ("snapshotter", "sandbox", "sandbox_image", "enable_unprivileged_ports", "conf_dir", "bin_dir")
        assert not [key for key in result.settings if key.rsplit(".", 1)[-1] in left_alone]


def test_settings_name_every_enforced_key_with_its_value():
    result = merge(V3_DEFAULT, "2.1.9")
    runtime = "plugins.'io.containerd.cri.v1.runtime'"
    assert result.settings == {
        "version": 3,
        "plugins.'io.containerd.cri.v1.images'.snapshotter": "native",
        "plugins.'io.containerd.cri.v1.images'.pinned_images.sandbox": "k3s-gvisor/pause:3.10",
        f"{runtime}.enable_unprivileged_ports": False,
        f"{runtime}.enable_unprivileged_icmp": False,
        f"{runtime}.containerd.default_runtime_name": "runc-gvisor",
        f"{runtime}.containerd.runtimes.runc-gvisor.runtime_type": "io.containerd.runc.v2",
        f"{runtime}.containerd.runtimes.runc-gvisor.options.BinaryName": "/usr/local/bin/runc-gvisor",
        f"{runtime}.containerd.runtimes.runc-gvisor.options.NoNewKeyring": True,
        f"{runtime}.containerd.runtimes.runc-gvisor.options.SystemdCgroup": False,
        f"{runtime}.cni.conf_dir": "/var/lib/rancher/k3s/agent/etc/cni/net.d",
        f"{runtime}.cni.bin_dirs": ["/var/lib/rancher/k3s/data/cni"],
        f"{runtime}.cni.bin_dir": "",
    }
    # The default config already has version 3 and bin_dir = '': neither is a change.
    assert "version" not in result.changed_keys
    assert f"{runtime}.cni.bin_dir" not in result.changed_keys
    assert f"{runtime}.cni.bin_dirs" in result.changed_keys


# ---------------------------------------------------------------------------
# What is kept: values, comments, order, quoting, layout
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("text,version", [(HAND_V2, "1.7.24"), (HAND_V3, "2.1.9")], ids=["v2", "v3"])
def test_comments_survive_in_order_and_in_place(text, version):
    out = merge(text, version).text
    assert comments(out) == comments(text)
    lines = out.splitlines()
    # A comment beside a value stays beside it, with the new value.
    assert any(re.match(r"\s*snapshotter = .native.\s+# fast, needs overlay mounts$", line) for line in lines)
    # A comment above a header stays right above that header, although a table was added before it.
    cni_header = next(i for i, line in enumerate(lines) if re.match(r"\s*\[plugins\..*cri.*\.cni\]", line))
    assert lines[cni_header - 1].strip().startswith("# CNI")
    # The last comment stays last.
    assert out.rstrip().splitlines()[-1] == "# end of file: nothing below this line"


def test_default_config_diff_touches_only_managed_lines():
    out = merge(V3_DEFAULT, "2.1.9").text
    diff = [line for line in difflib.unified_diff(V3_DEFAULT.splitlines(), out.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    removed = [line[1:].strip() for line in diff if line.startswith("-")]
    assert sorted(key.split(" = ")[0] for key in removed) == sorted([
        "snapshotter", "sandbox", "enable_unprivileged_ports", "enable_unprivileged_icmp",
        "default_runtime_name", "bin_dirs", "conf_dir",
    ])
    # Nothing else moved: the original lines are all there, in order.
    kept = [line for line in V3_DEFAULT.splitlines() if line.strip() not in removed]
    it = iter(out.splitlines())
    assert all(line in it for line in kept)


def test_debian_file_layout():
    """The exact text for Debian's shipped file: the new tables sit in the CRI table, indented like it."""
    assert merge(DEBIAN, "2.1.9").text == DEBIAN.split("version = 2", 1)[0] + """\
version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "k3s-gvisor/pause:3.10"
    enable_unprivileged_ports = false
    enable_unprivileged_icmp = false

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/var/lib/rancher/k3s/data/cni"
      conf_dir = "/var/lib/rancher/k3s/agent/etc/cni/net.d"

    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "native"
      default_runtime_name = "runc-gvisor"

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc-gvisor]
          runtime_type = "io.containerd.runc.v2"

          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc-gvisor.options]
            BinaryName = "/usr/local/bin/runc-gvisor"
            NoNewKeyring = true
            SystemdCgroup = false

  [plugins."io.containerd.internal.v1.opt"]
    path = "/var/lib/containerd/opt"
"""


def test_new_runtime_goes_right_after_runc_in_containerds_quoting():
    out = merge(V3_DEFAULT, "2.1.9").text
    lines = out.splitlines()
    runc_options = lines.index("          [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]")
    ours = lines.index("        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc-gvisor]")
    assert runc_options < ours < lines.index("    [plugins.'io.containerd.cri.v1.runtime'.cni]")
    assert lines[ours + 1] == "          runtime_type = 'io.containerd.runc.v2'"
    assert "            BinaryName = '/usr/local/bin/runc-gvisor'" in lines
    # One blank line before and after the new block, none doubled.
    assert lines[ours - 1] == "" and lines[ours - 2] != ""
    assert "\n\n\n" not in out


def test_empty_file_gets_the_version_on_top_and_flat_tables():
    out = merge("", "2.1.9").text
    assert out.startswith("version = 3\n\n[plugins.'io.containerd.cri.v1.images']\nsnapshotter = 'native'\n")
    assert "\n\n\n" not in out and not out.startswith("\n") and out.endswith("\n")
    assert merge("", "1.7.24").text.startswith('version = 2\n\n[plugins."io.containerd.grpc.v1.cri"]\n')


def test_file_without_version_and_plugins_gets_the_containerd_version():
    text = "# containerd, top-level settings only\n\nroot = \"/srv/containerd\"\n\n[grpc]\n  address = \"/run/c.sock\"\n"
    out = merge(text, "2.1.9").text
    assert out.startswith('# containerd, top-level settings only\n\nroot = "/srv/containerd"\nversion = 3\n')
    data = tomllib.loads(out)
    assert data["root"] == "/srv/containerd" and data["grpc"] == {"address": "/run/c.sock"}
    comment_only = "# nothing here yet\n\n"
    assert merge(comment_only, "1.7.24").text.startswith("# nothing here yet\nversion = 2\n")


def test_file_without_trailing_newline():
    out = merge('version = 3\n[plugins."io.containerd.cri.v1.images"]\n  snapshotter = "overlayfs"', "2.1.9").text
    assert tomllib.loads(out)["plugins"]["io.containerd.cri.v1.images"]["snapshotter"] == "native"
    assert '  snapshotter = "native"\n' in out  # the file's double quotes kept for a changed value


def test_crlf_file_stays_crlf():
    text = HAND_V2.replace("\n", "\r\n")
    out = merge(text, "1.7.24").text
    assert "\n" not in out.replace("\r\n", "")
    assert tomllib.loads(out) == tomllib.loads(merge(HAND_V2, "1.7.24").text)


def test_out_of_order_tables():
    text = """version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
[plugins."io.containerd.internal.v1.opt"]
  path = "/opt/containerd"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.8"
"""
    result = merge(text, "1.7.24")
    assert tomllib.loads(result.text) == reference_merge(tomllib.loads(text), 2, GVISOR, "1.7.24")
    assert result.text.index('path = "/opt/containerd"') < result.text.index('sandbox_image = "k3s-gvisor')
    assert merge(result.text, "1.7.24").text == result.text


def test_header_less_parent_gets_its_header():
    """[a.b] alone implies [a]; a value for [a] makes its header appear, above [a.b]."""
    text = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n  snapshotter = "overlayfs"\n'
    out = merge(text, "1.7.24").text
    assert out.index('[plugins."io.containerd.grpc.v1.cri"]\n') < out.index('[plugins."io.containerd.grpc.v1.cri".containerd]')
    assert tomllib.loads(out) == reference_merge(tomllib.loads(text), 2, GVISOR, "1.7.24")


def test_inline_options_table_is_edited_in_place():
    text = """version = 3
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc-gvisor]
  runtime_type = 'io.containerd.runc.v2'
  options = { BinaryName = '/usr/bin/runc', SystemdCgroup = true }
"""
    out = merge(text, "2.1.9").text
    assert re.search(r"^  options = \{.*\}$", out, re.M)
    ours = runtime_v3(tomllib.loads(out))["containerd"]["runtimes"]["runc-gvisor"]
    assert ours["options"] == {"BinaryName": "/usr/local/bin/runc-gvisor", "SystemdCgroup": False, "NoNewKeyring": True}


def test_quoted_runtime_name_in_the_file_is_the_same_table():
    text = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes."runc-gvisor"]\n  runtime_type = "x"\n'
    out = merge(text, "1.7.24").text
    assert out.count('runtimes."runc-gvisor"]') == 1 and out.count('runtimes."runc-gvisor".options]') == 1
    assert "runtimes.runc-gvisor" not in out
    assert cri_v2(tomllib.loads(out))["containerd"]["runtimes"]["runc-gvisor"]["runtime_type"] == "io.containerd.runc.v2"


def test_multiline_string_line_that_looks_like_a_comment_is_not_moved():
    text = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".x]\ns = """\nabc\n# not a comment"""\n'
    out = merge(text, "1.7.24").text
    assert tomllib.loads(out)["plugins"]["io.containerd.grpc.v1.cri"]["x"]["s"] == "abc\n# not a comment"
    assert 's = """\nabc\n# not a comment"""\n' in out


def test_strings_that_need_escaping():
    weird = ct.GvisorSettings(binary_name="/opt/it's \"here\"\\runc", runtime_name="gvisor.v1")
    for text, version in (("", "2.1.9"), (V2_DEFAULT, "1.7.24"), (V3_DEFAULT, "2.1.9")):
        result = merge(text, version, weird)
        data = tomllib.loads(result.text)
        root = runtime_v3(data) if result.schema_version == 3 else cri_v2(data)
        assert root["containerd"]["runtimes"]["gvisor.v1"]["options"]["BinaryName"] == "/opt/it's \"here\"\\runc"
        assert root["containerd"]["default_runtime_name"] == "gvisor.v1"
        assert merge(result.text, version, weird).text == result.text


# ---------------------------------------------------------------------------
# default_runtime and other switches
# ---------------------------------------------------------------------------


def test_default_runtime_false_adds_the_runtime_but_keeps_runc_default():
    data = tomllib.loads(merge(V3_DEFAULT, "2.1.9", ct.GvisorSettings(default_runtime=False)).text)
    assert runtime_v3(data)["containerd"]["default_runtime_name"] == "runc"
    assert "runc-gvisor" in runtime_v3(data)["containerd"]["runtimes"]


def test_default_runtime_false_removes_our_runtime_as_default():
    merged = merge(HAND_V2, "1.7.24").text
    result = merge(merged, "1.7.24", dataclasses.replace(GVISOR, default_runtime=False))
    assert "default_runtime_name" not in cri_v2(tomllib.loads(result.text))["containerd"]
    assert result.changed_keys == ['plugins."io.containerd.grpc.v1.cri".containerd.default_runtime_name']
    assert "# pods without a RuntimeClass" in result.text  # the comment above it stays


def test_containerd_1_keeps_its_runc_runtime():
    """containerd 1.x replaces its built-in runtimes with the file's table (2.x merges; see the dump test).

    So where the file has no runtimes.runc, the merge writes it, or adding
    runc-gvisor would remove runc, the default runtime of default_runtime=false.
    """
    for text in ("", DEBIAN):
        result = merge(text, "1.7.24", ct.GvisorSettings(default_runtime=False))
        runtimes = cri_v2(tomllib.loads(result.text))["containerd"]["runtimes"]
        assert runtimes["runc"] == {"runtime_type": "io.containerd.runc.v2"}
        assert result.text.index("runtimes.runc]") < result.text.index("runtimes.runc-gvisor]")
        assert result.settings['plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.runtime_type'] == (
            "io.containerd.runc.v2")
    # A runc the file defines is left exactly as it is.
    hand = merge(HAND_V2, "1.7.24")
    assert cri_v2(tomllib.loads(hand.text))["containerd"]["runtimes"]["runc"] == {
        "runtime_type": "io.containerd.runc.v2", "options": {"SystemdCgroup": True}}
    assert not any(".runtimes.runc." in key for key in hand.changed_keys)
    # containerd 2.x keeps its built-in runc on its own: nothing is added for it.
    assert "runtimes.runc]" not in merge("", "2.1.9").text
    assert "runtimes.runc]" not in merge(DEBIAN, "2.1.9").text


def test_unprivileged_true_writes_true():
    data = tomllib.loads(merge(V2_DEFAULT, "1.7.24", ct.GvisorSettings(unprivileged_ports_icmp=True)).text)
    assert cri_v2(data)["enable_unprivileged_ports"] is True and cri_v2(data)["enable_unprivileged_icmp"] is True


def test_wrong_types_in_the_file_are_corrected():
    text = V3_DEFAULT.replace("enable_unprivileged_ports = true", "enable_unprivileged_ports = 'no'")
    data = tomllib.loads(merge(text, "2.1.9").text)
    assert runtime_v3(data)["enable_unprivileged_ports"] is False


# ---------------------------------------------------------------------------
# Idempotence
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REAL_INPUTS))
def test_second_merge_changes_nothing(name):
    text, version = REAL_INPUTS[name]
    first = merge(text, version)
    assert first.changed and first.text != text
    second = merge(first.text, version)
    assert second.text == first.text
    assert not second.changed and second.changed_keys == []
    assert second.settings == first.settings


def test_unchanged_input_is_returned_verbatim():
    text = merge(HAND_V3, "2.1.9").text
    assert merge(text, "2.1.9").text is text or merge(text, "2.1.9").text == text


# ---------------------------------------------------------------------------
# Errors: malformed input, schema decisions, shapes the merge refuses
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,line,col",
    [
        ('version = 2\n[plugins\n', 2, 8),
        ('version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n  sandbox_image = "unterminated\n', 3, 31),
        ("version = 3\nroot = \n", 2, 7),
        ("version = 3\n[grpc]\naddress = 'a' 'b'\n", 3, 14),
    ],
)
def test_malformed_toml_reports_line_and_column(text, line, col):
    with pytest.raises(ct.ConfigSyntaxError) as caught:
        merge(text, "2.1.9")
    assert (caught.value.line, caught.value.col) == (line, col)
    assert "line %d, column %d" % (line, col) in str(caught.value)


def test_key_defined_twice_is_a_syntax_error():
    with pytest.raises(ct.ConfigSyntaxError):
        merge("version = 3\n[grpc]\nuid = 0\nuid = 1\n", "2.1.9")
    with pytest.raises(ct.ConfigSyntaxError):
        merge("version = 3\n[grpc]\n[grpc]\n", "2.1.9")


@pytest.mark.parametrize(
    "file_version,containerd,has_plugins,expected",
    [
        (None, "2.1.9", False, 3),
        (None, "2.0.0", False, 3),
        (None, "1.7.24", False, 2),
        (None, "1.6.20", False, 2),
        (2, "2.1.9", True, 2),
        (3, "2.1.9", True, 3),
        (2, "1.7.24", True, 2),
        (None, "2.1.9+ds1-5", False, 3),
        (None, "v2.0.5", False, 3),
        (None, "1.7.24~ds1", False, 2),
    ],
)
def test_schema_decision(file_version, containerd, has_plugins, expected):
    assert ct.decide_schema(file_version, containerd, has_plugins) == expected


@pytest.mark.parametrize(
    "file_version,containerd,has_plugins,message",
    [
        (3, "1.7.24", True, "`version = 3`, which containerd 1.7.24 cannot read"),
        (1, "1.7.24", True, "version 1 config; this module writes versions 2 and 3 only"),
        (1, "2.1.9", True, "cannot read"),
        (4, "2.1.9", True, "cannot read"),
        (None, "1.7.24", True, "no top-level `version` key, so containerd reads it as a version 1 config"),
        (None, "3.0.0", False, "containerd 3.0.0 is not supported"),
        (None, "1.5.9", False, "too old"),
        (None, "containerd", False, "not a version number"),
        (None, "", False, "not a version number"),
    ],
)
def test_schema_mismatch_is_an_error(file_version, containerd, has_plugins, message):
    with pytest.raises(ct.SchemaError, match=re.escape(message)):
        ct.decide_schema(file_version, containerd, has_plugins)


def test_file_version_wins_over_containerd_version():
    """Debian sid ships a version 2 file with containerd 2.1.9: it stays version 2."""
    result = merge(DEBIAN, "2.1.9")
    assert result.schema_version == 2 and tomllib.loads(result.text)["version"] == 2
    # Only containerd 1.x also needs runtimes.runc spelled out (see test_containerd_1_keeps_its_runc_runtime).
    assert "runtimes.runc]" in merge(DEBIAN, "1.7.24").text


@pytest.mark.parametrize(
    "text,message",
    [
        (V3_DEFAULT, "`version = 3`, which containerd 1.7.24 cannot read"),
        ("version = '2'\n", "`version` is '2'; containerd expects an integer"),
        ("version = true\n", "`version` is True"),
        ('[plugins.cri]\n  sandbox_image = "x"\n', "reads it as a version 1 config"),
    ],
)
def test_schema_errors_from_the_file(text, message):
    with pytest.raises(ct.SchemaError, match=re.escape(message)):
        merge(text, "1.7.24")


@pytest.mark.parametrize(
    "text,message",
    [
        ('version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n  containerd = "x"\n',
         'plugins."io.containerd.grpc.v1.cri".containerd is a string (\'x\') in the file, where containerd expects a table'),
        ('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.default_runtime_name]\n  x = 1\n',
         "default_runtime_name is a table in the file, where containerd expects a value"),
        ('version = 2\n[[plugins."io.containerd.grpc.v1.cri".containerd.runtimes]]\n  x = 1\n',
         "runtimes is an array of tables in the file"),
        ('version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n  containerd.snapshotter = "overlayfs"\n',
         'plugins."io.containerd.grpc.v1.cri".containerd is written with dotted keys'),
        ('version = 2\nplugins."io.containerd.grpc.v1.cri".sandbox_image = "x"\n',
         "plugins is written with dotted keys"),
    ],
)
def test_shapes_the_merge_refuses(text, message):
    with pytest.raises(ct.ContainerdConfigError, match=re.escape(message)):
        merge(text, "1.7.24")


def test_settings_are_validated():
    with pytest.raises(ct.ContainerdConfigError, match="runtime_name"):
        merge("", "2.1.9", ct.GvisorSettings(runtime_name=""))
    with pytest.raises(ct.ContainerdConfigError, match="snapshotter"):
        merge("", "2.1.9", ct.GvisorSettings(snapshotter=""))


def test_warnings_for_imports_and_a_disabled_cri_plugin():
    text = 'version = 2\nimports = ["/etc/containerd/conf.d/*.toml"]\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
    warnings = merge(text, "1.7.24").warnings
    assert any("/etc/containerd/conf.d/*.toml" in w and "override" in w for w in warnings)
    assert any("disabled_plugins lists io.containerd.grpc.v1.cri" in w for w in warnings)
    assert merge(V3_DEFAULT, "2.1.9").warnings == []


# ---------------------------------------------------------------------------
# Property: for any config of the known shapes, the merge changes exactly the
# managed keys, keeps every comment, and a second merge changes nothing.
# ---------------------------------------------------------------------------

# No '#': comments() finds comments by it.
SAFE_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters="#"), max_size=12
)
ANY_VALUE = st.one_of(st.booleans(), st.integers(-5, 5), SAFE_TEXT, st.lists(SAFE_TEXT, max_size=2))


@st.composite
def configs(draw):
    schema = draw(st.sampled_from([2, 3]))
    version = draw(st.sampled_from(["2.0.5", "2.1.9"] if schema == 3 else ["1.6.20", "1.7.24", "2.1.9"]))
    wanted = ct.GvisorSettings(
        runtime_name=draw(st.sampled_from(["runc-gvisor", "gvisor", "runc.gvisor"])),
        default_runtime=draw(st.booleans()),
        no_new_keyring=draw(st.booleans()),
        systemd_cgroup=draw(st.booleans()),
        snapshotter=draw(st.sampled_from([None, "native", "overlayfs"])),
        unprivileged_ports_icmp=draw(st.sampled_from([None, False, True])),
        sandbox_image=draw(st.sampled_from([None, "k3s-gvisor/pause:3.10"])),
        cni_conf_dir=draw(st.sampled_from([None, "/etc/cni/net.d"])),
        cni_bin_dir=draw(st.sampled_from([None, "/opt/cni/bin"])),
    )
    data: dict = {}
    if draw(st.booleans()):
        data["root"] = "/var/lib/containerd"
    with_plugins = draw(st.booleans())
    if with_plugins or draw(st.booleans()):
        data["version"] = schema
    if with_plugins:
        # Some of the managed keys, with any value of any type, plus keys we do not manage.
        for op in ct.desired_operations(schema, wanted, ct.parse_containerd_version(version)):
            if not op.table or not draw(st.booleans()):
                continue
            table = data
            for part in op.table:
                table = table.setdefault(part, {})
            table[op.key] = draw(ANY_VALUE)
            if draw(st.booleans()):
                table["unmanaged_" + op.key] = draw(ANY_VALUE)
        if draw(st.booleans()):
            data.setdefault("plugins", {})["io.containerd.internal.v1.opt"] = {"path": "/opt/containerd"}
    text = ct.tomlkit.dumps(data)
    # Comments on their own lines and beside values, and optionally containerd's indentation.
    lines = []
    indent = draw(st.booleans())
    depth = 0
    for number, line in enumerate(text.splitlines()):
        if line.startswith("["):
            depth = line.count(".") + 1  # good enough for layout; keys here hold no dots in headers' quotes
        pad = "  " * max(depth - 1, 0) if indent else ""
        if line.strip() and draw(st.integers(0, 3)) == 0:
            lines.append(f"{pad}# comment {number}")
        if " = " in line and draw(st.integers(0, 3)) == 0:
            line += f"  # beside {number}"
        lines.append((pad + "  " if indent and not line.startswith("[") and depth else pad) + line if line else line)
    return "\n".join(lines) + "\n", version, wanted


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_property_merge_changes_exactly_the_managed_keys(config):
    text, version, wanted = config
    before = tomllib.loads(text)
    result = ct.merge_containerd_config(text, wanted, version)
    assert tomllib.loads(result.text) == reference_merge(before, result.schema_version, wanted, version)
    assert comments(result.text) == comments(text)
    again = ct.merge_containerd_config(result.text, wanted, version)
    assert again.text == result.text and not again.changed
    assert result.changed == (result.text != text)


# ---------------------------------------------------------------------------
# The module's glue, run by ansible on this machine against temporary files
# ---------------------------------------------------------------------------


def run_module(tmp_path: Path, args: str, *flags: str) -> dict:
    config = tmp_path / "ansible.cfg"
    config.write_text("[defaults]\nlocalhost_warning = False\n")
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=COLLECTION_ROOT,
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_CONFIG=str(config),
    )
    proc = subprocess.run(
        [str(REPO / ".venv/bin/ansible"), "localhost", "-c", "local", "-i", "localhost,",
         "-e", f"ansible_python_interpreter={sys.executable}",
         "-m", "k3s_gvisor.node.containerd_config", "-a", args, *flags],
        capture_output=True, text=True, env=env, timeout=120,
    )
    return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_module_check_mode_then_write_then_nothing(tmp_path):
    path = tmp_path / "etc" / "containerd" / "config.toml"
    args = f"path={path} containerd_version=2.1.9 snapshotter=native unprivileged_ports_icmp=false"
    checked = run_module(tmp_path, args, "--check", "--diff")
    assert checked["changed"] and not path.exists()
    assert checked["diff"]["before"] == "" and "snapshotter = 'native'" in checked["diff"]["after"]
    written = run_module(tmp_path, args)
    assert written["changed"] and written["schema_version"] == 3
    assert path.read_text() == checked["diff"]["after"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    again = run_module(tmp_path, args, "--diff")
    assert not again["changed"] and not again.get("diff")
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temporary file left


def test_module_keeps_mode_makes_backup_and_refuses_broken_files(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(DEBIAN)
    path.chmod(0o600)
    result = run_module(tmp_path, f"path={path} containerd_version=1.7.24 backup=true sandbox_image=pause:1")
    assert result["changed"] and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Path(result["backup_file"]).read_text() == DEBIAN
    assert cri_v2(tomllib.loads(path.read_text()))["sandbox_image"] == "pause:1"

    broken = tmp_path / "broken.toml"
    broken.write_text('version = 2\n[plugins\n')
    failed = run_module(tmp_path, f"path={broken} containerd_version=2.1.9")
    assert failed.get("failed") and "line 2, column 8" in failed["msg"] and str(broken) in failed["msg"]
    assert broken.read_text() == 'version = 2\n[plugins\n'

    path.write_text(V3_DEFAULT)
    mismatch = run_module(tmp_path, f"path={path} containerd_version=1.7.24")
    assert mismatch.get("failed") and "cannot read" in mismatch["msg"]
    assert path.read_text() == V3_DEFAULT
