package peruser

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/databricks/databricks-sdk-go/service/iam"

	"github.com/lakebase-go/lakebase/internal/sdkclient"
)

func jwtWith(payload string) string {
	return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".c2ln"
}

// TestExpiryOf: a verified JWT is remembered until its exp claim (at most
// MaxVerifiedAge); anything else for the TTL.
func TestExpiryOf(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	ttl := 5 * time.Minute
	for _, tc := range []struct {
		name  string
		token string
		want  time.Time
	}{
		{"opaque", "dapi0123456789", now.Add(ttl)},
		{"jwt exp in 20 min", jwtWith(fmt.Sprintf(`{"sub":"a","exp":%d}`, now.Add(20*time.Minute).Unix())), now.Add(20 * time.Minute)},
		{"jwt exp in 3 h is capped", jwtWith(fmt.Sprintf(`{"exp":%d}`, now.Add(3*time.Hour).Unix())), now.Add(MaxVerifiedAge)},
		{"jwt exp past", jwtWith(fmt.Sprintf(`{"exp":%d}`, now.Add(-time.Minute).Unix())), now.Add(-time.Minute)},
		{"jwt without exp", jwtWith(`{"sub":"a"}`), now.Add(ttl)},
		{"jwt exp not a number", jwtWith(`{"exp":"soon"}`), now.Add(ttl)},
		{"jwt exp float", jwtWith(fmt.Sprintf(`{"exp":%d.5}`, now.Add(time.Minute).Unix())), now.Add(time.Minute)},
		{"bad base64", "a.!!!.c", now.Add(ttl)},
		{"two dots only", "a.b", now.Add(ttl)},
	} {
		if got := expiryOf(tc.token, now, ttl); !got.Equal(tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func FuzzJWTExpiry(f *testing.F) {
	f.Add(jwtWith(`{"exp":1800000000}`))
	f.Add("a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) {
		now := time.Unix(1_800_000_000, 0)
		if got := expiryOf(tok, now, time.Minute); got.After(now.Add(MaxVerifiedAge)) {
			t.Fatalf("remembered past MaxVerifiedAge: %v", got)
		}
	})
}

// TestUserClientsShareTheTransport: every user's workspace client is the
// Manager's one client on its one transport, built without a network call,
// and each request carries its own user's token.
func TestUserClientsShareTheTransport(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Header.Get("Authorization")] = true
		mu.Unlock()
		_, _ = io.WriteString(w, `{"userName":"someone@example.com"}`)
	}))
	defer srv.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	users, err := sdkclient.NewUsers(srv.URL, tr)
	if err != nil {
		t.Fatal(err)
	}
	m := &Manager{host: srv.URL, transport: tr, users: users}
	for _, tok := range []string{"dapi-one", "dapi-two"} {
		w, err := m.userClient(tok)
		if err != nil {
			t.Fatal(err)
		}
		if got := w.Settings().HTTPTransport; got != tr {
			t.Fatalf("client for %s is built on transport %T %p, want the shared %p", tok, got, got, tr)
		}
		if _, err := w.CurrentUser.Me(t.Context(), iam.MeRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if !seen["Bearer dapi-one"] || !seen["Bearer dapi-two"] || len(seen) != 2 {
		t.Errorf("Authorization headers seen: %v", seen)
	}
}
