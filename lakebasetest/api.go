package lakebasetest

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Route names one route of the fake workspace API, for counters and faults.
type Route string

// The routes of the fake workspace API.
const (
	RouteHostMetadata        Route = "host-metadata"        // GET /.well-known/databricks-config
	RouteCredentials         Route = "postgres-credentials" // POST /api/2.0/postgres/credentials
	RouteEndpoint            Route = "postgres-endpoint"    // GET /api/2.0/postgres/{endpoint}
	RouteInstanceCredentials Route = "database-credentials" // POST /api/2.0/database/credentials
	RouteInstance            Route = "database-instance"    // GET /api/2.0/database/instances/{name}
	RouteMe                  Route = "scim-me"              // GET /api/2.0/preview/scim/v2/Me
	RouteOIDCDiscovery       Route = "oidc-discovery"       // GET /oidc/.well-known/oauth-authorization-server
	RouteOAuthToken          Route = "oauth-token"          // POST /oidc/v1/token
)

// Fault is a sticky misbehaviour of a credential route.
type Fault int

// The faults SetFault can inject.
const (
	FaultNone           Fault = iota
	FaultMalformedJSON        // the body is not JSON
	FaultEmptyToken           // "token": ""
	FaultExpiredToken         // the expiry is in the past
	FaultMissingExpiry        // no expiry field
	FaultDropConnection       // the connection is closed without a response (any route)
	FaultTruncatedBody        // HTTP 200 whose JSON is cut off right after the full token
)

type failure struct {
	n      int
	status int
	code   string
}

// api is the fake workspace API.
type api struct {
	e *Emulator

	mu         sync.Mutex
	identities map[string]string // bearer -> user name
	ids        map[string]int    // user name -> numeric id
	fail       map[Route]*failure
	latency    map[Route]time.Duration
	faults     map[Route]Fault
	calls      map[Route]*atomic.Int64
	mintsBy    map[string]*atomic.Int64 // bearer -> credential mints
	clients    map[string]string        // OAuth client id -> secret
	inflight   inflightTracker
	claims     claimLog // claims of credential requests (claims.go)
}

func newAPI(e *Emulator) *api {
	a := &api{e: e, identities: map[string]string{}, ids: map[string]int{}, fail: map[Route]*failure{},
		latency: map[Route]time.Duration{}, faults: map[Route]Fault{}, calls: map[Route]*atomic.Int64{}, mintsBy: map[string]*atomic.Int64{},
		clients: map[string]string{}}
	for _, r := range []Route{RouteHostMetadata, RouteCredentials, RouteEndpoint, RouteInstanceCredentials, RouteInstance, RouteMe, RouteOIDCDiscovery, RouteOAuthToken} {
		a.calls[r] = new(atomic.Int64)
	}
	return a
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]string{"error_code": code, "message": msg})
}

func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route, ok := routeOf(r)
	if !ok {
		writeError(w, http.StatusNotFound, "ENDPOINT_NOT_FOUND", "no API at "+r.Method+" "+r.URL.Path)
		return
	}
	a.calls[route].Add(1)
	call := a.inflight.begin(route)
	defer call.end()
	w = &answerWriter{ResponseWriter: w, call: call}
	// Read the body first: net/http notices a client that went away (and
	// cancels r.Context()) only once the body has been consumed.
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, "INVALID_PARAMETER_VALUE", "cannot read the request body")
		return
	}

	a.mu.Lock()
	lat := a.latency[route]
	var injected *failure
	if f := a.fail[route]; f != nil && f.n > 0 {
		f.n--
		injected = &failure{status: f.status, code: f.code}
	}
	fault := a.faults[route]
	a.mu.Unlock()

	if fault == FaultDropConnection {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
	}
	if lat > 0 {
		select {
		case <-time.After(lat):
		case <-r.Context().Done():
			return
		}
	}
	if injected != nil {
		writeError(w, injected.status, injected.code, fmt.Sprintf("injected failure (%d %s)", injected.status, injected.code))
		return
	}
	base := "http://" + r.Host
	switch route {
	case RouteHostMetadata:
		// What a workspace answers: with oidc_endpoint the SDK resolves its
		// OAuth discovery URL and logs no "Host metadata" warning.
		writeJSON(w, http.StatusOK, map[string]any{
			"oidc_endpoint": base + "/oidc", "workspace_id": workspaceID, "account_id": accountID,
			"cloud": "AWS", "host_type": "workspace",
		})
		return
	case RouteOIDCDiscovery:
		writeJSON(w, http.StatusOK, map[string]any{
			"issuer": base + "/oidc", "authorization_endpoint": base + "/oidc/v1/authorize",
			"token_endpoint": base + "/oidc/v1/token", "grant_types_supported": []string{"client_credentials", "authorization_code", "refresh_token"},
			"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
		})
		return
	case RouteOAuthToken:
		a.token(w, r, body)
		return
	}
	bearer := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	a.mu.Lock()
	who, known := a.identities[bearer]
	id := a.ids[who]
	a.mu.Unlock()
	if !known || bearer == "" {
		writeError(w, http.StatusUnauthorized, "UNAUTHENTICATED", "invalid access token")
		return
	}

	raw := body
	switch route {
	case RouteMe:
		writeJSON(w, http.StatusOK, map[string]any{"id": fmt.Sprint(id), "userName": who, "displayName": who, "active": true})
	case RouteEndpoint:
		name := strings.TrimPrefix(r.URL.Path, "/api/2.0/postgres/")
		if name != a.e.Endpoint() {
			writeError(w, http.StatusNotFound, "RESOURCE_DOES_NOT_EXIST", "endpoint "+name+" does not exist")
			return
		}
		state := "ACTIVE"
		if a.e.Suspended() {
			state = "IDLE"
		}
		writeJSON(w, http.StatusOK, map[string]any{"name": name, "status": map[string]any{
			"endpoint_type": "ENDPOINT_TYPE_READ_WRITE", "current_state": state,
			// read_only_host only while a standby runs (standby.go).
			"hosts": a.e.endpointHosts(),
		}})
	case RouteInstance:
		name := strings.TrimPrefix(r.URL.Path, "/api/2.0/database/instances/")
		if name != a.e.Instance() {
			writeError(w, http.StatusNotFound, "RESOURCE_DOES_NOT_EXIST", "database instance "+name+" does not exist")
			return
		}
		inst := map[string]any{"name": name, "read_write_dns": a.e.Host(), "state": "AVAILABLE"}
		if ro := a.e.ReadOnlyHost(); ro != "" {
			inst["read_only_dns"] = ro
		}
		writeJSON(w, http.StatusOK, inst)
	case RouteCredentials:
		var body struct {
			Endpoint string        `json:"endpoint"`
			TTL      string        `json:"ttl"`
			Claims   []claimRecord `json:"claims"`
		}
		if err := json.Unmarshal(raw, &body); err != nil || body.Endpoint == "" {
			writeError(w, http.StatusBadRequest, "INVALID_PARAMETER_VALUE", "body must be {\"endpoint\": ..., \"ttl\"?: ...}")
			return
		}
		if body.Endpoint != a.e.Endpoint() {
			writeError(w, http.StatusNotFound, "RESOURCE_DOES_NOT_EXIST", "endpoint "+body.Endpoint+" does not exist")
			return
		}
		ttl := a.e.ttl()
		if body.TTL != "" {
			d, err := time.ParseDuration(body.TTL)
			if err != nil || d < a.e.cfg.minTTL || d > time.Hour {
				writeError(w, http.StatusBadRequest, "INVALID_PARAMETER_VALUE", fmt.Sprintf("ttl must be between %v and 1h", a.e.cfg.minTTL))
				return
			}
			ttl = d
		}
		a.recordClaims(body.Claims)
		a.mint(w, bearer, who, ttl, fault, "expire_time")
	case RouteInstanceCredentials:
		var body struct {
			InstanceNames []string `json:"instance_names"`
		}
		if err := json.Unmarshal(raw, &body); err != nil || len(body.InstanceNames) == 0 {
			writeError(w, http.StatusBadRequest, "INVALID_PARAMETER_VALUE", "instance_names is required")
			return
		}
		for _, n := range body.InstanceNames {
			if n != a.e.Instance() {
				writeError(w, http.StatusNotFound, "RESOURCE_DOES_NOT_EXIST", "database instance "+n+" does not exist")
				return
			}
		}
		a.mint(w, bearer, who, a.e.ttl(), fault, "expiration_time")
	}
}

// mint answers a credential request for identity who, applying fault.
func (a *api) mint(w http.ResponseWriter, bearer, who string, ttl time.Duration, fault Fault, expiryField string) {
	a.mu.Lock()
	c, ok := a.mintsBy[bearer]
	if !ok {
		c = new(atomic.Int64)
		a.mintsBy[bearer] = c
	}
	a.mu.Unlock()
	c.Add(1)
	tok, exp := a.e.tokens.mint(who, ttl)
	body := map[string]any{"token": tok, expiryField: exp.UTC().Format(time.RFC3339Nano)}
	switch fault {
	case FaultMalformedJSON:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"token": "`+tok[:10])
		return
	case FaultTruncatedBody:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"token":"`+tok+`","`+expiryField[:len(expiryField)-2])
		return
	case FaultEmptyToken:
		body["token"] = ""
	case FaultExpiredToken:
		body[expiryField] = time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano)
	case FaultMissingExpiry:
		delete(body, expiryField)
	}
	writeJSON(w, http.StatusOK, body)
}

func routeOf(r *http.Request) (Route, bool) {
	p := r.URL.Path
	switch {
	case r.Method == http.MethodGet && p == "/.well-known/databricks-config":
		return RouteHostMetadata, true
	case r.Method == http.MethodPost && p == "/api/2.0/postgres/credentials":
		return RouteCredentials, true
	case r.Method == http.MethodGet && strings.HasPrefix(p, "/api/2.0/postgres/projects/"):
		return RouteEndpoint, true
	case r.Method == http.MethodPost && p == "/api/2.0/database/credentials":
		return RouteInstanceCredentials, true
	case r.Method == http.MethodGet && strings.HasPrefix(p, "/api/2.0/database/instances/"):
		return RouteInstance, true
	case r.Method == http.MethodGet && p == "/api/2.0/preview/scim/v2/Me":
		return RouteMe, true
	case r.Method == http.MethodGet && p == "/oidc/.well-known/oauth-authorization-server":
		return RouteOIDCDiscovery, true
	case r.Method == http.MethodPost && p == "/oidc/v1/token":
		return RouteOAuthToken, true
	}
	return "", false
}

const (
	workspaceID = "1234567890123456"
	accountID   = "00000000-0000-4000-8000-00000000000a"
)

// oauthError answers in the OAuth 2.0 error shape (RFC 6749, 5.2), which is
// what the workspace token endpoint returns and what golang.org/x/oauth2
// (inside the SDK) parses into a *oauth2.RetrieveError.
func oauthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

// token is the workspace OAuth token endpoint for the client-credentials
// grant (OAuth M2M). The client authenticates with HTTP Basic (the SDK's
// AuthStyleInHeader) or with form fields.
func (a *api) token(w http.ResponseWriter, r *http.Request, body []byte) {
	form, err := url.ParseQuery(string(body))
	if err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "the body must be application/x-www-form-urlencoded")
		return
	}
	if gt := form.Get("grant_type"); gt != "client_credentials" {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "grant_type "+strconv.Quote(gt)+" is not supported")
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = form.Get("client_id"), form.Get("client_secret")
	}
	a.mu.Lock()
	want, known := a.clients[id]
	a.mu.Unlock()
	if !known || id == "" || subtle.ConstantTimeCompare([]byte(secret), []byte(want)) != 1 {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "Client authentication failed")
		return
	}
	bearer := "eyJlbXUiOiJsYWtlYmFzZXRlc3QifQ." + randomString(32)
	a.mu.Lock()
	a.identities[bearer] = id
	a.mu.Unlock()
	scope := form.Get("scope")
	if scope == "" {
		scope = "all-apis"
	}
	writeJSON(w, http.StatusOK, map[string]any{"access_token": bearer, "token_type": "Bearer", "expires_in": 3600, "scope": scope})
}
