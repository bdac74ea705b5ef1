package main

import (
	"net/netip"
	"testing"
	"time"
)

var (
	backendA = netip.MustParseAddrPort("10.42.0.7:8080")
	backendB = netip.MustParseAddrPort("10.42.0.8:8080")
	client1  = netip.MustParseAddr("10.42.0.20")
	client2  = netip.MustParseAddr("10.42.0.21")
)

func TestBalancerRoundRobinWithFallbacks(t *testing.T) {
	b := newBalancer(frontendSpec{Backends: []netip.AddrPort{backendA, backendB}})
	first, second, third := b.pick(client1), b.pick(client1), b.pick(client1)
	if first[0] == second[0] || first[0] != third[0] {
		t.Errorf("round robin: %v %v %v", first[0], second[0], third[0])
	}
	if len(first) != 2 || first[1] == first[0] {
		t.Errorf("the other backend is the fallback: %v", first)
	}
}

func TestBalancerClientIPAffinity(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newBalancer(frontendSpec{Backends: []netip.AddrPort{backendA, backendB}, Affinity: time.Minute})
	b.now = func() time.Time { return now }
	stuck := b.pick(client1)[0]
	for range 3 {
		b.pick(client2)
		if got := b.pick(client1)[0]; got != stuck {
			t.Fatalf("client1 moved from %s to %s within its affinity", stuck, got)
		}
	}
	now = now.Add(2 * time.Minute)
	b.pick(client1) // expired: round robin again, which may or may not move it
	// A backend that leaves frees its clients at once.
	b.update(frontendSpec{Backends: []netip.AddrPort{otherThan(stuck)}, Affinity: time.Minute})
	if got := b.pick(client1)[0]; got == stuck {
		t.Errorf("client1 still sent to the removed %s", stuck)
	}
}

func otherThan(backend netip.AddrPort) netip.AddrPort {
	if backend == backendA {
		return backendB
	}
	return backendA
}

func TestBalancerWithoutBackends(t *testing.T) {
	b := newBalancer(frontendSpec{})
	if got := b.pick(client1); got != nil {
		t.Errorf("pick %v, want none", got)
	}
}
