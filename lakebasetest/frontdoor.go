package lakebasetest

import (
	"crypto/tls"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// WakeMode says how the front door answers a connection that arrives while
// the compute is waking up.
type WakeMode int

const (
	// WakeRefuse closes the connection at once, before any byte is
	// exchanged (the client sees its SSLRequest fail with EOF or a reset).
	// This is the default.
	WakeRefuse WakeMode = iota
	// WakeStartingUp answers as a starting PostgreSQL does: TLS is
	// negotiated, the startup message is read, and the reply is FATAL
	// SQLSTATE 57P03 "the database system is starting up". pgx returns it
	// as a *pgconn.PgError.
	WakeStartingUp
)

// frontDoor is the endpoint's scale-to-zero proxy: a TCP forwarder to
// PostgreSQL that can be suspended. While suspended, the first connection
// starts a wake-up that takes the wake delay; connections before it ends
// are refused (WakeMode); after it, they are forwarded. TLS and the token
// check happen end to end with PostgreSQL.
type frontDoor struct {
	srv     *server
	backend string
	tlsCfg  *tls.Config

	mu        sync.Mutex
	suspended bool
	wakeAt    time.Time // zero unless waking
	delay     time.Duration
	mode      WakeMode
	idle      time.Duration
	idleStop  chan struct{}
	idleDone  chan struct{}

	wakeUps, refused atomic.Int64
}

func startFrontDoor(backendPort int, tlsCfg *tls.Config) (*frontDoor, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &frontDoor{backend: net.JoinHostPort("127.0.0.1", strconv.Itoa(backendPort)), tlsCfg: tlsCfg, delay: defaultWakeDelay}
	f.srv = newServer(ln, f.handle)
	f.srv.start()
	return f, nil
}

// admit decides what to do with a new connection: forward it, or refuse it
// with the given mode.
func (f *frontDoor) admit() (forward bool, mode WakeMode) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if f.suspended {
		if f.wakeAt.IsZero() { // this connection starts the wake-up
			f.wakeUps.Add(1)
			f.wakeAt = now.Add(f.delay)
		}
		if now.Before(f.wakeAt) {
			f.refused.Add(1)
			return false, f.mode
		}
		f.suspended, f.wakeAt = false, time.Time{}
	}
	return true, 0
}

func (f *frontDoor) handle(c net.Conn) {
	forward, mode := f.admit()
	if !forward {
		if mode == WakeStartingUp {
			_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
			if s, err := readStartup(c, f.tlsCfg); err == nil {
				_, _ = s.conn.Write(errorResponse("FATAL", "57P03", "the database system is starting up"))
				_ = s.conn.Close()
			}
		}
		return // the caller closes c
	}
	b, err := net.DialTimeout("tcp", f.backendAddr(), handshakeTimeout)
	if err != nil {
		return
	}
	if !f.srv.track(b) {
		return
	}
	defer f.srv.untrack(b)
	f.srv.forward(c, b)
}

func (f *frontDoor) suspend() {
	f.mu.Lock()
	f.suspended, f.wakeAt = true, time.Time{}
	f.mu.Unlock()
	f.srv.cut()
}

func (f *frontDoor) resume() {
	f.mu.Lock()
	f.suspended, f.wakeAt = false, time.Time{}
	f.mu.Unlock()
}

func (f *frontDoor) isSuspended() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.suspended && (f.wakeAt.IsZero() || time.Now().Before(f.wakeAt))
}

// setAutoSuspend (re)starts the idle watcher; 0 stops it.
func (f *frontDoor) setAutoSuspend(idle time.Duration) {
	f.stopIdle()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.idle = idle
	if idle <= 0 {
		return
	}
	stop, done := make(chan struct{}), make(chan struct{})
	f.idleStop, f.idleDone = stop, done
	f.srv.touch()
	if !f.srv.spawn(func() { defer close(done); f.watchIdle(idle, stop) }) {
		close(done)
	}
}

// watchIdle suspends the compute once nothing (no new connection, no byte
// through an open one) has happened for idle.
func (f *frontDoor) watchIdle(idle time.Duration, stop chan struct{}) {
	t := time.NewTimer(idle)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		quiet := time.Since(time.Unix(0, f.srv.lastSeen.Load()))
		if quiet >= idle {
			if !f.isSuspended() {
				f.suspend()
			}
			quiet = 0
		}
		t.Reset(idle - quiet)
	}
}

func (f *frontDoor) stopIdle() {
	f.mu.Lock()
	stop, done := f.idleStop, f.idleDone
	f.idleStop, f.idleDone = nil, nil
	f.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}

func (f *frontDoor) close() {
	f.stopIdle()
	f.srv.close()
}
