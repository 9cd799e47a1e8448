package peruser_test

import (
	"bytes"
	"database/sql"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/internal/clocktest"
	"github.com/lakebase-go/lakebase/internal/leaktest"
	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/peruser"
	"github.com/lakebase-go/lakebase/tokensource"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, leaktest.Options()...) }

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func base(t testing.TB, e *lakebasetest.Emulator, logs *logBuf) connector.Config {
	t.Helper()
	w := e.WorkspaceConfig()
	var logger *slog.Logger
	if logs != nil {
		logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return connector.Config{Endpoint: e.Endpoint(), Host: e.Host(), Port: e.Port(), Database: e.Database(),
		User: e.ServicePrincipal(), SSLRootCert: e.CAFile(), WorkspaceConfig: w, Logger: logger,
		LookupEnv: func(string) (string, bool) { return "", false }}
}

func newManager(t *testing.T, cfg peruser.Config) *peruser.Manager {
	t.Helper()
	m, err := peruser.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// setupTodos creates an RLS-protected table every role may use.
func setupTodos(t *testing.T, e *lakebasetest.Emulator, users ...string) {
	t.Helper()
	sql := `CREATE TABLE todos (id bigserial PRIMARY KEY, title text NOT NULL, created_by text NOT NULL DEFAULT current_user);
		ALTER TABLE todos ENABLE ROW LEVEL SECURITY;
		CREATE POLICY own ON todos USING (created_by = current_user) WITH CHECK (created_by = current_user);
		GRANT ALL ON todos, todos_id_seq TO PUBLIC;` +
		fmt.Sprintf(`ALTER ROLE "%s" BYPASSRLS;`, e.ServicePrincipal())
	if err := e.AdminExec(t.Context(), sql); err != nil {
		t.Fatal(err)
	}
}

// addUsers adds workspace users with Postgres roles in one statement (for
// tests with many users) and returns their tokens.
func addUsers(t testing.TB, e *lakebasetest.Emulator, emails ...string) []string {
	t.Helper()
	var b strings.Builder
	for _, email := range emails {
		id := pgx.Identifier{email}.Sanitize()
		fmt.Fprintf(&b, "CREATE ROLE %[1]s LOGIN; GRANT ALL ON DATABASE %[2]s TO %[1]s; GRANT ALL ON SCHEMA public TO %[1]s;\n", id, e.Database())
	}
	if err := e.AdminExec(t.Context(), b.String()); err != nil {
		t.Fatal(err)
	}
	toks := make([]string, len(emails))
	for i, email := range emails {
		toks[i] = e.AddIdentityWithoutRole(email)
	}
	return toks
}

// acquire gets the user's pool for the request and releases it at the end
// of the test.
func acquire(t testing.TB, m *peruser.Manager, r *http.Request) (*sql.DB, error) {
	t.Helper()
	db, release, err := m.ForRequest(r)
	if err == nil {
		t.Cleanup(release)
	}
	return db, err
}

func req(email, token string) *http.Request {
	r := httptest.NewRequest("GET", "/", nil)
	if email != "" {
		r.Header.Set(peruser.HeaderEmail, email)
	}
	if token != "" {
		r.Header.Set(peruser.HeaderAccessToken, token)
	}
	r.Header.Set(peruser.HeaderUser, "42")
	return r
}

func titles(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), "SELECT title FROM todos ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func TestRowLevelSecurityPerUser(t *testing.T) {
	e := lakebasetest.Start(t)
	ctx := t.Context()
	alice, err := e.AddUser(ctx, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := e.AddUser(ctx, "bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	setupTodos(t, e)
	m := newManager(t, peruser.Config{Base: base(t, e, nil)})
	adb, err := acquire(t, m, req("alice@example.com", alice))
	if err != nil {
		t.Fatal(err)
	}
	bdb, err := acquire(t, m, req("bob@example.com", bob))
	if err != nil {
		t.Fatal(err)
	}
	if adb == bdb {
		t.Fatal("alice and bob share a pool")
	}
	for db, title := range map[*sql.DB]string{adb: "alice's", bdb: "bob's"} {
		if _, err := db.ExecContext(ctx, "INSERT INTO todos (title) VALUES ($1)", title); err != nil {
			t.Fatal(err)
		}
	}
	if got := titles(t, adb); strings.Join(got, ",") != "alice's" {
		t.Errorf("alice sees %v", got)
	}
	if got := titles(t, bdb); strings.Join(got, ",") != "bob's" {
		t.Errorf("bob sees %v", got)
	}
	if got := titles(t, m.ServicePrincipal()); len(got) != 2 {
		t.Errorf("the service principal sees %v, want both", got)
	}
	var who string
	if err := adb.QueryRowContext(ctx, "SELECT current_user").Scan(&who); err != nil || who != "alice@example.com" {
		t.Errorf("alice's pool runs as %q (%v)", who, err)
	}
	// Concurrency: many requests of both users in parallel stay isolated.
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Go(func() {
			email, tok, want := "alice@example.com", alice, "alice's"
			if i%2 == 1 {
				email, tok, want = "bob@example.com", bob, "bob's"
			}
			db, release, err := m.ForRequest(req(email, tok))
			if err != nil {
				t.Error(err)
				return
			}
			defer release()
			var title string
			if err := db.QueryRowContext(ctx, "SELECT string_agg(title, ',') FROM todos").Scan(&title); err != nil || title != want {
				t.Errorf("%s saw %q (%v)", email, title, err)
			}
		})
	}
	wg.Wait()
}

func TestMissingIdentityIs401AndNeverTheServicePrincipal(t *testing.T) {
	e := lakebasetest.Start(t)
	logs := &logBuf{}
	m := newManager(t, peruser.Config{Base: base(t, e, logs)})
	// The service principal's eager source fetches at start: let that
	// finish before taking the baseline.
	if err := m.ServicePrincipal().PingContext(t.Context()); err != nil {
		t.Fatal(err)
	}
	loginsBefore, callsBefore := e.Logins(e.ServicePrincipal()), e.Calls(lakebasetest.RouteCredentials)
	const secret = "eyJSECRETTOKENMARKER"
	for name, r := range map[string]*http.Request{
		"no headers":      req("", ""),
		"email only":      req("alice@example.com", ""),
		"token only":      req("", secret),
		"oversized token": req("alice@example.com", strings.Repeat("x", peruser.MaxTokenLen+1)),
		"bad email":       req("alice@example.com; DROP TABLE", secret),
		"space in token":  req("alice@example.com", secret+" x"),
	} {
		_, _, err := m.ForRequest(r)
		if peruser.StatusCode(err) != http.StatusUnauthorized {
			t.Errorf("%s: status %d (%v), want 401", name, peruser.StatusCode(err), err)
		}
		if err != nil && strings.Contains(err.Error(), "SECRETTOKEN") {
			t.Errorf("%s: the token is in the error", name)
		}
	}
	h := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { t.Error("handler called without identity") }))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req("alice@example.com", ""))
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("middleware answered %d", rec.Code)
	}
	if e.Logins(e.ServicePrincipal()) != loginsBefore || e.Calls(lakebasetest.RouteCredentials) != callsBefore {
		t.Error("a request without identity reached the service principal")
	}
	if strings.Contains(logs.String(), "SECRETTOKEN") {
		t.Error("the token was logged")
	}
}

func TestDevFallbackOnlyWhenEnabled(t *testing.T) {
	e := lakebasetest.Start(t)
	logs := &logBuf{}
	m := newManager(t, peruser.Config{Base: base(t, e, logs), DevFallbackToServicePrincipal: true})
	var mode peruser.AuthMode
	h := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		db, md, _ := peruser.DBFromContext(r.Context())
		mode = md
		var who string
		if err := db.QueryRowContext(r.Context(), "SELECT current_user").Scan(&who); err != nil {
			t.Error(err)
		}
		fmt.Fprint(w, who)
	}))
	for i := 0; i < 3; i++ {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req("", ""))
		if rec.Body.String() != e.ServicePrincipal() || mode != peruser.ServicePrincipal {
			t.Errorf("fallback ran as %q in mode %q", rec.Body.String(), mode)
		}
	}
	if n := strings.Count(logs.String(), "DevFallbackToServicePrincipal is on"); n != 1 {
		t.Errorf("fallback warning logged %d times, want once", n)
	}
}

func TestChangedAccessTokenUsedWithoutRebuild(t *testing.T) {
	e := lakebasetest.Start(t, lakebasetest.WithMinTTL(time.Second), lakebasetest.WithTTL(2*time.Second))
	tokA, err := e.AddUser(t.Context(), "carol@example.com")
	if err != nil {
		t.Fatal(err)
	}
	tokB := e.AddIdentityWithoutRole("carol@example.com") // a refreshed token of the same user
	cfg := base(t, e, nil)
	cfg.Token = tokensource.Options{EarlyRefresh: time.Second, SafetyMargin: 300 * time.Millisecond, BackgroundRetryMin: 100 * time.Millisecond}
	m := newManager(t, peruser.Config{Base: cfg})
	db1, err := acquire(t, m, req("carol@example.com", tokA))
	if err != nil {
		t.Fatal(err)
	}
	db1.SetMaxIdleConns(0)
	if err := db1.PingContext(t.Context()); err != nil {
		t.Fatal(err)
	}
	if e.MintsBy(tokA) != 1 {
		t.Fatalf("mints with token A = %d", e.MintsBy(tokA))
	}
	db2, err := acquire(t, m, req("carol@example.com", tokB))
	if err != nil {
		t.Fatal(err)
	}
	if db1 != db2 {
		t.Fatal("the pool was rebuilt when the access token changed")
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.MintsBy(tokB) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the new access token was never used to mint")
		}
		if err := db2.PingContext(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if a := e.MintsBy(tokA); a != 1 {
		t.Errorf("the old token minted %d times after the change", a)
	}
	if st := m.Stats(); st.Created != 1 {
		t.Errorf("pools created = %d, want 1", st.Created)
	}
}

func TestIdleEvictionNeverClosesAPoolInUse(t *testing.T) {
	e := lakebasetest.Start(t)
	ctx := t.Context()
	busyTok, err := e.AddUser(ctx, "busy@example.com")
	if err != nil {
		t.Fatal(err)
	}
	idleTok, err := e.AddUser(ctx, "idle@example.com")
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktest.New(time.Now())
	m := newManager(t, peruser.WithClock(peruser.Config{Base: base(t, e, nil), IdleTTL: time.Minute}, clk))
	busy, releaseBusy, err := m.ForRequest(req("busy@example.com", busyTok))
	if err != nil {
		t.Fatal(err)
	}
	releaseBusy() // the open transaction alone must keep the pool
	idleDB, releaseIdle, err := m.ForRequest(req("idle@example.com", idleTok))
	if err != nil {
		t.Fatal(err)
	}
	defer releaseIdle()
	if err := idleDB.PingContext(ctx); err != nil {
		t.Fatal(err)
	}
	releaseIdle()
	tx, err := busy.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Minute)
	m.Sweep()
	if st := m.Stats(); st.OpenPools != 1 || st.Evicted != 1 {
		t.Fatalf("after the sweep: %+v, want the busy pool kept and the idle one evicted", st)
	}
	if _, err := tx.ExecContext(ctx, "SELECT 2"); err != nil {
		t.Fatalf("the transaction broke across the eviction pass: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := idleDB.PingContext(ctx); err == nil {
		t.Error("the evicted pool still works")
	}
	clk.Advance(2 * time.Minute)
	m.Sweep()
	if st := m.Stats(); st.OpenPools != 0 {
		t.Errorf("after the transaction ended and TTL passed: %+v", st)
	}
}

// TestMaxUsersCap: 300 users through MaxUsers 50, each logging in once,
// never hold more than 50 pools (and their goroutines).
func TestMaxUsersCap(t *testing.T) {
	e := lakebasetest.Start(t)
	m := newManager(t, peruser.Config{Base: base(t, e, nil), MaxUsers: 50})
	ctx := t.Context()
	const users = 300
	emails := make([]string, users)
	for i := range emails {
		emails[i] = fmt.Sprintf("user%d@example.com", i)
	}
	toks := addUsers(t, e, emails...)
	before := runtime.NumGoroutine()
	maxOpen, maxG := 0, 0
	for i, email := range emails {
		db, release, err := m.ForRequest(req(email, toks[i]))
		if err != nil {
			t.Fatal(err)
		}
		if i%50 == 0 {
			if err := db.PingContext(ctx); err != nil {
				t.Errorf("%s: %v", email, err)
			}
		}
		release()
		maxOpen = max(maxOpen, m.Stats().OpenPools)
		maxG = max(maxG, runtime.NumGoroutine())
	}
	st := m.Stats()
	t.Logf("%d users, MaxUsers 50: max open pools %d, created %d, evicted %d, goroutines %d -> max %d", users, maxOpen, st.Created, st.Evicted, before, maxG)
	if maxOpen > 50 {
		t.Errorf("open pools reached %d > 50", maxOpen)
	}
	if st.Created != users || st.Evicted != users-50 {
		t.Errorf("stats %+v", st)
	}
	// database/sql runs two goroutines per pool with an open connection
	// (its opener and its connection cleaner).
	if maxG > before+2*50+20 {
		t.Errorf("goroutines grew from %d to %d", before, maxG)
	}
}

func FuzzIdentityFromRequest(f *testing.F) {
	f.Add("alice@example.com", "eyJtoken", "42")
	f.Add("", "", "")
	f.Add("6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab", "dapi123", "x")
	f.Add("a@b@c", "tok en", "\x00")
	f.Fuzz(func(t *testing.T, email, token, user string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header[peruser.HeaderEmail] = []string{email}
		r.Header[peruser.HeaderAccessToken] = []string{token}
		r.Header[peruser.HeaderUser] = []string{user}
		id, err := peruser.IdentityFromRequest(r)
		if err != nil {
			if peruser.StatusCode(err) != http.StatusUnauthorized {
				t.Fatalf("status %d", peruser.StatusCode(err))
			}
			if tok := strings.TrimSpace(token); len(tok) >= 8 && strings.Contains(err.Error(), tok) {
				t.Fatalf("token in error %q", err)
			}
			return
		}
		if id.Email == "" || id.AccessToken == "" || strings.ContainsAny(id.AccessToken, " \t\r\n") {
			t.Fatalf("accepted %#v", id)
		}
		if s := fmt.Sprintf("%v %+v %#v", id, id, id); len(id.AccessToken) >= 8 && strings.Contains(s, id.AccessToken) {
			t.Fatalf("formatting prints the token: %s", s)
		}
	})
}
