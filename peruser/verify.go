package peruser

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/databricks/databricks-sdk-go/apierr"
	"github.com/databricks/databricks-sdk-go/service/iam"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/tokensource"
)

// VerifyMethod says how a new access token is proven to belong to the
// email of the request.
type VerifyMethod int

// The verification methods. Whichever runs, a real user gets the same
// answer: the pool of their canonical identity, or the same error with the
// same StatusCode.
const (
	// VerifyAuto uses VerifyMe. When the workspace refuses Me with 403 for
	// a token (the app lacks the iam.current-user:read user API scope),
	// that token is proven with VerifyLogin instead; once such a token has
	// proved its email by login, every later token is proven by login
	// without asking Me first. A refusal alone switches nothing (a caller
	// with a scope-limited token of their own cannot move other users),
	// and the switch lasts for the Manager's life: an app's user API
	// scopes change only with a redeployment, which restarts the process.
	VerifyAuto VerifyMethod = iota
	// VerifyMe calls GET /api/2.0/preview/scim/v2/Me with the access token
	// and compares its userName to the email, ignoring case; the userName
	// is the user's canonical identity. Cost: one workspace call per new
	// token (then one mint and one login for a user without an open pool).
	VerifyMe
	// VerifyLogin mints a Lakebase credential with the access token and
	// logs in to Postgres as the email with it, through the user pool's
	// own connector (TLS policy, Config.BeforeConnect/AfterConnect,
	// cold-start retries). Lakebase binds a credential to the identity of
	// the token that minted it, so a token of another identity is refused.
	// The canonical identity is the role's spelling in Postgres (which
	// databricks_create_role takes from the workspace): a header in
	// another case is matched to it. The proof's credential and connection
	// become the new user's pool, so a new user costs one mint and one
	// login. Needs only the postgres user API scope the pool needs anyway.
	VerifyLogin
)

// String names the method.
func (v VerifyMethod) String() string {
	switch v {
	case VerifyAuto:
		return "auto"
	case VerifyMe:
		return "me"
	case VerifyLogin:
		return "login"
	}
	return fmt.Sprintf("VerifyMethod(%d)", int(v))
}

// ErrBusy is wrapped by the error of a request whose new token was not
// verified because Config.MaxVerifications verifications were in flight
// (test with errors.Is). The error is a transient *tokensource.Error:
// StatusCode answers 503, and no workspace call was made.
var ErrBusy = errors.New("peruser: too many token verifications in flight")

func busyError(n int) error {
	return &tokensource.Error{Op: "token verification", Kind: tokensource.KindTransient,
		Err: fmt.Errorf("%w (Config.MaxVerifications = %d; retry shortly, or raise it)", ErrBusy, n)}
}

// errMeForbidden: the workspace refused Me with 403 (VerifyAuto only).
var errMeForbidden = errors.New("peruser: the workspace refuses Me with the user's token")

// tokenKey is the SHA-256 of an access token: the Manager never stores a
// token outside the pool that uses it.
type tokenKey [32]byte

// verified is a remembered verification: the token proved who.
type verified struct {
	who   string    // the canonical identity
	until time.Time // remembered until then
	used  atomic.Int64
}

// failure is a remembered failed verification.
type failure struct {
	email string // lower case; "" when it holds for any email
	err   error
	until time.Time
}

type flightKey struct {
	key   tokenKey
	email string // lower case
}

// flight is one verification (or first login) in progress, shared by the
// requests that present the same token for the same email.
type flight struct {
	done   chan struct{}
	cancel context.CancelFunc
	capped bool // counted in Manager.verifying
	// Manager.mu:
	waiters  int  // requests waiting; the last to leave cancels
	finished bool // pool and err are set; each waiter's lease is reserved
	pool     *userPool
	err      error
}

// outcome is the result of one flight.
type outcome struct {
	who      string    // the identity the token proved ("" if none)
	until    time.Time // the token is trusted until then
	pool     *userPool // with one lease
	err      error
	anyEmail bool // err holds for the token whatever the email (the workspace refused it)
}

// verify is the slow path of acquire: a token not remembered (or
// remembered but without an open pool) is verified, and the user's pool
// built, once for all the requests that present it at the same time.
func (m *Manager) verify(ctx context.Context, key tokenKey, id Identity) (*userPool, error) {
	now := m.clock.Now()
	fold := strings.ToLower(id.Email)
	fk := flightKey{key: key, email: fold}
	if err := m.refuseEarly(now, fk, id); err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, fmt.Errorf("peruser: %w", tokensource.ErrClosed)
	}
	if f := m.failed[key]; f != nil {
		switch {
		case !now.Before(f.until):
			delete(m.failed, key)
		case f.email == "" || f.email == fold:
			m.mu.Unlock()
			return nil, m.remembered(id, f.err)
		}
	}
	var knownWho string
	var knownUntil time.Time
	if e := m.verified[key]; e != nil {
		if now.Before(e.until) {
			e.used.Store(now.UnixNano())
			if !strings.EqualFold(e.who, id.Email) {
				m.mu.Unlock()
				return nil, m.mismatch(id, true)
			}
			if p := m.pools[e.who]; p != nil {
				p.leases.Add(1)
				m.mu.Unlock()
				p.used.Store(now.UnixNano())
				p.src.setAccess(id.AccessToken, e.until, nil)
				return p, nil
			}
			knownWho, knownUntil = e.who, e.until // verified, without a pool: build one
		} else {
			delete(m.verified, key)
		}
	}
	if knownWho == "" && !validToken(id.AccessToken) {
		m.mu.Unlock()
		return nil, &AuthError{Header: HeaderAccessToken, Problem: "contains characters a token cannot contain"}
	}
	f := m.flights[fk]
	if f == nil {
		capped := knownWho == ""
		if capped && m.cfg.MaxVerifications > 0 && m.verifying >= m.cfg.MaxVerifications {
			m.mu.Unlock()
			m.busy.Add(1)
			return nil, m.busyErr
		}
		fctx, cancel := context.WithCancel(m.ctx)
		f = &flight{done: make(chan struct{}), cancel: cancel, capped: capped}
		m.flights[fk] = f
		if capped {
			m.verifying++
		}
		m.wg.Add(1)
		go m.run(fctx, fk, f, id, knownWho, knownUntil)
	}
	f.waiters++
	m.mu.Unlock()

	select {
	case <-f.done:
		return f.pool, f.err
	case <-ctx.Done():
		m.mu.Lock()
		defer m.mu.Unlock()
		if f.finished {
			return f.pool, f.err // this request's lease is reserved
		}
		f.waiters--
		if f.waiters == 0 {
			// Nobody waits any more: stop the flight (it keeps its slot
			// until it has ended). A later request starts a new one.
			f.cancel()
			if m.flights[fk] == f {
				delete(m.flights, fk)
			}
		}
		return nil, fmt.Errorf("peruser: verifying the access token of %s: %w", id.Email, context.Cause(ctx))
	}
}

// refuseEarly answers, under the read lock only, the requests that need
// no change of state: a remembered failure, a remembered mismatch, a token
// that cannot be one, and a new token beyond MaxVerifications. A flood of
// junk is then refused without queueing for the write lock that real
// users' first requests need. nil: verify goes on (and checks everything
// again under the write lock).
func (m *Manager) refuseEarly(now time.Time, fk flightKey, id Identity) error {
	m.mu.RLock()
	if m.closed {
		m.mu.RUnlock()
		return fmt.Errorf("peruser: %w", tokensource.ErrClosed)
	}
	if f := m.failed[fk.key]; f != nil && now.Before(f.until) && (f.email == "" || f.email == fk.email) {
		m.mu.RUnlock()
		return m.remembered(id, f.err)
	}
	e := m.verified[fk.key]
	known := e != nil && now.Before(e.until)
	if known && !strings.EqualFold(e.who, id.Email) {
		m.mu.RUnlock()
		return m.mismatch(id, true)
	}
	if !known && m.flights[fk] == nil {
		if !validToken(id.AccessToken) {
			m.mu.RUnlock()
			return &AuthError{Header: HeaderAccessToken, Problem: "contains characters a token cannot contain"}
		}
		if m.cfg.MaxVerifications > 0 && m.verifying >= m.cfg.MaxVerifications {
			m.mu.RUnlock()
			m.busy.Add(1)
			return m.busyErr
		}
	}
	m.mu.RUnlock()
	return nil
}

// remembered returns a remembered failure (logged at DEBUG: the
// verification logged it when it ran).
func (m *Manager) remembered(id Identity, err error) error {
	msg := "peruser: a failed verification of this access token is remembered"
	var ae *AuthError
	if errors.As(err, &ae) {
		msg = "peruser: request refused: a failed verification of this access token is remembered"
	}
	m.logger.Debug(msg, slog.String("email", id.Email), slog.String("error", err.Error()))
	return err
}

// run makes one flight's proof (or, for a remembered token, its first
// login) and publishes the outcome.
func (m *Manager) run(ctx context.Context, fk flightKey, f *flight, id Identity, knownWho string, knownUntil time.Time) {
	defer m.wg.Done()
	defer f.cancel()
	var out outcome
	if knownWho != "" {
		out.pool, out.err = m.build(ctx, knownWho, id.AccessToken, knownUntil)
		out.err = identify(knownWho, out.err)
	} else {
		m.proofs.Add(1)
		out = m.prove(ctx, id)
	}
	now := m.clock.Now()
	m.mu.Lock()
	if m.flights[fk] == f {
		delete(m.flights, fk)
	}
	if f.capped {
		m.verifying--
	}
	if !m.closed {
		if out.who != "" && out.until.After(now) {
			m.storeVerifiedLocked(fk.key, out.who, out.until, now)
		}
		if out.err != nil && m.cfg.FailedTTL > 0 && remember(out.err) {
			email := fk.email
			if out.anyEmail {
				email = ""
			}
			m.storeFailedLocked(fk.key, &failure{email: email, err: out.err, until: now.Add(m.cfg.FailedTTL)})
		}
	}
	if out.pool != nil {
		// The flight's lease becomes one per waiting request.
		out.pool.leases.Add(int32(f.waiters) - 1)
	}
	f.pool, f.err, f.finished = out.pool, out.err, true
	close(f.done)
	m.mu.Unlock()
}

// prove verifies a new token with the configured method and, when it
// proves its email, returns the user's pool.
func (m *Manager) prove(ctx context.Context, id Identity) outcome {
	until := expiryOf(id.AccessToken, m.clock.Now(), m.cfg.VerifiedTTL)
	if m.cfg.Verify == VerifyLogin || (m.cfg.Verify == VerifyAuto && m.meForbidden.Load()) {
		return m.proveLogin(ctx, id, until)
	}
	who, err := m.proveMe(ctx, id)
	if errors.Is(err, errMeForbidden) {
		out := m.proveLogin(ctx, id, until)
		if out.err == nil && !m.meForbidden.Swap(true) {
			m.logger.Info("peruser: the workspace refuses Me with the users' tokens (no iam.current-user:read scope) and a token proved its email by login; verifying tokens with a credential mint and a login from now on",
				slog.String("verify", VerifyLogin.String()), slog.String("email", out.who))
		}
		return out
	}
	if err != nil {
		return outcome{err: err, anyEmail: true} // Me's answer does not depend on the email
	}
	out := outcome{who: who, until: until}
	if !strings.EqualFold(who, id.Email) {
		out.err = m.mismatch(id, false)
		return out
	}
	out.pool, out.err = m.build(ctx, who, id.AccessToken, until)
	out.err = identify(who, out.err)
	return out
}

// proveMe returns the identity the workspace's Me API reports for the
// token: the user's canonical identity.
func (m *Manager) proveMe(ctx context.Context, id Identity) (string, error) {
	w, err := m.userClient(id.AccessToken)
	if err != nil {
		return "", err
	}
	cctx, cancel := context.WithTimeout(ctx, m.cfg.VerifyTimeout)
	defer cancel()
	me, err := w.CurrentUser.Me(cctx, iam.MeRequest{})
	if err == nil && (me == nil || me.UserName == "") {
		err = errors.New("the workspace returned no user name")
	}
	if err == nil {
		return me.UserName, nil
	}
	var ae *apierr.APIError
	if errors.As(err, &ae) {
		switch ae.StatusCode {
		case http.StatusUnauthorized:
			return "", m.rejected(id, "not accepted by the workspace (invalid or expired)")
		case http.StatusForbidden:
			if m.cfg.Verify == VerifyAuto {
				return "", errMeForbidden
			}
			return "", fmt.Errorf("peruser: Verify=me: the workspace refuses Me with the user's token (add the iam.current-user:read user API scope to the app, or use VerifyAuto or VerifyLogin): %w", scrubbed(err, id.AccessToken))
		}
	}
	if ctx.Err() != nil {
		return "", fmt.Errorf("peruser: verifying the access token of %s with Me: %w", id.Email, context.Cause(ctx))
	}
	return "", fmt.Errorf("peruser: verifying the access token of %s with Me: %w", id.Email, scrubbed(err, id.AccessToken))
}

// proveLogin mints a credential with the user's token and logs in with it
// through a new pool of the user (the pool's first connection). When the
// proof succeeds that pool, its credential and its connection become the
// user's pool (or, if the user has one already, the credential goes to
// it).
func (m *Manager) proveLogin(ctx context.Context, id Identity, until time.Time) outcome {
	role, known := m.canonical(id.Email)
	src := newUserSource(m, id.AccessToken, until, nil, true)
	if err := m.mint(ctx, role, src); err != nil {
		_ = src.Close()
		var te *tokensource.Error
		if errors.As(err, &te) && te.Kind == tokensource.KindAuth {
			return outcome{err: m.rejected(id, "the workspace refuses to mint a Lakebase credential with it (invalid or expired, or the app lacks the postgres user API scope)"), anyEmail: true}
		}
		return outcome{err: err, anyEmail: true} // nor does a failing mint's
	}
	p, err := m.newPool(role, src)
	if err != nil {
		return outcome{err: err}
	}
	err = p.open(ctx)
	if err != nil && !known && respell(err) {
		// The header may spell the user in another case than the role:
		// try the role's own spelling once, with the same credential.
		if alt := m.lookupRole(ctx, role); alt != "" {
			seed := src.credential()
			p.close()
			role = alt
			if p, err = m.newPool(role, newUserSource(m, id.AccessToken, until, seed, true)); err != nil {
				return outcome{err: err}
			}
			err = p.open(ctx)
		}
	}
	if err != nil {
		p.close()
		var le *connector.LoginError
		switch {
		case errors.As(err, &le) && (le.Reason == connector.LoginCredentialRefused || le.Reason == connector.LoginRefused) && !transient(err):
			return outcome{err: m.mismatch(id, false)}
		case errors.As(err, &le):
			return outcome{err: identify(role, fmt.Errorf("peruser: first login of %s: %w", role, err))}
		}
		return outcome{err: fmt.Errorf("peruser: verifying the access token of %s with a login: %w", id.Email, scrubbed(err, id.AccessToken))}
	}
	pub, err := m.publish(p)
	return outcome{who: role, until: until, pool: pub, err: err}
}

// identified is an error of a user whose canonical identity is known (for
// the logs); its text is the cause's.
type identified struct {
	role string
	err  error
}

func (e *identified) Error() string { return e.err.Error() }
func (e *identified) Unwrap() error { return e.err }

func identify(role string, err error) error {
	if err == nil {
		return nil
	}
	return &identified{role: role, err: err}
}

// respell reports whether a refused login may be the header's spelling of
// the role rather than the token: a refused credential or a missing role.
func respell(err error) bool {
	var le *connector.LoginError
	return errors.As(err, &le) && (le.Reason == connector.LoginCredentialRefused || le.Reason == connector.LoginRefused || le.Reason == connector.LoginRoleMissing)
}

// lookupRole returns the one Postgres role whose name equals tried but for
// case, or "" (asked as the service principal; pg_roles is readable by
// every role).
func (m *Manager) lookupRole(ctx context.Context, tried string) string {
	rows, err := m.sp.QueryContext(ctx, "SELECT rolname FROM pg_roles WHERE lower(rolname) = lower($1) AND rolname <> $1 LIMIT 2", tried)
	if err != nil {
		m.logger.Debug("peruser: looking up the role's spelling failed", slog.String("email", tried), slog.String("error", err.Error()))
		return ""
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if rows.Scan(&n) == nil {
			names = append(names, n)
		}
	}
	if rows.Err() != nil || len(names) != 1 {
		return ""
	}
	return names[0]
}

// mismatch is the error (and log line) for a token that does not prove the
// email: WARN when the verification ran, DEBUG when it was remembered.
func (m *Manager) mismatch(id Identity, remembered bool) error {
	lvl := slog.LevelWarn
	if remembered {
		lvl = slog.LevelDebug
	}
	m.logger.Log(context.Background(), lvl, "peruser: request refused: the access token does not belong to the email in "+HeaderEmail,
		slog.String("email", id.Email))
	return &AuthError{Header: HeaderEmail, Problem: "not the identity of the access token in " + HeaderAccessToken, Status: http.StatusForbidden}
}

// rejected is the error (and WARN log) for a token the workspace refuses.
func (m *Manager) rejected(id Identity, problem string) error {
	m.logger.Warn("peruser: request refused: the access token in "+HeaderAccessToken+" was rejected",
		slog.String("email", id.Email))
	return &AuthError{Header: HeaderAccessToken, Problem: problem, Status: http.StatusForbidden}
}

// remember reports whether a failed verification is remembered: not when
// a retry may help (transient) or the request gave up.
func remember(err error) bool {
	return !transient(err) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, tokensource.ErrClosed)
}

// transient reports whether retrying later can help: tokensource's answer,
// and a *connector.WakeError (an endpoint that did not wake in time).
func transient(err error) bool {
	var we *connector.WakeError
	return tokensource.IsTransient(err) || errors.As(err, &we)
}

// Samples of the approximate least-recently-used eviction.
const evictSamples = 8

// storeVerifiedLocked remembers that the token with key proved who (m.mu
// held). Beyond MaxVerifiedTokens an expired or the least recently used of
// a few sampled entries goes.
func (m *Manager) storeVerifiedLocked(key tokenKey, who string, until, now time.Time) {
	e := &verified{who: who, until: until}
	e.used.Store(now.UnixNano())
	m.verified[key] = e
	for len(m.verified) > m.cfg.MaxVerifiedTokens {
		var victim tokenKey
		oldest, n := int64(math.MaxInt64), 0
		for k, v := range m.verified {
			if k == key {
				continue
			}
			if !now.Before(v.until) {
				victim = k
				break
			}
			if u := v.used.Load(); u < oldest {
				oldest, victim = u, k
			}
			if n++; n >= evictSamples {
				break
			}
		}
		delete(m.verified, victim)
	}
}

// storeFailedLocked remembers a failed verification (m.mu held). Beyond
// MaxFailedTokens the one expiring first of a few sampled entries goes.
func (m *Manager) storeFailedLocked(key tokenKey, f *failure) {
	m.failed[key] = f
	for len(m.failed) > m.cfg.MaxFailedTokens {
		var victim tokenKey
		var first time.Time
		n := 0
		for k, v := range m.failed {
			if k == key {
				continue
			}
			if n == 0 || v.until.Before(first) {
				first, victim = v.until, k
			}
			if n++; n >= evictSamples {
				break
			}
		}
		delete(m.failed, victim)
	}
}

// expiryOf is how long a verified token is remembered: until its JWT exp
// claim (at most MaxVerifiedAge), else ttl.
func expiryOf(token string, now time.Time, ttl time.Duration) time.Time {
	exp, ok := jwtExpiry(token)
	if !ok {
		return now.Add(ttl)
	}
	if limit := now.Add(MaxVerifiedAge); exp.After(limit) {
		return limit
	}
	return exp
}

// jwtExpiry reads the exp claim of a JWT without checking its signature
// (the workspace has checked the token; exp only bounds how long the
// verification is remembered).
func jwtExpiry(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(parts[1]) > MaxTokenLen {
		return time.Time{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp *json.Number `json:"exp"`
	}
	if err := json.Unmarshal(raw, &claims); err != nil || claims.Exp == nil {
		return time.Time{}, false
	}
	f, err := claims.Exp.Float64()
	if err != nil || f <= 0 || f > 1e11 {
		return time.Time{}, false
	}
	return time.Unix(int64(f), 0), true
}

// scrubbedError hides a secret in the message of err and keeps err in the
// chain (for errors.As and tokensource.IsTransient).
type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }

func scrubbed(err error, secret string) error {
	if secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return &scrubbedError{msg: strings.ReplaceAll(err.Error(), secret, "REDACTED"), err: err}
}
