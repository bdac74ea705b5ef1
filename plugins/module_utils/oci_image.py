# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0
"""One-layer OCI image archives around a static binary, built without a registry.

The verify stage needs a pod sandbox ("pause") image and a small probe image
on hosts that cannot reach a registry. Both are busybox-static plus a few
applet links (and the probe's script), packed as an OCI image layout in a tar
that `ctr images import` reads.

Everything here is deterministic: the same inputs give the same bytes, so the
same manifest digest, and a re-run can tell that the image is already there.
Tar members carry mtime 0, uid/gid 0 and no user names, in sorted order; the
layer is an uncompressed tar (gzip would add nothing but a timestamp to keep
out); JSON is written with sorted keys and no spaces.

Only the standard library is used: this runs with the node's system python.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import tarfile
from dataclasses import dataclass

MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER = "application/vnd.oci.image.layer.v1.tar"
# containerd's importer names an image after this annotation in index.json.
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

# uname -m to the OCI (Go) architecture name.
OCI_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}

ELF_MAGIC = b"\x7fELF"
PT_INTERP = 3

_REFERENCE = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$")


@dataclass(frozen=True)
class ImageFile:
    """A member of the layer: a regular file (data) or a symbolic link (link)."""

    path: str
    data: bytes | None = None
    mode: int = 0o755
    link: str | None = None


@dataclass(frozen=True)
class ImageSpec:
    """What goes into an image: its name, its files and how it starts."""

    reference: str
    files: tuple
    entrypoint: tuple
    architecture: str


def oci_architecture(machine: str) -> str:
    try:
        return OCI_ARCHITECTURES[machine]
    except KeyError:
        raise ValueError(f"no OCI architecture known for machine {machine!r}") from None


def check_reference(reference: str) -> str:
    """A fully named image reference with a tag (localhost/k3s-gvisor/pause:1)."""
    if not _REFERENCE.match(reference) or "/" not in reference.split(":", 1)[0]:
        raise ValueError(f"image reference {reference!r} must look like HOST/NAME:TAG, e.g. localhost/k3s-gvisor/pause:1")
    return reference


def elf_is_static(data: bytes) -> bool:
    """True for an ELF executable without a PT_INTERP program header (no dynamic loader)."""
    if len(data) < 64 or not data.startswith(ELF_MAGIC):
        raise ValueError("not an ELF file")
    is_64 = data[4] == 2
    endian = "<" if data[5] == 1 else ">"
    if is_64:
        phoff, = struct.unpack_from(endian + "Q", data, 0x20)
        phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x36)
    else:
        phoff, = struct.unpack_from(endian + "I", data, 0x1C)
        phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x2A)
    for index in range(phnum):
        offset = phoff + index * phentsize
        if offset + 4 > len(data):
            raise ValueError("truncated ELF program headers")
        p_type, = struct.unpack_from(endian + "I", data, offset)
        if p_type == PT_INTERP:
            return False
    return True


def program_spec(reference: str, name: str, program: bytes, architecture: str) -> ImageSpec:
    """An image of one statically linked program, /NAME, which it starts (the
    cluster DNS's CoreDNS): nothing else in it, so nothing else to patch."""
    return ImageSpec(reference, (ImageFile(name, program, 0o755),), (f"/{name}",), architecture)


def busybox_files(busybox: bytes, applets, extra=()) -> tuple:
    """/bin/busybox, a link per applet, and extra files."""
    files = [ImageFile("bin/busybox", busybox, 0o755)]
    files += [ImageFile(f"bin/{applet}", link="busybox") for applet in sorted(set(applets))]
    return tuple(files) + tuple(extra)


def _parent_dirs(files) -> list[str]:
    dirs = set()
    for item in files:
        parts = item.path.strip("/").split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(dirs)


def _tar_info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.linkname = link
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def deterministic_tar(members) -> bytes:
    """A tar of (TarInfo, data) pairs, in the order given, with fixed headers."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def layer_tar(files) -> bytes:
    """The image's one layer: parent directories first, then the files, sorted."""
    paths = [item.path.strip("/") for item in files]
    if len(set(paths)) != len(paths):
        raise ValueError("a path appears twice in the layer")
    members = [(_tar_info(d + "/", tarfile.DIRTYPE, 0o755), None) for d in _parent_dirs(files)]
    for item in sorted(files, key=lambda f: f.path.strip("/")):
        name = item.path.strip("/")
        if item.link is not None:
            members.append((_tar_info(name, tarfile.SYMTYPE, 0o777, link=item.link), None))
        else:
            members.append((_tar_info(name, tarfile.REGTYPE, item.mode, len(item.data)), item.data))
    return deterministic_tar(members)


def canonical_json(document) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type: str, data: bytes, annotations=None) -> dict:
    result = {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data)}
    if annotations:
        result["annotations"] = annotations
    return result


def image_config(spec: ImageSpec, layer: bytes) -> bytes:
    return canonical_json(
        {
            "architecture": spec.architecture,
            "os": "linux",
            "config": {"Entrypoint": list(spec.entrypoint), "Env": ["PATH=/bin"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]},
        }
    )


def image_blobs(spec: ImageSpec) -> dict:
    """{"layer", "config", "manifest", "index"}: the bytes of each part of the image."""
    check_reference(spec.reference)
    layer = layer_tar(spec.files)
    config = image_config(spec, layer)
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "config": descriptor(MEDIA_TYPE_CONFIG, config),
            "layers": [descriptor(MEDIA_TYPE_LAYER, layer)],
        }
    )
    tag = spec.reference.rsplit(":", 1)[1]
    annotations = {ANNOTATION_CONTAINERD_NAME: spec.reference, ANNOTATION_REF_NAME: tag}
    index = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_INDEX,
            "manifests": [descriptor(MEDIA_TYPE_MANIFEST, manifest, annotations)],
        }
    )
    return {"layer": layer, "config": config, "manifest": manifest, "index": index}


def manifest_digest(spec: ImageSpec) -> str:
    """The digest containerd shows for the imported image (its target, the manifest)."""
    return sha256_digest(image_blobs(spec)["manifest"])


def oci_archive(spec: ImageSpec) -> bytes:
    """The OCI image layout as one tar, for `ctr images import`."""
    blobs = image_blobs(spec)
    members = [
        (_tar_info("blobs/", tarfile.DIRTYPE, 0o755), None),
        (_tar_info("blobs/sha256/", tarfile.DIRTYPE, 0o755), None),
    ]
    for name in ("config", "layer", "manifest"):
        data = blobs[name]
        path = "blobs/sha256/" + sha256_digest(data).split(":", 1)[1]
        members.append((_tar_info(path, tarfile.REGTYPE, 0o644, len(data)), data))
    layout = canonical_json({"imageLayoutVersion": "1.0.0"})
    members.append((_tar_info("index.json", tarfile.REGTYPE, 0o644, len(blobs["index"])), blobs["index"]))
    members.append((_tar_info("oci-layout", tarfile.REGTYPE, 0o644, len(layout)), layout))
    return deterministic_tar(members)


def parse_ctr_images(output: str) -> dict:
    """{reference: digest} from `ctr images ls` (columns REF TYPE DIGEST ...)."""
    images = {}
    for line in output.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[2].startswith("sha256:"):
            images[fields[0]] = fields[2]
    return images
