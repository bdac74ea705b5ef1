# SPDX-License-Identifier: Apache-2.0
"""runc-gvisor under bad input: generated config.json contents and argv shapes.

The real wrapper binary (built once with the machine's Go) runs against a fake
runc that records the argv it was given, so what is tested is the wrapper's
own behaviour, not runc's. Every case ends in one of two ways:

- refused: a non-zero exit, a message on stderr naming the bundle's
  config.json (or the bundle), the fake runc never called, and config.json
  byte-identical;
- passed through: exit 0, the fake runc called with exactly the wrapper's
  argv, and config.json either byte-identical or a complete, valid rewrite
  that differs from the original only as the profile's adaptations say.

Never, in either: a temporary file left in the bundle, or anything on stdout
(containerd's shim parses runc's stdout).

The default run (500 examples per property) fits CI, under a minute on 2 busy
cores; for a longer one:
    WRAPPER_PROPERTY_EXAMPLES=5000 .venv/bin/pytest tests/property --hypothesis-show-statistics
"""

from __future__ import annotations

import copy
import json
import os
import posixpath
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
WRAPPER_SRC = REPO / "roles" / "runc_gvisor" / "files" / "wrapper"
TESTDATA = WRAPPER_SRC / "internal" / "wrapper" / "testdata"
CRI_SPEC = json.loads((TESTDATA / "cri-config.json").read_text())
RUNC_SPEC = json.loads((TESTDATA / "runc-spec.json").read_text())
MAX_SPEC_SIZE = 16 << 20  # the wrapper's limit (configfile.go)
ADAPTATIONS = ["drop_cgroup_namespace", "refuse_pid_namespace_join", "pid_namespace_per_container", "refuse_masked_under_readonly",
               "refuse_new_network_namespace"]
# The profiles the role writes, and any other combination.
PROFILES = st.one_of(st.sampled_from([["refuse_masked_under_readonly", "refuse_new_network_namespace", "refuse_pid_namespace_join"],
                                      ["drop_cgroup_namespace", "refuse_pid_namespace_join", "refuse_masked_under_readonly"],
                                      ["drop_cgroup_namespace", "refuse_pid_namespace_join"],
                                      ["drop_cgroup_namespace", "pid_namespace_per_container"],
                                      ["drop_cgroup_namespace"], []]),
                     st.lists(st.sampled_from(ADAPTATIONS), unique=True))

EXAMPLES = int(os.environ.get("WRAPPER_PROPERTY_EXAMPLES", "500"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# -- argv shapes ---------------------------------------------------------------

@st.composite
def global_flags(draw, case_log: str) -> list[str]:
    """runc's global flags as go-runc puts them, before the subcommand, in any order."""
    groups: list[list[str]] = []
    for flag, values in [("root", ["/run/containerd/runc/k8s.io", "/tmp/r"]), ("log", [case_log]),
                         ("log-format", ["json", "text"]), ("criu", ["/usr/sbin/criu"]), ("rootless", ["auto"])]:
        if draw(st.booleans()):
            dash = draw(st.sampled_from(["--", "-"]))
            value = draw(st.sampled_from(values))
            groups.append(draw(st.sampled_from([[f"{dash}{flag}", value], [f"{dash}{flag}={value}"]])))
    groups += [[boolean] for boolean in ("--debug", "--systemd-cgroup") if draw(st.booleans())]
    return [word for group in draw(st.permutations(groups)) for word in group]


def bundle_flag(draw, bundle: str) -> list[str]:
    return draw(st.sampled_from([["--bundle", bundle], [f"--bundle={bundle}"], ["-b", bundle],
                                 [f"-b={bundle}"], ["-bundle", bundle]]))


@st.composite
def create_argv(draw, bundle: str, log: str) -> tuple[list[str], bool]:
    """create or run, with the bundle flag in any form and place; returns (argv, bundle given)."""
    subcommand = draw(st.sampled_from(["create", "run"]))
    options: list[str] = []
    if draw(st.booleans()):
        # values that look like the bundle flag must not be taken for it
        options += ["--pid-file", draw(st.sampled_from(["/run/p.pid", "-b", "--bundle"]))]
    if draw(st.booleans()):
        options += ["--console-socket", "/run/console.sock"]
    options += draw(st.lists(st.sampled_from(["--no-pivot", "--no-new-keyring", "--detach"]), max_size=2, unique=True))
    given_bundle = draw(st.booleans())
    container_id = draw(st.sampled_from(["c1", "0123456789abcdef" * 4]))
    if given_bundle:
        flag = bundle_flag(draw, bundle)
        after_id = draw(st.booleans())  # urfave/cli v1 accepts flags after the ID
        tail = [*options, container_id, *flag] if after_id else [*options, *flag, container_id]
    else:
        tail = [*options, container_id]  # the bundle is the working directory
    return [*draw(global_flags(log)), subcommand, *tail], given_bundle


PASSTHROUGH = ["start", "state", "kill", "delete", "exec", "ps", "pause", "resume", "events", "update",
               "features", "checkpoint", "restore", "spec", "list"]


@st.composite
def passthrough_argv(draw, bundle: str, log: str) -> tuple[list[str], str]:
    """Every other subcommand, unknown words, and no subcommand at all; returns (argv, which)."""
    kind = draw(st.sampled_from(["known", "unknown", "none"]))
    flags = draw(global_flags(log))
    if kind == "none":
        return [*flags, draw(st.sampled_from(["--version", "--help", "-v"]))], "no subcommand"
    if kind == "known":
        subcommand = draw(st.sampled_from(PASSTHROUGH))
    else:
        subcommand = draw(st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF,
                                                blacklist_characters="-"), min_size=1, max_size=12)
                          .filter(lambda word: word not in ("create", "run")))
    rest = draw(st.lists(st.sampled_from(["c1", "--force", "--all", "9", "--bundle", bundle, "-b", "x"]),
                         max_size=4))
    return [*flags, subcommand, *rest], f"{kind} subcommand"


# -- config.json contents, each with what the wrapper must do with it --------------

@dataclass
class Spec:
    raw: bytes
    kind: str  # for the statistics
    # "adapt": valid, the wrapper may rewrite it (expected result computed from `doc`);
    # "refuse": must be refused; "keep": must pass through untouched; "any": either, untouched or valid rewrite
    expect: str
    doc: object = None


NAMESPACE_TYPES = ["pid", "network", "ipc", "uts", "mount", "cgroup", "user", "time"]


@st.composite
def namespaces(draw) -> list:
    entries = []
    for ns_type in draw(st.lists(st.sampled_from(NAMESPACE_TYPES), max_size=8)):
        entry: dict = {"type": ns_type}
        if draw(st.integers(0, 3)) == 0:
            entry["path"] = draw(st.sampled_from(["/proc/42/ns/" + ns_type, "/var/run/netns/cni-1"]))
        if draw(st.integers(0, 5)) == 0:
            entry["x-extra"] = draw(st.sampled_from([1, "y", None, [1], {"z": True}]))
        entries.append(entry)
    return entries


def serialize(draw, doc) -> bytes:
    style = draw(st.sampled_from(["compact", "containerd", "indent", "tabs"]))
    if style == "compact":
        return json.dumps(doc, separators=(",", ":")).encode()
    if style == "containerd":
        return json.dumps(doc).encode()
    return json.dumps(doc, indent=2 if style == "indent" else "\t").encode() + b"\n"


@st.composite
def valid_specs(draw) -> Spec:
    doc = copy.deepcopy(draw(st.sampled_from([CRI_SPEC, RUNC_SPEC])))
    # Half of them with namespaces to adapt: that is where a rewrite happens.
    shape = draw(st.sampled_from(["namespaces"] * 5 + ["no-linux", "linux-null", "no-namespaces",
                                                       "namespaces-null", "namespaces-empty", "other-wrong-types"]))
    if shape == "no-linux":
        doc.pop("linux")
    elif shape == "linux-null":
        doc["linux"] = None
    elif shape == "no-namespaces":
        doc["linux"].pop("namespaces", None)
    elif shape == "namespaces-null":
        doc["linux"]["namespaces"] = None
    elif shape == "namespaces-empty":
        doc["linux"]["namespaces"] = []
    else:
        entries = draw(namespaces())
        if draw(st.integers(0, 3)) > 0:  # what CRI on a cgroup v2 host adds, and the wrapper removes
            entries.insert(draw(st.integers(0, len(entries))), {"type": "cgroup"})
        doc["linux"]["namespaces"] = entries
        if draw(st.integers(0, 2)) == 0:
            masked = draw(st.sampled_from(["/proc/sys/kernel", "/proc/sys/", "proc/sys/fs/", "/proc/sysrq-trigger/x", "/proc/bus/pci", "/sys/fs"]))
            doc["linux"].setdefault("maskedPaths", []).append(masked)
        if shape == "other-wrong-types":  # not the wrapper's business: runc will say
            doc[draw(st.sampled_from(["process", "root", "mounts", "hostname"]))] = draw(
                st.sampled_from([5, "x", None, [], {"a": 1}]))
    return Spec(serialize(draw, doc), f"valid: {shape}", "adapt", doc)


@st.composite
def wrong_type_specs(draw) -> Spec:
    """Wrong types where the wrapper has to read: each must be refused."""
    doc = copy.deepcopy(CRI_SPEC)
    wrong = st.sampled_from([5, "x", True, [1], {"a": 1}, 1.5])
    where = draw(st.sampled_from(["top", "linux", "namespaces", "entry", "type", "path"]))
    if where == "top":
        doc = draw(st.sampled_from([[doc], "spec", 7, None, True]))
    elif where == "linux":
        doc["linux"] = draw(wrong.filter(lambda v: not isinstance(v, dict)))
    elif where == "namespaces":
        doc["linux"]["namespaces"] = draw(wrong.filter(lambda v: not isinstance(v, list)))
    elif where == "entry":
        doc["linux"]["namespaces"].insert(draw(st.integers(0, 3)), draw(wrong.filter(lambda v: not isinstance(v, dict))))
    else:
        entry = {"type": "pid", "path": "/proc/1/ns/pid"}
        entry[where] = draw(wrong.filter(lambda v: not isinstance(v, str)))
        doc["linux"]["namespaces"].append(entry)
    return Spec(serialize(draw, doc), f"wrong type: {where}", "refuse", doc)


@st.composite
def malformed_specs(draw) -> Spec:
    base = serialize(draw, CRI_SPEC)
    shape = draw(st.sampled_from(["truncated", "trailing", "empty", "duplicate-linux", "duplicate-namespaces",
                                  "garbage", "bad-utf8-outside-strings"]))
    if shape == "truncated":
        cut = draw(st.integers(1, len(base.rstrip()) - 1))
        raw = base[:cut]
    elif shape == "trailing":
        raw = base + draw(st.sampled_from([b"x", b"{}", b",", b"]"]))
    elif shape == "empty":
        raw = draw(st.sampled_from([b"", b" ", b"\n"]))
    elif shape == "duplicate-linux":
        raw = b'{"linux":{"namespaces":[]},"Linux":{"namespaces":[{"type":"cgroup"}]}}'
    elif shape == "duplicate-namespaces":
        raw = b'{"linux":{"namespaces":[{"type":"cgroup"}],"NAMESPACES":[]}}'
    elif shape == "bad-utf8-outside-strings":
        raw = b'{"linux":\xff{}}'
    else:  # anything at all: the wrapper may accept what runc's decoder accepts
        raw = draw(st.binary(max_size=200))
        return Spec(raw, "garbage", "any")
    return Spec(raw, f"malformed: {shape}", "refuse")


specs = st.one_of(valid_specs(), valid_specs(), wrong_type_specs(), malformed_specs())


# -- what the wrapper should make of a valid spec ------------------------------

def normalized(path: str) -> str:
    return posixpath.normpath("/" + path).replace("//", "/")


def masks_inside_a_readonly_path(doc) -> bool:
    """B14's spec: a masked path at or inside a read-only one (the wrapper refuses it)."""
    linux = doc.get("linux") if isinstance(doc, dict) else None
    if not isinstance(linux, dict):
        return False
    return any(readonly == "/" or masked == readonly or masked.startswith(readonly + "/")
               for masked in map(normalized, linux.get("maskedPaths") or [])
               for readonly in map(normalized, linux.get("readonlyPaths") or []))


def expected_adaptation(doc, adaptations: list[str]) -> tuple[str, object]:
    """('keep'|'rewrite'|'refuse', expected decoded document) for a valid spec."""
    if "refuse_masked_under_readonly" in adaptations and masks_inside_a_readonly_path(doc):
        event("B14 nested")
        return "refuse", doc
    linux = doc.get("linux") if isinstance(doc, dict) else None
    entries = linux.get("namespaces") if isinstance(linux, dict) else None
    if not entries:
        return "keep", doc
    kept, changed = [], False
    for entry in entries:
        if entry.get("type") == "cgroup" and "drop_cgroup_namespace" in adaptations:
            changed = True
            continue
        if entry.get("type") == "pid" and entry.get("path"):
            if "pid_namespace_per_container" in adaptations:
                entry = {k: v for k, v in entry.items() if k != "path"}
                changed = True
            elif "refuse_pid_namespace_join" in adaptations:
                return "refuse", doc
        if entry.get("type") == "network" and not entry.get("path") and "refuse_new_network_namespace" in adaptations:
            event("B22 own network namespace")
            return "refuse", doc
        kept.append(entry)
    if not changed:
        return "keep", doc
    adapted = copy.deepcopy(doc)
    adapted["linux"]["namespaces"] = kept
    return "rewrite", adapted


# -- the invariants every case checks -------------------------------------------

def leftovers(bundle: Path) -> list[str]:
    return sorted(p.name for p in bundle.iterdir() if p.name not in ("config.json", "rootfs"))


def assert_refused(out, named: str, bundle: Path, before: bytes | None) -> None:
    assert out.returncode != 0, f"expected a refusal, got exit 0 (stderr {out.stderr!r})"
    assert named in out.stderr, f"the message does not name {named}: {out.stderr!r}"
    assert out.stderr.startswith("runc-gvisor: "), out.stderr
    assert out.runc_argv is None, "runc was called although the wrapper refused"
    assert_untouched(bundle, before)
    assert out.stdout == b""


def assert_passed_through(out, argv: list[str]) -> None:
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr!r}"
    assert out.runc_argv == argv, "the real runc must get the wrapper's argv unchanged"
    assert out.stdout == b""


def assert_untouched(bundle: Path, before: bytes | None) -> None:
    config = bundle / "config.json"
    if before is not None:
        assert config.read_bytes() == before, "config.json changed"
    assert leftovers(bundle) == [], f"files left in the bundle: {leftovers(bundle)}"


def assert_log_names(out, argv: list[str], named: str) -> None:
    """With --log, the refusal is also a level-error line there (the shim reads it)."""
    if not any(a == "--log" or a == "-log" or a.startswith(("--log=", "-log=")) for a in argv):
        return
    lines = [line for line in out.log.splitlines() if line]
    assert lines and "error" in lines[-1] and named in lines[-1], out.log


def new_case(world, config: bytes | None = None) -> tuple[Path, Path]:
    """A fresh case directory with an empty bundle in it, and config.json when given."""
    case = world.case_dir()
    bundle = case / "bundle"
    bundle.mkdir()
    if config is not None:
        (bundle / "config.json").write_bytes(config)
    return case, bundle


# -- the properties --------------------------------------------------------------

@PROPERTY
@given(data=st.data(), spec=specs, adaptations=PROFILES)
def test_create_and_run_refuse_or_adapt_never_half_write(world, data, spec, adaptations):
    case, bundle = new_case(world, spec.raw)
    config = bundle / "config.json"
    bundle_arg = data.draw(st.sampled_from([str(bundle), "bundle", "./bundle/"]), label="bundle spelling")
    argv, given_bundle = data.draw(create_argv(bundle_arg, str(case / "runc.log")), label="argv")
    cwd = case if given_bundle else bundle
    event(f"config.json {spec.kind}")
    out = world.run(case, argv, adaptations, cwd=cwd)

    expect, expected_doc = spec.expect, None
    if expect == "adapt":
        expect, expected_doc = expected_adaptation(spec.doc, adaptations)
    event(f"expected: {expect}")
    if expect == "refuse":
        assert_refused(out, "config.json", bundle, spec.raw)
        assert_log_names(out, argv, "config.json")
        return
    if expect == "any" and out.returncode != 0:
        event("garbage refused")
        assert_refused(out, "config.json", bundle, spec.raw)
        return
    assert_passed_through(out, argv)
    after = config.read_bytes()
    assert leftovers(bundle) == []
    if expect == "keep":
        assert after == spec.raw, "a spec that needs nothing must not be rewritten"
    elif expect == "rewrite":
        assert json.loads(after) == expected_doc
        assert after != spec.raw
    else:  # garbage accepted: untouched, or a complete JSON document
        if after != spec.raw:
            json.loads(after)


@PROPERTY
@given(data=st.data(), spec=specs, adaptations=st.lists(st.sampled_from(ADAPTATIONS + ["no_such_adaptation"]),
                                                        unique=True))
def test_other_subcommands_pass_through_without_reading_the_bundle(world, data, spec, adaptations):
    case, bundle = new_case(world, spec.raw)
    argv, which = data.draw(passthrough_argv(str(bundle), str(case / "runc.log")), label="argv")
    event(which)
    out = world.run(case, argv, adaptations, cwd=bundle)
    assert_passed_through(out, argv)
    assert_untouched(bundle, spec.raw)


# -- the file system: what cannot be read, links, sizes ---------------------------

def create(bundle_arg: str) -> list[str]:
    return ["--root", "/run/r", "--log", "LOG", "--log-format", "json", "create", "--bundle", bundle_arg, "c1"]


def with_log(argv: list[str], case: Path) -> list[str]:
    return [str(case / "runc.log") if a == "LOG" else a for a in argv]


CGROUP_SPEC = json.dumps({"ociVersion": "1.2.0", "linux": {"namespaces": [{"type": "pid"}, {"type": "cgroup"}]}}).encode()
DROP = ["drop_cgroup_namespace"]


@pytest.mark.parametrize("shape", ["missing config.json", "missing bundle", "config.json a directory",
                                   "dangling symlink bundle", "symlink loop config.json",
                                   "config.json a fifo", "config.json a device"])
def test_unreadable_bundles_are_refused_naming_the_path(world, shape):
    case = world.case_dir()
    bundle = case / "bundle"
    config = bundle / "config.json"
    named = str(config)
    if shape == "dangling symlink bundle":
        bundle.symlink_to(case / "gone")
    elif shape != "missing bundle":
        bundle.mkdir()
    if shape == "config.json a directory":
        config.mkdir()
    elif shape == "symlink loop config.json":
        config.symlink_to(config)
    elif shape == "config.json a fifo":
        os.mkfifo(config)
    elif shape == "config.json a device":
        config.symlink_to("/dev/zero")
    argv = with_log(create(str(bundle)), case)
    out = world.run(case, argv, DROP)
    assert out.returncode == 1, out
    assert named in out.stderr and str(bundle) in out.stderr, out.stderr
    assert out.runc_argv is None
    assert named in out.log
    if bundle.is_dir() and not bundle.is_symlink():
        assert leftovers(bundle) == []


@pytest.mark.parametrize("shape", ["config.json mode 000", "bundle mode 000", "bundle not writable"])
def test_permission_problems_as_an_unprivileged_caller_are_refused_untouched(world, shape):
    case, bundle = new_case(world, CGROUP_SPEC)
    config = bundle / "config.json"
    config.chmod(0o000 if shape == "config.json mode 000" else 0o644)
    bundle.chmod({"bundle mode 000": 0o000, "bundle not writable": 0o555}.get(shape, 0o755))
    out = world.run(case, with_log(create(str(bundle)), case), DROP, as_nobody=True)
    bundle.chmod(0o755)
    assert out.returncode == 1, out
    assert str(config) in out.stderr and "permission denied" in out.stderr, out.stderr
    assert out.runc_argv is None
    assert config.read_bytes() == CGROUP_SPEC
    assert leftovers(bundle) == []


def test_symlinked_bundle_is_followed_and_adapted_in_place(world):
    case = world.case_dir()
    real = case / "real-bundle"
    real.mkdir()
    (real / "config.json").write_bytes(CGROUP_SPEC)
    (case / "link").symlink_to(real)
    argv = with_log(create(str(case / "link")), case)
    out = world.run(case, argv, DROP)
    assert_passed_through(out, argv)
    assert json.loads((real / "config.json").read_bytes())["linux"]["namespaces"] == [{"type": "pid"}]
    assert (case / "link").is_symlink() and leftovers(real) == []


def test_symlinked_config_json_is_replaced_not_written_through(world):
    """A rewrite replaces the link by a regular file: the link's target outside the bundle stays as it was."""
    case, bundle = new_case(world)
    target = case / "elsewhere.json"
    target.write_bytes(CGROUP_SPEC)
    (bundle / "config.json").symlink_to(target)
    argv = with_log(create(str(bundle)), case)
    out = world.run(case, argv, DROP)
    assert_passed_through(out, argv)
    assert target.read_bytes() == CGROUP_SPEC
    config = bundle / "config.json"
    assert not config.is_symlink() and json.loads(config.read_bytes())["linux"]["namespaces"] == [{"type": "pid"}]
    assert leftovers(bundle) == []


def padded_spec(size: int) -> bytes:
    head = b'{"linux":{"namespaces":[{"type":"cgroup"}]},"annotations":{"pad":"'
    tail = b'"}}'
    return head + b"a" * (size - len(head) - len(tail)) + tail


@pytest.mark.parametrize("size", [MAX_SPEC_SIZE, MAX_SPEC_SIZE + 1, 1 << 30])
def test_huge_specs_are_read_up_to_the_limit_and_refused_beyond(world, size):
    case, bundle = new_case(world)
    config = bundle / "config.json"
    if size > 2 * MAX_SPEC_SIZE:  # sparse: the size alone must stop the wrapper from reading it
        with open(config, "wb") as stream:
            stream.truncate(size)
        before = None
    else:
        before = padded_spec(size)
        config.write_bytes(before)
    argv = with_log(create(str(bundle)), case)
    out = world.run(case, argv, DROP)
    if size <= MAX_SPEC_SIZE:
        assert_passed_through(out, argv)
        assert json.loads(config.read_bytes())["linux"]["namespaces"] == []
    else:
        assert_refused(out, str(config), bundle, before)
        assert "larger than" in out.stderr
        assert config.stat().st_size == size


def test_a_spec_that_is_not_json_text_is_refused_with_its_offset(world):
    case, bundle = new_case(world, b'{"linux": {')
    out = world.run(case, create(str(bundle)), DROP)
    assert_refused(out, str(bundle / "config.json"), bundle, b'{"linux": {')
    assert "offset 11" in out.stderr


def test_modes_survive_a_rewrite(world):
    case, bundle = new_case(world, CGROUP_SPEC)
    config = bundle / "config.json"
    config.chmod(0o640)
    out = world.run(case, create(str(bundle)), DROP)
    assert_passed_through(out, create(str(bundle)))
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
