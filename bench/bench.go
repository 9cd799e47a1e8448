// Package bench measures the connector against the alternatives and the
// limit, side by side on one emulator (see cmd/compare and the Go
// benchmarks in this package).
//
// Compare samples in pairs: each case runs in cycles, every contender once
// per cycle in a shuffled order, and a contender's ratio is the median of
// its per-cycle ratios to the case's baseline, with a distribution-free
// 95 % interval (MedianCI). The Go benchmarks are named
// Benchmark<Case>/contender=<Slug> so that benchstat -col /contender
// compares the contenders.
//
// Baselines, each written the way its users write it:
//   - Limit: pgx stdlib with a static password (one token minted up front:
//     same server, same TLS, same LDAP-checked login).
//   - MintPerConn: the Databricks docs sample's pattern: one workspace
//     client per process (the SDK's defaults, including its client-side
//     rate limiter of 15 requests/s with a burst of 15) and a BeforeConnect
//     hook calling w.Postgres.GenerateDatabaseCredential on every new
//     connection.
//   - OAuth2Reuse: oauth2.ReuseTokenSource around the same fetcher.
//   - Eager, Lazy: this library's connector.
package bench

import (
	"context"
	"database/sql/driver"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/databricks/databricks-sdk-go"
	"github.com/databricks/databricks-sdk-go/config"
	"github.com/databricks/databricks-sdk-go/service/postgres"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"go.opentelemetry.io/otel/sdk/trace"
	"golang.org/x/oauth2"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/tokensource"
)

// Kind names a way of getting the password.
type Kind string

// The contenders.
const (
	Limit       Kind = "limit (static password)"
	MintPerConn Kind = "mint per connection"
	OAuth2Reuse Kind = "oauth2.ReuseTokenSource"
	Eager       Kind = "lakebase eager"
	Lazy        Kind = "lakebase lazy"
	EagerOTel   Kind = "lakebase eager + otelsql"
)

// Slug is k's name in Go benchmark names (BenchmarkConnect/contender=limit),
// so that benchstat -col /contender puts the contenders side by side.
func Slug(k Kind) string {
	switch k {
	case Limit:
		return "limit"
	case MintPerConn:
		return "mintperconn"
	case OAuth2Reuse:
		return "oauth2reuse"
	case Eager:
		return "eager"
	case Lazy:
		return "lazy"
	case EagerOTel:
		return "eager-otelsql"
	}
	return strings.NewReplacer(" ", "-", "(", "", ")", "").Replace(string(k))
}

// Env is one emulator and the settings every contender shares.
type Env struct {
	E *lakebasetest.Emulator
}

// baseConn is the pgx configuration every baseline starts from: the same one
// the connector builds.
func (env *Env) baseConn() (*pgx.ConnConfig, error) {
	e := env.E
	return pgx.ParseConfig(fmt.Sprintf("host=%s port=%d dbname=%s user=%s sslmode=verify-full sslrootcert='%s'",
		e.Host(), e.Port(), e.Database(), e.ServicePrincipal(), e.CAFile()))
}

func (env *Env) fetcher() (tokensource.FetchFunc, error) {
	w, err := fullClient(env.E.WorkspaceConfig())
	if err != nil {
		return nil, err
	}
	return tokensource.EndpointFetcher(w.Postgres, env.E.Endpoint(), tokensource.EndpointOptions{})
}

// Connector builds the driver.Connector of kind k; closing it releases
// what it started.
func (env *Env) Connector(ctx context.Context, k Kind) (driver.Connector, func(), error) {
	e := env.E
	switch k {
	case Eager, Lazy, EagerOTel:
		w := e.WorkspaceConfig()
		cfg := connector.Config{Endpoint: e.Endpoint(), Host: e.Host(), Port: e.Port(), Database: e.Database(),
			User: e.ServicePrincipal(), SSLRootCert: e.CAFile(), WorkspaceConfig: w,
			Logger:    slog.New(slog.DiscardHandler),
			LookupEnv: func(string) (string, bool) { return "", false }}
		if k == Lazy {
			cfg.Token.Mode = tokensource.Lazy
		}
		if k == EagerOTel {
			cfg.Telemetry = true
			cfg.TracerProvider = trace.NewTracerProvider() // sampled spans, no exporter
		}
		c, err := connector.New(ctx, cfg)
		if err != nil {
			return nil, nil, err
		}
		if k != Lazy { // a lazy connector starts cold (the stampede case needs that)
			if _, err := c.TokenSource().Token(ctx); err != nil {
				return nil, nil, err
			}
		}
		return c, func() { _ = c.Close() }, nil
	}
	base, err := env.baseConn()
	if err != nil {
		return nil, nil, err
	}
	fetch, err := env.fetcher()
	if err != nil {
		return nil, nil, err
	}
	var hook func(context.Context, *pgx.ConnConfig) error
	switch k {
	case Limit:
		base.Password = e.MintToken(e.ServicePrincipal(), 24*time.Hour)
		hook = func(context.Context, *pgx.ConnConfig) error { return nil }
	case MintPerConn:
		// As in the docs sample: the process's one workspace client, one
		// credential per new connection, no cache.
		w, err := fullClient(e.WorkspaceConfig())
		if err != nil {
			return nil, nil, err
		}
		endpoint := e.Endpoint()
		hook = func(ctx context.Context, cc *pgx.ConnConfig) error {
			cred, err := w.Postgres.GenerateDatabaseCredential(ctx, postgres.GenerateDatabaseCredentialRequest{Endpoint: endpoint})
			if err != nil {
				return err
			}
			cc.Password = cred.Token
			return nil
		}
	case OAuth2Reuse:
		ts := oauth2.ReuseTokenSource(nil, tokensource.ToOAuth2(context.Background(), fetchSource(fetch)))
		hook = func(_ context.Context, cc *pgx.ConnConfig) error {
			tok, err := ts.Token()
			if err != nil {
				return err
			}
			cc.Password = tok.AccessToken
			return nil
		}
	default:
		return nil, nil, fmt.Errorf("bench: unknown kind %q", k)
	}
	return stdlib.GetConnector(*base, stdlib.OptionBeforeConnect(hook)), func() {}, nil
}

// fetchSource is a Source that fetches on every call (what oauth2 wraps).
type fetchSource tokensource.FetchFunc

func (f fetchSource) Token(ctx context.Context) (tokensource.Token, error) { return f(ctx) }

// connectorWith is an eager connector with token options (already holding
// its first token).
func (env *Env) connectorWith(ctx context.Context, opts tokensource.Options) (driver.Connector, func(), error) {
	e := env.E
	w := e.WorkspaceConfig()
	c, err := connector.New(ctx, connector.Config{Endpoint: e.Endpoint(), Host: e.Host(), Port: e.Port(), Database: e.Database(),
		User: e.ServicePrincipal(), SSLRootCert: e.CAFile(), WorkspaceConfig: w, Token: opts,
		Logger: slog.New(slog.DiscardHandler), LookupEnv: func(string) (string, bool) { return "", false }})
	if err != nil {
		return nil, nil, err
	}
	if _, err := c.TokenSource().Token(ctx); err != nil {
		_ = c.Close()
		return nil, nil, err
	}
	return c, func() { _ = c.Close() }, nil
}

// Connect opens and closes n physical connections through c, returning the
// per-connection latencies.
func Connect(ctx context.Context, c driver.Connector, n int) ([]time.Duration, error) {
	out := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		conn, err := c.Connect(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, time.Since(start))
		_ = conn.Close()
	}
	return out, nil
}

// Median returns the median of ds (0 for none).
func Median(ds []time.Duration) time.Duration { return Quantile(ds, 0.5) }

// Quantile returns the q-quantile of ds (0 for none).
func Quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q * float64(len(s)-1))
	return s[i]
}

// fullClient is the full SDK workspace client the docs sample uses (every
// service of the SDK), for the contenders that stand for it.
func fullClient(cfg *config.Config) (*databricks.WorkspaceClient, error) {
	return databricks.NewWorkspaceClient((*databricks.Config)(cfg))
}
