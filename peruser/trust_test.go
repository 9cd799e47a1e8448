package peruser_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lakebase-go/lakebase/internal/clocktest"
	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/peruser"
)

// whoami serves current_user of the request's pool and counts the
// requests that reached it.
type whoami struct {
	mu    sync.Mutex
	calls int
}

func (h *whoami) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.calls++
	h.mu.Unlock()
	db, _, _ := peruser.DBFromContext(r.Context())
	var who string
	if err := db.QueryRowContext(r.Context(), "SELECT current_user").Scan(&who); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	fmt.Fprint(w, who)
}

func (h *whoami) count() int { h.mu.Lock(); defer h.mu.Unlock(); return h.calls }

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

// TestSpoofedEmailIs403AndAliceUnaffected: once alice has a pool, a request
// claiming to be alice with a junk token or with mallory's real token is
// refused with 403 without running a query, and alice's pool and token
// are untouched. Every verification method is checked, including VerifyAuto
// falling back to the login proof when the workspace refuses Me.
func TestSpoofedEmailIs403AndAliceUnaffected(t *testing.T) {
	for _, tc := range []struct {
		name     string
		verify   peruser.VerifyMethod
		meDenied bool
	}{
		{"me", peruser.VerifyMe, false},
		{"login", peruser.VerifyLogin, false},
		{"auto-me-forbidden", peruser.VerifyAuto, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := lakebasetest.Start(t)
			ctx := t.Context()
			const aliceEmail = "alice@example.com"
			alice, err := e.AddUser(ctx, aliceEmail)
			if err != nil {
				t.Fatal(err)
			}
			mallory, err := e.AddUser(ctx, "mallory@example.com")
			if err != nil {
				t.Fatal(err)
			}
			if tc.meDenied {
				e.FailNext(lakebasetest.RouteMe, 1000, http.StatusForbidden, "PERMISSION_DENIED")
			}
			logs := &logBuf{}
			m := newManager(t, peruser.Config{Base: base(t, e, logs), Verify: tc.verify})
			h := &whoami{}
			mw := m.Middleware(h)
			if rec := serve(mw, req(aliceEmail, alice)); rec.Code != http.StatusOK || rec.Body.String() != aliceEmail {
				t.Fatalf("alice: %d %q", rec.Code, rec.Body.String())
			}
			logins, mintsAlice := e.Logins(aliceEmail), e.MintsBy(alice)

			const junk = "dapi-JUNKTOKENMARKER"
			for name, tok := range map[string]string{"junk token": junk, "mallory's token": mallory} {
				for i := range 2 { // the second time from the remembered verification, if any
					rec := serve(mw, req(aliceEmail, tok))
					if rec.Code != http.StatusForbidden {
						t.Errorf("%s #%d: status %d, want 403", name, i, rec.Code)
					}
					_, _, err := m.ForRequest(req(aliceEmail, tok))
					var ae *peruser.AuthError
					if !errors.As(err, &ae) || peruser.StatusCode(err) != http.StatusForbidden {
						t.Fatalf("%s: %v, want a 403 *AuthError", name, err)
					}
					if strings.Contains(err.Error(), tok) {
						t.Errorf("%s: the token is in the error %q", name, err)
					}
					if !strings.Contains(err.Error(), peruser.HeaderEmail) && !strings.Contains(err.Error(), peruser.HeaderAccessToken) {
						t.Errorf("%s: the error names no header: %q", name, err)
					}
				}
			}
			if h.count() != 1 {
				t.Errorf("the handler ran %d times, want once (alice only)", h.count())
			}
			if got := e.Logins(aliceEmail); got != logins {
				t.Errorf("logins as alice went from %d to %d during the spoofing", logins, got)
			}
			if e.MintsBy(junk) != 0 || (tc.verify == peruser.VerifyMe && e.MintsBy(mallory) != 0) {
				t.Errorf("mints with the spoofed tokens: junk %d, mallory %d", e.MintsBy(junk), e.MintsBy(mallory))
			}
			// One WARN per spoofing token (when its verification ran); the
			// repeats are answered from memory and logged at DEBUG.
			if n := strings.Count(logs.String(), "level=WARN msg=\"peruser: request refused"); n != 2 {
				t.Errorf("%d WARN lines for 2 spoofing tokens:\n%s", n, logs)
			}
			if n := strings.Count(logs.String(), "level=DEBUG msg=\"peruser: request refused"); n != 6 {
				t.Errorf("%d DEBUG lines for 6 remembered refusals:\n%s", n, logs)
			}
			if strings.Contains(logs.String(), "JUNKTOKEN") || strings.Contains(logs.String(), mallory) {
				t.Error("a token was logged")
			}

			// Alice is unaffected: her pool still runs as her, and a new
			// login mints with her own token.
			db, release, err := m.ForRequest(req(aliceEmail, alice))
			if err != nil {
				t.Fatal(err)
			}
			defer release()
			db.SetMaxIdleConns(0) // force a new login
			e.SetTTL(time.Minute) // (the next mint, if any, is short-lived)
			var who string
			if err := db.QueryRowContext(ctx, "SELECT current_user").Scan(&who); err != nil || who != aliceEmail {
				t.Fatalf("alice after the spoofing: %q, %v", who, err)
			}
			if e.MintsBy(alice) < mintsAlice {
				t.Error("alice's mints went backwards")
			}
			if st := m.Stats(); st.Created != 1 {
				t.Errorf("pools created %d, want 1", st.Created)
			}
		})
	}
}

// TestSpoofOfAUserWithoutPool: mallory's token with bob's email builds
// nothing.
func TestSpoofOfAUserWithoutPool(t *testing.T) {
	e := lakebasetest.Start(t)
	ctx := t.Context()
	if _, err := e.AddUser(ctx, "bob@example.com"); err != nil {
		t.Fatal(err)
	}
	mallory, err := e.AddUser(ctx, "mallory@example.com")
	if err != nil {
		t.Fatal(err)
	}
	m := newManager(t, peruser.Config{Base: base(t, e, nil)})
	if _, _, err := m.ForRequest(req("bob@example.com", mallory)); peruser.StatusCode(err) != http.StatusForbidden {
		t.Fatalf("%v, want 403", err)
	}
	// The case of the email header does not matter: the pool logs in as
	// the identity the token proved.
	for _, email := range []string{"Mallory@Example.com", "mallory@example.com"} {
		db, release, err := m.ForRequest(req(email, mallory))
		if err != nil {
			t.Fatal(err)
		}
		var who string
		err = db.QueryRowContext(ctx, "SELECT current_user").Scan(&who)
		release()
		if err != nil || who != "mallory@example.com" {
			t.Fatalf("as %s: %q, %v", email, who, err)
		}
	}
	if st := m.Stats(); st.Created != 1 || st.OpenPools != 1 || st.Verifications != 1 {
		t.Errorf("stats %+v, want one pool (mallory's) and one verification", st)
	}
}

// TestFiftyConcurrentFirstRequests: one pool, one verification, one mint.
func TestFiftyConcurrentFirstRequests(t *testing.T) {
	for _, method := range []peruser.VerifyMethod{peruser.VerifyMe, peruser.VerifyLogin} {
		t.Run(method.String(), func(t *testing.T) {
			e := lakebasetest.Start(t)
			ctx := t.Context()
			tok, err := e.AddUser(ctx, "dana@example.com")
			if err != nil {
				t.Fatal(err)
			}
			m := newManager(t, peruser.Config{Base: base(t, e, nil), Verify: method})
			// Let the service principal's eager startup fetch finish first.
			if err := m.ServicePrincipal().PingContext(ctx); err != nil {
				t.Fatal(err)
			}
			e.ResetCalls()
			e.SetLatency(lakebasetest.RouteMe, 50*time.Millisecond) // all 50 arrive during the proof
			e.SetLatency(lakebasetest.RouteCredentials, 50*time.Millisecond)
			start := make(chan struct{})
			var wg sync.WaitGroup
			dbs := make(chan any, 50)
			for range 50 {
				wg.Go(func() {
					<-start
					db, release, err := m.ForRequest(req("dana@example.com", tok))
					if err != nil {
						t.Error(err)
						return
					}
					defer release()
					dbs <- db
					var one int
					if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
						t.Error(err)
					}
				})
			}
			close(start)
			wg.Wait()
			close(dbs)
			first := <-dbs
			for db := range dbs {
				if db != first {
					t.Fatal("two pools for one user")
				}
			}
			st := m.Stats()
			if st.Created != 1 || st.Verifications != 1 {
				t.Errorf("stats %+v, want one pool and one verification", st)
			}
			wantMe := int64(1)
			if method == peruser.VerifyLogin {
				wantMe = 0
			}
			if got := e.Calls(lakebasetest.RouteMe); got != wantMe {
				t.Errorf("Me calls %d, want %d", got, wantMe)
			}
			if got := e.MintsBy(tok); got != 1 {
				t.Errorf("mints %d, want 1", got)
			}
		})
	}
}

// TestCancelledRequestReturnsPromptly: a verification stuck in the
// workspace ends with the request's ctx, and nothing is left running
// (goleak checks at the end).
func TestCancelledRequestReturnsPromptly(t *testing.T) {
	e := lakebasetest.Start(t)
	tok, err := e.AddUser(t.Context(), "erin@example.com")
	if err != nil {
		t.Fatal(err)
	}
	m := newManager(t, peruser.Config{Base: base(t, e, nil)})
	e.SetLatency(lakebasetest.RouteMe, time.Minute)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	r := req("erin@example.com", tok).WithContext(ctx)
	began := time.Now()
	_, _, err = m.ForRequest(r)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v, want the deadline", err)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("returned after %v", d)
	}
	if peruser.StatusCode(err) != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", peruser.StatusCode(err))
	}
	// A cancelled client of a Middleware gets no handler call.
	rec := serve(m.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("handler called") })), r)
	if rec.Code == http.StatusOK {
		t.Error("middleware answered 200")
	}
	e.SetLatency(lakebasetest.RouteMe, 0)
	if _, release, err := m.ForRequest(req("erin@example.com", tok)); err != nil {
		t.Fatalf("after the cancelled attempt: %v", err)
	} else {
		release()
	}
}

// TestVerifiedTokenRememberedUntilTTL: a token is verified once; after
// VerifiedTTL it is verified again. The cache holds at most
// MaxVerifiedTokens tokens.
func TestVerifiedTokenRememberedUntilTTL(t *testing.T) {
	e := lakebasetest.Start(t)
	ctx := t.Context()
	clk := clocktest.New(time.Now())
	m := newManager(t, peruser.WithClock(peruser.Config{Base: base(t, e, nil), VerifiedTTL: time.Minute, MaxVerifiedTokens: 3, IdleTTL: time.Hour}, clk))
	toks := map[string]string{}
	for i := range 5 {
		email := fmt.Sprintf("u%d@example.com", i)
		tok, err := e.AddUser(ctx, email)
		if err != nil {
			t.Fatal(err)
		}
		toks[email] = tok
	}
	get := func(email string) {
		t.Helper()
		_, release, err := m.ForRequest(req(email, toks[email]))
		if err != nil {
			t.Fatal(err)
		}
		release()
	}
	me := func() int64 { return e.Calls(lakebasetest.RouteMe) }
	before := me()
	get("u0@example.com")
	get("u0@example.com")
	if got := me() - before; got != 1 {
		t.Errorf("Me calls for two requests with one token: %d, want 1", got)
	}
	clk.Advance(time.Minute)
	get("u0@example.com")
	if got := me() - before; got != 2 {
		t.Errorf("Me calls after VerifiedTTL: %d, want 2", got)
	}
	for i := 1; i < 5; i++ {
		get(fmt.Sprintf("u%d@example.com", i))
	}
	if st := m.Stats(); st.VerifiedTokens != 3 {
		t.Errorf("remembered tokens %d, want the cap 3", st.VerifiedTokens)
	}
}

// TestVerifyMeForbiddenWithoutFallback: Verify=me with a workspace that
// refuses Me is a server error naming the fix, never a pool.
func TestVerifyMeForbiddenWithoutFallback(t *testing.T) {
	e := lakebasetest.Start(t)
	tok, err := e.AddUser(t.Context(), "fay@example.com")
	if err != nil {
		t.Fatal(err)
	}
	e.FailNext(lakebasetest.RouteMe, 1, http.StatusForbidden, "PERMISSION_DENIED")
	m := newManager(t, peruser.Config{Base: base(t, e, nil), Verify: peruser.VerifyMe})
	_, _, err = m.ForRequest(req("fay@example.com", tok))
	if err == nil || !strings.Contains(err.Error(), "iam.current-user:read") || peruser.StatusCode(err) != http.StatusInternalServerError {
		t.Fatalf("%v (status %d), want a 500 naming the scope", err, peruser.StatusCode(err))
	}
	if st := m.Stats(); st.Created != 0 {
		t.Errorf("a pool was built: %+v", st)
	}
}

// TestLoginProofSeedsThePool: with the login proof a new user costs one
// mint and one login: the proof's credential and connection are the
// pool's.
func TestLoginProofSeedsThePool(t *testing.T) {
	e := lakebasetest.Start(t)
	ctx := t.Context()
	tok, err := e.AddUser(ctx, "gus@example.com")
	if err != nil {
		t.Fatal(err)
	}
	m := newManager(t, peruser.Config{Base: base(t, e, nil), Verify: peruser.VerifyLogin})
	db, release, err := m.ForRequest(req("gus@example.com", tok))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	var who string
	if err := db.QueryRowContext(ctx, "SELECT current_user").Scan(&who); err != nil || who != "gus@example.com" {
		t.Fatalf("%q %v", who, err)
	}
	if got := e.MintsBy(tok); got != 1 {
		t.Errorf("mints %d, want 1", got)
	}
	if got := e.Logins("gus@example.com"); got != 1 {
		t.Errorf("logins %d, want 1 (the proof's connection serves the query)", got)
	}
}
