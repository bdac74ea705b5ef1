package main

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	v1 "k8s.io/api/core/v1"
)

// serviceAddresses is every ClusterIP the proxy owns, with or without
// endpoints: an address the node owns refuses a connection to a port nobody
// listens on at once, where an address nobody owns would leave pods waiting.
func serviceAddresses(services []*v1.Service, serviceCIDR netip.Prefix) map[netip.Addr]bool {
	addresses := map[netip.Addr]bool{}
	for _, svc := range services {
		ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
		if err == nil && serviceCIDR.Contains(ip) && svc.Spec.Type != v1.ServiceTypeExternalName {
			addresses[ip] = true
		}
	}
	return addresses
}

// bridgeAddresses keeps the service addresses on the pod bridge as /32s.
// Pods reach them through their route to the bridge, and the node delivers
// them locally, to the frontends bound on them (gVisor has no netfilter to
// rewrite them, and does not forward).
type bridgeAddresses struct {
	bridge      string
	serviceCIDR netip.Prefix
}

// sync adds the missing addresses and removes those in the service range
// that no Service has any more (left by a deleted Service or an earlier run).
func (b bridgeAddresses) sync(want map[netip.Addr]bool) error {
	link, err := netlinksafe.LinkByName(b.bridge)
	if err != nil {
		return fmt.Errorf("pod bridge %s: %w", b.bridge, err)
	}
	have, err := netlinksafe.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list the addresses of %s: %w", b.bridge, err)
	}
	present := map[netip.Addr]bool{}
	for _, address := range have {
		ip, ok := netip.AddrFromSlice(address.IP.To4())
		ones, _ := address.Mask.Size()
		if !ok || ones != 32 || !b.serviceCIDR.Contains(ip) {
			continue // the bridge's gateway address, or not ours
		}
		if want[ip] {
			present[ip] = true
			continue
		}
		if err := netlink.AddrDel(link, &address); err != nil {
			return fmt.Errorf("remove %s from %s: %w", ip, b.bridge, err)
		}
	}
	for ip := range want {
		if present[ip] {
			continue
		}
		address := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}}
		if err := netlink.AddrAdd(link, address); err != nil {
			return fmt.Errorf("add %s to %s: %w", ip, b.bridge, err)
		}
	}
	return nil
}
