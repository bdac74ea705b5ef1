package main

import (
	"errors"
	"fmt"
	"log"
	"net/netip"
	"reflect"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
)

// proxier turns the Services and EndpointSlices it is given into service
// addresses on the bridge and frontends bound to them.
type proxier struct {
	serviceCIDR netip.Prefix
	// syncAddresses makes the bridge hold exactly these service addresses; tests replace it.
	syncAddresses func(map[netip.Addr]bool) error
	nodeIPs       []netip.Addr
	frontends     map[frontendKey]*served
	// open makes a frontend; tests replace it.
	open func(frontendKey, frontendSpec) (frontend, error)
}

// served is an open frontend and the spec it serves.
type served struct {
	frontend frontend
	spec     frontendSpec
}

func newProxier(addresses bridgeAddresses, nodeIPs []netip.Addr) *proxier {
	return &proxier{
		serviceCIDR:   addresses.serviceCIDR,
		syncAddresses: addresses.sync,
		nodeIPs:       nodeIPs,
		frontends:     map[frontendKey]*served{},
		open:          openFrontend,
	}
}

func openFrontend(key frontendKey, spec frontendSpec) (frontend, error) {
	if key.Protocol == v1.ProtocolUDP {
		return newUDPFrontend(key, spec)
	}
	return newTCPFrontend(key, spec)
}

// sync makes the node match the API's view. What fails is reported and
// retried by the next sync; everything else is applied.
func (p *proxier) sync(services []*v1.Service, slices []*discovery.EndpointSlice) error {
	var problems []error
	// Addresses first: a frontend binds to its address.
	if err := p.syncAddresses(serviceAddresses(services, p.serviceCIDR)); err != nil {
		problems = append(problems, err)
	}
	want := desiredFrontends(services, slices, p.nodeIPs)
	for key, s := range p.frontends {
		if _, ok := want[key]; !ok {
			log.Printf("%s: closed (%s has no ready endpoint, or is gone)", key, s.spec.Service)
			s.frontend.close()
			delete(p.frontends, key)
		}
	}
	for key, spec := range want {
		if err := p.apply(key, spec); err != nil {
			problems = append(problems, err)
		}
	}
	return errors.Join(problems...)
}

func (p *proxier) apply(key frontendKey, spec frontendSpec) error {
	if s, ok := p.frontends[key]; ok {
		if !reflect.DeepEqual(s.spec, spec) {
			s.frontend.update(spec)
			s.spec = spec
			log.Printf("%s: %s -> %v", key, spec.Service, spec.Backends)
		}
		return nil
	}
	f, err := p.open(key, spec)
	if err != nil {
		return fmt.Errorf("%s for %s: %w", key, spec.Service, err)
	}
	p.frontends[key] = &served{f, spec}
	log.Printf("%s: %s -> %v", key, spec.Service, spec.Backends)
	return nil
}

// closeAll stops every frontend; the addresses stay, so a restarted proxy
// finds them and clients are refused, not left waiting, meanwhile.
func (p *proxier) closeAll() {
	for key, s := range p.frontends {
		s.frontend.close()
		delete(p.frontends, key)
	}
}
