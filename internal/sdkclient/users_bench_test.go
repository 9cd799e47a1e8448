package sdkclient

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/databricks/databricks-sdk-go"
	"github.com/databricks/databricks-sdk-go/service/iam"
)

// meTransport answers every request with a Me body, without a network:
// what is measured is the client side only.
type meTransport struct{}

func (meTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") == "" {
		return &http.Response{StatusCode: 401, Body: io.NopCloser(strings.NewReader(`{"error_code":"UNAUTHENTICATED"}`)), Header: http.Header{}, Request: r}, nil
	}
	return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(`{"userName":"user@example.com"}`)),
		Header: http.Header{"Content-Type": {"application/json"}}, Request: r}, nil
}

// BenchmarkUserVerification is the client side of verifying a new user
// token with Me: "full" builds a *databricks.WorkspaceClient per token
// (what peruser did before: every service of the SDK constructed), "pat"
// a light client per token, "shared" a Users client's For (one client for
// every user). Compare allocs/op and B/op.
func BenchmarkUserVerification(b *testing.B) {
	const host = "https://example.cloud.databricks.com"
	me := func(b *testing.B, cu CurrentUser) {
		u, err := cu.Me(b.Context(), iam.MeRequest{})
		if err != nil || u.UserName == "" {
			b.Fatal(u, err)
		}
	}
	b.Run("full", func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			w, err := databricks.NewWorkspaceClient((*databricks.Config)(PATConfig(host, "dapi-"+strconv.Itoa(i), meTransport{})))
			if err != nil {
				b.Fatal(err)
			}
			me(b, w.CurrentUser)
		}
	})
	b.Run("pat", func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			c, err := PAT(host, "dapi-"+strconv.Itoa(i), meTransport{})
			if err != nil {
				b.Fatal(err)
			}
			me(b, c.CurrentUser)
		}
	})
	b.Run("shared", func(b *testing.B) {
		users, err := NewUsers(host, meTransport{})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for i := range b.N {
			me(b, users.For("dapi-"+strconv.Itoa(i)).CurrentUser)
		}
	})
}
