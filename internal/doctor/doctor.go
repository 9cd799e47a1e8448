package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/databricks/databricks-sdk-go/apierr"
	"github.com/databricks/databricks-sdk-go/service/database"
	"github.com/databricks/databricks-sdk-go/service/iam"
	"github.com/databricks/databricks-sdk-go/service/postgres"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/internal/sdkclient"
	"github.com/lakebase-go/lakebase/tokensource"
)

// Status is a stage's outcome.
type Status int

// The outcomes.
const (
	OK      Status = iota + 1 // the stage passed
	Failed                    // the stage failed: the walk stops here
	Skipped                   // the stage does not apply (its detail says why)
)

// String names the status as the report prints it.
func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case Failed:
		return "FAIL"
	case Skipped:
		return "skip"
	}
	return "?"
}

// Stage is one step of the walk.
type Stage struct {
	Name     string
	Status   Status
	Duration time.Duration
	Detail   string // what was found (never a secret)
	Err      error  // the failure
	Fix      string // what to do about the failure
}

// Options are the inputs of Run.
type Options struct {
	// Config is the connector configuration as the command line gave it:
	// a set field came from a flag. Zero fields fall back to the
	// environment (LookupEnv) exactly as in connector.New.
	Config connector.Config
	// StageTimeout bounds each network stage except TCP and login (bounded
	// by the connector's ConnectTimeout). Zero: 30 s.
	StageTimeout time.Duration
}

// Run walks the stages and calls report after each; it returns true when
// every stage passed (or did not apply).
func Run(ctx context.Context, o Options, report func(Stage)) bool {
	w := &walk{o: o, report: report}
	if w.o.StageTimeout <= 0 {
		w.o.StageTimeout = 30 * time.Second
	}
	if w.o.Config.LookupEnv == nil {
		w.o.Config.LookupEnv = os.LookupEnv
	}
	if w.o.Config.Logger == nil {
		w.o.Config.Logger = slog.New(slog.DiscardHandler)
	}
	defer w.cleanup()
	for _, st := range []struct {
		name string
		f    func(ctx context.Context) (string, error)
	}{
		{"settings", w.settings},
		{"workspace", w.workspace},
		{"workspace credentials", w.credentials},
		{"identity", w.identity},
		{"host", w.lookupHost},
		{"database credential", w.credential},
		{"dns", w.dns},
		{"tcp (with wake-up)", w.tcp},
		{"tls", w.handshake},
		{"login", w.login},
		{"query", w.query},
	} {
		start := time.Now()
		detail, err := st.f(ctx)
		s := Stage{Name: st.name, Status: OK, Duration: time.Since(start), Detail: detail}
		var sk skip
		switch {
		case errors.As(err, &sk):
			s.Status, s.Detail = Skipped, string(sk)
		case err != nil:
			s.Status, s.Err = Failed, err
			s.Fix = fixOf(err)
		}
		report(s)
		if s.Status == Failed {
			return false
		}
	}
	return true
}

// skip marks a stage that does not apply.
type skip string

func (s skip) Error() string { return string(s) }

// failure is a stage error with its fix.
type failure struct {
	msg string
	fix string
	err error
}

func (f *failure) Error() string {
	if f.err != nil {
		return f.msg + ": " + tokensource.Scrub(f.err.Error())
	}
	return f.msg
}

func (f *failure) Unwrap() error { return f.err }

var _ error = (*failure)(nil)

func fail(msg, fix string, err error) error { return &failure{msg: msg, fix: fix, err: err} }

// fixOf returns the fix of a stage error: its own, or the one the
// library's error text ends with.
func fixOf(err error) string {
	var f *failure
	if errors.As(err, &f) && f.fix != "" {
		return f.fix
	}
	var ce *connector.ConfigError
	if errors.As(err, &ce) && ce.Fix != "" {
		return ce.Fix
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, "(fix: "); i >= 0 && strings.HasSuffix(msg, ")") {
		return msg[i+len("(fix: ") : len(msg)-1]
	}
	return ""
}

// walk is the state carried from stage to stage.
type walk struct {
	o      Options
	report func(Stage)

	ws      *sdkclient.Client
	me      string
	conn    *connector.Connector
	host    string
	port    int
	tcpConn net.Conn
	sslOK   bool // the server answered S to the SSLRequest
	dc      driver.Conn
}

func (w *walk) cleanup() {
	if w.dc != nil {
		_ = w.dc.Close()
	}
	if w.tcpConn != nil {
		_ = w.tcpConn.Close()
	}
	if w.conn != nil {
		_ = w.conn.Close()
	}
	if w.ws != nil {
		w.ws.Close()
	}
}

func (w *walk) env(key string) string {
	v, _ := w.o.Config.LookupEnv(key)
	return strings.TrimSpace(v)
}

// origin says where a setting's value comes from.
func (w *walk) origin(flagValue string, vars ...string) string {
	if flagValue != "" {
		return "flag"
	}
	for _, v := range vars {
		if w.env(v) != "" {
			return v
		}
	}
	return ""
}

// settings resolves every local setting as connector.New does, with no
// network.
func (w *walk) settings(context.Context) (string, error) {
	c := w.o.Config
	if err := c.Validate(); err != nil {
		return "", err
	}
	var parts []string
	add := func(name, value, from, def string) {
		switch {
		case value != "" && from != "":
			parts = append(parts, fmt.Sprintf("%s=%s (%s)", name, value, from))
		case def != "":
			parts = append(parts, fmt.Sprintf("%s=%s", name, def))
		}
	}
	val := func(flag string, vars ...string) string {
		if flag != "" {
			return flag
		}
		for _, v := range vars {
			if x := w.env(v); x != "" {
				return x
			}
		}
		return ""
	}
	endpoint, instance := val(c.Endpoint, connector.EnvEndpoint), val(c.Instance, connector.EnvInstance)
	if c.Endpoint == "" && c.Instance != "" {
		endpoint = ""
	}
	add("endpoint", endpoint, w.origin(c.Endpoint, connector.EnvEndpoint), "")
	add("instance", instance, w.origin(c.Instance, connector.EnvInstance), "")
	add("host", val(c.Host, connector.EnvHost), w.origin(c.Host, connector.EnvHost), "(looked up)")
	port := ""
	if c.Port != 0 {
		port = strconv.Itoa(c.Port)
	}
	add("port", val(port, connector.EnvPort), w.origin(port, connector.EnvPort), strconv.Itoa(connector.DefaultPort))
	add("database", val(c.Database, connector.EnvDatabase), w.origin(c.Database, connector.EnvDatabase), connector.DefaultDatabase)
	add("user", val(c.User, connector.EnvUser, connector.EnvClientID), w.origin(c.User, connector.EnvUser, connector.EnvClientID), "(the workspace identity)")
	add("sslmode", val(c.SSLMode, connector.EnvSSLMode), w.origin(c.SSLMode, connector.EnvSSLMode), "verify-full")
	add("sslrootcert", val(c.SSLRootCert, connector.EnvSSLRootCert), w.origin(c.SSLRootCert, connector.EnvSSLRootCert), "(system roots)")
	ct := val("", connector.EnvConnectTimeout)
	if ct != "" {
		ct += "s"
	}
	add("connect_timeout", ct, w.origin("", connector.EnvConnectTimeout), connector.DefaultConnectTimeout.String())
	switch {
	case c.WorkspaceConfig != nil && c.WorkspaceConfig.Profile != "":
		parts = append(parts, "workspace=profile "+c.WorkspaceConfig.Profile+" (flag)")
	case w.env("DATABRICKS_HOST") != "":
		parts = append(parts, "workspace="+w.env("DATABRICKS_HOST")+" (DATABRICKS_HOST)")
	case w.env("DATABRICKS_CONFIG_PROFILE") != "":
		parts = append(parts, "workspace=profile "+w.env("DATABRICKS_CONFIG_PROFILE")+" (DATABRICKS_CONFIG_PROFILE)")
	default:
		parts = append(parts, "workspace=the DEFAULT profile of ~/.databrickscfg, if any")
	}
	return strings.Join(parts, ", "), nil
}

// workspace builds the workspace client (the SDK's unified auth) and
// checks that its host answers HTTP at all.
func (w *walk) workspace(ctx context.Context) (string, error) {
	if ws := w.o.Config.Workspace; ws != nil {
		w.ws = sdkclient.FromServices(ws.Config, ws.Postgres, ws.Database, ws.CurrentUser)
	} else {
		ctx, cancel := context.WithTimeout(ctx, w.o.StageTimeout)
		defer cancel()
		cl, err := sdkclient.Build(ctx, w.o.Config.WorkspaceConfig) // nil: the SDK's unified authentication
		if err != nil {
			return "", workspaceFailure("cannot set up the Databricks workspace client", err)
		}
		w.ws = cl
	}
	host := w.ws.Host()
	if host == "" {
		return "", fail("no workspace URL: DATABRICKS_HOST is not set and no profile provides one",
			"set DATABRICKS_HOST (https://<workspace>.cloud.databricks.com) with credentials, or pass --profile / run databricks auth login", nil)
	}
	ctx, cancel := context.WithTimeout(ctx, w.o.StageTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(host, "/")+"/.well-known/databricks-config", nil)
	if err != nil {
		return "", fail("the workspace URL "+host+" is not a URL", "set DATABRICKS_HOST to https://<workspace>.cloud.databricks.com", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fail("the workspace "+host+" cannot be reached", "check DATABRICKS_HOST (https://<workspace>.cloud.databricks.com) and that this machine can reach it (proxy, firewall, VPN)", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	auth := ""
	if w.ws.Config != nil && w.ws.Config.AuthType != "" {
		auth = ", auth type " + w.ws.Config.AuthType
	}
	return fmt.Sprintf("%s answers (HTTP %d%s)", host, resp.StatusCode, auth), nil
}

func workspaceFailure(msg string, err error) error {
	text := err.Error()
	switch {
	case strings.Contains(text, "cannot configure default credentials"), strings.Contains(text, "default auth"):
		return fail(msg+": no usable Databricks credentials", "set DATABRICKS_HOST with DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET (OAuth M2M), DATABRICKS_TOKEN, or a profile (databricks auth login)", err)
	case strings.Contains(text, "profile"):
		return fail(msg, "check the profile name (databricks auth profiles) or run databricks auth login --profile NAME", err)
	}
	return fail(msg, "check DATABRICKS_HOST and the Databricks credentials in the environment or profile", err)
}

// credentials asks the workspace who the credentials belong to.
func (w *walk) credentials(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, w.o.StageTimeout)
	defer cancel()
	defer w.ws.Bind(ctx)()
	me, err := bounded(ctx, func() (*iam.User, error) { return w.ws.CurrentUser.Me(ctx, iam.MeRequest{}) })
	if err != nil {
		var ae *apierr.APIError
		if errors.As(err, &ae) && (ae.StatusCode == 401 || ae.StatusCode == 403) {
			return "", fail(fmt.Sprintf("the workspace refused the credentials (HTTP %d)", ae.StatusCode),
				"check DATABRICKS_TOKEN, DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET or the profile, and that they belong to this workspace", err)
		}
		if isNetwork(err) {
			return "", fail("the workspace cannot be reached", "check DATABRICKS_HOST and the network", err)
		}
		return "", fail("cannot read the workspace identity (GET /api/2.0/preview/scim/v2/Me)", "check the Databricks credentials; or set PGUSER to your role", err)
	}
	if me == nil || me.UserName == "" {
		return "", fail("the workspace returned no user name", "set PGUSER (or --user) to your Databricks user email or service principal application id", nil)
	}
	w.me = me.UserName
	return "accepted for " + me.UserName, nil
}

// identity checks that the role the connector logs in as is the identity
// that mints the tokens.
func (w *walk) identity(context.Context) (string, error) {
	c := w.o.Config
	user := c.User
	from := "flag"
	if user == "" {
		if user, from = w.env(connector.EnvUser), connector.EnvUser; user == "" {
			user, from = w.env(connector.EnvClientID), connector.EnvClientID
		}
	}
	if user == "" {
		return "role " + w.me + " (the workspace identity)", nil
	}
	if user != w.me {
		return "", fail(fmt.Sprintf("the role %q (%s) is not the workspace identity %q: Lakebase binds a credential to the identity that minted it, so its logins as %q would be refused", user, from, w.me, user),
			fmt.Sprintf("unset %s (the role is then %q), or use the credentials of %q", from, w.me, user), nil)
	}
	return fmt.Sprintf("role %s (%s) is the workspace identity", user, from), nil
}

// lookupHost finds the Postgres host as connector.New would.
func (w *walk) lookupHost(ctx context.Context) (string, error) {
	c := w.o.Config
	if h := firstNonEmpty(c.Host, w.env(connector.EnvHost)); h != "" {
		return h + " (given, not looked up)", nil
	}
	ctx, cancel := context.WithTimeout(ctx, w.o.StageTimeout)
	defer cancel()
	defer w.ws.Bind(ctx)()
	endpoint := firstNonEmpty(c.Endpoint, w.env(connector.EnvEndpoint))
	if c.Instance != "" {
		endpoint = ""
	}
	var host, pooled, what string
	var err error
	if endpoint != "" {
		what = "endpoint " + endpoint
		var ep *postgres.Endpoint
		ep, err = bounded(ctx, func() (*postgres.Endpoint, error) {
			return w.ws.Postgres.GetEndpoint(ctx, postgres.GetEndpointRequest{Name: endpoint})
		})
		if err == nil && ep != nil && ep.Status != nil && ep.Status.Hosts != nil {
			host, pooled = ep.Status.Hosts.Host, ep.Status.Hosts.ReadWritePooledHost
		}
	} else {
		inst := firstNonEmpty(c.Instance, w.env(connector.EnvInstance))
		what = "instance " + inst
		var di *database.DatabaseInstance
		di, err = bounded(ctx, func() (*database.DatabaseInstance, error) {
			return w.ws.Database.GetDatabaseInstance(ctx, database.GetDatabaseInstanceRequest{Name: inst})
		})
		if err == nil && di != nil {
			host = di.ReadWriteDns
		}
	}
	if err != nil {
		var ae *apierr.APIError
		switch {
		case errors.As(err, &ae) && ae.StatusCode == 404:
			return "", fail(what+" does not exist in this workspace", "check the name (databricks postgres list-endpoints), or set PGHOST", err)
		case errors.As(err, &ae) && ae.StatusCode == 403:
			return "", fail("the workspace identity may not read "+what, "grant it CAN_USE on the project, or set PGHOST", err)
		}
		return "", fail("cannot look up the host of "+what, "check the workspace's status, or set PGHOST", err)
	}
	if host == "" {
		return "", fail("the workspace reports no host for "+what+" (is the compute running?)", "start the endpoint, or set PGHOST", nil)
	}
	if pooled != "" && strings.EqualFold(host, pooled) {
		return "", fail(host+" is the connection pooler, which refuses token logins", "use the endpoint's direct host", nil)
	}
	return host + " (from " + what + ")", nil
}

// credential builds the connector (connector.New: the same resolution
// and look-ups) and mints a database credential.
func (w *walk) credential(ctx context.Context) (string, error) {
	cfg := w.o.Config
	cfg.Workspace = &connector.Workspace{Config: w.ws.Config, Postgres: w.ws.Postgres, Database: w.ws.Database, CurrentUser: w.ws.CurrentUser}
	cfg.WorkspaceConfig = nil // the client built from it is passed instead
	ctx, cancel := context.WithTimeout(ctx, w.o.StageTimeout)
	defer cancel()
	c, err := connector.New(ctx, cfg)
	if err != nil {
		return "", err
	}
	w.conn = c
	rc := c.Config()
	w.host, w.port = rc.Host, rc.Port
	tok, err := c.TokenSource().Token(ctx)
	if err != nil {
		var te *tokensource.Error
		if errors.As(err, &te) && te.Kind == tokensource.KindAuth {
			return "", fail("the workspace refused to mint a database credential", "the identity needs access to the Lakebase project (CAN_USE) and, for an end user's token, the postgres API scope", err)
		}
		return "", fail("cannot mint a database credential", "check the endpoint or instance and the workspace's status", err)
	}
	return fmt.Sprintf("minted for %s, valid for %v", c.Role(), time.Until(tok.Expiry).Round(time.Second)), nil
}

func (w *walk) dns(ctx context.Context) (string, error) {
	if ip := net.ParseIP(strings.Trim(w.host, "[]")); ip != nil {
		return "", skip(w.host + " is an IP address")
	}
	if strings.HasPrefix(w.host, "/") {
		return "", skip(w.host + " is a Unix socket directory")
	}
	ctx, cancel := context.WithTimeout(ctx, w.o.StageTimeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, w.host)
	if err != nil {
		return "", fail("cannot resolve "+w.host, "check the host name (PGHOST or the endpoint's host) and this machine's DNS", err)
	}
	return w.host + " -> " + strings.Join(addrs, ", "), nil
}

// tcp connects and sends an SSLRequest, retrying the way a waking endpoint
// fails (refused, reset, closed before answering) until ConnectTimeout.
func (w *walk) tcp(ctx context.Context) (string, error) {
	timeout := w.conn.Config().ConnectTimeout
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addr := net.JoinHostPort(w.host, strconv.Itoa(w.port))
	wait := 50 * time.Millisecond
	var last error
	for attempt := 1; ; attempt++ {
		c, answer, err := probe(ctx, addr)
		if err == nil {
			w.tcpConn, w.sslOK = c, answer == 'S'
			woke := ""
			if attempt > 1 {
				woke = fmt.Sprintf(" after %d attempts (the endpoint was waking up)", attempt)
			}
			return fmt.Sprintf("%s accepts connections%s", addr, woke), nil
		}
		last = err
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", fail(fmt.Sprintf("%s did not accept a connection within %v (%d attempts; the endpoint may be suspended and waking slowly, or the host or port is wrong)", addr, timeout, attempt),
				"retry in a moment; raise PGCONNECT_TIMEOUT; check the compute's state in the workspace and the host/port", last)
		case <-t.C:
		}
		wait = min(wait*2, time.Second)
	}
}

// probe dials addr and sends an SSLRequest; a server that answers S or N
// is up.
func probe(ctx context.Context, addr string) (net.Conn, byte, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, 0, err
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	req := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), 80877103)
	if _, err := c.Write(req); err != nil {
		_ = c.Close()
		return nil, 0, err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		_ = c.Close()
		return nil, 0, fmt.Errorf("closed before answering: %w", err)
	}
	if b[0] != 'S' && b[0] != 'N' {
		_ = c.Close()
		return nil, 0, fmt.Errorf("answered %q to an SSLRequest: not a PostgreSQL server", b[0])
	}
	return c, b[0], nil
}

// handshake completes the TLS handshake on the probe connection with the
// connector's TLS configuration (verify-full) and describes the
// certificate.
func (w *walk) handshake(ctx context.Context) (string, error) {
	defer func() { _ = w.tcpConn.Close() }()
	cfg := w.conn.ConnConfig().TLSConfig
	if cfg == nil {
		return "", skip("sslmode=disable: the connection is not encrypted (Lakebase refuses unencrypted logins)")
	}
	if !w.sslOK {
		return "", fail("the server does not accept TLS (it answered N to the SSLRequest)", "check the host and port: Lakebase always offers TLS", nil)
	}
	ctx, cancel := context.WithTimeout(ctx, w.o.StageTimeout)
	defer cancel()
	tc := tls.Client(w.tcpConn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		var ua x509.UnknownAuthorityError
		var he x509.HostnameError
		var ci x509.CertificateInvalidError
		switch {
		case errors.As(err, &ua):
			return "", fail("the server certificate is not signed by a trusted CA", "set PGSSLROOTCERT to the CA file that signed it (or leave it unset for Lakebase's publicly trusted certificates)", err)
		case errors.As(err, &he):
			return "", fail("the server certificate is not valid for "+w.host, "connect with the host name the certificate names (the endpoint's host), not an IP address or alias", err)
		case errors.As(err, &ci):
			return "", fail("the server certificate is invalid (expired or not yet valid)", "check the machine's clock; if the certificate really expired, contact the server's owner", err)
		}
		return "", fail("TLS handshake failed", "check PGSSLMODE/PGSSLROOTCERT and that the port is the Postgres port", err)
	}
	st := tc.ConnectionState()
	detail := tls.VersionName(st.Version)
	if len(st.PeerCertificates) > 0 {
		leaf := st.PeerCertificates[0]
		detail += fmt.Sprintf(", certificate %q issued by %q, valid until %s, name %s verified", leaf.Subject.CommonName, leaf.Issuer.CommonName, leaf.NotAfter.Format(time.DateOnly), cfg.ServerName)
	}
	_ = tc.Close()
	return detail, nil
}

// login opens a connection through the connector: its whole login path.
func (w *walk) login(ctx context.Context) (string, error) {
	dc, err := w.conn.Connect(ctx)
	if err != nil {
		return "", err
	}
	w.dc = dc
	return fmt.Sprintf("logged in as %s to database %s", w.conn.Role(), w.conn.Database()), nil
}

func (w *walk) query(ctx context.Context) (string, error) {
	sc, ok := w.dc.(*stdlib.Conn)
	if !ok {
		return "", fail(fmt.Sprintf("unexpected driver connection %T", w.dc), "", nil)
	}
	ctx, cancel := context.WithTimeout(ctx, w.o.StageTimeout)
	defer cancel()
	var user, db, version string
	if err := sc.Conn().QueryRow(ctx, "SELECT current_user, current_database(), version()").Scan(&user, &db, &version); err != nil {
		return "", fail("the query failed", "see the server's message", err)
	}
	if i := strings.Index(version, " on "); i > 0 {
		version = version[:i]
	}
	return fmt.Sprintf("SELECT current_user = %s, database %s, %s", user, db, version), nil
}

// bounded runs f and returns when it does or when ctx ends.
func bounded[T any](ctx context.Context, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := f()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

func isNetwork(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded)
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
