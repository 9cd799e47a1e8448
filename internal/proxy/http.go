package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"time"
)

// httpServer serves the health endpoints.
type httpServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// Health is the body of /livez and /readyz.
type Health struct {
	Status string `json:"status"` // "ok", "not ready" or "shutting down"
	// Token is true when a usable token is in hand (readyz).
	Token *bool `json:"token,omitempty"`
	// LastLogin is "ok", "failed" or "none" (readyz): the last backend
	// login's outcome.
	LastLogin string `json:"last_login,omitempty"`
	// Problem says why the proxy is not ready.
	Problem string `json:"problem,omitempty"`
	Stats
}

func startHTTP(s *Server, addr string) (*httpServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) {
		h := Health{Status: "ok", Stats: s.Stats()}
		writeHealth(w, http.StatusOK, h)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		h, ok := s.Ready(r.Context())
		code := http.StatusOK
		if !ok {
			code = http.StatusServiceUnavailable
		}
		writeHealth(w, code, h)
	})
	h := &httpServer{ln: ln, done: make(chan struct{}),
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ErrorLog: nil}}
	go func() {
		defer close(h.done)
		_ = h.srv.Serve(ln)
	}()
	return h, nil
}

// Ready reports whether the proxy can serve a new client: not shutting
// down, a usable token in hand, and the last backend login (if any)
// succeeded.
func (s *Server) Ready(ctx context.Context) (Health, bool) {
	h := Health{Status: "ok", Stats: s.Stats()}
	switch s.lastLogin.Load() {
	case 1:
		h.LastLogin = "ok"
	case 2:
		h.LastLogin = "failed"
	default:
		h.LastLogin = "none"
	}
	if s.isDraining() {
		h.Status, h.Problem = "shutting down", "the proxy is shutting down"
		return h, false
	}
	have := true
	if ts := s.conn.TokenSource(); ts != nil {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := ts.Token(ctx)
		cancel()
		if err != nil {
			have = false
			h.Problem = "no usable token: " + scrub(err.Error())
		}
	}
	h.Token = &have
	if !have || h.LastLogin == "failed" {
		h.Status = "not ready"
		if h.Problem == "" {
			h.Problem = "the last backend login failed"
		}
		return h, false
	}
	return h, true
}

func writeHealth(w http.ResponseWriter, code int, h Health) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(h)
}

func (h *httpServer) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := h.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = h.srv.Close()
	}
	<-h.done
	return err
}
