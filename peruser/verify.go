package peruser

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/databricks/databricks-sdk-go/apierr"
	"github.com/databricks/databricks-sdk-go/service/iam"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lakebase-go/lakebase/tokensource"
)

// VerifyMethod says how a new access token is proven to belong to the
// email of the request.
type VerifyMethod int

// The verification methods.
const (
	// VerifyAuto uses VerifyMe; when the workspace refuses Me with 403
	// (the app lacks the iam.current-user:read user API scope) it switches
	// to VerifyLogin for that token and every later one.
	VerifyAuto VerifyMethod = iota
	// VerifyMe calls GET /api/2.0/preview/scim/v2/Me with the access token
	// and compares its userName to the email, ignoring case. Cost: one
	// workspace call per new token.
	VerifyMe
	// VerifyLogin mints a Lakebase credential with the access token and
	// logs in to Postgres as the email with it. Lakebase binds a credential
	// to the identity of the token that minted it, so a token of another
	// identity is refused. Cost: one mint and one Postgres login per new
	// token; the credential is then used by the user's pool, so a new user
	// costs no extra mint. Needs only the postgres user API scope the pool
	// needs anyway.
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

// Verification defaults.
const (
	// DefaultVerifiedTTL is how long a verified access token that is not a
	// JWT with an exp claim is remembered.
	DefaultVerifiedTTL = 5 * time.Minute
	// MaxVerifiedAge caps how long any verified token is remembered, even
	// when its exp claim is later.
	MaxVerifiedAge = time.Hour
	// DefaultMaxVerifiedTokens caps the number of remembered tokens.
	DefaultMaxVerifiedTokens = 10000
	// DefaultVerifyTimeout bounds one verification.
	DefaultVerifyTimeout = 10 * time.Second
)

// tokenKey is the SHA-256 of an access token: the verifier never stores a
// token.
type tokenKey [sha256.Size]byte

// verified is a remembered verification.
type verified struct {
	key   tokenKey
	who   string    // the identity the token proved
	until time.Time // remembered until then
	elem  *list.Element
}

// proof is the outcome of a verification for one request.
type proof struct {
	role  string             // the proven identity as the workspace spells it: the Postgres role
	until time.Time          // the token is trusted until then
	seed  *tokensource.Token // a credential minted by a login proof, for the user's pool
}

type flightKey struct {
	key   tokenKey
	email string // lower case
}

// flight is one verification in progress, shared by the requests that
// present the same token for the same email.
type flight struct {
	done    chan struct{}
	cancel  context.CancelFunc
	waiters int // requests waiting (verifier.mu); the last to leave cancels
	res     proof
	err     error
}

// verifier proves that access tokens belong to emails, once per token.
type verifier struct {
	m       *Manager
	method  VerifyMethod
	ttl     time.Duration
	max     int
	timeout time.Duration

	meForbidden atomic.Bool // VerifyAuto found Me refused: use logins
	proofs      atomic.Int64

	ctx    context.Context // cancelled by close; parent of every flight
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	cache   map[tokenKey]*verified
	lru     *list.List // front: most recently used
	flights map[flightKey]*flight
	closed  bool
}

func newVerifier(m *Manager, cfg Config) *verifier {
	v := &verifier{m: m, method: cfg.Verify, ttl: cfg.VerifiedTTL, max: cfg.MaxVerifiedTokens, timeout: cfg.VerifyTimeout,
		cache: map[tokenKey]*verified{}, lru: list.New(), flights: map[flightKey]*flight{}}
	v.ctx, v.cancel = context.WithCancel(context.Background())
	return v
}

// verify returns once id.AccessToken is proven to belong to id.Email (or
// is remembered as such), or with an error: an *AuthError (403) when it
// does not, ctx's error when ctx ends first, another error when the proof
// could not be made.
func (v *verifier) verify(ctx context.Context, id Identity) (proof, error) {
	key := tokenKey(sha256.Sum256([]byte(id.AccessToken)))
	now := v.m.clock.Now()
	v.mu.Lock()
	if e := v.cache[key]; e != nil {
		if now.Before(e.until) {
			v.lru.MoveToFront(e.elem)
			who, until := e.who, e.until
			v.mu.Unlock()
			if !strings.EqualFold(who, id.Email) {
				return proof{}, v.mismatch(id)
			}
			return proof{role: who, until: until}, nil
		}
		v.removeLocked(e)
	}
	if v.closed {
		v.mu.Unlock()
		return proof{}, fmt.Errorf("peruser: %w", tokensource.ErrClosed)
	}
	fk := flightKey{key: key, email: strings.ToLower(id.Email)}
	f := v.flights[fk]
	if f == nil {
		fctx, cancel := context.WithTimeout(v.ctx, v.timeout)
		f = &flight{done: make(chan struct{}), cancel: cancel}
		v.flights[fk] = f
		v.wg.Add(1)
		go v.run(fctx, fk, f, id)
	}
	f.waiters++
	v.mu.Unlock()

	select {
	case <-f.done:
		return f.res, f.err
	case <-ctx.Done():
		v.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			// Nobody waits any more: stop the proof. A later request
			// starts a new one.
			f.cancel()
			if v.flights[fk] == f {
				delete(v.flights, fk)
			}
		}
		v.mu.Unlock()
		return proof{}, fmt.Errorf("peruser: verifying the access token of %s: %w", id.Email, context.Cause(ctx))
	}
}

// run makes one proof and publishes it.
func (v *verifier) run(ctx context.Context, fk flightKey, f *flight, id Identity) {
	defer v.wg.Done()
	defer f.cancel()
	v.proofs.Add(1)
	who, seed, err := v.prove(ctx, id)
	now := v.m.clock.Now()
	var res proof
	if err == nil {
		res.role = who
		res.until = expiryOf(id.AccessToken, now, v.ttl)
		res.seed = seed
		if !strings.EqualFold(who, id.Email) {
			err = v.mismatch(id)
		}
	}
	v.mu.Lock()
	if v.flights[fk] == f {
		delete(v.flights, fk)
	}
	if who != "" && res.until.After(now) && !v.closed {
		v.storeLocked(fk.key, who, res.until)
	}
	f.res, f.err = res, err
	close(f.done)
	v.mu.Unlock()
}

// storeLocked remembers that the token with key proved who (v.mu held).
func (v *verifier) storeLocked(key tokenKey, who string, until time.Time) {
	if e := v.cache[key]; e != nil {
		v.removeLocked(e)
	}
	e := &verified{key: key, who: who, until: until}
	e.elem = v.lru.PushFront(e)
	v.cache[key] = e
	for len(v.cache) > v.max {
		v.removeLocked(v.lru.Back().Value.(*verified))
	}
}

func (v *verifier) removeLocked(e *verified) {
	delete(v.cache, e.key)
	v.lru.Remove(e.elem)
}

// prove returns the identity id.AccessToken belongs to. With the login
// proof it is id.Email (or an *AuthError), and the credential minted for
// the login is returned for the user's pool.
func (v *verifier) prove(ctx context.Context, id Identity) (string, *tokensource.Token, error) {
	if v.method == VerifyLogin || (v.method == VerifyAuto && v.meForbidden.Load()) {
		return v.proveLogin(ctx, id)
	}
	w, err := v.m.userClient(id.AccessToken)
	if err != nil {
		return "", nil, err
	}
	me, err := w.CurrentUser.Me(ctx, iam.MeRequest{})
	if err == nil && (me == nil || me.UserName == "") {
		err = errors.New("the workspace returned no user name")
	}
	if err != nil {
		var ae *apierr.APIError
		if errors.As(err, &ae) {
			switch ae.StatusCode {
			case http.StatusUnauthorized:
				return "", nil, v.rejected(id, "not accepted by the workspace (invalid or expired)")
			case http.StatusForbidden:
				if v.method == VerifyAuto {
					if !v.meForbidden.Swap(true) {
						v.m.logger.Info("peruser: the workspace refuses Me with the users' tokens (no iam.current-user:read scope); verifying tokens with a credential mint and a login from now on",
							slog.String("verify", VerifyLogin.String()))
					}
					return v.proveLogin(ctx, id)
				}
				return "", nil, fmt.Errorf("peruser: Verify=me: the workspace refuses Me with the user's token (add the iam.current-user:read user API scope to the app, or use VerifyAuto or VerifyLogin): %w", scrubbed(err, id.AccessToken))
			}
		}
		return "", nil, fmt.Errorf("peruser: verifying the access token of %s with Me: %w", id.Email, scrubbed(err, id.AccessToken))
	}
	return me.UserName, nil, nil
}

// proveLogin mints a credential with the user's token and logs in as the
// email with it.
func (v *verifier) proveLogin(ctx context.Context, id Identity) (string, *tokensource.Token, error) {
	tok, err := v.m.fetcher(id.AccessToken)(ctx)
	if err != nil {
		var ae *apierr.APIError
		if errors.As(err, &ae) && (ae.StatusCode == http.StatusUnauthorized || ae.StatusCode == http.StatusForbidden) {
			return "", nil, v.rejected(id, "the workspace refuses to mint a Lakebase credential with it (invalid or expired, or the app lacks the postgres user API scope)")
		}
		return "", nil, fmt.Errorf("peruser: verifying the access token of %s with a credential mint: %w", id.Email, scrubbed(err, id.AccessToken))
	}
	cc := v.m.spConn.ConnConfig()
	cc.User = id.Email
	cc.Password = tok.Value
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "28") || pe.Code == "42501") {
			return "", nil, v.mismatch(id)
		}
		return "", nil, fmt.Errorf("peruser: verifying the access token of %s with a login: %w", id.Email, scrubbed(err, tok.Value))
	}
	_ = conn.Close(context.WithoutCancel(ctx))
	return id.Email, &tok, nil
}

// mismatch is the error (and WARN log) for a token that belongs to someone
// else.
func (v *verifier) mismatch(id Identity) error {
	v.m.logger.Warn("peruser: request refused: the access token does not belong to the email in "+HeaderEmail,
		slog.String("email", id.Email))
	return &AuthError{Header: HeaderEmail, Problem: "not the identity of the access token in " + HeaderAccessToken, Status: http.StatusForbidden}
}

// rejected is the error (and WARN log) for a token the workspace refuses.
func (v *verifier) rejected(id Identity, problem string) error {
	v.m.logger.Warn("peruser: request refused: the access token in "+HeaderAccessToken+" was rejected",
		slog.String("email", id.Email))
	return &AuthError{Header: HeaderAccessToken, Problem: problem, Status: http.StatusForbidden}
}

// close cancels every verification in progress and waits for them.
func (v *verifier) close() {
	v.mu.Lock()
	v.closed = true
	v.cache = map[tokenKey]*verified{}
	v.lru.Init()
	v.mu.Unlock()
	v.cancel()
	v.wg.Wait()
}

// remembered returns the number of remembered tokens.
func (v *verifier) remembered() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.cache)
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
