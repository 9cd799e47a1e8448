package connector

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lakebase-go/lakebase/tokensource"
)

// tokenKey carries the token chosen by Connect into beforeConnect.
type tokenKey struct{}

// beforeConnect sets the password on pgx's per-connection copy of the base
// configuration. It never touches the shared base.
func (c *Connector) beforeConnect(ctx context.Context, cc *pgx.ConnConfig) error {
	if m, ok := ctx.Value(execModeKey{}).(pgx.QueryExecMode); ok {
		cc.DefaultQueryExecMode = m
	}
	if err := c.userBeforeConnect(ctx, cc); err != nil {
		return err
	}
	if pw := c.cfg.Password; pw != "" {
		cc.Password = pw
		return nil
	}
	if tok, ok := ctx.Value(tokenKey{}).(tokensource.Token); ok {
		cc.Password = tok.Value
		return nil
	}
	tok, err := c.source.Token(ctx)
	if err != nil {
		return fmt.Errorf("connector: no token for role %q: %w", c.role, err)
	}
	cc.Password = tok.Value
	return nil
}

// PoolBeforeConnect is a pgxpool.Config.BeforeConnect (and
// stdlib.OptionBeforeConnect) hook: it sets the current token as the
// password of the per-connection config copy. PoolConfig installs it with
// the same policies as the database/sql path:
//
//   - cold starts: the connection's DialFunc retries dial errors, SQLSTATE
//     class 08 and 57P03 within ConnectTimeout with the token already in
//     hand, replaying the startup message on a new transport; past
//     ConnectTimeout pgx's error wraps a *WakeError;
//   - refused logins: a login pgx sees refused for a token marks that
//     token; the next BeforeConnect replaces it, forcing one refresh
//     (bounded as in Config.ForcedRefreshInterval, retried after a
//     failure), or fails with a *LoginError without logging in with it
//     again.
//
// After Close it fails with an error that errors.Is tokensource.ErrClosed.
func (c *Connector) PoolBeforeConnect(ctx context.Context, cc *pgx.ConnConfig) error {
	if c.isClosed() {
		return fmt.Errorf("connector: %w", tokensource.ErrClosed)
	}
	if err := c.userBeforeConnect(ctx, cc); err != nil {
		return err
	}
	c.installWake(ctx, &cc.Config)
	if pw := c.cfg.Password; pw != "" {
		cc.Password = pw
		return nil
	}
	tok, err := c.source.Token(ctx)
	if err != nil {
		return fmt.Errorf("connector: no token for role %q: %w", c.role, err)
	}
	if c.login.isRefused(tok) {
		// pgx saw this token refused on an earlier login: replace it
		// (a refresh at most once per token and once per interval), or
		// fail without logging in with it again.
		out := c.login.replace(ctx, c, tok, nil)
		if out.tok.Value == "" {
			return c.refusedError(out, nil)
		}
		tok = out.tok
	}
	cc.Password = tok.Value
	watch := c.login.watch(tok)
	prev := cc.AfterNetConnect
	cc.AfterNetConnect = func(ctx context.Context, pc *pgconn.Config, conn net.Conn) (net.Conn, error) {
		if prev != nil {
			var err error
			if conn, err = prev(ctx, pc, conn); err != nil {
				return nil, err
			}
		}
		return watch(conn), nil
	}
	return nil
}

// userBeforeConnect runs Config.BeforeConnect on cc before any password is
// set.
func (c *Connector) userBeforeConnect(ctx context.Context, cc *pgx.ConnConfig) error {
	if c.cfg.BeforeConnect == nil {
		return nil
	}
	cc.Password = ""
	if err := c.cfg.BeforeConnect(ctx, cc); err != nil {
		return fmt.Errorf("connector: Config.BeforeConnect: %w", err)
	}
	return nil
}

// retryConnector does the token bookkeeping around pgx's stdlib connector:
// it picks the token, rides out a cold start (an endpoint waking from
// scale to zero) and, when the credential itself is refused, forces one
// bounded refresh and retries once.
type retryConnector struct {
	raw driver.Connector
	c   *Connector
}

func (rc *retryConnector) Driver() driver.Driver { return rc.raw.Driver() }

func (rc *retryConnector) Connect(ctx context.Context) (driver.Conn, error) {
	c := rc.c
	if c.isClosed() {
		return nil, fmt.Errorf("connector: %w", tokensource.ErrClosed)
	}
	caller := ctx
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()
	if c.source == nil {
		conn, err := rc.dial(ctx, caller, tokensource.Token{})
		return conn, rc.wrapErr(err, false)
	}
	tok, err := c.source.Token(ctx)
	if err != nil {
		return nil, fmt.Errorf("connector: no token for role %q: %w", c.role, err)
	}
	if c.login.isRefused(tok) {
		// The server refused this token before: never log in with it again.
		out := c.login.replace(ctx, c, tok, nil)
		if out.tok.Value == "" {
			return nil, c.refusedError(out, nil)
		}
		tok = out.tok
	}
	conn, err := rc.dial(ctx, caller, tok)
	if err == nil || !credentialRefused(err) {
		return conn, rc.wrapErr(err, true)
	}
	var pgErr *pgconn.PgError
	errors.As(err, &pgErr)
	out := c.login.replace(ctx, c, tok, pgErr)
	if out.tok.Value == "" {
		return nil, c.refusedError(out, err)
	}
	conn, err = rc.dial(ctx, caller, out.tok)
	if err != nil && credentialRefused(err) {
		// Refused again: remember it, so the next connection does not log
		// in with it but waits for the interval (or forces a refresh).
		errors.As(err, &pgErr)
		c.login.markRefused(out.tok, pgErr)
	}
	return conn, rc.wrapErr(err, true)
}

// dial makes one physical connection with tok, retrying the failures of a
// compute that is waking up (dial errors, SQLSTATE class 08 and 57P03)
// with the wake backoff until ctx ends. The token is not re-fetched.
// caller is the context ctx derives from (for WakeError's message).
func (rc *retryConnector) dial(ctx, caller context.Context, tok tokensource.Token) (driver.Conn, error) {
	if tok.Value != "" {
		ctx = context.WithValue(ctx, tokenKey{}, tok)
	}
	b := newWakeBackoff()
	logged := false
	for attempt := 1; ; attempt++ {
		conn, err := rc.raw.Connect(ctx)
		if err != nil && attempt > 1 && ctx.Err() != nil {
			// The deadline or the caller ended this attempt of a wake (a
			// dial cancelled midway is no cold-start error by itself).
			return nil, rc.c.wakeError(ctx, caller, attempt, err)
		}
		if err == nil || !coldStart(err) {
			return conn, err
		}
		if ctx.Err() != nil {
			return nil, rc.c.wakeError(ctx, caller, attempt, err)
		}
		if !logged {
			rc.c.logger.Info("connector: endpoint waking up, retrying", slog.String("host", rc.c.host), slog.String("error", err.Error()))
			logged = true
		}
		if !sleepCtx(ctx, b.next()) {
			return nil, rc.c.wakeError(ctx, caller, attempt, err)
		}
	}
}

// wrapErr turns a refused login into a *LoginError and wraps everything
// else with the package prefix.
func (rc *retryConnector) wrapErr(err error, token bool) error {
	if err == nil {
		return nil
	}
	if code, reason, ok := refusal(err); ok {
		if !token && (reason == LoginCredentialRefused || reason == LoginPoolerRefused) {
			reason = LoginPasswordRefused
		}
		return &LoginError{Role: rc.c.role, Database: rc.c.db, Host: rc.c.host, Code: code, Reason: reason, Err: err}
	}
	var we *WakeError
	if errors.As(err, &we) {
		return err
	}
	return fmt.Errorf("connector: connect to %s as %q: %w", rc.c.host, rc.c.role, err)
}
