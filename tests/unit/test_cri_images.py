# SPDX-License-Identifier: Apache-2.0
"""Unit tests for the verify role's image builder (module_utils/oci_image.py)
and its images and probe output (module_utils/verify_images.py).

The OCI archive is checked by reading it back with tarfile and hashlib, as
containerd's importer reads it; the probe script is run with the machine's
own /bin/sh and its output parsed as the CRI log would carry it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

from verify_module_utils import load

oci = load("oci_image")
images = load("verify_images")

FAKE_BUSYBOX = b"\x7fELF-not-really-busybox"
REF = "localhost/k3s-gvisor/probe:1"


def members(data: bytes) -> dict:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return {m.name: (m, archive.extractfile(m).read() if m.isfile() else None) for m in archive.getmembers()}


def blob(files: dict, digest: str) -> bytes:
    return files["blobs/sha256/" + digest.split(":", 1)[1]][1]


def elf64(program_header_types) -> bytes:
    """A minimal little-endian ELF64 header with the given program header types."""
    header = bytearray(64)
    header[:4] = oci.ELF_MAGIC
    header[4], header[5] = 2, 1
    header[0x20:0x28] = (64).to_bytes(8, "little")
    header[0x36:0x38] = (56).to_bytes(2, "little")
    header[0x38:0x3A] = len(program_header_types).to_bytes(2, "little")
    for p_type in program_header_types:
        header += p_type.to_bytes(4, "little") + bytes(52)
    return bytes(header)


def test_the_archive_is_the_same_bytes_every_time():
    spec = images.probe_spec(REF, FAKE_BUSYBOX, "amd64")
    assert oci.oci_archive(spec) == oci.oci_archive(images.probe_spec(REF, FAKE_BUSYBOX, "amd64"))
    assert oci.manifest_digest(spec) != oci.manifest_digest(images.probe_spec(REF, FAKE_BUSYBOX + b"x", "amd64"))


def test_the_archive_is_an_oci_layout_whose_digests_hold():
    spec = images.probe_spec(REF, FAKE_BUSYBOX, "arm64")
    files = members(oci.oci_archive(spec))
    assert json.loads(files["oci-layout"][1]) == {"imageLayoutVersion": "1.0.0"}
    for name, (member, data) in files.items():
        if name.startswith("blobs/sha256/") and member.isfile():
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    index = json.loads(files["index.json"][1])
    (entry,) = index["manifests"]
    assert entry["annotations"] == {"io.containerd.image.name": REF, "org.opencontainers.image.ref.name": "1"}
    assert entry["digest"] == oci.manifest_digest(spec)
    manifest = json.loads(blob(files, entry["digest"]))
    config = json.loads(blob(files, manifest["config"]["digest"]))
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    assert layer["size"] == len(blob(files, layer["digest"]))
    assert config["rootfs"]["diff_ids"] == [layer["digest"]]  # uncompressed: diff id = blob digest
    assert (config["architecture"], config["os"]) == ("arm64", "linux")
    assert config["config"]["Entrypoint"] == ["/bin/sh", "/probe.sh"]


def test_the_layer_holds_busybox_its_applet_links_and_the_probe_script():
    spec = images.probe_spec(REF, FAKE_BUSYBOX, "amd64")
    layer = members(oci.layer_tar(spec.files))
    names = list(layer)
    assert names[0] == "bin" and layer["bin"][0].isdir()  # parent directories come first
    assert layer["bin/busybox"][1] == FAKE_BUSYBOX
    for applet in images.APPLETS:
        member = layer[f"bin/{applet}"][0]
        assert member.issym() and member.linkname == "busybox"
    assert layer["probe.sh"][1].decode() == images.PROBE_SCRIPT
    assert layer["probe.sh"][0].mode == 0o755
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and not m.uname for m, _ in layer.values())


def test_pause_runs_sleep_alone_without_a_shell():
    spec = images.pause_spec("localhost/k3s-gvisor/pause:1", FAKE_BUSYBOX, "amd64")
    assert spec.entrypoint[0] == "/bin/sleep"  # no shell: a forked child would outlive PID 1 on gVisor
    assert "probe.sh" not in members(oci.layer_tar(spec.files))


def test_a_path_twice_in_a_layer_is_refused():
    with pytest.raises(ValueError, match="twice"):
        oci.layer_tar((oci.ImageFile("bin/x", b"1"), oci.ImageFile("/bin/x", b"2")))


@pytest.mark.parametrize("reference", ["pause:1", "localhost/k3s-gvisor/pause", "Localhost/Pause:1", "localhost/p:bad tag"])
def test_references_without_a_host_or_tag_are_refused(reference):
    with pytest.raises(ValueError, match="HOST/NAME:TAG"):
        oci.check_reference(reference)


def test_static_and_dynamic_elf_files_are_told_apart():
    assert oci.elf_is_static(elf64([1, 1])) is True
    assert oci.elf_is_static(elf64([6, oci.PT_INTERP, 1])) is False
    with open(os.path.realpath(sys.executable), "rb") as handle:  # a real, dynamically linked python
        assert oci.elf_is_static(handle.read()) is False
    with pytest.raises(ValueError, match="not an ELF"):
        oci.elf_is_static(b"#!/bin/sh\n" + bytes(64))


def test_unknown_machines_have_no_oci_architecture():
    assert oci.oci_architecture("x86_64") == "amd64"
    with pytest.raises(ValueError, match="mips"):
        oci.oci_architecture("mips")


def test_ctr_images_ls_is_read_by_reference():
    # containerd 2.1.9's `ctr -n k8s.io images ls` on a node (spacing shortened).
    output = (
        "REF TYPE DIGEST SIZE PLATFORMS LABELS \n"
        "localhost/k3s-gvisor/pause:1 application/vnd.oci.image.manifest.v1+json "
        "sha256:0c19c20bde83cf63e958557c4709cc292e3155f60f967058948f3bea4dd68b0d 2.0 MiB linux/amd64 "
        "io.cri-containerd.image=managed \n"
    )
    assert oci.parse_ctr_images(output) == {
        "localhost/k3s-gvisor/pause:1": "sha256:0c19c20bde83cf63e958557c4709cc292e3155f60f967058948f3bea4dd68b0d"
    }
    assert oci.parse_ctr_images("REF TYPE DIGEST SIZE PLATFORMS LABELS \n") == {}


def test_cri_log_lines_are_joined_and_split_by_stream():
    text = (
        "2026-11-28T17:08:18.7Z stdout P hello \n"
        "2026-11-28T17:08:18.8Z stderr F oops\n"
        "2026-11-28T17:08:18.9Z stdout F world\n"
        "not a log line\n"
        "2026-11-28T17:08:19.0Z stdout F \n"
        "2026-11-28T17:08:19.1Z stdout P cut off"
    )
    assert images.parse_cri_log(text) == [("stderr", "oops"), ("stdout", "hello world"), ("stdout", ""), ("stdout", "cut off")]


def run_probe_script(marker: str) -> list[tuple[str, str]]:
    """The probe script run here with /bin/sh, its stdout as CRI log lines."""
    result = subprocess.run(["/bin/sh", "-c", images.PROBE_SCRIPT], env={"PATH": os.environ["PATH"], images.MARKER_VARIABLE: marker},
                            capture_output=True, text=True, timeout=30, check=True)
    return [("stdout", line) for line in result.stdout.splitlines()]


def test_the_probe_script_prints_what_the_parser_reads():
    parsed = images.parse_probe_output(run_probe_script("k3s-gvisor-verify-abc"), "k3s-gvisor-verify-abc")
    facts = parsed["facts"]
    assert parsed["marker_found"]
    assert facts["uid"] == str(os.getuid())
    assert int(facts["pid"]) > 1
    assert len(facts["capeff"]) == 16 and int(facts["capeff"], 16) >= 0
    assert facts["namespaces"]["pid"] == os.readlink("/proc/self/ns/pid")
    # Here the script ran in this machine's own PID namespace, as no pod's probe may.
    assert not images.own_pid_namespace(facts, os.readlink("/proc/self/ns/pid"))


def test_a_log_of_another_run_does_not_pass():
    lines = run_probe_script("k3s-gvisor-verify-old")
    assert images.parse_probe_output(lines, "k3s-gvisor-verify-new") == {"marker_found": False, "facts": {}}
    assert not images.parse_probe_output(lines[:-1], "k3s-gvisor-verify-old")["marker_found"]  # no end line


def test_own_pid_namespace_needs_pid_1_and_another_namespace():
    facts = {"pid": "1", "namespaces": {"pid": "pid:[8]"}}
    assert images.own_pid_namespace(facts, "pid:[4026531836]")
    assert not images.own_pid_namespace(facts, "pid:[8]")
    assert not images.own_pid_namespace({"pid": "7", "namespaces": {"pid": "pid:[8]"}}, "pid:[1]")
    assert not images.own_pid_namespace({"pid": "1", "namespaces": {}}, "pid:[1]")
