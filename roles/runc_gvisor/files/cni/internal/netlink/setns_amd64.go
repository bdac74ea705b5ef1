// setns(2) on amd64; the frozen syscall package does not name it.

package netlink

const sysSetns = 308
