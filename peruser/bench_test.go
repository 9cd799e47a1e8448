package peruser_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/peruser"
	"github.com/lakebase-go/lakebase/tokensource"
)

// benchManager starts an emulator and a Manager on it (quiet logs).
func benchManager(b *testing.B, cfg peruser.Config) (*lakebasetest.Emulator, *peruser.Manager) {
	b.Helper()
	e := lakebasetest.Start(b)
	cfg.Base = base(b, e, nil)
	cfg.Base.Logger = slog.New(slog.DiscardHandler)
	m, err := peruser.New(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = m.Close() })
	if err := m.ServicePrincipal().Ping(); err != nil {
		b.Fatal(err)
	}
	return e, m
}

// plainUserConfig is a connector configuration for one user with the
// user's own workspace client: the baseline without this package.
func plainUserConfig(b *testing.B, e *lakebasetest.Emulator, email, tok string) connector.Config {
	b.Helper()
	w := e.WorkspaceConfigFor(tok)
	return connector.Config{Endpoint: e.Endpoint(), Host: e.Host(), Port: e.Port(), Database: e.Database(), User: email,
		SSLRootCert: e.CAFile(), WorkspaceConfig: w, Logger: slog.New(slog.DiscardHandler), Token: tokensource.Options{Mode: tokensource.Lazy},
		LookupEnv: func(string) (string, bool) { return "", false }}
}

func selectOne(b *testing.B, db *sql.DB) {
	var one int
	if err := db.QueryRow("SELECT 1").Scan(&one); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkReturningUser is a returning user's Acquire + SELECT 1 +
// release; compare with BenchmarkPlainPoolSelect1.
func BenchmarkReturningUser(b *testing.B) {
	e, m := benchManager(b, peruser.Config{})
	tok, err := e.AddUser(context.Background(), "bench@example.com")
	if err != nil {
		b.Fatal(err)
	}
	id := peruser.Identity{Email: "bench@example.com", AccessToken: tok}
	db, release, err := m.Acquire(context.Background(), id)
	if err != nil {
		b.Fatal(err)
	}
	selectOne(b, db)
	release()
	b.ReportAllocs()
	for b.Loop() {
		db, release, err := m.Acquire(context.Background(), id)
		if err != nil {
			b.Fatal(err)
		}
		selectOne(b, db)
		release()
	}
}

// BenchmarkNewTokenOfReturningUser is the first request with a new access
// token of a user whose pool is open: the cost of one verification (Me)
// on top of BenchmarkReturningUser.
func BenchmarkNewTokenOfReturningUser(b *testing.B) {
	e, m := benchManager(b, peruser.Config{})
	const email = "bench@example.com"
	tok, err := e.AddUser(context.Background(), email)
	if err != nil {
		b.Fatal(err)
	}
	db, release, err := m.Acquire(context.Background(), peruser.Identity{Email: email, AccessToken: tok})
	if err != nil {
		b.Fatal(err)
	}
	selectOne(b, db)
	release()
	toks := make([]string, b.N)
	for i := range toks {
		toks[i] = e.AddIdentityWithoutRole(email) // the same user's next tokens
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		db, release, err := m.Acquire(context.Background(), peruser.Identity{Email: email, AccessToken: toks[i]})
		if err != nil {
			b.Fatal(err)
		}
		selectOne(b, db)
		release()
	}
	b.StopTimer()
	if st := m.Stats(); st.Verifications != int64(b.N)+1 {
		b.Fatalf("verifications %d, want %d", st.Verifications, b.N+1)
	}
}

// BenchmarkPlainPoolSelect1 is SELECT 1 on a plain connector pool of the
// same user (the baseline of BenchmarkReturningUser).
func BenchmarkPlainPoolSelect1(b *testing.B) {
	e := lakebasetest.Start(b)
	tok, err := e.AddUser(context.Background(), "bench@example.com")
	if err != nil {
		b.Fatal(err)
	}
	c, err := connector.New(context.Background(), plainUserConfig(b, e, "bench@example.com", tok))
	if err != nil {
		b.Fatal(err)
	}
	db := connector.OpenDB(c)
	defer db.Close()
	selectOne(b, db)
	b.ReportAllocs()
	for b.Loop() {
		selectOne(b, db)
	}
}

// newUsers adds n users to the emulator (outside the timed part).
func newUsers(b *testing.B, e *lakebasetest.Emulator, prefix string, n int) []peruser.Identity {
	b.Helper()
	ids := make([]peruser.Identity, n)
	for i := range ids {
		email := fmt.Sprintf("%s%d@example.com", prefix, i)
		tok, err := e.AddUser(context.Background(), email)
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = peruser.Identity{Email: email, AccessToken: tok}
	}
	return ids
}

// BenchmarkNewUserFirstQuery is a new user's first request: verification,
// pool build, one mint, one login, SELECT 1. Compare with
// BenchmarkPlainFirstQuery. Run with -benchtime=Nx (each iteration is a
// new user with a Postgres role).
func BenchmarkNewUserFirstQuery(b *testing.B) {
	for _, method := range []peruser.VerifyMethod{peruser.VerifyMe, peruser.VerifyLogin} {
		b.Run("verify="+method.String(), func(b *testing.B) {
			e, m := benchManager(b, peruser.Config{MaxUsers: 100000, Verify: method})
			ids := newUsers(b, e, "new", b.N)
			b.ResetTimer()
			for i := range b.N {
				db, release, err := m.Acquire(context.Background(), ids[i])
				if err != nil {
					b.Fatal(err)
				}
				selectOne(b, db)
				release()
			}
		})
	}
}

// BenchmarkPlainFirstQuery is the same first query without this package:
// a connector of the user's own (its workspace client built in setup),
// one mint, one login, SELECT 1.
func BenchmarkPlainFirstQuery(b *testing.B) {
	e := lakebasetest.Start(b)
	ids := newUsers(b, e, "plain", b.N)
	cfgs := make([]connector.Config, b.N)
	for i, id := range ids {
		cfgs[i] = plainUserConfig(b, e, id.Email, id.AccessToken)
	}
	dbs := make([]*sql.DB, 0, b.N)
	defer func() {
		for _, db := range dbs {
			_ = db.Close()
		}
	}()
	b.ResetTimer()
	for i := range b.N {
		c, err := connector.New(context.Background(), cfgs[i])
		if err != nil {
			b.Fatal(err)
		}
		db := connector.OpenDB(c, connector.WithMaxOpenConns(3), connector.WithMaxIdleConns(1))
		dbs = append(dbs, db)
		selectOne(b, db)
	}
}

// BenchmarkIdleUserPoolHeap reports the heap an idle user pool keeps
// (heap-B/pool): its one idle Postgres connection (every pool opens its
// first connection when it is built), its credential and the verification
// remembered for the user's token. Run with -benchtime=Nx.
func BenchmarkIdleUserPoolHeap(b *testing.B) {
	e, m := benchManager(b, peruser.Config{MaxUsers: 100000, IdleTTL: time.Hour})
	ids := newUsers(b, e, "heap", b.N)
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	b.ResetTimer()
	for i := range b.N {
		_, release, err := m.Acquire(context.Background(), ids[i])
		if err != nil {
			b.Fatal(err)
		}
		release()
	}
	b.StopTimer()
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	if st := m.Stats(); st.OpenPools != b.N {
		b.Fatalf("open pools %d, want %d", st.OpenPools, b.N)
	}
	b.ReportMetric(float64(int64(ms1.HeapAlloc)-int64(ms0.HeapAlloc))/float64(b.N), "heap-B/pool")
	runtime.KeepAlive(m)
}

// BenchmarkAcquireRelease is a returning user's Acquire + release alone:
// what this package adds to every request beyond the query.
func BenchmarkAcquireRelease(b *testing.B) {
	e, m := benchManager(b, peruser.Config{})
	tok, err := e.AddUser(context.Background(), "bench@example.com")
	if err != nil {
		b.Fatal(err)
	}
	id := peruser.Identity{Email: "bench@example.com", AccessToken: tok}
	db, release, err := m.Acquire(context.Background(), id)
	if err != nil {
		b.Fatal(err)
	}
	selectOne(b, db)
	release()
	b.ReportAllocs()
	for b.Loop() {
		_, release, err := m.Acquire(context.Background(), id)
		if err != nil {
			b.Fatal(err)
		}
		release()
	}
}
