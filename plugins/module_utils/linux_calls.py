# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0
"""The libc calls the probe and the runtime check make (ctypes, errno in
messages), and the kernel's numbers for them, from the Linux UAPI headers.

Only the standard library: this runs on the target.
"""

from __future__ import annotations

import ctypes
import errno
import os

SYSLOG_ACTION_READ_ALL = 3
PR_CAPBSET_READ = 23
PR_SET_CHILD_SUBREAPER = 36
KEYCTL_JOIN_SESSION_KEYRING = 1
KEYCTL_DESCRIBE = 6
PROC_SUPER_MAGIC = 0x9FA0

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

# keyctl(2) has no glibc wrapper (it lives in libkeyutils), so it is called
# by number. The numbers differ per architecture.
SYS_KEYCTL = {"x86_64": 250, "aarch64": 219}

# Capabilities are numbered below 64 on every Linux so far; the probe stops
# there so a kernel that never says EINVAL cannot make it loop forever.
CAPABILITY_PROBE_LIMIT = 64

# Enough for gVisor's whole fake log (about 500 bytes). On Linux, READ_ALL
# with a small buffer returns the newest records, which is all we quote.
KERNEL_LOG_READ_BYTES = 16384
_LIBC = None


def libc():
    """The C library of this process, with errno capture and typed calls."""
    global _LIBC
    if _LIBC is None:
        # dlopen(NULL) finds libc without ctypes.util.find_library, which
        # would spawn ldconfig/gcc processes (slow inside gVisor).
        lib = ctypes.CDLL(None, use_errno=True)
        ulong, cstr = ctypes.c_ulong, ctypes.c_char_p
        signatures = {
            "prctl": ([ctypes.c_int, ulong, ulong, ulong, ulong], ctypes.c_int),
            "klogctl": ([ctypes.c_int, ctypes.c_char_p, ctypes.c_int], ctypes.c_int),
            "statfs": ([cstr, ctypes.c_void_p], ctypes.c_int),
            "unshare": ([ctypes.c_int], ctypes.c_int),
            "setns": ([ctypes.c_int, ctypes.c_int], ctypes.c_int),
            "mount": ([cstr, cstr, cstr, ulong, cstr], ctypes.c_int),
            "umount2": ([cstr, ctypes.c_int], ctypes.c_int),
            "syscall": ([ctypes.c_long, ctypes.c_long, ctypes.c_long], ctypes.c_long),
        }
        for name, (argtypes, restype) in signatures.items():
            function = getattr(lib, name)
            function.argtypes = argtypes
            function.restype = restype
        _LIBC = lib
    return _LIBC


def errno_text(number: int) -> str:
    return f"{errno.errorcode.get(number, f'errno {number}')}: {os.strerror(number)}"


class SyscallError(OSError):
    """A failed libc call; its message names the call and the errno."""


def check_call(result: int, what: str) -> int:
    """Raise SyscallError when a libc call returned -1."""
    if result == -1:
        number = ctypes.get_errno()
        raise SyscallError(number, f"{what} failed: {errno_text(number)}")
    return result


def exception_text(exc: BaseException) -> str:
    """Short text for an exception from a test, for the facts."""
    if isinstance(exc, SyscallError):
        return exc.strerror
    if isinstance(exc, OSError) and exc.errno:
        return errno_text(exc.errno) + (f" ({exc.filename})" if exc.filename else "")
    return f"{type(exc).__name__}: {exc}"


def fs_path(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None
