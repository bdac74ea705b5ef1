package main

import (
	"net/netip"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func ptr[T any](v T) *T { return &v }

func service(name, clusterIP string, ports ...v1.ServicePort) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec:       v1.ServiceSpec{ClusterIP: clusterIP, Ports: ports, Type: v1.ServiceTypeClusterIP},
	}
}

type endpoint struct {
	ip                          string
	ready, serving, terminating bool
}

func slice(serviceName, portName string, port int32, protocol v1.Protocol, endpoints ...endpoint) *discovery.EndpointSlice {
	s := &discovery.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: serviceName + "-abc", Labels: map[string]string{discovery.LabelServiceName: serviceName}},
		AddressType: discovery.AddressTypeIPv4,
		Ports:       []discovery.EndpointPort{{Name: ptr(portName), Port: ptr(port), Protocol: ptr(protocol)}},
	}
	for _, e := range endpoints {
		s.Endpoints = append(s.Endpoints, discovery.Endpoint{Addresses: []string{e.ip}, Conditions: discovery.EndpointConditions{
			Ready: ptr(e.ready), Serving: ptr(e.serving), Terminating: ptr(e.terminating)}})
	}
	return s
}

var (
	web      = v1.ServicePort{Name: "http", Port: 80, Protocol: v1.ProtocolTCP}
	dnsUDP   = v1.ServicePort{Name: "dns", Port: 53, Protocol: v1.ProtocolUDP}
	nodeIP   = netip.MustParseAddr("10.42.0.1")
	clusterA = netip.MustParseAddr("10.43.0.20")
)

func key(addr netip.Addr, port uint16, protocol v1.Protocol) frontendKey {
	return frontendKey{netip.AddrPortFrom(addr, port), protocol}
}

func TestDesiredFrontendsClusterIPToReadyEndpoints(t *testing.T) {
	got := desiredFrontends(
		[]*v1.Service{service("web", "10.43.0.20", web)},
		[]*discovery.EndpointSlice{slice("web", "http", 8080, v1.ProtocolTCP,
			endpoint{"10.42.0.9", true, true, false}, endpoint{"10.42.0.7", true, true, false},
			endpoint{"10.42.0.8", false, true, true})},
		[]netip.Addr{nodeIP})
	spec, ok := got[key(clusterA, 80, v1.ProtocolTCP)]
	if !ok || len(got) != 1 {
		t.Fatalf("want one frontend on 10.43.0.20:80/TCP, got %v", got)
	}
	want := []netip.AddrPort{netip.MustParseAddrPort("10.42.0.7:8080"), netip.MustParseAddrPort("10.42.0.9:8080")}
	if len(spec.Backends) != 2 || spec.Backends[0] != want[0] || spec.Backends[1] != want[1] {
		t.Errorf("backends %v, want the ready ones sorted %v", spec.Backends, want)
	}
	if spec.Service != "default/web:http" || spec.Affinity != 0 {
		t.Errorf("spec %+v", spec)
	}
}

func TestDesiredFrontendsTerminatingServingOnlyWhenNoneReady(t *testing.T) {
	got := desiredFrontends([]*v1.Service{service("web", "10.43.0.20", web)},
		[]*discovery.EndpointSlice{slice("web", "http", 8080, v1.ProtocolTCP, endpoint{"10.42.0.8", false, true, true},
			endpoint{"10.42.0.6", false, false, true})}, nil)
	spec := got[key(clusterA, 80, v1.ProtocolTCP)]
	if len(spec.Backends) != 1 || spec.Backends[0] != netip.MustParseAddrPort("10.42.0.8:8080") {
		t.Errorf("backends %v, want the one still serving", spec.Backends)
	}
}

func TestDesiredFrontendsNoEndpointsHeadlessAndExternalNameHaveNone(t *testing.T) {
	headless := service("db", "None", web)
	external := service("ext", "10.43.0.30", web)
	external.Spec.Type = v1.ServiceTypeExternalName
	got := desiredFrontends([]*v1.Service{service("web", "10.43.0.20", web), headless, external},
		[]*discovery.EndpointSlice{slice("db", "http", 8080, v1.ProtocolTCP, endpoint{"10.42.0.5", true, true, false}),
			slice("ext", "http", 8080, v1.ProtocolTCP, endpoint{"10.42.0.5", true, true, false})}, []netip.Addr{nodeIP})
	if len(got) != 0 {
		t.Errorf("want no frontend, got %v", got)
	}
}

func TestDesiredFrontendsNodePortOnEveryNodeAddress(t *testing.T) {
	svc := service("web", "10.43.0.20", web)
	svc.Spec.Type = v1.ServiceTypeNodePort
	svc.Spec.Ports[0].NodePort = 30080
	second := netip.MustParseAddr("172.17.0.2")
	got := desiredFrontends([]*v1.Service{svc},
		[]*discovery.EndpointSlice{slice("web", "http", 8080, v1.ProtocolTCP, endpoint{"10.42.0.7", true, true, false})},
		[]netip.Addr{nodeIP, second})
	for _, k := range []frontendKey{key(clusterA, 80, v1.ProtocolTCP), key(nodeIP, 30080, v1.ProtocolTCP), key(second, 30080, v1.ProtocolTCP)} {
		if _, ok := got[k]; !ok {
			t.Errorf("no frontend %s in %v", k, got)
		}
	}
}

func TestDesiredFrontendsMatchesPortsByNameAndProtocol(t *testing.T) {
	dnsTCP := v1.ServicePort{Name: "dns-tcp", Port: 53, Protocol: v1.ProtocolTCP}
	svc := service("kube-dns", "10.43.0.10", dnsUDP, dnsTCP)
	slices := []*discovery.EndpointSlice{slice("kube-dns", "dns", 5353, v1.ProtocolUDP, endpoint{"10.42.0.3", true, true, false})}
	got := desiredFrontends([]*v1.Service{svc}, slices, nil)
	dns := netip.MustParseAddr("10.43.0.10")
	if spec := got[key(dns, 53, v1.ProtocolUDP)]; len(spec.Backends) != 1 || spec.Backends[0].Port() != 5353 {
		t.Errorf("UDP frontend %+v, want 10.42.0.3:5353", spec)
	}
	if _, ok := got[key(dns, 53, v1.ProtocolTCP)]; ok {
		t.Errorf("the TCP port has no slice port of its name, so no frontend: %v", got)
	}
}

func TestAffinityTimeout(t *testing.T) {
	svc := service("web", "10.43.0.20", web)
	if affinityTimeout(svc) != 0 {
		t.Error("no affinity by default")
	}
	svc.Spec.SessionAffinity = v1.ServiceAffinityClientIP
	if affinityTimeout(svc) != 3*time.Hour {
		t.Errorf("ClientIP without a config: %s, want the API's 3 hours", affinityTimeout(svc))
	}
	svc.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptr(int32(60))}}
	if affinityTimeout(svc) != time.Minute {
		t.Errorf("timeout %s, want 1m", affinityTimeout(svc))
	}
}

func TestServiceAddressesKeepsServicesWithoutEndpoints(t *testing.T) {
	cidr := netip.MustParsePrefix("10.43.0.0/16")
	got := serviceAddresses([]*v1.Service{service("web", "10.43.0.20", web), service("db", "None", web),
		service("odd", "192.168.1.1", web)}, cidr)
	if len(got) != 1 || !got[clusterA] {
		t.Errorf("addresses %v, want only 10.43.0.20", got)
	}
}
