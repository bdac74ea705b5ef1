package main

import (
	"errors"
	"io"
	"log"
	"net"
	"net/netip"
	"sync"
	"time"
)

// dialTimeout bounds a connection attempt to one backend; the next backend
// is tried after it.
const dialTimeout = 2 * time.Second

// frontend serves one address, port and protocol.
type frontend interface {
	update(spec frontendSpec)
	close()
}

// tcpFrontend accepts connections and splices each to a backend.
type tcpFrontend struct {
	key      frontendKey
	listener net.Listener
	balancer *balancer
	done     sync.WaitGroup
}

func newTCPFrontend(key frontendKey, spec frontendSpec) (*tcpFrontend, error) {
	listener, err := net.Listen("tcp4", key.Addr.String())
	if err != nil {
		return nil, err
	}
	f := &tcpFrontend{key: key, listener: listener, balancer: newBalancer(spec)}
	f.done.Add(1)
	go f.serve()
	return f, nil
}

func (f *tcpFrontend) update(spec frontendSpec) { f.balancer.update(spec) }

// close stops accepting; connections already spliced run to their end.
func (f *tcpFrontend) close() {
	f.listener.Close()
	f.done.Wait()
}

func (f *tcpFrontend) serve() {
	defer f.done.Done()
	for {
		conn, err := f.listener.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			log.Printf("%s: accept: %v", f.key, err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go f.splice(conn.(*net.TCPConn))
	}
}

func (f *tcpFrontend) splice(client *net.TCPConn) {
	defer client.Close()
	clientIP := client.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	for _, backend := range f.balancer.pick(clientIP) {
		conn, err := net.DialTimeout("tcp4", backend.String(), dialTimeout)
		if err != nil {
			log.Printf("%s: backend %s: %v", f.key, backend, err)
			continue
		}
		server := conn.(*net.TCPConn)
		defer server.Close()
		copyBothWays(client, server)
		return
	}
}

// copyBothWays copies until both directions have ended, passing each
// half-close on, as a TCP client and server expect.
func copyBothWays(a, b *net.TCPConn) {
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src *net.TCPConn) {
		defer wg.Done()
		io.Copy(dst, src)
		dst.CloseWrite()
	}
	go pipe(a, b)
	go pipe(b, a)
	wg.Wait()
}

// UDP sessions: one socket to the backend per client address, dropped when
// idle or when its backend leaves; the oldest go first when there are too many.
const (
	udpIdleTimeout = 10 * time.Second
	udpMaxSessions = 4096
	udpBufferSize  = 65535
)

type udpSession struct {
	backend  netip.AddrPort
	conn     *net.UDPConn
	lastSeen time.Time
}

// udpFrontend relays datagrams between clients and backends; replies leave
// from the frontend's own address, so clients see the address they asked.
type udpFrontend struct {
	key      frontendKey
	conn     *net.UDPConn
	balancer *balancer
	mu       sync.Mutex
	sessions map[netip.AddrPort]*udpSession
	done     sync.WaitGroup
}

func newUDPFrontend(key frontendKey, spec frontendSpec) (*udpFrontend, error) {
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(key.Addr))
	if err != nil {
		return nil, err
	}
	f := &udpFrontend{key: key, conn: conn, balancer: newBalancer(spec), sessions: map[netip.AddrPort]*udpSession{}}
	f.done.Add(1)
	go f.serve()
	return f, nil
}

// update takes the new backends and ends the sessions of backends that left,
// so no datagram reaches a removed endpoint.
func (f *udpFrontend) update(spec frontendSpec) {
	f.balancer.update(spec)
	f.mu.Lock()
	defer f.mu.Unlock()
	for client, session := range f.sessions {
		if !f.balancer.has(session.backend) {
			f.endSession(client, session)
		}
	}
}

func (f *udpFrontend) close() {
	f.conn.Close()
	f.done.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	for client, session := range f.sessions {
		f.endSession(client, session)
	}
}

func (f *udpFrontend) serve() {
	defer f.done.Done()
	buffer := make([]byte, udpBufferSize)
	for {
		n, client, err := f.conn.ReadFromUDPAddrPort(buffer)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			log.Printf("%s: read: %v", f.key, err)
			continue
		}
		session := f.session(client)
		if session == nil {
			continue
		}
		if _, err := session.conn.Write(buffer[:n]); err != nil {
			log.Printf("%s: to backend %s: %v", f.key, session.backend, err)
		}
	}
}

// session finds or makes the client's session; nil when no backend answers.
func (f *udpFrontend) session(client netip.AddrPort) *udpSession {
	f.mu.Lock()
	defer f.mu.Unlock()
	if session, ok := f.sessions[client]; ok {
		session.lastSeen = time.Now()
		return session
	}
	for _, backend := range f.balancer.pick(client.Addr().Unmap()) {
		conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(backend))
		if err != nil {
			log.Printf("%s: backend %s: %v", f.key, backend, err)
			continue
		}
		if len(f.sessions) >= udpMaxSessions {
			f.endOldestSession()
		}
		session := &udpSession{backend: backend, conn: conn, lastSeen: time.Now()}
		f.sessions[client] = session
		go f.relayReplies(client, session)
		return session
	}
	return nil
}

// relayReplies sends the backend's datagrams back to the client until the
// session is idle or ended.
func (f *udpFrontend) relayReplies(client netip.AddrPort, session *udpSession) {
	buffer := make([]byte, udpBufferSize)
	for {
		session.conn.SetReadDeadline(time.Now().Add(udpIdleTimeout))
		n, err := session.conn.Read(buffer)
		if err == nil {
			f.conn.WriteToUDPAddrPort(buffer[:n], client)
			continue
		}
		var timeout net.Error
		if errors.As(err, &timeout) && timeout.Timeout() && !f.idle(client, session) {
			continue
		}
		f.mu.Lock()
		f.endSession(client, session)
		f.mu.Unlock()
		return
	}
}

func (f *udpFrontend) idle(client netip.AddrPort, session *udpSession) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return time.Since(session.lastSeen) >= udpIdleTimeout
}

// endSession needs f.mu held.
func (f *udpFrontend) endSession(client netip.AddrPort, session *udpSession) {
	if f.sessions[client] == session {
		delete(f.sessions, client)
	}
	session.conn.Close()
}

func (f *udpFrontend) endOldestSession() {
	var oldest netip.AddrPort
	var found *udpSession
	for client, session := range f.sessions {
		if found == nil || session.lastSeen.Before(found.lastSeen) {
			oldest, found = client, session
		}
	}
	if found != nil {
		f.endSession(oldest, found)
	}
}
