package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Every netlink request here is one gVisor 20240729's netstack answers:
// links are made (bridge, veth) with name, MTU, up flag and, for the veth's
// peer, the namespace fd; set up and enslaved; looked up by name and deleted
// by index; addresses and routes are added and dumped. Nothing reads a
// link's kind or master, and no route or address is ever deleted.

// HostVethName is the host end's name, derived from the container and its
// interface so that DEL finds it without the pod's namespace, and concurrent
// ADDs never pick the same one. 15 bytes: the kernel's limit.
func HostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "\x00" + ifName))
	return "gvb" + hex.EncodeToString(sum[:])[:12]
}

// podInterface is the index of the pod's interface in a result's interfaces.
const podInterface = 2

// wire makes the bridge, the veth pair and the pod's addresses and routes
// for the addresses IPAM reserved, and returns the result to print. If it
// fails after making the veth pair, it deletes it again.
func wire(conf *NetConf, args *skel.CmdArgs, podNS ns.NetNS, reserved *current.Result) (result *current.Result, err error) {
	if err := needGateways(reserved.IPs); err != nil {
		return nil, err
	}
	routes, err := podRoutes(reserved.IPs, reserved.Routes)
	if err != nil {
		return nil, configError("IPAM routes: %v", err)
	}
	host, pod, err := openHandles(podNS)
	if err != nil {
		return nil, err
	}
	defer host.Close()
	defer pod.Close()

	bridge, err := ensureBridge(host, conf, reserved.IPs)
	if err != nil {
		return nil, asCNIError("bridge "+conf.Bridge, err)
	}
	hostVeth, err := addVeth(host, conf.MTU, HostVethName(args.ContainerID, args.IfName), args.IfName, podNS, bridge)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = host.LinkDel(hostVeth)
		}
	}()
	podLink, err := configurePod(pod, args.IfName, reserved.IPs, routes)
	if err != nil {
		return nil, asCNIError("pod interface "+args.IfName, err)
	}
	return newResult(args.Netns, bridge, hostVeth, podLink, reserved, routes), nil
}

// openHandles opens a netlink socket on the host and one in the pod's
// namespace: the thread enters the namespace only for the socket() call (a
// socket stays in the namespace it was made in), so no other work is ever
// done inside it. Only NETLINK_ROUTE: gVisor has no netfilter or xfrm
// netlink, which a handle opens by default.
func openHandles(podNS ns.NetNS) (host, pod netlinksafe.Handle, err error) {
	host, err = netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return host, pod, ioError("netlink socket: %v", err)
	}
	pod, err = netlinksafe.NewHandleAt(netns.NsHandle(int(podNS.Fd())), unix.NETLINK_ROUTE)
	if err != nil {
		host.Close()
		return host, pod, ioError("netlink socket in %s: %v", podNS.Path(), err)
	}
	return host, pod, nil
}

// ensureBridge makes the bridge unless a link of its name exists (its kind
// cannot be read back on gVisor, so it is trusted to be ours), gives it each
// gateway address and brings it up. Concurrent ADDs race here harmlessly:
// EEXIST means another one won.
func ensureBridge(host netlinksafe.Handle, conf *NetConf, ips []*current.IPConfig) (netlink.Link, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU, attrs.Flags = conf.Bridge, conf.MTU, net.FlagUp
	if err := host.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("add: %w", err)
	}
	bridge, err := host.LinkByName(conf.Bridge)
	if err != nil {
		return nil, fmt.Errorf("find: %w", err)
	}
	for _, ipc := range ips {
		gateway := &net.IPNet{IP: ipc.Gateway, Mask: ipc.Address.Mask}
		if err := host.AddrAdd(bridge, &netlink.Addr{IPNet: gateway}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("add address %s: %w", gateway, err)
		}
	}
	if bridge.Attrs().Flags&net.FlagUp == 0 {
		if err := host.LinkSetUp(bridge); err != nil {
			return nil, fmt.Errorf("set up: %w", err)
		}
	}
	return bridge, nil
}

// addVeth makes the veth pair with its peer created directly inside the
// pod's namespace under its final name (no move, no rename), brings the host
// end up and enslaves it to the bridge. If enslaving fails, the pair goes.
func addVeth(host netlinksafe.Handle, mtu int, hostName, podName string, podNS ns.NetNS, bridge netlink.Link) (netlink.Link, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU, attrs.Flags = hostName, mtu, net.FlagUp
	veth := netlink.NewVeth(attrs)
	veth.PeerName, veth.PeerNamespace = podName, netlink.NsFd(int(podNS.Fd()))
	if err := host.LinkAdd(veth); err != nil {
		hint := ""
		if errors.Is(err, unix.EEXIST) {
			hint = " (this container and interface were added before without DEL, or the namespace has the interface already)"
		}
		return nil, ioError("add veth %s with peer %s in %s: %v%s", hostName, podName, podNS.Path(), err, hint)
	}
	hostLink, err := host.LinkByName(hostName)
	if err == nil {
		if err = host.LinkSetMaster(hostLink, bridge); err != nil {
			_ = host.LinkDel(hostLink)
		}
	}
	if err != nil {
		return nil, ioError("veth %s on bridge %s: %v", hostName, bridge.Attrs().Name, err)
	}
	return hostLink, nil
}

// configurePod gives the pod's interface its addresses, brings it up (a
// gVisor link already is) and adds its routes.
func configurePod(pod netlinksafe.Handle, ifName string, ips []*current.IPConfig, routes []*types.Route) (netlink.Link, error) {
	link, err := pod.LinkByName(ifName)
	if err != nil {
		return nil, err
	}
	for _, ipc := range ips {
		addr := ipc.Address
		if err := pod.AddrAdd(link, &netlink.Addr{IPNet: &addr}); err != nil {
			return nil, fmt.Errorf("add address %s: %w", &addr, err)
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := pod.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("set up: %w", err)
		}
	}
	for _, r := range routes {
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: &r.Dst, Gw: r.GW}
		if err := pod.RouteAdd(route); err != nil {
			return nil, fmt.Errorf("add route %s via %s: %w", &r.Dst, r.GW, err)
		}
	}
	return link, nil
}

// needGateways requires a gateway for each address: the bridge gets it and
// the pod routes through it. host-local always gives one (.1 by default).
func needGateways(ips []*current.IPConfig) error {
	if len(ips) == 0 {
		return configError("IPAM reserved no address")
	}
	for _, ipc := range ips {
		if ipc.Gateway == nil || !ipc.Address.Contains(ipc.Gateway) {
			return configError("address %s has no gateway in its subnet (%v): set one in the IPAM range, or keep its default", &ipc.Address, ipc.Gateway)
		}
	}
	return nil
}

// podRoutes decides the pod's routes: those IPAM asked for (through the
// gateway of their family unless they name one), and a default route per
// family via its gateway unless IPAM gave one.
func podRoutes(ips []*current.IPConfig, ipamRoutes []*types.Route) ([]*types.Route, error) {
	gateways := map[bool]net.IP{} // by "is IPv4"
	for _, ipc := range ips {
		isV4 := ipc.Gateway.To4() != nil
		if gateways[isV4] == nil {
			gateways[isV4] = ipc.Gateway
		}
	}
	var routes []*types.Route
	hasDefault := map[bool]bool{}
	for _, r := range ipamRoutes {
		isV4 := r.Dst.IP.To4() != nil
		gw := r.GW
		if gw == nil {
			gw = gateways[isV4]
		}
		if gw == nil {
			return nil, fmt.Errorf("route %s has no gateway, and the pod has no address of its family", &r.Dst)
		}
		if ones, _ := r.Dst.Mask.Size(); ones == 0 {
			hasDefault[isV4] = true
		}
		routes = append(routes, &types.Route{Dst: r.Dst, GW: gw})
	}
	for _, isV4 := range []bool{true, false} {
		if gw := gateways[isV4]; gw != nil && !hasDefault[isV4] {
			routes = append(routes, &types.Route{Dst: defaultDst(isV4), GW: gw})
		}
	}
	return routes, nil
}

func defaultDst(isV4 bool) net.IPNet {
	if isV4 {
		return net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	return net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
}

// newResult lists the bridge, the host end and the pod's interface (the one
// with a sandbox, which the runtime takes the pod IP from), the addresses on
// the pod's interface and the routes made.
func newResult(netnsPath string, bridge, hostVeth, podLink netlink.Link, reserved *current.Result, routes []*types.Route) *current.Result {
	result := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: bridge.Attrs().Name, Mac: bridge.Attrs().HardwareAddr.String()},
			{Name: hostVeth.Attrs().Name, Mac: hostVeth.Attrs().HardwareAddr.String()},
			{Name: podLink.Attrs().Name, Mac: podLink.Attrs().HardwareAddr.String(), Sandbox: netnsPath},
		},
		Routes: routes,
		DNS:    reserved.DNS,
	}
	for _, ipc := range reserved.IPs {
		result.IPs = append(result.IPs, &current.IPConfig{Interface: current.Int(podInterface), Address: ipc.Address, Gateway: ipc.Gateway})
	}
	return result
}

// deleteHostVeth deletes the host end of a pod's veth by name, which takes
// the pod end and its routes with it; none (a repeated DEL, or the namespace
// and the pair already gone) is success.
func deleteHostVeth(name string) error {
	host, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return ioError("netlink socket: %v", err)
	}
	defer host.Close()
	link, err := host.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return ioError("find veth %s: %v", name, err)
	}
	if err := host.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return ioError("delete veth %s: %v", name, err)
	}
	return nil
}
