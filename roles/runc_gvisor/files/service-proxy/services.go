package main

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
)

// frontendKey is one address, port and protocol the proxy serves.
type frontendKey struct {
	Addr     netip.AddrPort
	Protocol v1.Protocol
}

func (k frontendKey) String() string { return fmt.Sprintf("%s/%s", k.Addr, k.Protocol) }

// frontendSpec is what one frontend should do: where it sends traffic, and
// how long a client sticks to one backend (0: it does not).
type frontendSpec struct {
	Service  string // namespace/name:port, for logs
	Backends []netip.AddrPort
	Affinity time.Duration
}

// desiredFrontends is every frontend the Services and EndpointSlices ask
// for: each ClusterIP port, and each NodePort on every node address.
// Headless and ExternalName Services have none (DNS answers them); a port
// whose Service has no ready endpoint has no frontend, so clients are
// refused at once instead of waiting.
func desiredFrontends(services []*v1.Service, slices []*discovery.EndpointSlice, nodeIPs []netip.Addr) map[frontendKey]frontendSpec {
	slicesByService := map[string][]*discovery.EndpointSlice{}
	for _, slice := range slices {
		name := slice.Labels[discovery.LabelServiceName]
		if name == "" || slice.AddressType != discovery.AddressTypeIPv4 {
			continue
		}
		key := slice.Namespace + "/" + name
		slicesByService[key] = append(slicesByService[key], slice)
	}
	want := map[frontendKey]frontendSpec{}
	for _, svc := range services {
		clusterIP, err := netip.ParseAddr(svc.Spec.ClusterIP)
		if err != nil || !clusterIP.Is4() || svc.Spec.Type == v1.ServiceTypeExternalName {
			continue // headless ("None"), unset, IPv6 or ExternalName
		}
		for _, port := range svc.Spec.Ports {
			if port.Protocol != v1.ProtocolTCP && port.Protocol != v1.ProtocolUDP {
				continue // SCTP: gVisor's netstack has none
			}
			backends := readyBackends(slicesByService[svc.Namespace+"/"+svc.Name], port)
			if len(backends) == 0 {
				continue
			}
			spec := frontendSpec{
				Service:  fmt.Sprintf("%s/%s:%s", svc.Namespace, svc.Name, portName(port)),
				Backends: backends,
				Affinity: affinityTimeout(svc),
			}
			want[frontendKey{netip.AddrPortFrom(clusterIP, uint16(port.Port)), port.Protocol}] = spec
			if port.NodePort == 0 {
				continue
			}
			for _, nodeIP := range nodeIPs {
				want[frontendKey{netip.AddrPortFrom(nodeIP, uint16(port.NodePort)), port.Protocol}] = spec
			}
		}
	}
	return want
}

func portName(port v1.ServicePort) string {
	if port.Name != "" {
		return port.Name
	}
	return fmt.Sprint(port.Port)
}

// readyBackends is the addresses of the ready endpoints serving this
// Service port, sorted (so an unchanged set compares equal). As kube-proxy
// does, endpoints that are terminating but still serving are used only when
// no endpoint is ready.
func readyBackends(slices []*discovery.EndpointSlice, port v1.ServicePort) []netip.AddrPort {
	var ready, serving []netip.AddrPort
	for _, slice := range slices {
		number, ok := slicePort(slice, port)
		if !ok {
			continue
		}
		for _, endpoint := range slice.Endpoints {
			for _, address := range endpoint.Addresses {
				ip, err := netip.ParseAddr(address)
				if err != nil {
					continue
				}
				backend := netip.AddrPortFrom(ip, number)
				switch {
				case isTrue(endpoint.Conditions.Ready, true):
					ready = append(ready, backend)
				case isTrue(endpoint.Conditions.Serving, false) && isTrue(endpoint.Conditions.Terminating, false):
					serving = append(serving, backend)
				}
			}
		}
	}
	if len(ready) == 0 {
		ready = serving
	}
	sort.Slice(ready, func(i, j int) bool { return ready[i].Compare(ready[j]) < 0 })
	return ready
}

// slicePort finds the slice's port number for the Service port: they are
// matched by name and protocol.
func slicePort(slice *discovery.EndpointSlice, port v1.ServicePort) (uint16, bool) {
	for _, p := range slice.Ports {
		name, protocol := "", v1.ProtocolTCP
		if p.Name != nil {
			name = *p.Name
		}
		if p.Protocol != nil {
			protocol = *p.Protocol
		}
		if name == port.Name && protocol == port.Protocol && p.Port != nil && *p.Port > 0 && *p.Port < 65536 {
			return uint16(*p.Port), true
		}
	}
	return 0, false
}

// isTrue reads an optional condition; nil means what the API says it means.
func isTrue(condition *bool, whenUnset bool) bool {
	if condition == nil {
		return whenUnset
	}
	return *condition
}

// affinityTimeout is how long a client stays with its backend under
// sessionAffinity: ClientIP (the API's default is 3 hours).
func affinityTimeout(svc *v1.Service) time.Duration {
	if svc.Spec.SessionAffinity != v1.ServiceAffinityClientIP {
		return 0
	}
	seconds := int32(v1.DefaultClientIPServiceAffinitySeconds)
	if config := svc.Spec.SessionAffinityConfig; config != nil && config.ClientIP != nil && config.ClientIP.TimeoutSeconds != nil {
		seconds = *config.ClientIP.TimeoutSeconds
	}
	return time.Duration(seconds) * time.Second
}
