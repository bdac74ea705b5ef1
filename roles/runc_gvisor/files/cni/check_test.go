package main

import (
	"net"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
)

func TestExpectedPodFindsTheSandboxedInterface(t *testing.T) {
	prev := testResult()
	state, err := expectedPod("eth0", "/run/netns/p", prev)
	if err != nil || state.mac != "02:00:00:00:00:03" || len(state.addrs) != 2 || len(state.routes) != 2 {
		t.Fatalf("state = %+v, %v", state, err)
	}
	if _, err := expectedPod("eth0", "/run/netns/other", prev); err == nil {
		t.Error("a prevResult for another sandbox accepted")
	}
	noGateway := &current.Result{Interfaces: prev.Interfaces, IPs: []*current.IPConfig{{Interface: current.Int(2), Address: prev.IPs[0].Address}}}
	if _, err := expectedPod("eth0", "/run/netns/p", noGateway); err == nil {
		t.Error("an address without a gateway accepted")
	}
}

func TestRouteComparisonIgnoresTheMissingInterface(t *testing.T) {
	_, dst, _ := net.ParseCIDR("10.96.0.0/12")
	_, defaultV4, _ := net.ParseCIDR("0.0.0.0/0")
	// As gVisor dumps them: no output interface; netlink names the default
	// route's destination 0.0.0.0/0.
	have := []netlink.Route{{Dst: defaultV4, Gw: net.ParseIP("10.42.0.1").To4()}, {Dst: dst, Gw: net.ParseIP("10.42.0.1")}, {}}
	if !containsRoute(have, route("0.0.0.0/0", "10.42.0.1")) || !containsRoute(have, route("10.96.0.0/12", "10.42.0.1")) {
		t.Error("present routes not found")
	}
	if containsRoute(have, route("0.0.0.0/0", "10.42.0.254")) || containsRoute(have, route("10.0.0.0/8", "")) {
		t.Error("absent routes found")
	}
}

func TestAddressComparisonNeedsTheSamePrefix(t *testing.T) {
	ip, subnet, _ := net.ParseCIDR("10.42.0.5/24")
	have := []netlink.Addr{{IPNet: &net.IPNet{IP: ip.To4(), Mask: subnet.Mask}}, {}}
	if !containsAddr(have, net.IPNet{IP: ip, Mask: net.CIDRMask(24, 32)}) {
		t.Error("the address was not found")
	}
	if containsAddr(have, net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}) {
		t.Error("another prefix matched")
	}
}
