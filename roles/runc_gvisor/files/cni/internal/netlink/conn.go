package netlink

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"syscall"
)

// Conn is one rtnetlink socket, bound to the network namespace it was opened in.
type Conn struct {
	fd  int
	seq uint32
	buf []byte
}

// Open opens a socket in the calling thread's network namespace.
func Open() (*Conn, error) {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	return &Conn{fd: fd, buf: make([]byte, 1<<16)}, nil
}

// OpenIn opens a socket in the network namespace ns (an open nsfs file):
// a socket stays in the namespace it was made in, so the thread enters ns
// only for the socket() call and then goes back.
func OpenIn(ns *os.File) (*Conn, error) {
	runtime.LockOSThread()
	own, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("open own network namespace: %w", err)
	}
	defer own.Close()
	if err := setns(ns); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("enter network namespace %s: %w", ns.Name(), err)
	}
	conn, openErr := Open()
	if err := setns(own); err != nil {
		// The thread stays locked, so no other goroutine runs in the wrong
		// namespace; the runtime discards it when its goroutine ends.
		if conn != nil {
			conn.Close()
		}
		return nil, fmt.Errorf("return to own network namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return conn, openErr
}

func setns(ns *os.File) error {
	_, _, errno := syscall.RawSyscall(sysSetns, ns.Fd(), syscall.CLONE_NEWNET, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// Close closes the socket.
func (c *Conn) Close() error { return syscall.Close(c.fd) }

// execute sends one request and collects the replies: a dump's messages up
// to NLMSG_DONE, nothing but the acknowledgement for a change, or the single
// answer of a get.
func (c *Conn) execute(kind, flags uint16, body []byte) ([]syscall.NetlinkMessage, error) {
	c.seq++
	flags |= syscall.NLM_F_REQUEST
	if err := syscall.Sendto(c.fd, request(kind, flags, c.seq, body), 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return nil, err
	}
	var replies []syscall.NetlinkMessage
	for {
		n, _, err := syscall.Recvfrom(c.fd, c.buf, 0)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		messages, err := syscall.ParseNetlinkMessage(c.buf[:n])
		if err != nil {
			return nil, err
		}
		for _, m := range messages {
			if m.Header.Seq != c.seq {
				continue
			}
			switch m.Header.Type {
			case syscall.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return nil, syscall.EBADMSG
				}
				if errno := -int32(native.Uint32(m.Data[0:4])); errno != 0 {
					return nil, syscall.Errno(errno)
				}
				return replies, nil
			case syscall.NLMSG_DONE:
				return replies, nil
			}
			replies = append(replies, copyMessage(m))
			if flags&(syscall.NLM_F_DUMP|syscall.NLM_F_ACK) == 0 {
				return replies, nil
			}
		}
	}
}

// copyMessage detaches a message from the receive buffer, which is reused.
func copyMessage(m syscall.NetlinkMessage) syscall.NetlinkMessage {
	return syscall.NetlinkMessage{Header: m.Header, Data: append([]byte(nil), m.Data...)}
}

const (
	change = syscall.NLM_F_ACK
	create = syscall.NLM_F_ACK | syscall.NLM_F_CREATE | syscall.NLM_F_EXCL
)

// LinkByName finds a link by its name; ENODEV when there is none.
func (c *Conn) LinkByName(name string) (Link, error) {
	replies, err := c.execute(syscall.RTM_GETLINK, 0, concat(ifInfoMsg(0, 0, 0), attr(syscall.IFLA_IFNAME, cString(name))))
	if err != nil {
		return Link{}, fmt.Errorf("find link %s: %w", name, err)
	}
	for i := range replies {
		if replies[i].Header.Type == syscall.RTM_NEWLINK {
			return parseLink(&replies[i])
		}
	}
	return Link{}, fmt.Errorf("find link %s: %w", name, syscall.ENODEV)
}

// AddBridge creates a bridge; EEXIST when a link of that name exists (of
// whatever kind: gVisor does not say).
func (c *Conn) AddBridge(name string, mtu int) error {
	body := concat(ifInfoMsg(0, 0, 0), attr(syscall.IFLA_IFNAME, cString(name)), mtuAttr(mtu),
		nested(syscall.IFLA_LINKINFO, attr(iflaInfoKind, []byte("bridge"))))
	if _, err := c.execute(syscall.RTM_NEWLINK, create, body); err != nil {
		return fmt.Errorf("add bridge %s: %w", name, err)
	}
	return nil
}

// AddVeth creates a veth pair whose peer is made directly inside the network
// namespace ns under its final name.
func (c *Conn) AddVeth(name, peer string, ns *os.File, mtu int) error {
	peerInfo := concat(ifInfoMsg(0, 0, 0), attr(syscall.IFLA_IFNAME, cString(peer)),
		attr(iflaNetNsFd, uint32Value(uint32(ns.Fd()))), mtuAttr(mtu))
	body := concat(ifInfoMsg(0, 0, 0), attr(syscall.IFLA_IFNAME, cString(name)), mtuAttr(mtu),
		nested(syscall.IFLA_LINKINFO, attr(iflaInfoKind, []byte("veth")),
			nested(iflaInfoData, attr(vethInfoPeer, peerInfo))))
	if _, err := c.execute(syscall.RTM_NEWLINK, create, body); err != nil {
		return fmt.Errorf("add veth %s with peer %s in %s: %w", name, peer, ns.Name(), err)
	}
	return nil
}

func mtuAttr(mtu int) []byte {
	if mtu <= 0 {
		return nil
	}
	return attr(syscall.IFLA_MTU, uint32Value(uint32(mtu)))
}

// SetUp brings a link up and, with master > 0, enslaves it to that link.
func (c *Conn) SetUp(link Link, master int) error {
	body := ifInfoMsg(link.Index, syscall.IFF_UP, syscall.IFF_UP)
	if master > 0 {
		body = append(body, attr(syscall.IFLA_MASTER, uint32Value(uint32(master)))...)
	}
	if _, err := c.execute(syscall.RTM_NEWLINK, change, body); err != nil {
		return fmt.Errorf("set %s up (master %d): %w", link.Name, master, err)
	}
	return nil
}

// DeleteLink deletes a link by name; ENODEV when there is none. Deleting one
// end of a veth pair deletes both, and the routes through them.
func (c *Conn) DeleteLink(name string) error {
	body := concat(ifInfoMsg(0, 0, 0), attr(syscall.IFLA_IFNAME, cString(name)))
	if _, err := c.execute(syscall.RTM_DELLINK, change, body); err != nil {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	return nil
}

// AddAddr adds an address with its prefix to a link; EEXIST when it has it.
func (c *Conn) AddAddr(link Link, ipnet net.IPNet) error {
	fam, ip := family(ipnet.IP)
	ones, _ := ipnet.Mask.Size()
	body := concat(ifAddrMsg(fam, ones, link.Index), attr(syscall.IFA_LOCAL, ip), attr(syscall.IFA_ADDRESS, ip))
	if _, err := c.execute(syscall.RTM_NEWADDR, create, body); err != nil {
		return fmt.Errorf("add address %s to %s: %w", ipnet.String(), link.Name, err)
	}
	return nil
}

// AddRoute adds a route to dst (nil: the default route) via gw on link.
func (c *Conn) AddRoute(link Link, dst *net.IPNet, gw net.IP) error {
	fam, gwIP := family(gw)
	body := rtMsg(fam, 0)
	if dst != nil {
		_, dstIP := family(dst.IP)
		ones, _ := dst.Mask.Size()
		body = concat(rtMsg(fam, ones), attr(syscall.RTA_DST, dstIP))
	}
	body = concat(body, attr(syscall.RTA_GATEWAY, gwIP), attr(syscall.RTA_OIF, uint32Value(uint32(link.Index))))
	if _, err := c.execute(syscall.RTM_NEWROUTE, create, body); err != nil {
		return fmt.Errorf("add route %s via %s dev %s: %w", routeName(dst), gw, link.Name, err)
	}
	return nil
}

func routeName(dst *net.IPNet) string {
	if dst == nil {
		return "default"
	}
	return dst.String()
}

// Addrs lists the addresses of one link.
func (c *Conn) Addrs(link Link) ([]net.IPNet, error) {
	all, err := dump(c, "addresses", syscall.RTM_GETADDR, syscall.RTM_NEWADDR, ifAddrMsg(syscall.AF_UNSPEC, 0, 0), parseAddr)
	var addrs []net.IPNet
	for _, addr := range all {
		if addr.Index == link.Index {
			addrs = append(addrs, addr.IPNet)
		}
	}
	return addrs, err
}

// Routes lists the routes of the namespace (all families, all tables).
func (c *Conn) Routes() ([]Route, error) {
	return dump(c, "routes", syscall.RTM_GETROUTE, syscall.RTM_NEWROUTE, rtMsg(syscall.AF_UNSPEC, 0), parseRoute)
}

// dump asks for every object of a kind and parses the replies of replyType.
func dump[T any](c *Conn, what string, kind, replyType uint16, body []byte, parse func(*syscall.NetlinkMessage) (T, error)) ([]T, error) {
	replies, err := c.execute(kind, syscall.NLM_F_DUMP, body)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", what, err)
	}
	var out []T
	for i := range replies {
		if replies[i].Header.Type != replyType {
			continue
		}
		item, err := parse(&replies[i])
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", what, err)
		}
		out = append(out, item)
	}
	return out, nil
}
