package bridge

import (
	"net"
	"testing"

	"k3s-gvisor/gvisor-bridge/internal/cni"
	"k3s-gvisor/gvisor-bridge/internal/netlink"
)

func TestHostVethNameFitsTheKernelAndFollowsContainerAndInterface(t *testing.T) {
	name := HostVethName("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "eth0")
	if len(name) != 15 || name[:3] != "gvb" {
		t.Fatalf("name %q", name)
	}
	if name != HostVethName("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "eth0") {
		t.Error("not deterministic: DEL could not find it")
	}
	if HostVethName("a", "eth0") == HostVethName("a", "eth1") || HostVethName("a", "eth0") == HostVethName("b", "eth0") {
		t.Error("two interfaces share a host veth name")
	}
	// The separator keeps ("ab", "c") and ("a", "bc") apart.
	if HostVethName("ab", "c") == HostVethName("a", "bc") {
		t.Error("container ID and interface run together")
	}
}

func address(cidr, gw string) cni.Address {
	ip, subnet, _ := net.ParseCIDR(cidr)
	return cni.Address{IPNet: net.IPNet{IP: ip, Mask: subnet.Mask}, Gateway: net.ParseIP(gw)}
}

func describe(routes []PodRoute) []string {
	var out []string
	for _, r := range routes {
		dst := "default"
		if r.Dst != nil {
			dst = r.Dst.String()
		}
		out = append(out, dst+" via "+r.GW.String())
	}
	return out
}

func TestPodRoutes(t *testing.T) {
	v4 := address("10.42.0.5/24", "10.42.0.1")
	v6 := address("fd00::5/64", "fd00::1")
	cases := []struct {
		name   string
		addrs  []cni.Address
		routes []cni.Route
		want   []string
	}{
		{"default route added", []cni.Address{v4}, nil, []string{"default via 10.42.0.1"}},
		{"one per family", []cni.Address{v4, v6}, nil, []string{"default via 10.42.0.1", "default via fd00::1"}},
		{"IPAM's default kept, not doubled", []cni.Address{v4}, []cni.Route{{Dst: "0.0.0.0/0", GW: "10.42.0.254"}},
			[]string{"default via 10.42.0.254"}},
		{"IPAM route through the gateway", []cni.Address{v4}, []cni.Route{{Dst: "10.96.0.0/12"}},
			[]string{"10.96.0.0/12 via 10.42.0.1", "default via 10.42.0.1"}},
	}
	for _, c := range cases {
		routes, err := PodRoutes(c.addrs, c.routes)
		got := describe(routes)
		if err != nil || len(got) != len(c.want) {
			t.Errorf("%s: %v, %v; want %v", c.name, got, err, c.want)
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("%s: %v, want %v", c.name, got, c.want)
			}
		}
	}
}

func TestPodRoutesRefuseWhatCannotBeRouted(t *testing.T) {
	v4 := address("10.42.0.5/24", "10.42.0.1")
	if _, err := PodRoutes([]cni.Address{v4}, []cni.Route{{Dst: "fd00:1::/64"}}); err == nil {
		t.Error("an IPv6 route without an IPv6 address accepted")
	}
	if _, err := PodRoutes([]cni.Address{v4}, []cni.Route{{Dst: "nonsense"}}); err == nil {
		t.Error("a malformed route accepted")
	}
}

func TestEncodeRoutesNamesDefaultsByFamily(t *testing.T) {
	routes := encodeRoutes([]PodRoute{{GW: net.ParseIP("10.0.0.1")}, {GW: net.ParseIP("fd00::1")}})
	if routes[0] != (cni.Route{Dst: "0.0.0.0/0", GW: "10.0.0.1"}) || routes[1] != (cni.Route{Dst: "::/0", GW: "fd00::1"}) {
		t.Fatalf("routes = %+v", routes)
	}
}

func TestExpectedPodFindsTheSandboxedInterface(t *testing.T) {
	index := 2
	prev := &cni.Result{
		Interfaces: []cni.Interface{{Name: "gvbr0"}, {Name: "gvbx"}, {Name: "eth0", Mac: "aa:bb:cc:dd:ee:ff", Sandbox: "/run/netns/p"}},
		IPs:        []cni.IPConfig{{Interface: &index, Address: "10.42.0.5/24", Gateway: "10.42.0.1"}},
		Routes:     []cni.Route{{Dst: "0.0.0.0/0", GW: "10.42.0.1"}},
	}
	state, err := expectedPod(cni.Env{IfName: "eth0", Netns: "/run/netns/p"}, prev)
	if err != nil || state.mac != "aa:bb:cc:dd:ee:ff" || len(state.addrs) != 1 || len(state.routes) != 1 {
		t.Fatalf("state = %+v, %v", state, err)
	}
	if _, err := expectedPod(cni.Env{IfName: "eth0", Netns: "/run/netns/other"}, prev); err == nil {
		t.Error("a prevResult for another sandbox accepted")
	}
}

func TestRouteComparisonIgnoresTheMissingInterface(t *testing.T) {
	_, dst, _ := net.ParseCIDR("10.96.0.0/12")
	have := []netlink.Route{{GW: net.ParseIP("10.42.0.1").To4()}, {Dst: dst, GW: net.ParseIP("10.42.0.1")}}
	if !containsRoute(have, cni.Route{Dst: "0.0.0.0/0", GW: "10.42.0.1"}) || !containsRoute(have, cni.Route{Dst: "10.96.0.0/12", GW: "10.42.0.1"}) {
		t.Error("present routes not found")
	}
	if containsRoute(have, cni.Route{Dst: "0.0.0.0/0", GW: "10.42.0.254"}) || containsRoute(have, cni.Route{Dst: "10.0.0.0/8"}) {
		t.Error("absent routes found")
	}
}
