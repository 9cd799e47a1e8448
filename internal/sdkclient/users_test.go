package sdkclient

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/databricks/databricks-sdk-go/service/iam"
)

// recordingMe answers Me and records the Authorization header and the
// printed request context of each call.
type recordingMe struct {
	mu   sync.Mutex
	auth []string
	ctxs []string
}

func (m *recordingMe) RoundTrip(r *http.Request) (*http.Response, error) {
	m.mu.Lock()
	m.auth = append(m.auth, r.Header.Get("Authorization"))
	m.ctxs = append(m.ctxs, fmt.Sprint(r.Context()))
	m.mu.Unlock()
	return meTransport{}.RoundTrip(r)
}

// TestUsersCarryTheirOwnToken: each user's requests carry that user's
// token, a request without For is refused before it leaves, and the
// request context never prints the token.
func TestUsersCarryTheirOwnToken(t *testing.T) {
	rt := &recordingMe{}
	users, err := NewUsers("https://example.cloud.databricks.com", rt)
	if err != nil {
		t.Fatal(err)
	}
	defer users.Close()
	const secret = "dapi-SECRETuserTOKEN"
	for _, tok := range []string{secret, "dapi-other"} {
		if _, err := users.For(tok).CurrentUser.Me(t.Context(), iam.MeRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	_, err = users.c.CurrentUser.Me(ctx, iam.MeRequest{})
	cancel() // ends the SDK's per-request timeout watcher, which a refused visitor leaves running
	if err == nil {
		t.Error("a request without a user token was sent")
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if len(rt.auth) != 2 || rt.auth[0] != "Bearer "+secret || rt.auth[1] != "Bearer dapi-other" {
		t.Errorf("Authorization headers: %q", rt.auth)
	}
	for _, c := range rt.ctxs {
		if strings.Contains(c, "SECRET") {
			t.Errorf("the request context prints the user's token: %s", c)
		}
	}
}
