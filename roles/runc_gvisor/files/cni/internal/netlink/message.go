// Package netlink is the small part of rtnetlink that gvisor-bridge needs,
// on the standard library alone (so it builds offline, exactly as the
// runc-gvisor wrapper does). It speaks only what gVisor 20240729's netstack
// answers: links (bridge, veth), addresses and added routes. It never deletes
// a route: gVisor answers that with EOPNOTSUPP.
package netlink

import (
	"encoding/binary"
	"net"
	"syscall"
	"unsafe"
)

// Linux UAPI numbers the syscall package does not carry.
const (
	iflaInfoKind  = 1  // IFLA_INFO_KIND
	iflaInfoData  = 2  // IFLA_INFO_DATA
	vethInfoPeer  = 1  // VETH_INFO_PEER
	iflaNetNsFd   = 28 // IFLA_NET_NS_FD
	rtTableMain   = 254
	rtprotBoot    = 3
	rtScopeUniv   = 0
	rtnUnicast    = 1
	sizeofIfInfo  = 16
	sizeofIfAddr  = 8
	sizeofRtMsg   = 12
	sizeofNlMsg   = 16
	attrAlignment = 4
)

// native is the byte order of the host: netlink speaks it.
var native binary.ByteOrder = func() binary.ByteOrder {
	probe := uint16(1)
	if *(*byte)(unsafe.Pointer(&probe)) == 1 {
		return binary.LittleEndian
	}
	return binary.BigEndian
}()

func align(n int) int { return (n + attrAlignment - 1) &^ (attrAlignment - 1) }

// attr encodes one rtattr (length, type, value, padding).
func attr(kind uint16, value []byte) []byte {
	length := 4 + len(value)
	out := make([]byte, align(length))
	native.PutUint16(out[0:2], uint16(length))
	native.PutUint16(out[2:4], kind)
	copy(out[4:], value)
	return out
}

// nested encodes an rtattr whose value is other attributes.
func nested(kind uint16, children ...[]byte) []byte {
	return attr(kind, concat(children...))
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, part := range parts {
		out = append(out, part...)
	}
	return out
}

// cString is a name as iproute2 sends it: NUL-terminated.
func cString(s string) []byte { return append([]byte(s), 0) }

func uint32Value(v uint32) []byte {
	out := make([]byte, 4)
	native.PutUint32(out, v)
	return out
}

// ifInfoMsg encodes struct ifinfomsg.
func ifInfoMsg(index int, flags, change uint32) []byte {
	out := make([]byte, sizeofIfInfo)
	out[0] = syscall.AF_UNSPEC
	native.PutUint32(out[4:8], uint32(int32(index)))
	native.PutUint32(out[8:12], flags)
	native.PutUint32(out[12:16], change)
	return out
}

// ifAddrMsg encodes struct ifaddrmsg.
func ifAddrMsg(family uint8, prefixLen int, index int) []byte {
	out := make([]byte, sizeofIfAddr)
	out[0] = family
	out[1] = uint8(prefixLen)
	native.PutUint32(out[4:8], uint32(index))
	return out
}

// rtMsg encodes struct rtmsg for a unicast route in the main table.
func rtMsg(family uint8, dstLen int) []byte {
	out := make([]byte, sizeofRtMsg)
	out[0] = family
	out[1] = uint8(dstLen)
	out[4] = rtTableMain
	out[5] = rtprotBoot
	out[6] = rtScopeUniv
	out[7] = rtnUnicast
	return out
}

// request encodes a whole netlink message.
func request(kind, flags uint16, seq uint32, body []byte) []byte {
	out := make([]byte, sizeofNlMsg, sizeofNlMsg+len(body))
	native.PutUint32(out[0:4], uint32(sizeofNlMsg+len(body)))
	native.PutUint16(out[4:6], kind)
	native.PutUint16(out[6:8], flags)
	native.PutUint32(out[8:12], seq)
	return append(out, body...)
}

// family is the address family of ip, with the address in its short form.
func family(ip net.IP) (uint8, net.IP) {
	if v4 := ip.To4(); v4 != nil {
		return syscall.AF_INET, v4
	}
	return syscall.AF_INET6, ip.To16()
}

// Link is what a link dump tells about one link. gVisor does not report a
// link's kind or its master, so neither is here.
type Link struct {
	Index int
	Name  string
	MAC   net.HardwareAddr
	Up    bool
}

func parseLink(m *syscall.NetlinkMessage) (Link, error) {
	if len(m.Data) < sizeofIfInfo {
		return Link{}, syscall.EBADMSG
	}
	link := Link{
		Index: int(int32(native.Uint32(m.Data[4:8]))),
		Up:    native.Uint32(m.Data[8:12])&syscall.IFF_UP != 0,
	}
	attrs, err := syscall.ParseNetlinkRouteAttr(m)
	if err != nil {
		return Link{}, err
	}
	for _, a := range attrs {
		switch a.Attr.Type {
		case syscall.IFLA_IFNAME:
			link.Name = trimNUL(a.Value)
		case syscall.IFLA_ADDRESS:
			link.MAC = append(net.HardwareAddr(nil), a.Value...)
		}
	}
	return link, nil
}

func trimNUL(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// Addr is one address of a link, with its prefix.
type Addr struct {
	Index int
	IPNet net.IPNet
}

func parseAddr(m *syscall.NetlinkMessage) (Addr, error) {
	if len(m.Data) < sizeofIfAddr {
		return Addr{}, syscall.EBADMSG
	}
	addr := Addr{Index: int(native.Uint32(m.Data[4:8]))}
	attrs, err := syscall.ParseNetlinkRouteAttr(m)
	if err != nil {
		return Addr{}, err
	}
	for _, a := range attrs {
		// IFA_LOCAL is the link's own address; IFA_ADDRESS is the same except
		// on point-to-point links, so LOCAL wins when both are present.
		if a.Attr.Type == syscall.IFA_LOCAL || (a.Attr.Type == syscall.IFA_ADDRESS && addr.IPNet.IP == nil) {
			addr.IPNet.IP = append(net.IP(nil), a.Value...)
		}
	}
	addr.IPNet.Mask = prefixMask(m.Data[0], m.Data[1])
	return addr, nil
}

// prefixMask is the mask of a prefix length in an address family.
func prefixMask(family, length byte) net.IPMask {
	if family == syscall.AF_INET6 {
		return net.CIDRMask(int(length), 8*net.IPv6len)
	}
	return net.CIDRMask(int(length), 8*net.IPv4len)
}

// Route is one route: its destination (nil for a default route) and gateway.
type Route struct {
	Dst *net.IPNet
	GW  net.IP
}

func parseRoute(m *syscall.NetlinkMessage) (Route, error) {
	if len(m.Data) < sizeofRtMsg {
		return Route{}, syscall.EBADMSG
	}
	attrs, err := syscall.ParseNetlinkRouteAttr(m)
	if err != nil {
		return Route{}, err
	}
	var route Route
	for _, a := range attrs {
		switch a.Attr.Type {
		case syscall.RTA_DST:
			route.Dst = &net.IPNet{IP: append(net.IP(nil), a.Value...), Mask: prefixMask(m.Data[0], m.Data[1])}
		case syscall.RTA_GATEWAY:
			route.GW = append(net.IP(nil), a.Value...)
		}
	}
	return route, nil
}
