package bench

import (
	"bytes"
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/lakebase-go/lakebase/internal/leaktest"
	"github.com/lakebase-go/lakebase/lakebasetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, leaktest.Options()...) }

// TestCompareSmoke runs the comparison at toy sizes so it cannot rot; it
// asserts the table's shape and the call counts, never timings.
func TestCompareSmoke(t *testing.T) {
	var out bytes.Buffer
	rows, err := Compare(t.Context(), &out, Options{Rounds: 1, Connects: 3, Churn: 10, Queries: 20, Stampede: 50, Boundary: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	table := out.String()
	for _, want := range []string{"1. token on cache hit", "2. new connection", "3. churn", "4a. SELECT 1", "4b. insert", "5. stampede", "5b. eager", "7. scaling: 10", string(Limit), string(MintPerConn), string(OAuth2Reuse), string(Lazy), string(EagerOTel)} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q", want)
		}
	}
	for _, r := range rows {
		if strings.HasPrefix(r.Case, "5. stampede") && r.Contender == string(Lazy) && r.Note != "1 credential calls" {
			t.Errorf("lazy stampede: %s, want exactly 1 credential call", r.Note)
		}
		if strings.HasPrefix(r.Case, "3. churn") && r.Contender == string(Eager) && r.Note != "0 credential calls" {
			t.Errorf("eager churn within one token lifetime: %s, want 0 extra calls", r.Note)
		}
	}
	t.Log("\n" + table)
}

func benchConnect(b *testing.B, k Kind) {
	e := lakebasetest.Start(b)
	env := &Env{E: e}
	c, closeFn, err := env.Connector(context.Background(), k)
	if err != nil {
		b.Fatal(err)
	}
	defer closeFn()
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		conn, err := c.Connect(ctx)
		if err != nil {
			b.Fatal(err)
		}
		_ = conn.Close()
	}
}

func BenchmarkConnectLimit(b *testing.B)       { benchConnect(b, Limit) }
func BenchmarkConnectEager(b *testing.B)       { benchConnect(b, Eager) }
func BenchmarkConnectLazy(b *testing.B)        { benchConnect(b, Lazy) }
func BenchmarkConnectOAuth2Reuse(b *testing.B) { benchConnect(b, OAuth2Reuse) }
func BenchmarkConnectMintPerConn(b *testing.B) { benchConnect(b, MintPerConn) }

func benchQuery(b *testing.B, k Kind) {
	e := lakebasetest.Start(b)
	env := &Env{E: e}
	c, closeFn, err := env.Connector(context.Background(), k)
	if err != nil {
		b.Fatal(err)
	}
	defer closeFn()
	db := sql.OpenDB(c)
	defer db.Close()
	db.SetMaxOpenConns(1)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		var one int
		if err := db.QueryRow("SELECT 1").Scan(&one); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkQueryLimit(b *testing.B)     { benchQuery(b, Limit) }
func BenchmarkQueryEager(b *testing.B)     { benchQuery(b, Eager) }
func BenchmarkQueryEagerOTel(b *testing.B) { benchQuery(b, EagerOTel) }
