package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/disk"
)

// IPAM is host-local's own allocator and disk store, linked in. They keep
// host-local's files (dataDir, by default /var/lib/cni/networks/NAME: one
// file per reserved address) and take host-local's lock on that directory
// around every change, so concurrent ADDs and DELs, this plugin's and an
// installed host-local's alike, never hand out one address twice.

// allocate reserves one address per range, as host-local's ADD does
// (requested IPs from CNI_ARGS, args or runtimeConfig included), and returns
// them with the IPAM routes and DNS. If a range cannot give one, what this
// call reserved is given back; an earlier ADD's reservation (a repeated ADD
// fails as a duplicate) is left alone.
func allocate(conf *NetConf, containerID, ifName string) (result *current.Result, err error) {
	store, err := disk.New(conf.ipam.Name, conf.ipam.DataDir)
	if err != nil {
		return nil, ipamError("ADD", err)
	}
	defer store.Close()

	var allocs []*allocator.IPAllocator
	defer func() {
		if err != nil {
			for _, alloc := range allocs {
				_ = alloc.Release(containerID, ifName)
			}
		}
	}()
	result = &current.Result{CNIVersion: current.ImplementedSpecVersion, Routes: conf.ipam.Routes}
	requested := requestedIPs(conf.ipam.IPArgs)
	for idx := range conf.ipam.Ranges {
		rangeset := &conf.ipam.Ranges[idx]
		alloc := allocator.NewIPAllocator(rangeset, store, idx)
		ipConf, err := alloc.Get(containerID, ifName, takeRequested(requested, rangeset))
		if err != nil {
			return nil, ipamError("ADD", fmt.Errorf("failed to allocate for range %d: %v", idx, err))
		}
		allocs = append(allocs, alloc)
		result.IPs = append(result.IPs, ipConf)
	}
	if len(requested) != 0 {
		return nil, ipamError("ADD", fmt.Errorf("failed to allocate all requested IPs: %s", strings.Join(keys(requested), " ")))
	}
	if conf.ipam.ResolvConf != "" {
		if result.DNS, err = parseResolvConf(conf.ipam.ResolvConf); err != nil {
			return nil, ipamError("ADD", err)
		}
	}
	return result, nil
}

// requestedIPs are the addresses asked for, by their text, each to be taken
// by the first range that holds it.
func requestedIPs(ips []net.IP) map[string]net.IP {
	requested := map[string]net.IP{}
	for _, ip := range ips {
		requested[ip.String()] = ip
	}
	return requested
}

// takeRequested removes from requested, and returns, the first requested IP
// in the range set (nil: the allocator picks the next free one).
func takeRequested(requested map[string]net.IP, rangeset *allocator.RangeSet) net.IP {
	for key, ip := range requested {
		if rangeset.Contains(ip) {
			delete(requested, key)
			return ip
		}
	}
	return nil
}

func keys(m map[string]net.IP) []string {
	out := make([]string, 0, len(m))
	for key := range m {
		out = append(out, key)
	}
	return out
}

// release gives back every address reserved for the container's interface;
// none reserved (a repeated DEL) is success.
func release(conf *NetConf, containerID, ifName string) error {
	store, err := disk.New(conf.ipam.Name, conf.ipam.DataDir)
	if err != nil {
		return ipamError("DEL", err)
	}
	defer store.Close()
	for idx := range conf.ipam.Ranges {
		if err := allocator.NewIPAllocator(&conf.ipam.Ranges[idx], store, idx).Release(containerID, ifName); err != nil {
			return ipamError("DEL", err)
		}
	}
	return nil
}

// checkReserved is host-local's CHECK: some address is reserved for the
// container's interface.
func checkReserved(conf *NetConf, containerID, ifName string) error {
	store, err := disk.New(conf.ipam.Name, conf.ipam.DataDir)
	if err != nil {
		return ipamError("CHECK", err)
	}
	defer store.Close()
	if !store.FindByID(containerID, ifName) {
		return differs("no address is reserved for container %s interface %s in %s's store of network %q", containerID, ifName, ipamType, conf.Name)
	}
	return nil
}

// ipamError keeps the words host-local's errors had when it was run as a
// plugin; host-local exited with the internal error code for them.
func ipamError(command string, err error) *types.Error {
	return types.NewError(types.ErrInternal, fmt.Sprintf("IPAM %s %s: %v", ipamType, command, err), "")
}

// parseResolvConf reads the DNS settings host-local's resolvConf option
// names: nameserver, domain, search and options lines.
func parseResolvConf(path string) (types.DNS, error) {
	dns := types.DNS{}
	file, err := os.Open(path)
	if err != nil {
		return dns, err
	}
	defer file.Close()
	scanner := bufio.NewScanner(file)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) < 2 || strings.HasPrefix(fields[0], "#") || strings.HasPrefix(fields[0], ";") {
			continue
		}
		switch fields[0] {
		case "nameserver":
			dns.Nameservers = append(dns.Nameservers, fields[1])
		case "domain":
			dns.Domain = fields[1]
		case "search":
			dns.Search = append(dns.Search, fields[1:]...)
		case "options":
			dns.Options = append(dns.Options, fields[1:]...)
		}
	}
	return dns, scanner.Err()
}
