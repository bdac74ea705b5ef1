// Package bridge is what gvisor-bridge does for each CNI command: a bridge
// made when absent, holding each IPAM gateway address; per pod a veth pair,
// its host end enslaved to the bridge, its other end made inside the pod's
// network namespace under CNI_IFNAME with the pod's addresses and a default
// route via the gateway. Only operations gVisor's netstack supports are used:
// nothing reads a link's kind or master back, and no route is ever deleted
// (DEL deletes the host end of the veth; the pair and its routes go with it).
package bridge

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"k3s-gvisor/gvisor-bridge/internal/cni"
	"k3s-gvisor/gvisor-bridge/internal/netlink"
)

// HostVethName is the host end's name, derived from the container and its
// interface so that DEL finds it without the pod's namespace, and concurrent
// ADDs never pick the same one. 15 bytes: the kernel's limit.
func HostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "\x00" + ifName))
	return "gvb" + hex.EncodeToString(sum[:])[:12]
}

// Add sets up the pod's interface and returns the result to print.
func Add(env cni.Env, conf *cni.NetConf, raw []byte) (result *cni.Result, err error) {
	ipamOut, err := cni.Delegate(env, conf.IPAM.Type, "ADD", raw)
	if err != nil {
		return nil, err
	}
	// From here on a failed ADD gives its addresses back; the runtime sees
	// the ADD's own error.
	defer func() {
		if err != nil {
			_, _ = cni.Delegate(env, conf.IPAM.Type, "DEL", raw)
		}
	}()
	ipam, err := cni.ParseResult(ipamOut)
	if err != nil {
		return nil, cni.Errorf(cni.CodeDecodeFailure, "IPAM plugin %s returned no result: %v", conf.IPAM.Type, err)
	}
	addrs, err := ipam.Addresses()
	if err != nil {
		return nil, cni.Errorf(cni.CodeInvalidConfig, "IPAM plugin %s: %v", conf.IPAM.Type, err)
	}
	result, err = wire(env, conf, addrs, ipam.Routes)
	if err != nil {
		return nil, err
	}
	result.DNS = ipam.DNS
	return result, nil
}

// wire makes the links, addresses and routes of one pod. When it fails after
// making the veth pair, it deletes it again.
func wire(env cni.Env, conf *cni.NetConf, addrs []cni.Address, ipamRoutes []cni.Route) (result *cni.Result, err error) {
	ns, err := os.Open(env.Netns)
	if err != nil {
		return nil, cni.Errorf(cni.CodeIOFailure, "open the pod's network namespace: %v", err)
	}
	defer ns.Close()
	host, err := netlink.Open()
	if err != nil {
		return nil, ioError(err)
	}
	defer host.Close()
	pod, err := netlink.OpenIn(ns)
	if err != nil {
		return nil, ioError(err)
	}
	defer pod.Close()

	bridge, err := ensureBridge(host, conf, addrs)
	if err != nil {
		return nil, ioError(err)
	}
	hostVeth := HostVethName(env.ContainerID, env.IfName)
	if err := host.AddVeth(hostVeth, env.IfName, ns, conf.MTU); err != nil {
		if errors.Is(err, syscall.EEXIST) {
			return nil, cni.Errorf(cni.CodeIOFailure, "%v: the pod %s already has %s, or was added before without DEL", err, env.ContainerID, env.IfName)
		}
		return nil, ioError(err)
	}
	defer func() {
		if err != nil {
			_ = host.DeleteLink(hostVeth)
		}
	}()
	hostLink, err := host.LinkByName(hostVeth)
	if err == nil {
		err = host.SetUp(hostLink, bridge.Index)
	}
	if err != nil {
		return nil, ioError(err)
	}
	podLink, routes, err := configurePod(pod, env.IfName, addrs, ipamRoutes)
	if err != nil {
		return nil, ioError(err)
	}
	return buildResult(env, bridge, hostLink, podLink, addrs, routes), nil
}

// ensureBridge makes the bridge unless a link of its name exists (its kind
// cannot be read back on gVisor, so it is trusted to be ours), gives it each
// gateway address and brings it up. Concurrent ADDs race here harmlessly:
// EEXIST means another one won.
func ensureBridge(host *netlink.Conn, conf *cni.NetConf, addrs []cni.Address) (netlink.Link, error) {
	if err := host.AddBridge(conf.Bridge, conf.MTU); err != nil && !errors.Is(err, syscall.EEXIST) {
		return netlink.Link{}, err
	}
	bridge, err := host.LinkByName(conf.Bridge)
	if err != nil {
		return netlink.Link{}, err
	}
	for _, addr := range addrs {
		gateway := net.IPNet{IP: addr.Gateway, Mask: addr.IPNet.Mask}
		if err := host.AddAddr(bridge, gateway); err != nil && !errors.Is(err, syscall.EEXIST) {
			return netlink.Link{}, err
		}
	}
	if !bridge.Up {
		return bridge, host.SetUp(bridge, 0)
	}
	return bridge, nil
}

// configurePod gives the pod's interface its addresses and routes: those
// IPAM asked for (through the gateway of their family unless they name one)
// and a default route per family via its gateway unless IPAM gave one.
func configurePod(pod *netlink.Conn, ifName string, addrs []cni.Address, ipamRoutes []cni.Route) (netlink.Link, []cni.Route, error) {
	link, err := pod.LinkByName(ifName)
	if err != nil {
		return link, nil, err
	}
	for _, addr := range addrs {
		if err := pod.AddAddr(link, addr.IPNet); err != nil {
			return link, nil, err
		}
	}
	if !link.Up {
		if err := pod.SetUp(link, 0); err != nil {
			return link, nil, err
		}
	}
	routes, err := PodRoutes(addrs, ipamRoutes)
	if err != nil {
		return link, nil, err
	}
	for _, route := range routes {
		if err := pod.AddRoute(link, route.Dst, route.GW); err != nil {
			return link, nil, err
		}
	}
	return link, encodeRoutes(routes), nil
}

// PodRoute is a route to install in the pod: Dst nil is the default route.
type PodRoute struct {
	Dst *net.IPNet
	GW  net.IP
}

// PodRoutes decides the pod's routes from the IPAM result.
func PodRoutes(addrs []cni.Address, ipamRoutes []cni.Route) ([]PodRoute, error) {
	gateways := map[bool]net.IP{} // by "is IPv4"
	for _, addr := range addrs {
		isV4 := addr.Gateway.To4() != nil
		if gateways[isV4] == nil {
			gateways[isV4] = addr.Gateway
		}
	}
	var routes []PodRoute
	hasDefault := map[bool]bool{}
	for _, r := range ipamRoutes {
		_, dst, err := net.ParseCIDR(r.Dst)
		if err != nil {
			return nil, fmt.Errorf("IPAM route %q: %v", r.Dst, err)
		}
		isV4 := dst.IP.To4() != nil
		gw := net.ParseIP(r.GW)
		if gw == nil {
			gw = gateways[isV4]
		}
		if gw == nil {
			return nil, fmt.Errorf("IPAM route %s has no gateway, and the pod has no address of its family", r.Dst)
		}
		if ones, _ := dst.Mask.Size(); ones == 0 {
			hasDefault[isV4] = true
			dst = nil
		}
		routes = append(routes, PodRoute{Dst: dst, GW: gw})
	}
	for _, isV4 := range []bool{true, false} {
		if gw := gateways[isV4]; gw != nil && !hasDefault[isV4] {
			routes = append(routes, PodRoute{GW: gw})
		}
	}
	return routes, nil
}

func encodeRoutes(routes []PodRoute) []cni.Route {
	out := make([]cni.Route, 0, len(routes))
	for _, r := range routes {
		dst := "0.0.0.0/0"
		if r.Dst != nil {
			dst = r.Dst.String()
		} else if r.GW.To4() == nil {
			dst = "::/0"
		}
		out = append(out, cni.Route{Dst: dst, GW: r.GW.String()})
	}
	return out
}

// podInterface is the index of the pod's interface in a result's interfaces.
const podInterface = 2

func buildResult(env cni.Env, bridge, hostLink, podLink netlink.Link, addrs []cni.Address, routes []cni.Route) *cni.Result {
	result := &cni.Result{
		Interfaces: []cni.Interface{
			{Name: bridge.Name, Mac: bridge.MAC.String()},
			{Name: hostLink.Name, Mac: hostLink.MAC.String()},
			{Name: podLink.Name, Mac: podLink.MAC.String(), Sandbox: env.Netns},
		},
		Routes: routes,
	}
	for _, addr := range addrs {
		index := podInterface
		result.IPs = append(result.IPs, cni.IPConfig{Interface: &index, Address: addr.IPNet.String(), Gateway: addr.Gateway.String()})
	}
	return result
}

func ioError(err error) error {
	return cni.Errorf(cni.CodeIOFailure, "%v", err)
}

// Del removes the pod's veth pair and releases its addresses. Whatever is
// already gone (the namespace, the veth, the reservation) counts as done, so
// DEL can be repeated.
func Del(env cni.Env, conf *cni.NetConf, raw []byte) error {
	host, err := netlink.Open()
	if err != nil {
		return ioError(err)
	}
	defer host.Close()
	if err := host.DeleteLink(HostVethName(env.ContainerID, env.IfName)); err != nil && !errors.Is(err, syscall.ENODEV) {
		return ioError(err)
	}
	_, err = cni.Delegate(env, conf.IPAM.Type, "DEL", raw)
	return err
}
