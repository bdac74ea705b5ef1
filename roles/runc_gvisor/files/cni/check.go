package main

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// podState is what prevResult says the pod's interface has.
type podState struct {
	mac    string
	addrs  []*current.IPConfig
	routes []*types.Route
}

// expectedPod finds the pod's interface in prevResult (by name and sandbox)
// and what it should have.
func expectedPod(ifName, netnsPath string, prev *current.Result) (podState, error) {
	index := -1
	for i, iface := range prev.Interfaces {
		if iface.Name == ifName && iface.Sandbox == netnsPath {
			index = i
		}
	}
	if index < 0 {
		return podState{}, fmt.Errorf("no interface %s in sandbox %s", ifName, netnsPath)
	}
	state := podState{mac: prev.Interfaces[index].Mac, routes: prev.Routes}
	for _, ipc := range prev.IPs {
		if ipc.Interface != nil && *ipc.Interface == index {
			state.addrs = append(state.addrs, ipc)
		}
	}
	return state, needGateways(state.addrs)
}

// checkHost looks for the bridge with each gateway address, and the host end.
func checkHost(bridgeName, hostVeth string, addrs []*current.IPConfig) error {
	host, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return ioError("netlink socket: %v", err)
	}
	defer host.Close()
	bridge, err := host.LinkByName(bridgeName)
	if err != nil {
		return missing("bridge", bridgeName, err)
	}
	have, err := addrList(host, bridge)
	if err != nil {
		return ioError("list the addresses of %s: %v", bridgeName, err)
	}
	for _, ipc := range addrs {
		gateway := net.IPNet{IP: ipc.Gateway, Mask: ipc.Address.Mask}
		if !containsAddr(have, gateway) {
			return differs("bridge %s does not have the gateway address %s", bridgeName, &gateway)
		}
	}
	if _, err := host.LinkByName(hostVeth); err != nil {
		return missing("host end of the pod's veth", hostVeth, err)
	}
	return nil
}

// checkPod looks at the pod's interface: its MAC, addresses and routes.
func checkPod(podNS ns.NetNS, ifName string, want podState) error {
	pod, err := netlinksafe.NewHandleAt(netns.NsHandle(int(podNS.Fd())), unix.NETLINK_ROUTE)
	if err != nil {
		return ioError("netlink socket in %s: %v", podNS.Path(), err)
	}
	defer pod.Close()
	link, err := pod.LinkByName(ifName)
	if err != nil {
		return missing("pod interface", ifName, err)
	}
	if mac := link.Attrs().HardwareAddr.String(); want.mac != "" && mac != want.mac {
		return differs("pod interface %s has MAC %s, prevResult says %s", ifName, mac, want.mac)
	}
	have, err := addrList(pod, link)
	if err != nil {
		return ioError("list the addresses of %s: %v", ifName, err)
	}
	for _, ipc := range want.addrs {
		if !containsAddr(have, ipc.Address) {
			return differs("pod interface %s does not have the address %s", ifName, &ipc.Address)
		}
	}
	// All routes of the namespace: gVisor's route dump does not always name
	// the output interface, so filtering by link would miss some.
	routes, err := pod.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return ioError("list the pod's routes: %v", err)
	}
	for _, r := range want.routes {
		if !containsRoute(routes, r) {
			return differs("the pod has no route to %s via %s", &r.Dst, r.GW)
		}
	}
	return nil
}

// addrList lists a link's addresses, again if a dump was interrupted (as
// netlinksafe does for the calls it wraps).
func addrList(h netlinksafe.Handle, link netlink.Link) (addrs []netlink.Addr, err error) {
	for attempt := 0; attempt < 5; attempt++ {
		if addrs, err = h.AddrList(link, netlink.FAMILY_ALL); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return addrs, err
}

func missing(what, name string, err error) error {
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return differs("%s %s is missing", what, name)
	}
	return ioError("find %s %s: %v", what, name, err)
}

func containsAddr(have []netlink.Addr, want net.IPNet) bool {
	for _, h := range have {
		if h.IPNet != nil && h.IP.Equal(want.IP) && prefixLen(h.Mask) == prefixLen(want.Mask) {
			return true
		}
	}
	return false
}

// containsRoute compares destination and gateway only, for the same reason
// as the dump above.
func containsRoute(have []netlink.Route, want *types.Route) bool {
	for _, h := range have {
		if h.Dst != nil && prefixLen(h.Dst.Mask) == prefixLen(want.Dst.Mask) && h.Dst.IP.Equal(want.Dst.IP) && (want.GW == nil || h.Gw.Equal(want.GW)) {
			return true
		}
	}
	return false
}

func prefixLen(mask net.IPMask) int {
	ones, _ := mask.Size()
	return ones
}
