package bench

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/databricks/databricks-sdk-go"
	"github.com/databricks/databricks-sdk-go/config"
	"github.com/databricks/databricks-sdk-go/service/postgres"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/peruser"
	"github.com/lakebase-go/lakebase/tokensource"
)

// connectorConfig is the connector configuration every lakebase
// contender starts from: explicit fields only, nothing from the
// environment, quiet logs.
func (env *Env) connectorConfig() (connector.Config, error) {
	e := env.E
	w := e.WorkspaceConfig()
	return connector.Config{Endpoint: e.Endpoint(), Host: e.Host(), Port: e.Port(), Database: e.Database(),
		User: e.ServicePrincipal(), SSLRootCert: e.CAFile(), WorkspaceConfig: w,
		Logger:    slog.New(slog.DiscardHandler),
		LookupEnv: func(string) (string, bool) { return "", false }}, nil
}

type noLoader struct{}

func (noLoader) Name() string                   { return "bench-no-loader" }
func (noLoader) Configure(*config.Config) error { return nil }

// sdkClient is a PAT workspace client on host, like the emulator's, with
// the SDK's rate limit set to rps (0: the SDK default, 15/s) and an HTTP
// transport (nil: the SDK's).
func sdkClient(host, token string, rps int, rt http.RoundTripper) (*databricks.WorkspaceClient, error) {
	return databricks.NewWorkspaceClient(&databricks.Config{
		Host: host, Token: token, Credentials: config.PatCredentials{}, AuthType: "pat",
		Loaders:              []config.Loader{noLoader{}},
		HostMetadataResolver: func(context.Context, string) (*config.HostMetadata, error) { return nil, nil },
		RateLimitPerSecond:   rps, HTTPTransport: rt,
	})
}

func mintOp(w *databricks.WorkspaceClient, endpoint string) op {
	return func(ctx context.Context) (time.Duration, error) {
		start := time.Now()
		_, err := w.Postgres.GenerateDatabaseCredential(ctx, postgres.GenerateDatabaseCredentialRequest{Endpoint: endpoint})
		return time.Since(start), err
	}
}

// breakdownCase is case 2b: what one connection of the docs sample's
// pattern (mint per connection) is made of. Part one opens connections
// back to back with the default client, as case 3 and 7 do; part two
// times each ingredient in paired cycles paced under the SDK's rate limit,
// against a connection with a token in hand.
func (env *Env) breakdownCase(ctx context.Context, o Options) ([]Row, error) {
	e := env.E
	const name = "2b. what minting per connection is made of"
	var rows []Row

	// Back to back with the process's one default client: the first 15
	// connections use the limiter's burst; after that each waits its turn.
	mc, closeFn, err := env.Connector(ctx, MintPerConn)
	if err != nil {
		return nil, err
	}
	// 45 connections drain the bucket (it refills at 15/s while they run)
	// before the steady state is sampled.
	lat, err := Connect(ctx, mc, 45+o.Breakdown)
	closeFn()
	if err != nil {
		return nil, err
	}
	burst, steady := MedianCI(floats(lat[:15], 1)), MedianCI(floats(lat[45:], 1))
	rows = append(rows,
		Row{Case: name, Contender: "mint per connection, back to back: first 15 (the limiter's burst)", Value: burst.Durations(10 * time.Microsecond), N: 15},
		Row{Case: name, Contender: "mint per connection, back to back: after 45 (the bucket drained)", Value: steady.Durations(10 * time.Microsecond), N: o.Breakdown,
			Note: fmt.Sprintf("the SDK's limiter admits one request per %v (15/s)", (time.Second / 15).Round(100*time.Microsecond))})

	// The ingredients, paced so the default client never waits.
	limit, _, err := env.Connector(ctx, Limit)
	if err != nil {
		return nil, err
	}
	def, err := fullClient(e.WorkspaceConfig())
	if err != nil {
		return nil, err
	}
	lifted, err := sdkClient(e.WorkspaceURL(), e.ServicePrincipalToken(), 1<<20, nil)
	if err != nil {
		return nil, err
	}
	// TLS to the API: the emulator's API is plain HTTP on loopback, so a
	// TLS reverse proxy in front of it stands for the workspace's TLS.
	target, err := url.Parse(e.WorkspaceURL())
	if err != nil {
		return nil, err
	}
	tlsFront := httptest.NewTLSServer(httputil.NewSingleHostReverseProxy(target))
	defer tlsFront.Close()
	keep := tlsFront.Client().Transport.(*http.Transport).Clone()
	fresh := keep.Clone()
	fresh.DisableKeepAlives = true
	defer keep.CloseIdleConnections()
	overTLS, err := sdkClient(tlsFront.URL, e.ServicePrincipalToken(), 1<<20, keep)
	if err != nil {
		return nil, err
	}
	overNewTLS, err := sdkClient(tlsFront.URL, e.ServicePrincipalToken(), 1<<20, fresh)
	if err != nil {
		return nil, err
	}
	body := fmt.Appendf(nil, `{"endpoint":%q}`, e.Endpoint())
	plain := func(ctx context.Context) (time.Duration, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.WorkspaceURL()+"/api/2.0/postgres/credentials", bytes.NewReader(body))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+e.ServicePrincipalToken())
		req.Header.Set("Content-Type", "application/json")
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		d := time.Since(start)
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("credential call: status %d", resp.StatusCode)
		}
		return d, nil
	}
	cs := []contender{
		{"new connection with a token in hand (the limit; its LDAP-checked login included)", connectOp(limit)},
		{"credential call: SDK default client, under its rate limit", mintOp(def, e.Endpoint())},
		{"credential call: SDK, limiter lifted", mintOp(lifted, e.Endpoint())},
		{"credential call: plain net/http, no SDK", plain},
		{"credential call: SDK over TLS, kept-alive connection", mintOp(overTLS, e.Endpoint())},
		{"credential call: SDK over TLS, new connection each call", mintOp(overNewTLS, e.Endpoint())},
	}
	if admin, err := pgx.ParseConfig(e.AdminConnString()); err == nil {
		cs = append(cs, contender{"new connection, SCRAM login instead of LDAP (the admin role)", connectOp(stdlib.GetConnector(*admin))})
	}
	samples, err := paired(ctx, cs, o.Breakdown, 3, mintPace, o.Seed)
	if err != nil {
		return nil, err
	}
	return append(rows, pairedRows(name, cs, samples, 10*time.Microsecond, 1, nil)...), nil
}

// poolCase is case 8: pgxpool configured by Connector.PoolConfig against
// pgxpool with a static password, for a new connection (an Acquire on an
// empty pool) and for SELECT 1 on an open pool.
func (env *Env) poolCase(ctx context.Context, o Options) ([]Row, error) {
	e := env.E
	const connName, queryName = "8a. pgxpool: Acquire that opens a new connection", "8b. pgxpool: SELECT 1 on an open pool, per query"
	cfg, err := env.connectorConfig()
	if err != nil {
		return nil, err
	}
	c, err := connector.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := c.TokenSource().Token(ctx); err != nil {
		return nil, err
	}
	ours, err := c.PoolConfig()
	if err != nil {
		return notAvailable(connName, fmt.Errorf("PoolConfig: %w", err)), nil
	}
	static, err := pgxpool.ParseConfig(fmt.Sprintf("host=%s port=%d dbname=%s user=%s sslmode=verify-full sslrootcert='%s'",
		e.Host(), e.Port(), e.Database(), e.ServicePrincipal(), e.CAFile()))
	if err != nil {
		return nil, err
	}
	static.ConnConfig.Password = e.MintToken(e.ServicePrincipal(), 24*time.Hour)
	var pools []*pgxpool.Pool
	for _, pc := range []*pgxpool.Config{static, ours} {
		pc.MinConns = 0
		p, err := pgxpool.NewWithConfig(ctx, pc)
		if err != nil {
			return nil, err
		}
		defer p.Close()
		pools = append(pools, p)
	}
	names := []string{"pgxpool, static password (the limit)", "pgxpool via Connector.PoolConfig()"}
	acquireNew := func(p *pgxpool.Pool) op {
		return func(ctx context.Context) (time.Duration, error) {
			start := time.Now()
			conn, err := p.Acquire(ctx)
			d := time.Since(start)
			if err != nil {
				return 0, err
			}
			_ = conn.Hijack().Close(ctx) // the next Acquire opens a new one
			return d, nil
		}
	}
	selectBatch := func(p *pgxpool.Pool) op { return selectOneBatch(o.QueryBatch, poolSelectOne(p)) }
	var cs []contender
	for i, p := range pools {
		cs = append(cs, contender{names[i], acquireNew(p)})
	}
	samples, err := paired(ctx, cs, o.PoolPairs, 5, 0, o.Seed)
	if err != nil {
		return nil, err
	}
	rows := pairedRows(connName, cs, samples, time.Microsecond, 1, nil)
	cs = cs[:0]
	for i, p := range pools {
		cs = append(cs, contender{names[i], selectBatch(p)})
	}
	if samples, err = paired(ctx, cs, o.PoolPairs, 5, 0, o.Seed); err != nil {
		return nil, err
	}
	return append(rows, pairedRows(queryName, cs, samples, 100*time.Nanosecond, o.QueryBatch, nil)...), nil
}

// wakeDelay is the emulator's wake-up time in the wake case (its default,
// and the order of magnitude the docs give).
const wakeDelay = 300 * time.Millisecond

// wakeCase is case 9: the first query after scale to zero through the
// emulator's front door, on both of the connector's paths (database/sql via
// OpenDB, pgxpool via PoolConfig), against the raw wake delay. Each cycle
// suspends the endpoint once per path, in alternating order.
func (env *Env) wakeCase(ctx context.Context, o Options) ([]Row, error) {
	e := env.E
	name := fmt.Sprintf("9. first query after scale to zero (wake delay %v, connections refused while waking)", wakeDelay)
	port := e.FrontDoorPort()
	if port == 0 {
		return notAvailable(name, errors.New("the emulator has no front door")), nil
	}
	cfg, err := env.connectorConfig()
	if err != nil {
		return nil, err
	}
	cfg.Port = port
	c, err := connector.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := c.TokenSource().Token(ctx); err != nil {
		return nil, err
	}
	db := sql.OpenDB(c)
	defer db.Close()
	db.SetMaxIdleConns(0) // every query logs in anew, as the first one after a wake-up must
	pc, err := c.PoolConfig()
	if err != nil {
		return nil, err
	}
	pc.AfterRelease = func(*pgx.Conn) bool { return false } // likewise: no connection survives a query
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	e.SetWakeMode(lakebasetest.WakeRefuse)
	e.SetWakeDelay(wakeDelay)
	defer e.SetWakeDelay(wakeDelay)
	defer e.Resume()
	paths := []struct {
		name  string
		query func(ctx context.Context) error
	}{
		{"lakebase connector, database/sql (retries within ConnectTimeout)", func(ctx context.Context) error {
			var one int
			return db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
		}},
		{"lakebase connector, pgxpool via PoolConfig (retries in its DialFunc)", func(ctx context.Context) error {
			var one int
			return pool.QueryRow(ctx, "SELECT 1").Scan(&one)
		}},
	}
	timed := func(q func(context.Context) error) (time.Duration, error) {
		start := time.Now()
		err := q(ctx)
		return time.Since(start), err
	}
	// Warm: the same query through the front door with the compute up.
	warm := make([][]time.Duration, len(paths))
	for i := 0; i < max(o.Wakes, 5); i++ {
		for j, p := range paths {
			d, err := timed(p.query)
			if err != nil {
				return nil, err
			}
			warm[j] = append(warm[j], d)
		}
	}
	e.ResetCalls()
	cold := make([][]time.Duration, len(paths))
	refused := make([]int64, len(paths))
	var wakes int64
	for i := 0; i < o.Wakes; i++ {
		for k := range paths {
			j := (i + k) % len(paths) // alternate which path goes first
			e.Suspend()
			before, wakesBefore := e.RefusedWhileWaking(), e.WakeUps()
			d, err := timed(paths[j].query)
			if err != nil {
				return nil, fmt.Errorf("%s: first query after a wake-up: %w", paths[j].name, err)
			}
			cold[j] = append(cold[j], d)
			refused[j] += e.RefusedWhileWaking() - before
			wakes += e.WakeUps() - wakesBefore
		}
	}
	calls := e.Calls(lakebasetest.RouteCredentials)
	rows := []Row{{Case: name, Contender: "the raw wake delay", Value: wakeDelay.String(), Ratio: "1 (baseline)"}}
	for j, p := range paths {
		delays := make([]time.Duration, len(cold[j]))
		for i := range delays {
			delays[i] = wakeDelay
		}
		est := MedianCI(ratios(cold[j], delays))
		warmEst := MedianCI(floats(warm[j], 1))
		coldEst := MedianCI(floats(cold[j], 1))
		rows = append(rows, Row{Case: name, Contender: p.name, Value: coldEst.Durations(100 * time.Microsecond), Ratio: est.Ratio(), N: len(cold[j]), Est: &est,
			Note: fmt.Sprintf("%v over the delay; warm first query through the same door %v; %.1f connections refused per wake-up",
				(time.Duration(coldEst.Median) - wakeDelay).Round(100*time.Microsecond), time.Duration(warmEst.Median).Round(100*time.Microsecond),
				float64(refused[j])/float64(max(len(cold[j]), 1)))})
	}
	rows[len(rows)-1].Note += fmt.Sprintf("; both paths: %d wake-ups, %d credential calls", wakes, calls)
	// pgx with a static password and no retry, as most programs are written.
	base, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d dbname=%s user=%s sslmode=verify-full sslrootcert='%s'",
		e.Host(), port, e.Database(), e.ServicePrincipal(), e.CAFile()))
	if err != nil {
		return nil, err
	}
	base.Password = e.MintToken(e.ServicePrincipal(), 24*time.Hour)
	raw := sql.OpenDB(stdlib.GetConnector(*base))
	defer raw.Close()
	raw.SetMaxIdleConns(0)
	tries := min(o.Wakes, 5)
	failed := 0
	var firstErr error
	for i := 0; i < tries; i++ {
		e.Suspend()
		var one int
		if err := raw.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
		}
		e.Resume()
	}
	note := "every first query succeeded (database/sql retried a bad connection)"
	if firstErr != nil {
		note = "error: " + firstErr.Error()
	}
	rows = append(rows, Row{Case: name, Contender: "pgx stdlib, static password, no retry", Value: fmt.Sprintf("%d of %d first queries failed", failed, tries), Note: note})
	return rows, nil
}

// userCase is case 10: per-user pools (package peruser) against a plain
// connector pool of the same user.
func (env *Env) userCase(ctx context.Context, o Options) ([]Row, error) {
	e := env.E
	const retName, newName = "10a. per user: returning user, SELECT 1", "10b. per user: a new user's first SELECT 1"
	base, err := env.connectorConfig()
	if err != nil {
		return nil, err
	}
	m, err := peruser.New(ctx, peruser.Config{Base: base, MaxUsers: 2*o.NewUsers + 10})
	if err != nil {
		return notAvailable(retName, fmt.Errorf("peruser.New: %w", err)), nil
	}
	defer m.Close()
	plainConfig := func(email, tok string) (connector.Config, error) {
		w := e.WorkspaceConfigFor(tok)
		cfg := base
		cfg.WorkspaceConfig, cfg.User = w, email
		cfg.Token = tokensource.Options{Mode: tokensource.Lazy}
		return cfg, nil
	}
	selectOne := func(ctx context.Context, db *sql.DB) error {
		var one int
		return db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
	}
	// Returning user.
	const email = "returning@example.com"
	tok, err := e.AddUser(ctx, email)
	if err != nil {
		return notAvailable(retName, fmt.Errorf("AddUser: %w", err)), nil
	}
	pcfg, err := plainConfig(email, tok)
	if err != nil {
		return nil, err
	}
	pc, err := connector.New(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	plain := connector.OpenDB(pc)
	defer plain.Close()
	id := peruser.Identity{Email: email, AccessToken: tok}
	cs := []contender{
		{"plain connector pool of that user (the baseline)", func(ctx context.Context) (time.Duration, error) {
			start := time.Now()
			err := selectOne(ctx, plain)
			return time.Since(start), err
		}},
		{"peruser: Acquire + SELECT 1 + release", func(ctx context.Context) (time.Duration, error) {
			start := time.Now()
			db, release, err := m.Acquire(ctx, id)
			if err != nil {
				return 0, err
			}
			err = selectOne(ctx, db)
			release()
			return time.Since(start), err
		}},
	}
	samples, err := paired(ctx, cs, o.UserPairs, 5, 0, o.Seed)
	if err != nil {
		return nil, err
	}
	st := m.Stats()
	rows := pairedRows(retName, cs, samples, 100*time.Nanosecond, 1, func(i int) string {
		if i == 1 {
			return fmt.Sprintf("token verifications: %d, pools created: %d, over %d acquires", st.Verifications, st.Created, o.UserPairs+5)
		}
		return ""
	})

	// New users: two fresh users per cycle, one for each contender.
	type user struct{ email, tok string }
	var users [2][]user
	for i := 0; i < o.NewUsers; i++ {
		for j := range users {
			em := fmt.Sprintf("new%d-%d@example.com", j, i)
			t, err := e.AddUser(ctx, em)
			if err != nil {
				return nil, err
			}
			users[j] = append(users[j], user{em, t})
		}
	}
	var next [2]int
	var mu sync.Mutex
	take := func(j int) user {
		mu.Lock()
		defer mu.Unlock()
		u := users[j][next[j]]
		next[j]++
		return u
	}
	var opened []*sql.DB
	defer func() {
		for _, db := range opened {
			_ = db.Close()
		}
	}()
	e.ResetCalls()
	cs = []contender{
		{"plain: workspace client + connector.New (lazy) + first SELECT 1", func(ctx context.Context) (time.Duration, error) {
			u := take(0)
			start := time.Now()
			cfg, err := plainConfig(u.email, u.tok)
			if err != nil {
				return 0, err
			}
			c, err := connector.New(ctx, cfg)
			if err != nil {
				return 0, err
			}
			db := connector.OpenDB(c)
			err = selectOne(ctx, db)
			d := time.Since(start)
			opened = append(opened, db)
			return d, err
		}},
		{"peruser: Acquire (verify token, build pool) + first SELECT 1", func(ctx context.Context) (time.Duration, error) {
			u := take(1)
			start := time.Now()
			db, release, err := m.Acquire(ctx, peruser.Identity{Email: u.email, AccessToken: u.tok})
			if err != nil {
				return 0, err
			}
			err = selectOne(ctx, db)
			release()
			return time.Since(start), err
		}},
	}
	if samples, err = paired(ctx, cs, o.NewUsers, 0, 0, o.Seed); err != nil {
		return nil, err
	}
	note := fmt.Sprintf("both contenders, %d new users each: %d credential calls, %d Me calls (peruser's token verification)", o.NewUsers, e.Calls(lakebasetest.RouteCredentials), e.Calls(lakebasetest.RouteMe))
	rows = append(rows, pairedRows(newName, cs, samples, 10*time.Microsecond, 1, func(i int) string {
		if i == 1 {
			return note
		}
		return ""
	})...)

	// New users verified by the login proof (apps without the
	// iam.current-user:read scope): the proof's credential and connection
	// are the pool's.
	const loginName = "10c. per user, login proof: a new user's first SELECT 1"
	ml, err := peruser.New(ctx, peruser.Config{Base: base, MaxUsers: 2*o.NewUsers + 10, Verify: peruser.VerifyLogin})
	if err != nil {
		return append(rows, notAvailable(loginName, fmt.Errorf("peruser.New: %w", err))...), nil
	}
	defer ml.Close()
	users = [2][]user{}
	next = [2]int{}
	for i := 0; i < o.NewUsers; i++ {
		for j := range users {
			em := fmt.Sprintf("login%d-%d@example.com", j, i)
			t, err := e.AddUser(ctx, em)
			if err != nil {
				return nil, err
			}
			users[j] = append(users[j], user{em, t})
		}
	}
	var logins [2]int64
	cs[1] = contender{"peruser, VerifyLogin: Acquire (mint, login proof, pool) + first SELECT 1", func(ctx context.Context) (time.Duration, error) {
		u := take(1)
		start := time.Now()
		db, release, err := ml.Acquire(ctx, peruser.Identity{Email: u.email, AccessToken: u.tok})
		if err != nil {
			return 0, err
		}
		err = selectOne(ctx, db)
		release()
		return time.Since(start), err
	}}
	e.ResetCalls()
	if samples, err = paired(ctx, cs, o.NewUsers, 0, 0, o.Seed); err != nil {
		return nil, err
	}
	for j := range users {
		for _, u := range users[j] {
			logins[j] += e.Logins(u.email)
		}
	}
	note = fmt.Sprintf("%d new users each: credential calls %d, Me calls %d; logins: plain %d, peruser %d", o.NewUsers, e.Calls(lakebasetest.RouteCredentials), e.Calls(lakebasetest.RouteMe), logins[0], logins[1])
	return append(rows, pairedRows(loginName, cs, samples, 10*time.Microsecond, 1, func(i int) string {
		if i == 1 {
			return note
		}
		return ""
	})...), nil
}

// refusedCase is case 11: credential calls made for logins the server
// refuses because the role does not exist (a new token cannot fix that).
func (env *Env) refusedCase(ctx context.Context, o Options) ([]Row, error) {
	e := env.E
	name := fmt.Sprintf("11. refused logins (role missing): %d sequential + %d concurrent attempts", o.Refused, o.Refused)
	const email = "norole@example.com"
	bearer := e.AddIdentityWithoutRole(email)
	w := e.WorkspaceConfigFor(bearer)
	full, err := fullClient(e.WorkspaceConfigFor(bearer)) // the docs sample's client
	if err != nil {
		return nil, err
	}
	// run makes the sequential and then the concurrent attempts; it
	// returns their durations and the first refusal, and fails if a login
	// succeeded.
	run := func(connect func(context.Context) error) (lat []time.Duration, firstErr error, bad error) {
		record := func(d time.Duration, err error) error {
			if err == nil {
				return errors.New("a login for a missing role succeeded")
			}
			lat = append(lat, d)
			if firstErr == nil {
				firstErr = err
			}
			return nil
		}
		for i := 0; i < o.Refused; i++ {
			start := time.Now()
			err := connect(ctx)
			if bad := record(time.Since(start), err); bad != nil {
				return nil, nil, bad
			}
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := 0; i < o.Refused; i++ {
			wg.Go(func() {
				start := time.Now()
				err := connect(ctx)
				d := time.Since(start)
				mu.Lock()
				defer mu.Unlock()
				if b := record(d, err); b != nil {
					bad = b
				}
			})
		}
		wg.Wait()
		return lat, firstErr, bad
	}
	var rows []Row
	// This library: the connector as an App would build it for that role.
	cfg, err := env.connectorConfig()
	if err != nil {
		return nil, err
	}
	cfg.WorkspaceConfig, cfg.User = w, email
	e.ResetCalls()
	c, err := connector.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	lat, firstErr, bad := run(func(ctx context.Context) error {
		conn, err := c.Connect(ctx)
		if err == nil {
			_ = conn.Close()
		}
		return err
	})
	_ = c.Close()
	if bad != nil {
		return nil, bad
	}
	calls := e.Calls(lakebasetest.RouteCredentials)
	verdict := "target ≤ 3: met"
	if calls > 3 {
		verdict = "target ≤ 3: NOT met"
	}
	var le *connector.LoginError
	reason := ""
	if errors.As(firstErr, &le) {
		reason = fmt.Sprintf("; LoginError %s (%v)", le.Code, le.Reason)
	}
	rows = append(rows, Row{Case: name, Contender: "lakebase connector (eager)", Value: fmt.Sprintf("%d credential calls", calls), N: len(lat),
		Note: fmt.Sprintf("%s, startup fetch included; median refused attempt %v%s", verdict, Median(lat).Round(100*time.Microsecond), reason)})
	// The docs sample's pattern.
	base, err := env.baseConn()
	if err != nil {
		return nil, err
	}
	base.User = email
	mint := stdlib.GetConnector(*base, stdlib.OptionBeforeConnect(func(ctx context.Context, cc *pgx.ConnConfig) error {
		cred, err := full.Postgres.GenerateDatabaseCredential(ctx, postgres.GenerateDatabaseCredentialRequest{Endpoint: e.Endpoint()})
		if err != nil {
			return err
		}
		cc.Password = cred.Token
		return nil
	}))
	e.ResetCalls()
	lat, _, bad = run(func(ctx context.Context) error {
		conn, err := mint.Connect(ctx)
		if err == nil {
			_ = conn.Close()
		}
		return err
	})
	if bad != nil {
		return nil, bad
	}
	rows = append(rows, Row{Case: name, Contender: string(MintPerConn), Value: fmt.Sprintf("%d credential calls", e.Calls(lakebasetest.RouteCredentials)), N: len(lat),
		Note: fmt.Sprintf("median refused attempt %v (the SDK's 15/s limiter included)", Median(lat).Round(100*time.Microsecond))})
	return rows, nil
}
