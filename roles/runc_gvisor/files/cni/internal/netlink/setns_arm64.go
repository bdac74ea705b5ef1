// setns(2) on arm64 (the generic syscall table); the frozen syscall package does not name it.

package netlink

const sysSetns = 268
