package lakebasetest

import (
	"net"
	"sync"
	"testing"
)

// RefusingWorkspaceURL returns a workspace URL whose TCP port refuses
// connections (nothing listens there: the port was free a moment ago), for
// tests of startup against a workspace that is down.
func RefusingWorkspaceURL(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("lakebasetest: RefusingWorkspaceURL: %v", err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return "http://" + addr
}

// SilentWorkspaceURL returns a workspace URL that accepts TCP connections
// and never answers (a black-holed or hung workspace), for tests that
// startup is bounded by the caller's ctx. Everything is closed in
// t.Cleanup.
func SilentWorkspaceURL(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("lakebasetest: SilentWorkspaceURL: %v", err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never read or answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return "http://" + ln.Addr().String()
}
