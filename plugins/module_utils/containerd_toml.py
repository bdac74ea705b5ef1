# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0
"""Merge the gVisor settings into a distribution's containerd config.toml.

Pure logic: ``merge_containerd_config(text, settings, containerd_version)``
takes the file's text ("" for a missing or empty file) and returns the new
text. Nothing here touches the file system. The document is edited with
tomlkit, so every byte the merge does not need to change stays as it was:
comments, order, quoting, keys this project does not manage.

Two schemas are written, chosen by the file's own ``version`` key, or by the
containerd version when the file has none:

* version 2 (containerd 1.6 and 1.7; containerd 2.x still reads it and
  converts it on every start): the CRI plugin is one table,
  ``plugins."io.containerd.grpc.v1.cri"``.
* version 3 (containerd 2.x): the CRI plugin is split in
  ``plugins.'io.containerd.cri.v1.runtime'`` and
  ``plugins.'io.containerd.cri.v1.images'``.

The table paths were read from ``containerd config default`` of containerd
1.7.24 (Debian trixie) and 2.1.9 (Debian sid), and are checked against
``containerd config dump`` by the integration tests.

tomlkit is the only dependency beyond the standard library. It is needed on
the controller only: the action plugin k3s_gvisor.node.containerd_config
reads the node's file, merges here, and writes the result back with
ansible.builtin.copy, so nodes need nothing but Python's standard library.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

try:
    import tomlkit
    from tomlkit.container import OutOfOrderTableProxy
    from tomlkit.exceptions import ParseError as _TomlkitParseError
    from tomlkit.exceptions import TOMLKitError as _TomlkitError
    from tomlkit.items import (
        AoT,
        Comment,
        InlineTable,
        KeyType,
        Null,
        SingleKey,
        String,
        Table,
        Trivia,
        Whitespace,
    )
except ImportError:  # reported by the action plugin
    tomlkit = None
    HAS_TOMLKIT = False
else:
    HAS_TOMLKIT = True

# The options of k3s_gvisor.node.containerd_config (plugins/modules has their documentation).
ARGUMENT_SPEC = dict(
    path=dict(type="path", default="/etc/containerd/config.toml"),
    containerd_version=dict(type="str", required=True),
    runtime_name=dict(type="str", default="runc-gvisor"),
    binary_name=dict(type="str", default="/usr/local/bin/runc-gvisor"),
    default_runtime=dict(type="bool", default=True),
    no_new_keyring=dict(type="bool", default=False),
    systemd_cgroup=dict(type="bool", default=False),
    snapshotter=dict(type="str"),
    unprivileged_ports_icmp=dict(type="bool"),
    sandbox_image=dict(type="str"),
    cni_conf_dir=dict(type="str"),
    cni_bin_dir=dict(type="str"),
    backup=dict(type="bool", default=False),
)

# --------------------------------------------------------------------------
# containerd's names
# --------------------------------------------------------------------------

RUNC_SHIM = "io.containerd.runc.v2"

CRI_V2 = "io.containerd.grpc.v1.cri"
CRI_RUNTIME_V3 = "io.containerd.cri.v1.runtime"
CRI_IMAGES_V3 = "io.containerd.cri.v1.images"

# Plugin ids under which a config can switch the CRI plugin off.
CRI_PLUGIN_IDS = ("cri", CRI_V2, CRI_RUNTIME_V3, CRI_IMAGES_V3)

# Config versions each containerd major reads. containerd 1.x reads 1 and 2;
# containerd 2.x reads 2 and 3 (a version 2 file is converted on every start,
# `containerd config migrate` makes that permanent). This module writes 2 and 3.
READABLE_VERSIONS = {1: (1, 2), 2: (2, 3)}
WRITTEN_VERSION = {1: 2, 2: 3}
OLDEST_SUPPORTED = (1, 6)

# containerd 2.1 replaced cni.bin_dir (a string) with cni.bin_dirs (a list) and
# refuses both set at once; 2.0 knows only bin_dir.
CNI_BIN_DIRS_SINCE = (2, 1)

INDENT_UNIT = "  "
BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
VERSION_TEXT = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")
# Mark the lines of tables this merge created while rendering, so that blank
# lines around them can be laid out afterwards. TOML forbids NUL in a
# document, so the marks cannot clash with its content.
_NEW_HEADER_MARK = "\x00k3s-gvisor-new-table\x00"
_NEW_VALUE_MARK = "\x00k3s-gvisor-new-value\x00"


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


class ContainerdConfigError(Exception):
    """The file cannot be merged as it is; the message says why."""


class ConfigSyntaxError(ContainerdConfigError):
    """The text is not TOML. ``line`` and ``col`` are tomlkit's (1-based), or None."""

    def __init__(self, reason: str, line: int | None = None, col: int | None = None):
        self.reason = reason
        self.line = line
        self.col = col
        where = "at line %s, column %s: " % (line, col) if line is not None else ""
        super().__init__("not valid TOML %s%s" % (where, reason))


class SchemaError(ContainerdConfigError):
    """The file's config version and the containerd version do not go together."""


# --------------------------------------------------------------------------
# Inputs and outputs
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class GvisorSettings:
    """What the merge enforces. ``None`` leaves the corresponding keys alone."""

    runtime_name: str = "runc-gvisor"
    binary_name: str = "/usr/local/bin/runc-gvisor"
    default_runtime: bool = True
    no_new_keyring: bool = False
    systemd_cgroup: bool = False
    snapshotter: str | None = None
    unprivileged_ports_icmp: bool | None = None
    sandbox_image: str | None = None
    cni_conf_dir: str | None = None
    cni_bin_dir: str | None = None

    def validate(self) -> None:
        for name in ("runtime_name", "binary_name"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ContainerdConfigError("%s must be a non-empty string" % name)
        for name in ("snapshotter", "sandbox_image", "cni_conf_dir", "cni_bin_dir"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ContainerdConfigError("%s must be a non-empty string or null" % name)


@dataclass
class MergeResult:
    text: str
    schema_version: int
    # Every key the merge enforces, as a TOML dotted key, with its value.
    settings: dict = field(default_factory=dict)
    # Dotted keys whose text changed (set, added or removed), in order.
    changed_keys: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changed_keys)


# Operations on the document, computed from the settings and the schema.


@dataclass(frozen=True)
class SetKey:
    table: tuple
    key: str
    value: object  # bool, int, str or list of str


@dataclass(frozen=True)
class ClearKey:
    """Set an existing non-empty string key to "" (containerd's "unset"); absent stays absent."""

    table: tuple
    key: str


@dataclass(frozen=True)
class SetKeyIfAbsent:
    """Set a key only where the file has none; an existing value of any kind stays."""

    table: tuple
    key: str
    value: object


@dataclass(frozen=True)
class DropKeyIfEquals:
    table: tuple
    key: str
    value: object


# --------------------------------------------------------------------------
# Versions and schema
# --------------------------------------------------------------------------


def parse_containerd_version(text: str) -> tuple:
    """'2.1.9', '2.1.9+ds1-5', '1.7.24~ds1', 'v2.0.0' -> (major, minor, patch)."""
    match = VERSION_TEXT.match(str(text or "").strip())
    if not match:
        raise SchemaError(
            "containerd_version %r is not a version number like 2.1.9 or 1.7.24 "
            "(the first field of `containerd --version` after the module path)" % (text,)
        )
    return tuple(int(part or 0) for part in match.groups())


def _has_plugin_tables(doc) -> bool:
    plugins = doc.get("plugins")
    return hasattr(plugins, "keys") and len(list(plugins.keys())) > 0


def file_config_version(doc) -> int | None:
    """The document's top-level ``version``; None when absent. Anything but an integer is an error."""
    if "version" not in doc:
        return None
    value = doc["version"]
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaError("the top-level key `version` is %r; containerd expects an integer (2 or 3)" % (value,))
    return int(value)


def decide_schema(file_version: int | None, containerd_version: str, has_plugin_tables: bool) -> int:
    """The config version to write: the file's own, else the one containerd writes itself.

    Raises SchemaError when the file's version cannot be read by that containerd,
    or is one this merge does not write (version 1).
    """
    ver = parse_containerd_version(containerd_version)
    major = ver[0]
    if major not in READABLE_VERSIONS:
        raise SchemaError(
            "containerd %s is not supported: this module knows the config schemas of containerd 1.6/1.7 "
            "(version 2) and 2.x (version 3)" % containerd_version
        )
    if ver[:2] < OLDEST_SUPPORTED:
        raise SchemaError(
            "containerd %s is too old: containerd 1.6 or newer is needed (enable_unprivileged_ports and "
            "enable_unprivileged_icmp came with 1.6)" % containerd_version
        )
    if file_version is None:
        if has_plugin_tables:
            raise SchemaError(
                "the file has [plugins] tables but no top-level `version` key, so containerd reads it as a "
                "version 1 config (short plugin names such as plugins.cri); this module writes versions 2 and 3 "
                "only. Add `version = 2` after renaming its plugin tables to the long ids "
                "(plugins.\"io.containerd.grpc.v1.cri\"), or run `containerd config migrate` (containerd 2.x)"
            )
        return WRITTEN_VERSION[major]
    if file_version not in READABLE_VERSIONS[major]:
        readable = " and ".join(str(v) for v in READABLE_VERSIONS[major])
        hint = ""
        if file_version == 3 and major == 1:
            hint = " (version 3 came with containerd 2.0)"
        raise SchemaError(
            "the file says `version = %d`, which containerd %s cannot read: containerd %d.x reads config "
            "versions %s%s" % (file_version, containerd_version, major, readable, hint)
        )
    if file_version not in WRITTEN_VERSION.values():
        raise SchemaError(
            "the file is a version %d config; this module writes versions 2 and 3 only: migrate it first "
            "(containerd 2.x: `containerd config migrate`; containerd 1.x: add `version = 2` and use the long "
            "plugin ids)" % file_version
        )
    return file_version


def version_major_1(containerd_version: tuple) -> bool:
    return containerd_version[0] == 1


def desired_operations(schema: int, settings: GvisorSettings, containerd_version: tuple) -> list:
    """The keys to set for a schema, in the order new tables should appear."""
    s = settings
    ops: list = [SetKey((), "version", schema)]
    if schema == 3:
        images = ("plugins", CRI_IMAGES_V3)
        runtime = ("plugins", CRI_RUNTIME_V3)
        if s.snapshotter is not None:
            ops.append(SetKey(images, "snapshotter", s.snapshotter))
        if s.sandbox_image is not None:
            ops.append(SetKey(images + ("pinned_images",), "sandbox", s.sandbox_image))
        cri_values = runtime
    else:
        cri = ("plugins", CRI_V2)
        runtime = cri
        cri_values = cri
        if s.sandbox_image is not None:
            ops.append(SetKey(cri, "sandbox_image", s.sandbox_image))
    if s.unprivileged_ports_icmp is not None:
        ops.append(SetKey(cri_values, "enable_unprivileged_ports", bool(s.unprivileged_ports_icmp)))
        ops.append(SetKey(cri_values, "enable_unprivileged_icmp", bool(s.unprivileged_ports_icmp)))
    containerd = runtime + ("containerd",)
    if schema == 2 and s.snapshotter is not None:
        ops.append(SetKey(containerd, "snapshotter", s.snapshotter))
    if s.default_runtime:
        ops.append(SetKey(containerd, "default_runtime_name", s.runtime_name))
    else:
        ops.append(DropKeyIfEquals(containerd, "default_runtime_name", s.runtime_name))
    if version_major_1(containerd_version) and s.runtime_name != "runc":
        # containerd 1.x replaces its built-in runtimes with the file's [..runtimes] table instead of merging
        # them (2.x merges): without this, adding ours would remove `runc`, the built-in default runtime.
        ops.append(SetKeyIfAbsent(containerd + ("runtimes", "runc"), "runtime_type", RUNC_SHIM))
    ours = containerd + ("runtimes", s.runtime_name)
    ops.append(SetKey(ours, "runtime_type", RUNC_SHIM))
    ops.append(SetKey(ours + ("options",), "BinaryName", s.binary_name))
    ops.append(SetKey(ours + ("options",), "NoNewKeyring", bool(s.no_new_keyring)))
    ops.append(SetKey(ours + ("options",), "SystemdCgroup", bool(s.systemd_cgroup)))
    cni = runtime + ("cni",)
    if s.cni_conf_dir is not None:
        ops.append(SetKey(cni, "conf_dir", s.cni_conf_dir))
    if s.cni_bin_dir is not None:
        if schema == 3 and containerd_version[:2] >= CNI_BIN_DIRS_SINCE:
            ops.append(SetKey(cni, "bin_dirs", [s.cni_bin_dir]))
            ops.append(ClearKey(cni, "bin_dir"))
        else:
            ops.append(SetKey(cni, "bin_dir", s.cni_bin_dir))
    return ops


# --------------------------------------------------------------------------
# Keys and values
# --------------------------------------------------------------------------


def quote_key(key: str, literal: bool) -> str:
    if BARE_KEY.match(key):
        return key
    if literal and "'" not in key and "\n" not in key:
        return "'%s'" % key
    return '"%s"' % key.replace("\\", "\\\\").replace('"', '\\"')


def dotted_key(path, literal: bool) -> str:
    return ".".join(quote_key(part, literal) for part in path)


def _is_table(obj) -> bool:
    return isinstance(obj, (Table, InlineTable, OutOfOrderTableProxy))


def _describe(obj) -> str:
    if isinstance(obj, AoT):
        return "an array of tables"
    if isinstance(obj, bool):
        return "a boolean (%s)" % str(obj).lower()
    if isinstance(obj, str):
        return "a string (%r)" % str(obj)
    if isinstance(obj, list):
        return "an array"
    if isinstance(obj, int):
        return "an integer (%d)" % obj
    return "a %s" % type(obj).__name__.lower()


def _same_value(old, new) -> bool:
    if isinstance(new, bool):
        return isinstance(old, bool) and old == new
    if isinstance(new, int):
        return isinstance(old, int) and not isinstance(old, bool) and int(old) == new
    if isinstance(new, str):
        return isinstance(old, str) and str(old) == new
    if isinstance(new, list):
        return (
            isinstance(old, list)
            and len(old) == len(new)
            and all(isinstance(a, str) and str(a) == b for a, b in zip(old, new))
        )
    raise TypeError("unsupported value %r" % (new,))


def _can_be_literal(value: str) -> bool:
    return "'" not in value and "\n" not in value and "\r" not in value and not any(
        ord(c) < 32 and c != "\t" for c in value
    )


def _string_item(value: str, literal: bool):
    return tomlkit.string(value, literal=literal and _can_be_literal(value))


def _is_literal(string) -> bool:
    """Whether a parsed string is 'literal', from its text: as_string() is public in every tomlkit release."""
    return string.as_string().startswith("'")


def _value_item(value, literal: bool, old=None):
    """A tomlkit item for value; a string keeps the quoting of the one it replaces."""
    if isinstance(value, bool):
        return tomlkit.item(value)
    if isinstance(value, int):
        return tomlkit.integer(value)
    if isinstance(value, str):
        if isinstance(old, String):
            literal = _is_literal(old)
        return _string_item(value, literal)
    if isinstance(value, list):
        if isinstance(old, list) and old and isinstance(old[0], String):
            literal = _is_literal(old[0])
        array = tomlkit.array()
        for element in value:
            array.append(_string_item(element, literal))
        return array
    raise TypeError("unsupported value %r" % (value,))


def _read_back(data: dict, path) -> object:
    cur = data
    for part in path:
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


_MISSING = object()


# --------------------------------------------------------------------------
# The merge
# --------------------------------------------------------------------------


def parse_document(text: str):
    """tomlkit.parse with errors turned into ConfigSyntaxError (line and column when tomlkit gives them)."""
    if not HAS_TOMLKIT:
        raise ContainerdConfigError("tomlkit is not installed (Debian: python3-tomlkit)")
    try:
        return tomlkit.parse(text)
    except _TomlkitParseError as error:
        reason = str(error)
        # tomlkit appends " at line L col C" to its message; keep the reason alone.
        reason = re.sub(r"\s+at line \d+ col \d+$", "", reason)
        raise ConfigSyntaxError(reason, error.line, error.col) from None
    except (_TomlkitError, ValueError) as error:  # e.g. a key defined twice
        raise ConfigSyntaxError(str(error)) from None


class _Merger:
    """Applies the operations to a tomlkit document, placing what is new where a person would."""

    def __init__(self, doc, text: str, literal: bool):
        self.doc = doc
        self.literal = literal
        # The file's layout: containerd indents nested headers by two spaces per level.
        self.indented = re.search(r"(?m)^[ \t]+\[", text) is not None
        self.new_tables: list = []  # (path, Table, parent)
        self.new_values: list = []  # (item, indent)
        self.revealed_tables: list = []  # (path, Table): header-less tables that got values
        self.changed_keys: list = []

    # -- navigation ------------------------------------------------------

    def _key(self, name: str):
        if BARE_KEY.match(name):
            return SingleKey(name)
        if self.literal and "'" not in name:
            return SingleKey(name, t=KeyType.Literal)
        return SingleKey(name, t=KeyType.Basic)

    def _step(self, parent, part: str, path):
        """parent[part] as a table, refusing what this merge cannot edit faithfully."""
        for body in _raw_bodies(parent):
            for key, _item in body:
                if key is not None and key.key == part and key.is_dotted():
                    raise ContainerdConfigError(
                        "%s is written with dotted keys (%s.name = value); this module edits [table] sections "
                        "only: write it as [%s]"
                        % (dotted_key(path, self.literal), key.as_string(), dotted_key(path, self.literal))
                    )
        obj = parent[part]
        if not _is_table(obj):
            raise ContainerdConfigError(
                "%s is %s in the file, where containerd expects a table"
                % (dotted_key(path, self.literal), _describe(obj))
            )
        return obj

    def find_table(self, path):
        """The table at path, or None where some part of it is absent."""
        cur = self.doc
        for depth, part in enumerate(path):
            if part not in cur:
                return None
            cur = self._step(cur, part, path[: depth + 1])
        return cur

    def ensure_table(self, path):
        cur = self.doc
        for depth, part in enumerate(path):
            sub = path[: depth + 1]
            if part not in cur:
                new = tomlkit.inline_table() if isinstance(cur, InlineTable) else tomlkit.table()
                # A new table goes at the end of its parent: after the parent's last sub-table.
                cur[self._key(part)] = new
                if isinstance(new, Table):
                    self.new_tables.append((sub, new, cur))
            cur = self._step(cur, part, sub)
        return cur

    def _value_indent(self, table, depth: int) -> str:
        """Indentation of a new key in table: like its sibling keys, else by depth in an indented file."""
        if table is self.doc:
            return ""
        for body in _raw_bodies(table):
            for key, item in body:
                if _is_plain_entry(key, item):
                    return item.trivia.indent.rsplit("\n", 1)[-1]
        return INDENT_UNIT * depth if self.indented else ""

    def _insert_value(self, table, path, key, item) -> None:
        """Add a new key to an existing table: after its last key, before comments and sub-tables."""
        if isinstance(table, InlineTable):
            table[key] = item
            return
        target = table
        if isinstance(table, OutOfOrderTableProxy):
            parts = table._tables
            with_values = [t for t in parts if any(_is_plain_entry(k, v) for k, v in t.value.body)]
            concrete = [t for t in parts if not t.is_super_table()]
            target = (with_values or concrete or parts)[0]
        if isinstance(target, Table) and target.is_super_table():
            # A header-less table ([a] implied by [a.b]) must now show its header.
            target._is_super_table = False
            self.revealed_tables.append((path, target))
        container = target if target is self.doc else target.value
        body = container.body
        last_key = None
        for entry_key, entry in body:
            if _is_plain_entry(entry_key, entry):
                last_key = entry_key
        if last_key is not None:
            container._insert_after(last_key, key, item)
        else:
            index = 0
            if target is self.doc:
                # Keep a file's opening comment block on top.
                while index < len(body) and body[index][0] is None and isinstance(body[index][1], Comment):
                    index += 1
                if index == len(body) or not isinstance(body[index][1], Whitespace):
                    index = 0
            if body:
                container._insert_at(index, key, item)
            else:
                container.append(key, item)
        if target is not self.doc:
            dict.__setitem__(target, key.key, item)
        # Keys directly followed by a sub-table's header get a blank line between them.
        position = next(i for i, (_k, v) in enumerate(body) if v is item)
        following = body[position + 1][1] if position + 1 < len(body) else None
        if isinstance(following, Table) and not following.is_super_table() and "\n" not in following.trivia.indent:
            following.trivia.indent = "\n" + following.trivia.indent

    # -- operations ------------------------------------------------------

    def apply(self, op) -> None:
        if isinstance(op, SetKey):
            self._set(op)
        elif isinstance(op, SetKeyIfAbsent):
            table = self.find_table(op.table)
            if table is None or op.key not in table:
                self._set(SetKey(op.table, op.key, op.value))
        elif isinstance(op, ClearKey):
            self._clear(op)
        elif isinstance(op, DropKeyIfEquals):
            self._drop(op)
        else:  # pragma: no cover
            raise TypeError(op)

    def _note(self, path):
        self.changed_keys.append(dotted_key(path, self.literal))

    def _set(self, op: SetKey) -> None:
        path = op.table + (op.key,)
        existing = self.find_table(op.table)
        if existing is not None and op.key in existing:
            old = existing[op.key]
            if _is_table(old) or isinstance(old, AoT):
                raise ContainerdConfigError(
                    "%s is %s in the file, where containerd expects a value"
                    % (dotted_key(path, self.literal), _describe(old))
                )
            if _same_value(old, op.value):
                return
            existing[op.key] = _value_item(op.value, self.literal, old=old)
            self._note(path)
            return
        table = self.ensure_table(op.table)
        indent = self._value_indent(table, len(op.table))
        item = _value_item(op.value, self.literal)
        self._insert_value(table, op.table, self._key(op.key), item)
        if not isinstance(table, InlineTable):
            # Now, not only at the end: the next new key of this table copies it.
            item.trivia.indent = indent
            self.new_values.append((item, indent))
        self._note(path)

    def _clear(self, op: ClearKey) -> None:
        table = self.find_table(op.table)
        if table is None or op.key not in table:
            return
        old = table[op.key]
        if isinstance(old, str) and str(old) == "":
            return
        table[op.key] = _value_item("", self.literal, old=old)
        self._note(op.table + (op.key,))

    def _drop(self, op: DropKeyIfEquals) -> None:
        table = self.find_table(op.table)
        if table is None or op.key not in table:
            return
        if not _same_value(table[op.key], op.value):
            return
        # The key's line goes; a comment beside it stays where it was, on a line of its own.
        commented = [
            (body, index, item.trivia)
            for body in _raw_bodies(table)
            for index, (key, item) in enumerate(body)
            if key is not None and key.key == op.key and item.trivia.comment
        ]
        del table[op.key]
        for body, index, trivia in commented:
            if index < len(body) and isinstance(body[index][1], Null):
                body[index] = (None, Comment(Trivia(trivia.indent, "", trivia.comment, trivia.trail)))
        self._note(op.table + (op.key,))

    # -- layout ----------------------------------------------------------

    def finish_layout(self) -> None:
        """Indent what was added like the file, mark new headers, keep comments with what they precede."""
        for item, indent in self.new_values:
            item.trivia.indent = indent
        for path, table, parent in self.new_tables:
            if table.is_super_table():
                table.trivia.indent = ""
            else:
                table.trivia.indent = _NEW_HEADER_MARK + self._header_indent(path)
            for key, item in table.value.body:
                if key is not None and not isinstance(item, (Table, AoT)):
                    item.trivia.indent = INDENT_UNIT * len(path) if self.indented else ""
                    item.trivia.comment_ws = _NEW_VALUE_MARK
        for path, table in self.revealed_tables:
            table.trivia.indent = _NEW_HEADER_MARK + self._header_indent(path)
            for key, item in table.value.body:
                if _is_plain_entry(key, item):
                    item.trivia.comment_ws = _NEW_VALUE_MARK + item.trivia.comment_ws

    def _header_indent(self, path) -> str:
        return INDENT_UNIT * (len(path) - 1) if self.indented else ""


def _raw_bodies(obj) -> list:
    """The body lists (key, item) that make up a table, a document, or the parts of an out-of-order table."""
    if isinstance(obj, OutOfOrderTableProxy):
        return [part.value.body for part in obj._tables]
    if isinstance(obj, (Table, InlineTable)):
        return [obj.value.body]
    return [obj.body]


def _is_plain_entry(key, item) -> bool:
    """A `key = value` line of the table itself (an inline table is a value too)."""
    return key is not None and not key.is_dotted() and not isinstance(item, (Table, AoT))


def _tidy_new_headers(text: str, move_comments: bool = True) -> str:
    """Lay out the lines around the tables this merge created or gave a header.

    A new table lands where its parent ends, which is often right under the
    comment lines that introduce the next existing header (tomlkit keeps such
    comments at the end of the table before). Those comments move back down,
    to stand above that header again. There is one blank line above each new
    block (none at the top of the file) and one below it.
    """
    # Every new header starts a line (tomlkit 0.13 did not end an unterminated last line before a table;
    # the pinned 0.15.2 does, and this then changes nothing).
    text = re.sub("(?<!\n)" + re.escape(_NEW_HEADER_MARK), "\n" + _NEW_HEADER_MARK, text)
    out: list = []
    in_new_block = False
    held: list = []  # comment lines moved below the current new block
    held_gap = False  # a blank line separated them from what followed
    glued = False  # the moved comments were directly above the next line: keep them so
    for line in text.split("\n"):
        if glued:
            if not line.strip():
                continue
            glued = False
        if _NEW_HEADER_MARK in line:
            line = line.replace(_NEW_HEADER_MARK, "")
            if not in_new_block:
                gap = 0
                while out and out[-1].strip() == "":
                    out.pop()
                    gap += 1
                start = len(out)
                while move_comments and start > 0 and out[start - 1].lstrip().startswith("#"):
                    start -= 1
                held, held_gap = out[start:], gap > 0
                del out[start:]
            while out and out[-1].strip() == "":
                out.pop()
            if out:
                out.append("")
            in_new_block = True
        elif _NEW_VALUE_MARK in line:
            line = line.replace(_NEW_VALUE_MARK, "")
        elif in_new_block:
            in_new_block = False
            if held:
                out.append("")
                out.extend(held)
                held = []
                if held_gap:
                    out.append("")
                elif not line.strip():
                    glued = True
                    continue
            elif line.strip():
                out.append("")
            if not line.strip() and out and not out[-1].strip():
                continue
        out.append(line)
    if glued:  # only blank lines followed the moved comments: end the text with a newline
        out.append("")
    if held:  # the text ended inside the new block, without a final newline
        out.append("")
        out.extend(held)
    return "\n".join(out)


def _line_endings_like(original: str, text: str) -> str:
    """A file written with CRLF line ends keeps them on the lines the merge adds."""
    if original.count("\r\n") * 2 > original.count("\n"):
        return re.sub(r"(?<!\r)\n", "\r\n", text)
    return text


def _detect_literal_keys(text: str, schema: int) -> bool:
    """Quote new keys like the file does: containerd 2.x writes 'single', 1.x "double" quotes."""
    single = len(re.findall(r"\.'[^'\n]*'", text))
    double = len(re.findall(r'\."[^"\n]*"', text))
    if single != double:
        return single > double
    return schema == 3


def _warnings(doc, schema: int) -> list:
    notes = []
    imports = doc.get("imports")
    if isinstance(imports, list) and len(imports) > 0:
        notes.append(
            "the file imports %s: settings in those files override the ones merged here"
            % ", ".join(str(i) for i in imports)
        )
    disabled = doc.get("disabled_plugins")
    if isinstance(disabled, list):
        off = [str(p) for p in disabled if str(p) in CRI_PLUGIN_IDS]
        if off:
            notes.append(
                "disabled_plugins lists %s: while the CRI plugin is disabled, k3s cannot use this containerd"
                % ", ".join(off)
            )
    return notes


def merge_containerd_config(text: str, settings: GvisorSettings, containerd_version: str) -> MergeResult:
    """Return the config text with the settings merged in.

    ``text`` is the file's content ("" when there is no file). Raises
    ConfigSyntaxError for text that is not TOML, SchemaError when the file's
    version does not fit the containerd version, and ContainerdConfigError
    when a key the merge must set is of another kind in the file (a table
    where a value belongs, or the reverse).
    """
    settings.validate()
    text = text or ""
    # Lines added at the end of a file need the last line ended (the text is returned as is when nothing changes).
    doc = parse_document(text if text.endswith("\n") or not text else text + "\n")
    before = doc.unwrap()
    file_version = file_config_version(doc)
    version = parse_containerd_version(containerd_version)
    schema = decide_schema(file_version, containerd_version, _has_plugin_tables(doc))
    literal = _detect_literal_keys(text, schema)

    ops = desired_operations(schema, settings, version)
    merger = _Merger(doc, text, literal)
    for op in ops:
        merger.apply(op)

    result = MergeResult(text=text, schema_version=schema, warnings=_warnings(doc, schema))
    merged = doc.unwrap()
    for op in ops:
        path = op.table + (op.key,)
        if isinstance(op, SetKey):
            result.settings[dotted_key(path, literal)] = op.value
        elif isinstance(op, ClearKey) and _read_back(merged, path) is not _MISSING:
            result.settings[dotted_key(path, literal)] = ""
        elif isinstance(op, SetKeyIfAbsent):
            # Whatever the file has there now, ours or its own.
            result.settings[dotted_key(path, literal)] = _read_back(merged, path)
    if not merger.changed_keys:
        return result

    merger.finish_layout()
    rendered = doc.as_string()
    expected = apply_to_data(before, ops)
    try:
        new_text = _line_endings_like(text, _tidy_new_headers(rendered))
        _verify(new_text, expected)
    except ContainerdConfigError:
        # A line of a multi-line string that starts with '#' looks like a comment to the layout pass;
        # lay out without moving comments then (and still verify).
        new_text = _line_endings_like(text, _tidy_new_headers(rendered, move_comments=False))
        _verify(new_text, expected)
    result.text = new_text
    result.changed_keys = merger.changed_keys
    return result


def apply_to_data(data: dict, ops: list) -> dict:
    """What the operations do to the parsed document, on plain dicts: the result the text must parse to."""
    out = copy.deepcopy(data)
    for op in ops:
        table = out
        if isinstance(op, (SetKey, SetKeyIfAbsent)):
            for part in op.table:
                table = table.setdefault(part, {})
            if isinstance(op, SetKey) or op.key not in table:
                table[op.key] = op.value
            continue
        for part in op.table:
            table = table.get(part, {})
        if isinstance(op, ClearKey) and op.key in table and not _same_value(table[op.key], ""):
            table[op.key] = ""
        elif isinstance(op, DropKeyIfEquals) and op.key in table and _same_value(table[op.key], op.value):
            del table[op.key]
    return out


def _first_difference(got, want, path=()) -> tuple:
    if isinstance(got, dict) and isinstance(want, dict):
        for key in list(want) + [k for k in got if k not in want]:
            if key not in got or key not in want:
                return path + (key,)
            found = _first_difference(got[key], want[key], path + (key,))
            if found is not None:
                return found
        return None
    return None if got == want else path


def _verify(new_text: str, expected: dict) -> None:
    """Parse the result again, with tomlkit and with the stricter tomllib where there is one (3.11+).

    It must be exactly the old document with the operations applied, or nothing is handed out.
    """
    parsed = []
    try:
        parsed.append(tomlkit.parse(new_text).unwrap())
        try:
            import tomllib
        except ImportError:  # pragma: no cover - Python 3.10
            tomllib = None
        if tomllib is not None:
            parsed.append(tomllib.loads(new_text))
    except Exception as error:  # pragma: no cover - a tomlkit bug
        raise ContainerdConfigError("internal error: the merged config is not valid TOML: %s" % error)
    for data in parsed:
        if data != expected:
            where = _first_difference(data, expected)
            raise ContainerdConfigError(
                "internal error: the merged text would not mean what was intended at %s"
                % ".".join(where or ("?",))
            )
