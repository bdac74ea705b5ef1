package main

import (
	"net/netip"
	"sync"
	"time"
)

// balancer hands out one frontend's backends: round robin, or the same
// backend again to a client within its affinity timeout while that backend
// is still in the set.
type balancer struct {
	mu       sync.Mutex
	backends []netip.AddrPort
	affinity time.Duration
	next     int
	sticky   map[netip.Addr]stickyBackend
	now      func() time.Time
}

type stickyBackend struct {
	backend netip.AddrPort
	lastUse time.Time
}

func newBalancer(spec frontendSpec) *balancer {
	b := &balancer{sticky: map[netip.Addr]stickyBackend{}, now: time.Now}
	b.update(spec)
	return b
}

// update replaces the backend set; clients stuck to a backend that is gone
// get a new one on their next connection.
func (b *balancer) update(spec frontendSpec) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.backends = append([]netip.AddrPort(nil), spec.Backends...)
	b.affinity = spec.Affinity
	for client, stuck := range b.sticky {
		if b.affinity == 0 || !contains(b.backends, stuck.backend) {
			delete(b.sticky, client)
		}
	}
}

// pick returns the backends to try for this client, in order: the first is
// the chosen one, the rest are fallbacks if it cannot be reached.
func (b *balancer) pick(client netip.Addr) []netip.AddrPort {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.backends) == 0 {
		return nil
	}
	now := b.now()
	start := -1
	if stuck, ok := b.sticky[client]; ok && b.affinity > 0 && now.Sub(stuck.lastUse) < b.affinity {
		start = index(b.backends, stuck.backend)
	}
	if start < 0 {
		start = b.next % len(b.backends)
		b.next = start + 1
	}
	order := append(append([]netip.AddrPort(nil), b.backends[start:]...), b.backends[:start]...)
	if b.affinity > 0 {
		b.sticky[client] = stickyBackend{order[0], now}
	}
	return order
}

// has says whether the backend is still in the set.
func (b *balancer) has(backend netip.AddrPort) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return contains(b.backends, backend)
}

func contains(list []netip.AddrPort, item netip.AddrPort) bool { return index(list, item) >= 0 }

func index(list []netip.AddrPort, item netip.AddrPort) int {
	for i, candidate := range list {
		if candidate == item {
			return i
		}
	}
	return -1
}
