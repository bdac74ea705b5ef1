package main

import (
	"encoding/json"
	"net"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
)

func TestHostVethNameFitsTheKernelAndFollowsContainerAndInterface(t *testing.T) {
	id := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	name := HostVethName(id, "eth0")
	if len(name) != 15 || name[:3] != "gvb" {
		t.Fatalf("name %q", name)
	}
	if name != HostVethName(id, "eth0") {
		t.Error("not deterministic: DEL could not find it")
	}
	if HostVethName("a", "eth0") == HostVethName("a", "eth1") || HostVethName("a", "eth0") == HostVethName("b", "eth0") {
		t.Error("two interfaces share a host veth name")
	}
	// The separator keeps ("ab", "c") and ("a", "bc") apart.
	if HostVethName("ab", "c") == HostVethName("a", "bc") {
		t.Error("container ID and interface run together")
	}
	// The name the old plugin gave: DEL still finds veths it made.
	if got := HostVethName("c1", "eth0"); got != "gvbec43057c07aa" {
		t.Errorf("name %s", got)
	}
}

func address(cidr, gw string) *current.IPConfig {
	ip, subnet, _ := net.ParseCIDR(cidr)
	return &current.IPConfig{Address: net.IPNet{IP: ip, Mask: subnet.Mask}, Gateway: net.ParseIP(gw)}
}

func route(dst, gw string) *types.Route {
	_, subnet, _ := net.ParseCIDR(dst)
	return &types.Route{Dst: *subnet, GW: net.ParseIP(gw)}
}

func describe(routes []*types.Route) string {
	var out []string
	for _, r := range routes {
		out = append(out, r.Dst.String()+" via "+r.GW.String())
	}
	return strings.Join(out, ", ")
}

func TestPodRoutes(t *testing.T) {
	v4 := address("10.42.0.5/24", "10.42.0.1")
	v6 := address("fd00::5/64", "fd00::1")
	cases := []struct {
		name   string
		ips    []*current.IPConfig
		routes []*types.Route
		want   string
	}{
		{"default route added", []*current.IPConfig{v4}, nil, "0.0.0.0/0 via 10.42.0.1"},
		{"one per family", []*current.IPConfig{v4, v6}, nil, "0.0.0.0/0 via 10.42.0.1, ::/0 via fd00::1"},
		{"IPAM's default kept, not doubled", []*current.IPConfig{v4}, []*types.Route{route("0.0.0.0/0", "10.42.0.254")},
			"0.0.0.0/0 via 10.42.0.254"},
		{"IPAM route through the gateway", []*current.IPConfig{v4}, []*types.Route{route("10.96.0.0/12", "")},
			"10.96.0.0/12 via 10.42.0.1, 0.0.0.0/0 via 10.42.0.1"},
	}
	for _, c := range cases {
		routes, err := podRoutes(c.ips, c.routes)
		if got := describe(routes); err != nil || got != c.want {
			t.Errorf("%s: %s, %v; want %s", c.name, got, err, c.want)
		}
	}
}

func TestPodRoutesRefuseARouteOfAFamilyThePodHasNot(t *testing.T) {
	if _, err := podRoutes([]*current.IPConfig{address("10.42.0.5/24", "10.42.0.1")}, []*types.Route{route("fd00:1::/64", "")}); err == nil {
		t.Error("an IPv6 route without an IPv6 address accepted")
	}
}

func TestNeedGatewaysInTheirSubnet(t *testing.T) {
	if err := needGateways([]*current.IPConfig{address("10.42.0.5/24", "10.42.0.1")}); err != nil {
		t.Fatal(err)
	}
	for _, ipc := range []*current.IPConfig{address("10.42.0.5/24", ""), address("10.42.0.5/24", "10.43.0.1")} {
		if needGateways([]*current.IPConfig{ipc}) == nil {
			t.Errorf("%+v accepted", ipc)
		}
	}
	if needGateways(nil) == nil {
		t.Error("no address accepted")
	}
}

func testResult() *current.Result {
	link := func(name, mac string) netlink.Link {
		hw, _ := net.ParseMAC(mac)
		return &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: name, HardwareAddr: hw}}
	}
	reserved := &current.Result{IPs: []*current.IPConfig{address("10.42.0.5/24", "10.42.0.1"), address("fd00::5/64", "fd00::1")}}
	routes, _ := podRoutes(reserved.IPs, nil)
	return newResult("/run/netns/p", link("gvbr0", "02:00:00:00:00:01"), link("gvbx", "02:00:00:00:00:02"),
		link("eth0", "02:00:00:00:00:03"), reserved, routes)
}

func TestResultIsWrittenInTheConfigsVersion(t *testing.T) {
	old, err := testResult().GetAsVersion("0.4.0")
	if err != nil {
		t.Fatal(err)
	}
	encoded, _ := json.Marshal(old)
	for _, want := range []string{`"cniVersion":"0.4.0"`, `"version":"4","interface":2,"address":"10.42.0.5/24"`, `"version":"6"`} {
		if !strings.Contains(string(encoded), want) {
			t.Errorf("0.4.0 result %s lacks %s", encoded, want)
		}
	}
	current, _ := testResult().GetAsVersion("1.0.0")
	encoded, _ = json.Marshal(current)
	want := `{"cniVersion":"1.0.0","interfaces":[{"name":"gvbr0","mac":"02:00:00:00:00:01"},{"name":"gvbx","mac":"02:00:00:00:00:02"},` +
		`{"name":"eth0","mac":"02:00:00:00:00:03","sandbox":"/run/netns/p"}],` +
		`"ips":[{"interface":2,"address":"10.42.0.5/24","gateway":"10.42.0.1"},{"interface":2,"address":"fd00::5/64","gateway":"fd00::1"}],` +
		`"routes":[{"dst":"0.0.0.0/0","gw":"10.42.0.1"},{"dst":"::/0","gw":"fd00::1"}]}`
	var got, expected any
	_ = json.Unmarshal(encoded, &got)
	_ = json.Unmarshal([]byte(want), &expected)
	if !reflect.DeepEqual(got, expected) {
		t.Errorf("1.0.0 result\n%s\nwant\n%s", encoded, want)
	}
}
