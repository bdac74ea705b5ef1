package bridge

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"k3s-gvisor/gvisor-bridge/internal/cni"
	"k3s-gvisor/gvisor-bridge/internal/netlink"
)

// Check tells whether the pod's network is still what ADD made, as its
// prevResult records: the IPAM reservation, the bridge with the gateway
// addresses, the host end of the veth, the pod's interface with its MAC,
// addresses and routes. Enslavement cannot be read back on gVisor, so it is
// not checked.
func Check(env cni.Env, conf *cni.NetConf, raw []byte) error {
	if len(conf.PrevResult) == 0 {
		return cni.Errorf(cni.CodeInvalidConfig, "CHECK needs prevResult in the network configuration")
	}
	prev, err := cni.ParseResult(conf.PrevResult)
	if err != nil {
		return cni.Errorf(cni.CodeDecodeFailure, "prevResult: %v", err)
	}
	want, err := expectedPod(env, prev)
	if err != nil {
		return cni.Errorf(cni.CodeInvalidConfig, "prevResult: %v", err)
	}
	if _, err := cni.Delegate(env, conf.IPAM.Type, "CHECK", raw); err != nil {
		return err
	}
	host, err := netlink.Open()
	if err != nil {
		return ioError(err)
	}
	defer host.Close()
	if err := checkHost(host, conf.Bridge, HostVethName(env.ContainerID, env.IfName), want.addrs); err != nil {
		return err
	}
	ns, err := os.Open(env.Netns)
	if err != nil {
		return cni.Errorf(cni.CodeIOFailure, "open the pod's network namespace: %v", err)
	}
	defer ns.Close()
	pod, err := netlink.OpenIn(ns)
	if err != nil {
		return ioError(err)
	}
	defer pod.Close()
	return checkPod(pod, env.IfName, want)
}

// podState is what prevResult says the pod's interface has.
type podState struct {
	mac    string
	addrs  []cni.Address
	routes []cni.Route
}

func expectedPod(env cni.Env, prev *cni.Result) (podState, error) {
	index := -1
	for i, iface := range prev.Interfaces {
		if iface.Name == env.IfName && iface.Sandbox == env.Netns {
			index = i
		}
	}
	if index < 0 {
		return podState{}, fmt.Errorf("no interface %s in sandbox %s", env.IfName, env.Netns)
	}
	state := podState{mac: prev.Interfaces[index].Mac, routes: prev.Routes}
	var ips []cni.IPConfig
	for _, ip := range prev.IPs {
		if ip.Interface != nil && *ip.Interface == index {
			ips = append(ips, ip)
		}
	}
	addrs, err := (&cni.Result{IPs: ips}).Addresses()
	state.addrs = addrs
	return state, err
}

func checkHost(host *netlink.Conn, bridgeName, hostVeth string, addrs []cni.Address) error {
	bridge, err := host.LinkByName(bridgeName)
	if err != nil {
		return missing("bridge", bridgeName, err)
	}
	have, err := host.Addrs(bridge)
	if err != nil {
		return ioError(err)
	}
	for _, addr := range addrs {
		gateway := net.IPNet{IP: addr.Gateway, Mask: addr.IPNet.Mask}
		if !containsAddr(have, gateway) {
			return cni.Errorf(cni.CodeStateDiffers, "bridge %s does not have the gateway address %s", bridgeName, gateway.String())
		}
	}
	if _, err := host.LinkByName(hostVeth); err != nil {
		return missing("host end of the pod's veth", hostVeth, err)
	}
	return nil
}

func checkPod(pod *netlink.Conn, ifName string, want podState) error {
	link, err := pod.LinkByName(ifName)
	if err != nil {
		return missing("pod interface", ifName, err)
	}
	if want.mac != "" && link.MAC.String() != want.mac {
		return cni.Errorf(cni.CodeStateDiffers, "pod interface %s has MAC %s, prevResult says %s", ifName, link.MAC, want.mac)
	}
	have, err := pod.Addrs(link)
	if err != nil {
		return ioError(err)
	}
	for _, addr := range want.addrs {
		if !containsAddr(have, addr.IPNet) {
			return cni.Errorf(cni.CodeStateDiffers, "pod interface %s does not have the address %s", ifName, addr.IPNet.String())
		}
	}
	routes, err := pod.Routes()
	if err != nil {
		return ioError(err)
	}
	for _, route := range want.routes {
		if !containsRoute(routes, route) {
			return cni.Errorf(cni.CodeStateDiffers, "the pod has no route to %s via %s", route.Dst, route.GW)
		}
	}
	return nil
}

func missing(what, name string, err error) error {
	if errors.Is(err, syscall.ENODEV) {
		return cni.Errorf(cni.CodeStateDiffers, "%s %s is missing", what, name)
	}
	return ioError(err)
}

func containsAddr(have []net.IPNet, want net.IPNet) bool {
	for _, h := range have {
		if h.IP.Equal(want.IP) && h.Mask.String() == want.Mask.String() {
			return true
		}
	}
	return false
}

// containsRoute compares destination and gateway: gVisor's route dump does
// not always name the output interface.
func containsRoute(have []netlink.Route, want cni.Route) bool {
	_, dst, err := net.ParseCIDR(want.Dst)
	if err != nil {
		return false
	}
	for _, h := range have {
		if sameDst(h.Dst, dst) && (want.GW == "" || h.GW.Equal(net.ParseIP(want.GW))) {
			return true
		}
	}
	return false
}

func sameDst(have, want *net.IPNet) bool {
	wantOnes, _ := want.Mask.Size()
	if have == nil {
		return wantOnes == 0
	}
	haveOnes, _ := have.Mask.Size()
	return haveOnes == wantOnes && have.IP.Equal(want.IP)
}
