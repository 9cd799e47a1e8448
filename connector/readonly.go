package connector

import (
	"context"
	"fmt"
	"io"
	"maps"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/lakebase-go/lakebase/tokensource"
)

// EnvTargetSessionAttrs is libpq's target_session_attrs variable. The
// connector reads it for Config.ReadOnly: "read-only" and "standby" turn
// it on; "any", "read-write" and "primary" (the primary host, the
// connector's default) leave it off; "prefer-standby" and other values are
// refused.
const EnvTargetSessionAttrs = "PGTARGETSESSIONATTRS"

const readOnlySetting = "ReadOnly (" + EnvTargetSessionAttrs + ")"

// withReadOnlyEnv is withEnv's part for ReadOnly and ReadOnlyTables.
func withReadOnlyEnv(r *resolved, get func(string) string) error {
	c := &r.Config
	if !c.ReadOnly {
		switch v := strings.ToLower(get(EnvTargetSessionAttrs)); v {
		case "", "any", "read-write", "primary":
		case "read-only", "standby":
			c.ReadOnly = true
		case "prefer-standby":
			return &ConfigError{Setting: readOnlySetting, Problem: "prefer-standby is not supported: the connector never falls back from a read-only host to the primary silently",
				Fix: "set PGTARGETSESSIONATTRS=read-only (or standby) to require the endpoint's read-only host, or any for the primary; or open a reader and a writer (Connector.Reader)"}
		default:
			return &ConfigError{Setting: readOnlySetting, Problem: "not a target_session_attrs value the connector supports",
				Fix: "use read-only or standby (the endpoint's read-only host), or any, read-write or primary (the primary host)"}
		}
	}
	if c.ReadOnly && r.hostFromEnv && (c.Endpoint != "" || c.Instance != "") {
		// PGHOST is the primary host in a Databricks App: look the
		// read-only host up instead.
		c.Host, r.hostFromEnv = "", false
	}
	if len(c.ReadOnlyTables) > 0 {
		switch {
		case c.Instance != "":
			return &ConfigError{Setting: "ReadOnlyTables", Problem: "credential claims are not supported for provisioned instances", Fix: "leave ReadOnlyTables empty with Instance"}
		case c.Password != "" || c.TokenSource != nil:
			return &ConfigError{Setting: "ReadOnlyTables", Problem: "claims apply only to tokens the connector mints, and Password or TokenSource is set", Fix: "leave ReadOnlyTables empty, or let the connector mint tokens for Endpoint"}
		}
		for _, t := range c.ReadOnlyTables {
			if strings.TrimSpace(t) == "" {
				return &ConfigError{Setting: "ReadOnlyTables", Problem: "contains an empty table name", Fix: "list full Unity Catalog names (catalog.schema.table)"}
			}
		}
	}
	return nil
}

// noReadOnlyHostError is New's error for a read-only connector whose
// endpoint or instance has only a primary host.
func noReadOnlyHostError(c *Config, primary string) *ConfigError {
	what := "endpoint " + c.Endpoint
	fix := "enable readable secondaries on the endpoint (high availability with more than one compute), set Endpoint to a read replica's endpoint, set Config.Host to a read-only host, or turn ReadOnly off"
	if c.Endpoint == "" {
		what = "instance " + c.Instance
		fix = "enable readable secondaries on the instance, set Config.Host to a read-only host, or turn ReadOnly off"
	}
	return &ConfigError{Setting: readOnlySetting, Problem: fmt.Sprintf("%s has no read-only host, only the writable primary %s, which a read-only connector does not fall back to", what, primary), Fix: fix}
}

// checkReadOnly fails a new connection of a read-only connector whose
// session would accept writes. PostgreSQL 14 and later report
// in_hot_standby and default_transaction_read_only in the login's
// ParameterStatus messages, so the check needs no query; an older server
// is asked (SHOW transaction_read_only).
func (c *Connector) checkReadOnly(ctx context.Context, conn *pgx.Conn) error {
	if !c.cfg.ReadOnly {
		return nil
	}
	pc := conn.PgConn()
	standby, readOnly := pc.ParameterStatus("in_hot_standby"), pc.ParameterStatus("default_transaction_read_only")
	if standby == "on" || readOnly == "on" {
		return nil
	}
	if standby == "" && readOnly == "" {
		var v string
		if err := conn.QueryRow(ctx, "SHOW transaction_read_only").Scan(&v); err != nil {
			return fmt.Errorf("connector: check that the session on %s is read-only: %w", c.host, err)
		}
		if v == "on" {
			return nil
		}
	}
	return &ConfigError{Setting: readOnlySetting, Problem: "the server at " + c.host + " accepts writes: it is a primary, not a read replica or readable secondary",
		Fix: "leave Host empty so the endpoint's read-only host is looked up, set Host to a read-only host, or turn ReadOnly off"}
}

// poolAfterConnect is PoolConfig's AfterConnect: the read-only check,
// then Config.AfterConnect.
func (c *Connector) poolAfterConnect(ctx context.Context, conn *pgx.Conn) error {
	if err := c.checkReadOnly(ctx, conn); err != nil {
		return err
	}
	return c.userAfterConnect(ctx, conn)
}

// Reader returns a read-only connector (Config.ReadOnly) to the same
// database as c, for the reads a program can send to a replica: the
// read-only host of c's endpoint or instance, looked up now with c's
// workspace client (even when c's Host was given), and c's role, port,
// database, TLS settings, hooks and token source — so a writer and its
// reader share one workspace client and one token cache (Lakebase binds a
// token to the identity, not to a host). Errors are those of New: a
// *ConfigError naming ReadOnly when the endpoint has no read-only host,
// and one naming Endpoint/Instance when c has neither to look it up from
// (use New with ReadOnly and Host then). The reader's connections check
// their session as ReadOnly says. Its Config reports ReadOnly, the
// read-only Host and the shared TokenSource.
//
// The two connectors close independently: the shared token source and
// workspace client are closed with the last of them, so closing the
// writer's *sql.DB first leaves the reader working. A Config.TokenSource
// of the caller's is shared and, as always, not closed.
func (c *Connector) Reader(ctx context.Context) (*Connector, error) {
	if c.isClosed() {
		return nil, fmt.Errorf("connector: %w", tokensource.ErrClosed)
	}
	if c.cfg.Endpoint == "" && c.cfg.Instance == "" {
		return nil, &ConfigError{Setting: "Endpoint/Instance (" + EnvEndpoint + "/" + EnvInstance + ")", Problem: "Reader looks up the read-only host of the endpoint or instance, and the connector has neither",
			Fix: "set Endpoint or Instance, or build the reader with New, ReadOnly and Host set to the read-only host"}
	}
	r := *c.cfg
	r.RuntimeParams = maps.Clone(r.RuntimeParams)
	r.Host, r.hostFromEnv, r.ReadOnly = "", false, true
	if c.source != nil {
		r.TokenSource = c.source // c's token source or the caller's
	}
	ws, own := c.ws, false
	if ws == nil {
		// c mints nothing (Password, or TokenSource with Host and User
		// given): a client of the reader's own for the look-up.
		ws, own = newWorkspace(&r.Config), true
	}
	w, err := ws.get(ctx, "the read-only host cannot be looked up")
	if err == nil {
		unbind := w.Bind(ctx)
		err = lookupHost(ctx, &r, w)
		unbind()
	}
	if err != nil {
		if own {
			ws.close()
		}
		return nil, err
	}
	rd, err := build(&r, nil)
	if err != nil {
		if own {
			ws.close()
		}
		return nil, err
	}
	if own {
		rd.share = newShared(nil, ws)
		return rd, nil
	}
	if !c.share.acquire() {
		_ = rd.Close()
		return nil, fmt.Errorf("connector: %w", tokensource.ErrClosed)
	}
	rd.share, rd.ws = c.share, c.ws
	return rd, nil
}

// shared is what a connector shares with the readers derived from it: the
// token source New built and the workspace client. The last of them to
// close closes the workspace client (which never waits), then the token
// source.
type shared struct {
	mu   sync.Mutex
	refs int
	ts   io.Closer // nil when New built no token source
	ws   *workspace
}

func newShared(ts io.Closer, ws *workspace) *shared { return &shared{refs: 1, ts: ts, ws: ws} }

// acquire adds a reference unless every holder has released it.
func (s *shared) acquire() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refs == 0 {
		return false
	}
	s.refs++
	return true
}

// release drops a reference; the last one closes what is shared.
func (s *shared) release() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	s.refs--
	last := s.refs == 0
	s.mu.Unlock()
	if !last {
		return nil
	}
	if s.ws != nil {
		s.ws.close()
	}
	if s.ts != nil {
		return s.ts.Close()
	}
	return nil
}
