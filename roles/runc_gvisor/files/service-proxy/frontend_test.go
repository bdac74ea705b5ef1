package main

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
)

// tcpServer answers every connection with its name and closes it.
func tcpServer(t *testing.T, name string) netip.AddrPort {
	t.Helper()
	listener, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { listener.Close() })
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			io.WriteString(conn, name)
			conn.Close()
		}
	}()
	return listener.Addr().(*net.TCPAddr).AddrPort()
}

// udpServer answers every datagram with its name and the datagram.
func udpServer(t *testing.T, name string) netip.AddrPort {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buffer := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buffer)
			if err != nil {
				return
			}
			conn.WriteToUDPAddrPort(append([]byte(name+":"), buffer[:n]...), from)
		}
	}()
	return conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

func freePort(t *testing.T, network string) netip.AddrPort {
	t.Helper()
	if network == "udp4" {
		conn, err := net.ListenUDP(network, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	listener, err := net.Listen(network, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	return listener.Addr().(*net.TCPAddr).AddrPort()
}

func fetch(t *testing.T, addr netip.AddrPort) (string, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp4", addr.String(), time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	answer, err := io.ReadAll(conn)
	return string(answer), err
}

func TestTCPFrontendSplicesToBackendsAndSkipsDeadOnes(t *testing.T) {
	dead := freePort(t, "tcp4") // nobody listens: refused, so the next backend is tried
	alive := tcpServer(t, "alive")
	key := frontendKey{freePort(t, "tcp4"), v1.ProtocolTCP}
	f, err := newTCPFrontend(key, frontendSpec{Backends: []netip.AddrPort{dead, alive}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	for range 4 {
		if answer, err := fetch(t, key.Addr); err != nil || answer != "alive" {
			t.Fatalf("answer %q, %v", answer, err)
		}
	}
	f.update(frontendSpec{Backends: []netip.AddrPort{tcpServer(t, "new")}})
	if answer, _ := fetch(t, key.Addr); answer != "new" {
		t.Errorf("after the update the answer is %q, want the new backend's", answer)
	}
}

func TestTCPFrontendClosedRefusesAtOnce(t *testing.T) {
	key := frontendKey{freePort(t, "tcp4"), v1.ProtocolTCP}
	f, err := newTCPFrontend(key, frontendSpec{Backends: []netip.AddrPort{tcpServer(t, "a")}})
	if err != nil {
		t.Fatal(err)
	}
	f.close()
	if _, err := fetch(t, key.Addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("after close: %v, want connection refused", err)
	}
}

func exchange(t *testing.T, conn *net.UDPConn, payload string) string {
	t.Helper()
	if _, err := conn.Write([]byte(payload)); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	buffer := make([]byte, 1500)
	n, err := conn.Read(buffer)
	if err != nil {
		t.Fatalf("no reply to %q: %v", payload, err)
	}
	return string(buffer[:n])
}

func TestUDPFrontendRelaysAndMovesOffRemovedBackends(t *testing.T) {
	first := udpServer(t, "first")
	key := frontendKey{freePort(t, "udp4"), v1.ProtocolUDP}
	f, err := newUDPFrontend(key, frontendSpec{Backends: []netip.AddrPort{first}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	// A connected socket only accepts replies from the address it sent to:
	// the reply must come from the frontend, not the backend.
	client, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(key.Addr))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if got := exchange(t, client, "q1"); got != "first:q1" {
		t.Fatalf("reply %q", got)
	}
	f.update(frontendSpec{Backends: []netip.AddrPort{udpServer(t, "second")}})
	if got := exchange(t, client, "q2"); got != "second:q2" {
		t.Errorf("after the first backend left, reply %q, want the second's", got)
	}
}

func TestProxierOpensUpdatesAndClosesFrontends(t *testing.T) {
	var addresses map[netip.Addr]bool
	p := newProxier(bridgeAddresses{serviceCIDR: netip.MustParsePrefix("10.43.0.0/16")}, nil)
	p.syncAddresses = func(want map[netip.Addr]bool) error { addresses = want; return nil }
	opened := map[frontendKey]*fakeFrontend{}
	p.open = func(key frontendKey, spec frontendSpec) (frontend, error) {
		f := &fakeFrontend{spec: spec}
		opened[key] = f
		return f, nil
	}
	services := []*v1.Service{service("web", "10.43.0.20", web)}
	ready := slice("web", "http", 8080, v1.ProtocolTCP, endpoint{"10.42.0.7", true, true, false})
	if err := p.sync(services, nil); err != nil || len(opened) != 0 || !addresses[clusterA] {
		t.Fatalf("no endpoints: want the address and no frontend; got %v, %v, %v", err, opened, addresses)
	}
	if err := p.sync(services, []*discovery.EndpointSlice{ready}); err != nil {
		t.Fatal(err)
	}
	f := opened[key(clusterA, 80, v1.ProtocolTCP)]
	if f == nil || f.closed {
		t.Fatalf("frontend not opened: %v", opened)
	}
	moved := slice("web", "http", 8080, v1.ProtocolTCP, endpoint{"10.42.0.9", true, true, false})
	p.sync(services, []*discovery.EndpointSlice{moved})
	if f.updates != 1 || f.spec.Backends[0] != netip.MustParseAddrPort("10.42.0.9:8080") {
		t.Errorf("update not passed on: %+v", f)
	}
	p.sync(nil, nil)
	if !f.closed || len(addresses) != 0 {
		t.Errorf("service gone: frontend closed %v, addresses %v", f.closed, addresses)
	}
}

type fakeFrontend struct {
	spec    frontendSpec
	updates int
	closed  bool
}

func (f *fakeFrontend) update(spec frontendSpec) { f.spec = spec; f.updates++ }
func (f *fakeFrontend) close()                   { f.closed = true }
