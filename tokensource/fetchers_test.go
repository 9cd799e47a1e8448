package tokensource_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/databricks/databricks-sdk-go"
	"github.com/databricks/databricks-sdk-go/config"
	"golang.org/x/oauth2"

	"github.com/lakebase-go/lakebase/tokensource"
)

type noLoader struct{}

func (noLoader) Name() string                   { return "none" }
func (noLoader) Configure(*config.Config) error { return nil }

// fakeAPI answers the two credential routes with body; calls counts them.
func fakeAPI(t *testing.T, status int, body func(req map[string]any) string) (*databricks.WorkspaceClient, *atomic.Int64, *map[string]any) {
	t.Helper()
	var calls atomic.Int64
	var last map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/2.0/postgres/credentials" && r.URL.Path != "/api/2.0/database/credentials" {
			http.NotFound(w, r)
			return
		}
		calls.Add(1)
		b, _ := io.ReadAll(r.Body)
		req := map[string]any{}
		_ = json.Unmarshal(b, &req)
		last = req
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body(req))
	}))
	t.Cleanup(srv.Close)
	w, err := databricks.NewWorkspaceClient(&databricks.Config{Host: srv.URL, Token: "dapi-test", Credentials: config.PatCredentials{},
		AuthType: "pat", Loaders: []config.Loader{noLoader{}},
		HostMetadataResolver: func(context.Context, string) (*config.HostMetadata, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	return w, &calls, &last
}

func TestEndpointFetcherThroughSDK(t *testing.T) {
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	w, calls, last := fakeAPI(t, 200, func(map[string]any) string {
		return `{"token":"tok-abc","expire_time":"` + exp.Format(time.RFC3339) + `"}`
	})
	fetch, err := tokensource.EndpointFetcher(w.Postgres, "projects/p/branches/b/endpoints/e",
		tokensource.EndpointOptions{TTL: 10 * time.Minute, ReadOnlyTables: []string{"main.sales.orders"}})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := fetch(t.Context())
	if err != nil || tok.Value != "tok-abc" || !tok.Expiry.Equal(exp) {
		t.Fatalf("fetch = %v, %v", tok, err)
	}
	req := *last
	if req["endpoint"] != "projects/p/branches/b/endpoints/e" || req["ttl"] != "600s" {
		t.Errorf("request body %v", req)
	}
	if claims, _ := json.Marshal(req["claims"]); !strings.Contains(string(claims), "READ_ONLY") || !strings.Contains(string(claims), "main.sales.orders") {
		t.Errorf("claims %s", claims)
	}
	if calls.Load() != 1 {
		t.Errorf("calls %d", calls.Load())
	}
}

func TestInstanceFetcherThroughSDK(t *testing.T) {
	w, _, last := fakeAPI(t, 200, func(map[string]any) string {
		return `{"token":"tok-i","expiration_time":"2099-01-02T03:04:05.123Z"}`
	})
	fetch, err := tokensource.InstanceFetcher(w.Database, "inst")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := fetch(t.Context())
	if err != nil || tok.Value != "tok-i" || tok.Expiry.Year() != 2099 {
		t.Fatalf("fetch = %v, %v", tok, err)
	}
	if names, _ := json.Marshal((*last)["instance_names"]); string(names) != `["inst"]` {
		t.Errorf("instance_names %s", names)
	}
}

func TestFetcherValidation(t *testing.T) {
	for name, body := range map[string]string{
		"empty token":       `{"token":"","expire_time":"2099-01-01T00:00:00Z"}`,
		"missing expiry":    `{"token":"x"}`,
		"instance bad time": `{"token":"x","expiration_time":"tomorrow"}`,
	} {
		t.Run(name, func(t *testing.T) {
			w, _, _ := fakeAPI(t, 200, func(map[string]any) string { return body })
			var fetch tokensource.FetchFunc
			var err error
			if strings.HasPrefix(name, "instance") {
				fetch, err = tokensource.InstanceFetcher(w.Database, "inst")
			} else {
				fetch, err = tokensource.EndpointFetcher(w.Postgres, "projects/p/branches/b/endpoints/e", tokensource.EndpointOptions{})
			}
			if err != nil {
				t.Fatal(err)
			}
			_, err = fetch(t.Context())
			var ve *tokensource.ValidationError
			if !errors.As(err, &ve) {
				t.Errorf("want *ValidationError, got %v", err)
			}
		})
	}
	// Expiry in the past is rejected by the cache.
	w, _, _ := fakeAPI(t, 200, func(map[string]any) string { return `{"token":"x","expire_time":"2001-01-01T00:00:00Z"}` })
	fetch, _ := tokensource.EndpointFetcher(w.Postgres, "projects/p/branches/b/endpoints/e", tokensource.EndpointOptions{})
	c := tokensource.New(fetch, tokensource.Options{Mode: tokensource.Lazy, Logger: quiet()})
	defer c.Close()
	if _, err := c.Token(t.Context()); err == nil || tokensource.IsTransient(err) || !strings.Contains(err.Error(), "expiry") {
		t.Errorf("past expiry: %v", err)
	}
}

func TestFetcherConfigErrors(t *testing.T) {
	w, _, _ := fakeAPI(t, 200, func(map[string]any) string { return "{}" })
	for _, f := range []func() error{
		func() error {
			_, err := tokensource.EndpointFetcher(nil, "e", tokensource.EndpointOptions{})
			return err
		},
		func() error {
			_, err := tokensource.EndpointFetcher(w.Postgres, " ", tokensource.EndpointOptions{})
			return err
		},
		func() error {
			_, err := tokensource.EndpointFetcher(w.Postgres, "e", tokensource.EndpointOptions{TTL: time.Minute})
			return err
		},
		func() error { _, err := tokensource.InstanceFetcher(w.Database, ""); return err },
		func() error {
			_, err := tokensource.EndpointFetcher(w.Postgres, "e", tokensource.EndpointOptions{ReadOnlyTables: []string{""}})
			return err
		},
	} {
		var ce *tokensource.ConfigError
		if err := f(); !errors.As(err, &ce) {
			t.Errorf("want *ConfigError, got %v", err)
		}
	}
}

// The SDK retries 429 and 503 for up to five minutes on its own; the
// per-attempt timeout bounds it.
func TestAttemptTimeoutBoundsSDKRetries(t *testing.T) {
	for status, code := range map[int]string{429: "REQUEST_LIMIT_EXCEEDED", 503: "TEMPORARILY_UNAVAILABLE"} {
		t.Run(code, func(t *testing.T) {
			w, calls, _ := fakeAPI(t, status, func(map[string]any) string {
				return `{"error_code":"` + code + `","message":"try later"}`
			})
			fetch, _ := tokensource.EndpointFetcher(w.Postgres, "projects/p/branches/b/endpoints/e", tokensource.EndpointOptions{})
			c := tokensource.New(fetch, tokensource.Options{Mode: tokensource.Lazy, Logger: quiet(), AttemptTimeout: 500 * time.Millisecond, RetrySchedule: []time.Duration{}})
			defer c.Close()
			done := make(chan error, 1)
			go func() { _, err := c.Token(t.Context()); done <- err }()
			var err error
			select {
			case err = <-done:
			case <-time.After(60 * time.Second): // hang detector: the SDK alone would retry for 300 s
				t.Fatal("the SDK retry loop was not bounded by AttemptTimeout")
			}
			if !tokensource.IsTransient(err) || !strings.Contains(err.Error(), code) && !strings.Contains(err.Error(), "timed out") {
				t.Errorf("want a transient error naming the cause, got %v", err)
			}
			t.Logf("%d HTTP calls in one attempt: %v", calls.Load(), err)
		})
	}
}

// A Databricks 403 through the real SDK: one HTTP call, a permanent auth
// error naming the cause, remembered for later callers.
func TestPermissionDeniedThroughSDK(t *testing.T) {
	w, calls, _ := fakeAPI(t, 403, func(map[string]any) string {
		return `{"error_code":"PERMISSION_DENIED","message":"no CAN_USE on the endpoint"}`
	})
	fetch, _ := tokensource.EndpointFetcher(w.Postgres, "projects/p/branches/b/endpoints/e", tokensource.EndpointOptions{})
	c := tokensource.New(fetch, tokensource.Options{Mode: tokensource.Lazy, Logger: quiet()})
	defer c.Close()
	for i := 0; i < 3; i++ {
		_, err := c.Token(t.Context())
		var te *tokensource.Error
		if !errors.As(err, &te) || te.Kind != tokensource.KindAuth || !strings.Contains(err.Error(), "no CAN_USE") {
			t.Fatalf("got %v, want an auth *tokensource.Error", err)
		}
	}
	if calls.Load() != 1 {
		t.Errorf("HTTP calls = %d, want 1", calls.Load())
	}
}

func TestOAuth2Adapters(t *testing.T) {
	exp := time.Now().Add(time.Hour)
	src := tokensource.FromOAuth2(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "a", Expiry: exp}))
	tok, err := src.Token(t.Context())
	if err != nil || tok.Value != "a" || !tok.Expiry.Equal(exp) {
		t.Fatalf("FromOAuth2: %v %v", tok, err)
	}
	ot, err := tokensource.ToOAuth2(t.Context(), tokensource.Static("s", exp)).Token()
	if err != nil || ot.AccessToken != "s" || ot.TokenType != "Bearer" || !ot.Expiry.Equal(exp) {
		t.Fatalf("ToOAuth2: %+v %v", ot, err)
	}
}
