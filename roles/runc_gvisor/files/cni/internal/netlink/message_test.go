package netlink

import (
	"bytes"
	"net"
	"syscall"
	"testing"
)

func TestAttrIsPaddedToFourBytesWithItsUnpaddedLength(t *testing.T) {
	got := attr(syscall.IFLA_IFNAME, cString("eth0"))
	want := []byte{9, 0, syscall.IFLA_IFNAME, 0, 'e', 't', 'h', '0', 0, 0, 0, 0}
	if native.Uint16([]byte{1, 0}) != 1 {
		t.Skip("layout spelled out for little-endian hosts")
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("attr = %v, want %v", got, want)
	}
}

func TestNestedHoldsItsChildren(t *testing.T) {
	kind := attr(iflaInfoKind, []byte("bridge"))
	got := nested(syscall.IFLA_LINKINFO, kind)
	if int(native.Uint16(got[0:2])) != 4+len(kind) || !bytes.Equal(got[4:], kind) {
		t.Fatalf("nested = %v", got)
	}
}

func TestRequestHeaderCountsTheBody(t *testing.T) {
	body := ifInfoMsg(7, syscall.IFF_UP, syscall.IFF_UP)
	msg := request(syscall.RTM_NEWLINK, syscall.NLM_F_REQUEST|syscall.NLM_F_ACK, 42, body)
	parsed, err := syscall.ParseNetlinkMessage(msg)
	if err != nil || len(parsed) != 1 {
		t.Fatalf("parse: %v %v", parsed, err)
	}
	h := parsed[0].Header
	if h.Len != uint32(len(msg)) || h.Type != syscall.RTM_NEWLINK || h.Seq != 42 || h.Flags != syscall.NLM_F_REQUEST|syscall.NLM_F_ACK {
		t.Fatalf("header = %+v", h)
	}
	if index := int32(native.Uint32(parsed[0].Data[4:8])); index != 7 {
		t.Fatalf("index = %d", index)
	}
}

// reply builds a message as the kernel (or gVisor) would send it.
func reply(kind uint16, body []byte) *syscall.NetlinkMessage {
	parsed, err := syscall.ParseNetlinkMessage(request(kind, 0, 1, body))
	if err != nil {
		panic(err)
	}
	return &parsed[0]
}

func TestParseLinkReadsIndexNameMACAndUp(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0x42, 0xac, 0x11, 0x00, 0x02}
	m := reply(syscall.RTM_NEWLINK, concat(ifInfoMsg(5, syscall.IFF_UP|syscall.IFF_BROADCAST, 0),
		attr(syscall.IFLA_IFNAME, cString("gvbr0")), attr(syscall.IFLA_ADDRESS, mac)))
	link, err := parseLink(m)
	if err != nil {
		t.Fatal(err)
	}
	if link.Index != 5 || link.Name != "gvbr0" || link.MAC.String() != mac.String() || !link.Up {
		t.Fatalf("link = %+v", link)
	}
	down, _ := parseLink(reply(syscall.RTM_NEWLINK, ifInfoMsg(6, 0, 0)))
	if down.Up {
		t.Fatal("a link without IFF_UP parsed as up")
	}
}

func TestParseAddrPrefersLocalAndKeepsThePrefix(t *testing.T) {
	m := reply(syscall.RTM_NEWADDR, concat(ifAddrMsg(syscall.AF_INET, 24, 3),
		attr(syscall.IFA_ADDRESS, net.IPv4(10, 0, 0, 9).To4()), attr(syscall.IFA_LOCAL, net.IPv4(10, 0, 0, 2).To4())))
	addr, err := parseAddr(m)
	if err != nil {
		t.Fatal(err)
	}
	if addr.Index != 3 || addr.IPNet.String() != "10.0.0.2/24" {
		t.Fatalf("addr = %+v (%s)", addr, addr.IPNet.String())
	}
	v6 := reply(syscall.RTM_NEWADDR, concat(ifAddrMsg(syscall.AF_INET6, 64, 4), attr(syscall.IFA_ADDRESS, net.ParseIP("fd00::2"))))
	if addr, _ := parseAddr(v6); addr.IPNet.String() != "fd00::2/64" {
		t.Fatalf("v6 addr = %s", addr.IPNet.String())
	}
}

func TestRouteRequestsRoundTrip(t *testing.T) {
	gw := net.IPv4(10, 0, 0, 1).To4()
	defaultRoute := reply(syscall.RTM_NEWROUTE, concat(rtMsg(syscall.AF_INET, 0), attr(syscall.RTA_GATEWAY, gw)))
	route, err := parseRoute(defaultRoute)
	if err != nil || route.Dst != nil || !route.GW.Equal(gw) {
		t.Fatalf("default route = %+v, %v", route, err)
	}
	_, dst, _ := net.ParseCIDR("10.96.0.0/12")
	toDst := reply(syscall.RTM_NEWROUTE, concat(rtMsg(syscall.AF_INET, 12), attr(syscall.RTA_DST, dst.IP), attr(syscall.RTA_GATEWAY, gw)))
	route, err = parseRoute(toDst)
	if err != nil || route.Dst.String() != "10.96.0.0/12" {
		t.Fatalf("route = %+v, %v", route, err)
	}
}

func TestShortMessagesAreRefused(t *testing.T) {
	short := &syscall.NetlinkMessage{Data: []byte{1, 2}}
	if _, err := parseLink(short); err == nil {
		t.Error("parseLink accepted a short message")
	}
	if _, err := parseAddr(short); err == nil {
		t.Error("parseAddr accepted a short message")
	}
	if _, err := parseRoute(short); err == nil {
		t.Error("parseRoute accepted a short message")
	}
}

func TestFamilyShortensIPv4(t *testing.T) {
	fam, ip := family(net.ParseIP("10.1.2.3"))
	if fam != syscall.AF_INET || len(ip) != 4 {
		t.Fatalf("family = %d, %v", fam, ip)
	}
	fam, ip = family(net.ParseIP("fd00::1"))
	if fam != syscall.AF_INET6 || len(ip) != 16 {
		t.Fatalf("family = %d, %v", fam, ip)
	}
}
