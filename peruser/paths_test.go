package peruser_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/internal/clocktest"
	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/peruser"
	"github.com/lakebase-go/lakebase/tokensource"
)

// method is one way a Manager verifies tokens, as the tests run it.
type method struct {
	name     string
	verify   peruser.VerifyMethod
	meDenied bool // the workspace refuses Me for every token (VerifyAuto falls back)
}

var methods = []method{
	{"me", peruser.VerifyMe, false},
	{"login", peruser.VerifyLogin, false},
	{"auto-me-forbidden", peruser.VerifyAuto, true},
}

func (md method) manager(t *testing.T, e *lakebasetest.Emulator, cfg peruser.Config) *peruser.Manager {
	t.Helper()
	if md.meDenied {
		e.FailNext(lakebasetest.RouteMe, 1<<20, http.StatusForbidden, "PERMISSION_DENIED")
	}
	cfg.Verify = md.verify
	return newManager(t, cfg)
}

// whoIs runs SELECT current_user on db.
func whoIs(ctx context.Context, m *peruser.Manager, r *http.Request) (string, any, error) {
	db, release, err := m.ForRequest(r)
	if err != nil {
		return "", nil, err
	}
	defer release()
	var who string
	err = db.QueryRowContext(ctx, "SELECT current_user").Scan(&who)
	return who, db, err
}

// TestHeaderCaseOnePool: whatever the case of the email header, a user is
// served from one pool logged in as the canonical identity (the
// workspace's spelling), on every verification method, for a role spelled
// in lower case and one spelled in mixed case, with the same token and
// with a second token of the same user.
func TestHeaderCaseOnePool(t *testing.T) {
	for _, md := range methods {
		t.Run(md.name, func(t *testing.T) {
			e := lakebasetest.Start(t)
			ctx := t.Context()
			users := map[string][]string{ // canonical -> header spellings
				"hal@example.com":     {"Hal@Example.com", "hal@example.com", "HAL@EXAMPLE.COM"},
				"Kim.Lee@Example.com": {"kim.lee@example.com", "Kim.Lee@Example.com", "KIM.LEE@example.com"},
			}
			toks := map[string][2]string{}
			for canon := range users {
				tok, err := e.AddUser(ctx, canon)
				if err != nil {
					t.Fatal(err)
				}
				toks[canon] = [2]string{tok, e.AddIdentityWithoutRole(canon)}
			}
			logs := &logBuf{}
			m := md.manager(t, e, peruser.Config{Base: base(t, e, logs)})
			for canon, spellings := range users {
				var pool any
				for i, spelling := range spellings {
					for j, tok := range toks[canon] {
						who, db, err := whoIs(ctx, m, req(spelling, tok))
						if err != nil {
							t.Fatalf("%s with token %d: %v", spelling, j, err)
						}
						if who != canon {
							t.Errorf("%s with token %d runs as %q, want %q", spelling, j, who, canon)
						}
						if i == 0 && j == 0 {
							pool = db
						} else if db != pool {
							t.Errorf("%s with token %d: another pool", spelling, j)
						}
					}
				}
			}
			st := m.Stats()
			if st.Created != 2 || st.OpenPools != 2 {
				t.Errorf("stats %+v, want one pool per user", st)
			}
			if st.Verifications != 4 {
				t.Errorf("verifications %d, want 4 (two tokens per user)", st.Verifications)
			}
			if strings.Contains(logs.String(), "request refused") {
				t.Errorf("a real user was refused:\n%s", logs)
			}
		})
	}
}

// TestUserWithoutRoleSameAnswer: a real user whose login cannot succeed —
// no role, or a role without CONNECT — gets the connector's LoginError
// with its reason and fix, the same status on every verification method,
// from ForRequest and Middleware alike, never the spoof WARN; the failure
// is remembered for the token (no mint for the repeat).
func TestUserWithoutRoleSameAnswer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reason connector.LoginReason
		fix    string
	}{
		{"role missing", connector.LoginRoleMissing, "databricks_create_role"},
		{"no connect", connector.LoginNoPermission, "GRANT CONNECT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			statuses := map[string]int{}
			for _, md := range methods {
				t.Run(md.name, func(t *testing.T) {
					e := lakebasetest.Start(t)
					ctx := t.Context()
					const email = "noel@example.com"
					var tok string
					if tc.reason == connector.LoginRoleMissing {
						tok = e.AddIdentityWithoutRole(email)
					} else {
						var err error
						if tok, err = e.AddUser(ctx, email); err != nil {
							t.Fatal(err)
						}
						sql := fmt.Sprintf(`REVOKE ALL ON DATABASE %[1]s FROM %[2]s; REVOKE CONNECT ON DATABASE %[1]s FROM PUBLIC`,
							e.Database(), pgx.Identifier{email}.Sanitize())
						if err := e.AdminExec(ctx, sql); err != nil {
							t.Fatal(err)
						}
					}
					logs := &logBuf{}
					m := md.manager(t, e, peruser.Config{Base: base(t, e, logs)})
					_, _, err := m.ForRequest(req(email, tok))
					var le *connector.LoginError
					if !errors.As(err, &le) || le.Reason != tc.reason {
						t.Fatalf("%v, want a LoginError (%v)", err, tc.reason)
					}
					if !strings.Contains(err.Error(), tc.fix) {
						t.Errorf("the error names no fix (%s): %v", tc.fix, err)
					}
					statuses[md.name] = peruser.StatusCode(err)
					mints := e.MintsBy(tok)
					rec := serve(m.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("handler called") })), req("Noel@Example.com", tok))
					if rec.Code != statuses[md.name] {
						t.Errorf("middleware answered %d, ForRequest's status is %d", rec.Code, statuses[md.name])
					}
					if got := e.MintsBy(tok); got != mints {
						t.Errorf("the repeat minted %d more times; the failure is not remembered", got-mints)
					}
					out := logs.String()
					if strings.Contains(out, "request refused") {
						t.Errorf("a real user was logged as refused (spoof):\n%s", out)
					}
					if !strings.Contains(out, `level=ERROR msg="peruser: request failed" email=noel@example.com status=500`) || !strings.Contains(out, tc.fix) {
						t.Errorf("the 500 and its fix were not logged:\n%s", out)
					}
					if strings.Contains(out, tok) {
						t.Error("the token was logged")
					}
				})
			}
			for name, st := range statuses {
				if st != http.StatusInternalServerError {
					t.Errorf("%s: status %d, want 500 on every method (%v)", name, st, statuses)
				}
			}
		})
	}
}

// TestAutoSwitchesOnlyOnEvidence: under VerifyAuto a scope-limited
// spoofer's token (Me refused) that fails the login proof switches
// nothing: the next user is verified with Me. A real user's token whose
// Me is refused and which proves its email by login switches to the
// login proof for later tokens.
func TestAutoSwitchesOnlyOnEvidence(t *testing.T) {
	e := lakebasetest.Start(t)
	ctx := t.Context()
	alice, err := e.AddUser(ctx, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	alice2, alice3 := e.AddIdentityWithoutRole("alice@example.com"), e.AddIdentityWithoutRole("alice@example.com")
	mallory, err := e.AddUser(ctx, "mallory@example.com")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := e.AddUser(ctx, "bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuf{}
	m := newManager(t, peruser.Config{Base: base(t, e, logs)})
	me := func() int64 { return e.Calls(lakebasetest.RouteMe) }

	// The spoofer's own token is scope-limited: Me refuses it.
	e.FailNext(lakebasetest.RouteMe, 1, http.StatusForbidden, "PERMISSION_DENIED")
	if _, _, err := m.ForRequest(req("alice@example.com", mallory)); peruser.StatusCode(err) != http.StatusForbidden {
		t.Fatalf("spoof: %v, want 403", err)
	}
	before := me()
	if _, _, err := whoIs(ctx, m, req("alice@example.com", alice)); err != nil {
		t.Fatal(err)
	}
	if me() != before+1 {
		t.Fatalf("alice was not verified with Me after the spoof: the refusal alone switched VerifyAuto")
	}
	if strings.Contains(logs.String(), "from now on") {
		t.Fatal("VerifyAuto logged a switch after a failed proof")
	}

	// A real token whose Me is refused proves its email by login: now
	// VerifyAuto switches.
	e.FailNext(lakebasetest.RouteMe, 1, http.StatusForbidden, "PERMISSION_DENIED")
	if _, _, err := whoIs(ctx, m, req("alice@example.com", alice2)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "from now on") {
		t.Error("no switch logged after a token proved its email by login")
	}
	before = me()
	for email, tok := range map[string]string{"alice@example.com": alice3, "bob@example.com": bob} {
		if who, _, err := whoIs(ctx, m, req(email, tok)); err != nil || who != email {
			t.Fatalf("%s after the switch: %q, %v", email, who, err)
		}
	}
	if me() != before {
		t.Errorf("%d Me calls after the switch, want none", me()-before)
	}
}

// TestLoginProofThroughSuspendedFrontDoor: the login proof rides out a
// cold start like any pool connection (the connector's retries), and its
// connection serves the first query. Compound: the first attempt meets a
// failing credential call, which answers 503 and is not remembered; the
// second spells the email in another case, so its recovery (the role's
// spelling) runs during the cold start.
func TestLoginProofThroughSuspendedFrontDoor(t *testing.T) {
	e := lakebasetest.Start(t)
	ctx := t.Context()
	tok, err := e.AddUser(ctx, "wade@example.com")
	if err != nil {
		t.Fatal(err)
	}
	cfg := base(t, e, nil)
	cfg.Port = e.FrontDoorPort()
	cfg.Token = tokensource.Options{AttemptTimeout: 300 * time.Millisecond, RetrySchedule: []time.Duration{}}
	m := newManager(t, peruser.Config{Base: cfg, Verify: peruser.VerifyLogin})
	if err := m.ServicePrincipal().PingContext(ctx); err != nil {
		t.Fatal(err)
	}
	e.SetWakeDelay(300 * time.Millisecond)
	e.Suspend()

	e.FailNext(lakebasetest.RouteCredentials, 1<<20, http.StatusServiceUnavailable, "TEMPORARILY_UNAVAILABLE")
	_, _, err = m.ForRequest(req("wade@example.com", tok))
	var te *tokensource.Error
	if !errors.As(err, &te) || !te.Transient() || peruser.StatusCode(err) != http.StatusServiceUnavailable {
		t.Fatalf("mint failing during the proof: %v (status %d), want a transient *tokensource.Error, 503", err, peruser.StatusCode(err))
	}
	e.FailNext(lakebasetest.RouteCredentials, 0, 0, "")

	// The retry also spells the email in another case than the role: the
	// proof's first login (as the header's spelling) meets the cold start
	// and is refused, and the role's own spelling is tried.
	wakes := e.WakeUps()
	who, _, err := whoIs(ctx, m, req("WADE@example.com", tok))
	if err != nil || who != "wade@example.com" {
		t.Fatalf("proof through the suspended front door: %q, %v", who, err)
	}
	if e.WakeUps() != wakes+1 || e.RefusedWhileWaking() == 0 {
		t.Errorf("wake-ups %d -> %d, refused while waking %d: the proof did not meet the cold start", wakes, e.WakeUps(), e.RefusedWhileWaking())
	}
	if got := e.Logins("wade@example.com"); got != 1 {
		t.Errorf("logins %d, want 1 (the proof's connection serves the query)", got)
	}
	if got := e.Rejects("WADE@example.com"); got != 1 {
		t.Errorf("refused logins as the header's spelling: %d, want 1 (then the role's spelling)", got)
	}
}

// TestMint503SameOnEveryPath: a credential call failing with 503 during a
// new user's proof or first login is a transient *tokensource.Error and
// 503 on every method, and is not remembered: the next request succeeds.
func TestMint503SameOnEveryPath(t *testing.T) {
	for _, md := range methods {
		t.Run(md.name, func(t *testing.T) {
			e := lakebasetest.Start(t)
			ctx := t.Context()
			tok, err := e.AddUser(ctx, "mia@example.com")
			if err != nil {
				t.Fatal(err)
			}
			cfg := base(t, e, nil)
			cfg.Token = tokensource.Options{AttemptTimeout: 300 * time.Millisecond, RetrySchedule: []time.Duration{}}
			m := md.manager(t, e, peruser.Config{Base: cfg})
			if err := m.ServicePrincipal().PingContext(ctx); err != nil {
				t.Fatal(err)
			}
			e.FailNext(lakebasetest.RouteCredentials, 1<<20, http.StatusServiceUnavailable, "TEMPORARILY_UNAVAILABLE")
			_, _, err = m.ForRequest(req("mia@example.com", tok))
			var te *tokensource.Error
			if !errors.As(err, &te) || !te.Transient() || peruser.StatusCode(err) != http.StatusServiceUnavailable {
				t.Fatalf("%v (status %d), want a transient *tokensource.Error, 503", err, peruser.StatusCode(err))
			}
			if strings.Contains(err.Error(), tok) {
				t.Error("the token is in the error")
			}
			e.FailNext(lakebasetest.RouteCredentials, 0, 0, "")
			if who, _, err := whoIs(ctx, m, req("mia@example.com", tok)); err != nil || who != "mia@example.com" {
				t.Fatalf("after the outage: %q, %v", who, err)
			}
		})
	}
}

// TestBeforeConnectSeesTheProof: the login proof's connection goes through
// Config.BeforeConnect and AfterConnect (a user's DialFunc or Tracer is
// not bypassed), and that connection serves the first query.
func TestBeforeConnectSeesTheProof(t *testing.T) {
	e := lakebasetest.Start(t)
	ctx := t.Context()
	tok, err := e.AddUser(ctx, "bea@example.com")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var before, after []string
	cfg := base(t, e, nil)
	cfg.BeforeConnect = func(_ context.Context, cc *pgx.ConnConfig) error {
		mu.Lock()
		defer mu.Unlock()
		before = append(before, cc.User)
		return nil
	}
	cfg.AfterConnect = func(_ context.Context, c *pgx.Conn) error {
		mu.Lock()
		defer mu.Unlock()
		after = append(after, c.Config().User)
		return nil
	}
	m := newManager(t, peruser.Config{Base: cfg, Verify: peruser.VerifyLogin})
	who, _, err := whoIs(ctx, m, req("bea@example.com", tok))
	if err != nil || who != "bea@example.com" {
		t.Fatalf("%q, %v", who, err)
	}
	count := func(list []string) int {
		n := 0
		for _, u := range list {
			if u == "bea@example.com" {
				n++
			}
		}
		return n
	}
	mu.Lock()
	defer mu.Unlock()
	if count(before) != 1 || count(after) != 1 {
		t.Errorf("hooks saw bea's connections: BeforeConnect %d, AfterConnect %d, want 1 each (the proof's, reused by the query)", count(before), count(after))
	}
	if got := e.Logins("bea@example.com"); got != 1 {
		t.Errorf("logins %d, want 1", got)
	}
	if got := e.MintsBy(tok); got != 1 {
		t.Errorf("mints %d, want 1", got)
	}
}

// TestMiddlewareLogsFailures: every 5xx's cause is logged (email, status,
// error; no token) and Config.ErrorHandler renders the response; a 403 is
// not logged as a failure.
func TestMiddlewareLogsFailures(t *testing.T) {
	e := lakebasetest.Start(t)
	ctx := t.Context()
	tok, err := e.AddUser(ctx, "fay@example.com")
	if err != nil {
		t.Fatal(err)
	}
	mallory, err := e.AddUser(ctx, "mallory@example.com")
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuf{}
	var handled []error
	m := newManager(t, peruser.Config{Base: base(t, e, logs), Verify: peruser.VerifyMe,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			handled = append(handled, err)
			w.WriteHeader(299) // proves the app's handler wrote the response
			fmt.Fprint(w, "custom page")
		}})
	mw := m.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("handler called") }))

	e.FailNext(lakebasetest.RouteMe, 1, http.StatusForbidden, "PERMISSION_DENIED")
	rec := serve(mw, req("fay@example.com", tok))
	if rec.Code != 299 || rec.Body.String() != "custom page" || len(handled) != 1 || peruser.StatusCode(handled[0]) != http.StatusInternalServerError {
		t.Fatalf("ErrorHandler: %d %q, errors %v", rec.Code, rec.Body.String(), handled)
	}
	out := logs.String()
	if !strings.Contains(out, `level=ERROR msg="peruser: request failed" email=fay@example.com status=500`) || !strings.Contains(out, "iam.current-user:read") {
		t.Errorf("the 500's cause was not logged:\n%s", out)
	}

	// A 503 (Me failing with 500 is transient) is logged at WARN.
	tok2 := e.AddIdentityWithoutRole("fay@example.com")
	e.FailNext(lakebasetest.RouteMe, 1, http.StatusInternalServerError, "INTERNAL_ERROR")
	if rec := serve(mw, req("fay@example.com", tok2)); rec.Code != 299 || peruser.StatusCode(handled[1]) != http.StatusServiceUnavailable {
		t.Fatalf("503: %d, %v", rec.Code, handled)
	}
	if !strings.Contains(logs.String(), `level=WARN msg="peruser: request failed" email=fay@example.com status=503`) {
		t.Errorf("the 503's cause was not logged:\n%s", logs)
	}
	// A transient failure is not remembered: the same token works now.
	if _, _, err := whoIs(ctx, m, req("fay@example.com", tok2)); err != nil {
		t.Errorf("after the transient failure: %v", err)
	}

	// A spoof is a 403: the ErrorHandler renders it, no failure is logged.
	failures := strings.Count(logs.String(), "request failed")
	serve(mw, req("fay@example.com", mallory))
	if len(handled) != 3 || peruser.StatusCode(handled[2]) != http.StatusForbidden {
		t.Fatalf("spoof: %v", handled)
	}
	if strings.Count(logs.String(), "request failed") != failures {
		t.Error("a 403 was logged as a failure")
	}
	for _, s := range []string{tok, tok2, mallory} {
		if strings.Contains(logs.String(), s) {
			t.Error("a token was logged")
		}
	}

	// Without an ErrorHandler the answer is the status text.
	m2 := newManager(t, peruser.Config{Base: base(t, e, nil), Verify: peruser.VerifyMe})
	e.FailNext(lakebasetest.RouteMe, 1, http.StatusForbidden, "PERMISSION_DENIED")
	rec = serve(m2.Middleware(http.NotFoundHandler()), req("fay@example.com", e.AddIdentityWithoutRole("fay@example.com")))
	if rec.Code != http.StatusInternalServerError || strings.TrimSpace(rec.Body.String()) != http.StatusText(http.StatusInternalServerError) {
		t.Errorf("default error response: %d %q", rec.Code, rec.Body.String())
	}
}

// TestFailedVerificationsRemembered: a refused token is remembered by its
// hash for FailedTTL (no workspace call for its repeats), then verified
// again; at most MaxFailedTokens are remembered.
func TestFailedVerificationsRemembered(t *testing.T) {
	e := lakebasetest.Start(t)
	clk := clocktest.New(time.Now())
	m := newManager(t, peruser.WithClock(peruser.Config{Base: base(t, e, nil), IdleTTL: time.Hour, FailedTTL: 10 * time.Second, MaxFailedTokens: 3}, clk))
	me := func() int64 { return e.Calls(lakebasetest.RouteMe) }
	junk := func(i int) *http.Request { return req("alice@example.com", fmt.Sprintf("dapi-junk-%d", i)) }
	before := me()
	for range 3 {
		if _, _, err := m.ForRequest(junk(0)); peruser.StatusCode(err) != http.StatusForbidden {
			t.Fatalf("%v, want 403", err)
		}
	}
	if got := me() - before; got != 1 {
		t.Errorf("Me calls for three requests with one junk token: %d, want 1", got)
	}
	clk.Advance(10 * time.Second)
	if _, _, err := m.ForRequest(junk(0)); peruser.StatusCode(err) != http.StatusForbidden {
		t.Fatal(err)
	}
	if got := me() - before; got != 2 {
		t.Errorf("Me calls after FailedTTL: %d, want 2", got)
	}
	for i := 1; i < 6; i++ {
		_, _, _ = m.ForRequest(junk(i))
	}
	if st := m.Stats(); st.FailedTokens != 3 {
		t.Errorf("remembered failures %d, want the cap 3", st.FailedTokens)
	}
}

// TestVerificationCap: beyond MaxVerifications verifications in flight a
// new token is refused at once with ErrBusy (503) and no workspace call;
// a request sharing a verification in flight and a remembered token are
// not refused.
func TestVerificationCap(t *testing.T) {
	e := lakebasetest.Start(t)
	ctx := t.Context()
	rita, err := e.AddUser(ctx, "rita@example.com")
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuf{}
	m := newManager(t, peruser.Config{Base: base(t, e, logs), MaxVerifications: 2})
	if _, _, err := whoIs(ctx, m, req("rita@example.com", rita)); err != nil {
		t.Fatal(err)
	}
	e.SetLatency(lakebasetest.RouteMe, time.Minute) // verifications hang until their requests give up
	hung, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range 3 { // tokens 0 and 1 start a verification each; the second request with token 0 shares it
		wg.Go(func() {
			_, _, err := m.ForRequest(req("x@example.com", fmt.Sprintf("dapi-slow-%d", i%2)).WithContext(hung))
			if !errors.Is(err, context.Canceled) {
				t.Errorf("hung request %d: %v, want its cancellation", i, err)
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.InFlightPeak(lakebasetest.RouteMe) < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if st := m.Stats(); st.Verifying != 2 {
		t.Fatalf("verifications in flight %d, want 2", st.Verifying)
	}
	calls := e.Calls(lakebasetest.RouteMe)
	_, _, err = m.ForRequest(req("x@example.com", "dapi-one-too-many"))
	if !errors.Is(err, peruser.ErrBusy) || !tokensource.IsTransient(err) || peruser.StatusCode(err) != http.StatusServiceUnavailable {
		t.Errorf("beyond the cap: %v (status %d), want ErrBusy, transient, 503", err, peruser.StatusCode(err))
	}
	if !strings.Contains(err.Error(), "MaxVerifications") {
		t.Errorf("the error names no setting: %v", err)
	}
	if got := e.Calls(lakebasetest.RouteMe); got != calls {
		t.Errorf("the refused request called the workspace (%d calls)", got-calls)
	}
	if who, _, err := whoIs(ctx, m, req("rita@example.com", rita)); err != nil || who != "rita@example.com" {
		t.Errorf("a remembered token while the cap is reached: %q, %v", who, err)
	}
	// Through Middleware: 503, and a flood of them is one log line.
	mw := m.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("handler called") }))
	for i := range 5 {
		if rec := serve(mw, req("x@example.com", fmt.Sprintf("dapi-flood-%d", i))); rec.Code != http.StatusServiceUnavailable {
			t.Errorf("beyond the cap through Middleware: %d", rec.Code)
		}
	}
	if n := strings.Count(logs.String(), "requests refused with 503"); n != 1 {
		t.Errorf("%d log lines for 5 requests refused by the cap, want 1:\n%s", n, logs)
	}
	if st := m.Stats(); st.Busy != 6 || e.InFlightPeak(lakebasetest.RouteMe) != 2 {
		t.Errorf("busy %d, Me in flight at most %d; want 6 and 2", st.Busy, e.InFlightPeak(lakebasetest.RouteMe))
	}
	cancel()
	wg.Wait()
	// The hung verifications end with their requests and free their slots:
	// a new real token is verified again.
	deadline = time.Now().Add(10 * time.Second)
	for m.Stats().Verifying != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	e.SetLatency(lakebasetest.RouteMe, 0)
	if who, _, err := whoIs(ctx, m, req("rita@example.com", e.AddIdentityWithoutRole("rita@example.com"))); err != nil || who != "rita@example.com" {
		t.Errorf("a new token after the cancelled verifications: %q, %v", who, err)
	}
}
