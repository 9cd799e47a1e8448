package driver

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strings"
	"sync"

	"github.com/databricks/databricks-sdk-go/config"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/tokensource"
)

// Name is the name the driver is registered under.
const Name = "lakebase"

func init() {
	sql.Register(Name, &lakebaseDriver{})
}

// lakebaseDriver is the "lakebase" database/sql driver. Use it through
// sql.Open; database/sql calls OpenConnector once per sql.Open.
type lakebaseDriver struct{}

var (
	_ driver.Driver        = (*lakebaseDriver)(nil)
	_ driver.DriverContext = (*lakebaseDriver)(nil)
	_ driver.Connector     = (*dsnConnector)(nil)
	_ io.Closer            = (*dsnConnector)(nil)
)

// Open opens one connection outside any pool. It builds a lazy connector
// (no background goroutine), connects, and releases the connector again, so
// nothing outlives the returned connection. database/sql never calls it
// because Driver implements driver.DriverContext.
func (d *lakebaseDriver) Open(dsn string) (driver.Conn, error) {
	parsed, err := ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	parsed.Config.Token.Mode = tokensource.Lazy
	c := newConnector(d, parsed)
	defer c.Close()
	return c.Connect(context.Background())
}

// OpenConnector parses dsn, checks every setting that needs no network
// (keys and values, environment fallbacks, sslmode, the root certificate
// file, endpoint form: see connector.Config.Validate) and returns a
// connector that builds a connector.Connector on first use, bounded by that
// use's context. So sql.Open fails at once on a bad setting, with a
// *DSNError or a *connector.ConfigError; it never echoes a value.
func (d *lakebaseDriver) OpenConnector(dsn string) (driver.Connector, error) {
	parsed, pairs, err := parse(dsn)
	if err != nil {
		return nil, err
	}
	if parsed.Profile == "" {
		if err := parsed.Config.Validate(); err != nil {
			return nil, valueError(pairs, err)
		}
	}
	return newConnector(d, parsed), nil
}

// dsnKeys maps the Setting of a *connector.ConfigError from Validate to the
// DSN keys that set it.
var dsnKeys = map[string][]string{
	"SSLMode (" + connector.EnvSSLMode + ")":         {"sslmode"},
	"SSLRootCert (" + connector.EnvSSLRootCert + ")": {"sslrootcert"},
	"Host (" + connector.EnvHost + ")":               {"host"},
	"Port":                                           {"port"},
	"Endpoint (" + connector.EnvEndpoint + ")":       {"lakebase_endpoint"},
	"ConnectTimeout":                                 {"connect_timeout"},
	"TokenTTL":                                       {"token_ttl", "lakebase_instance"},
	"Host/Port/Database/User":                        {"host", "port", "dbname", "database", "user", "application_name"},
	"Endpoint/Instance (LAKEBASE_ENDPOINT/LAKEBASE_INSTANCE)": {"lakebase_endpoint", "lakebase_instance"},
}

// valueError turns a *connector.ConfigError about a value the DSN gave into
// a *DSNError naming the key, with no part of any value of the DSN in it
// (the ConfigError would quote a host, a mode or a file name). An error
// about a setting the DSN left to the environment is returned as it is.
func valueError(pairs []pair, err error) error {
	var ce *connector.ConfigError
	if !errors.As(err, &ce) {
		return err
	}
	key := ""
	for _, k := range dsnKeys[ce.Setting] {
		for _, p := range pairs {
			if p.key == k {
				key = k
				break
			}
		}
		if key != "" {
			break
		}
	}
	if key == "" {
		return err
	}
	de := &DSNError{Key: key, Problem: withoutValues(ce.Problem, pairs), Fix: withoutValues(ce.Fix, pairs)}
	var pe *fs.PathError
	if errors.As(ce, &pe) {
		de.cause = pe.Err // "no such file or directory", without the path
	}
	return de
}

// withoutValues replaces every value of the DSN, and every word of one,
// where it stands as a word of msg (the fixed text around a value may
// contain the same letters inside a longer word: "verify" in
// "verify-full").
func withoutValues(msg string, pairs []pair) string {
	var vals []string
	for _, p := range pairs {
		vals = append(vals, p.val)
		if f := strings.Fields(p.val); len(f) > 1 {
			vals = append(vals, f...)
		}
	}
	sort.Slice(vals, func(i, j int) bool { return len(vals[i]) > len(vals[j]) })
	for _, v := range vals {
		if v != "" {
			msg = replaceWord(msg, v, "the value")
		}
	}
	return msg
}

// replaceWord replaces the occurrences of w in s that are not part of a
// longer word.
func replaceWord(s, w, with string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, w)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		end := i + len(w)
		if (i == 0 || !wordByte(s[i-1])) && (end == len(s) || !wordByte(s[end])) {
			if i > 0 && end < len(s) && s[i-1] == '"' && s[end] == '"' {
				i, end = i-1, end+1 // drop the quotes around it too
			}
			b.WriteString(s[:i] + with)
		} else {
			b.WriteString(s[:end])
		}
		s = s[end:]
	}
}

func wordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '/'
}

// dsnConnector is the driver.Connector returned by OpenConnector. The
// underlying connector.Connector (and its token cache) is created by the
// first Connect, with that call's context; a failed creation is retried by
// the next Connect.
type dsnConnector struct {
	dsn *DSN // behind a pointer: fmt's output through unexported fields never reaches the password
	drv *lakebaseDriver

	build  chan struct{} // a one-slot semaphore: one build at a time, waiters honour ctx
	mu     sync.Mutex
	inner  *connector.Connector
	closed bool
}

func newConnector(d *lakebaseDriver, dsn DSN) *dsnConnector {
	return &dsnConnector{dsn: &dsn, drv: d, build: make(chan struct{}, 1)}
}

// Connect implements driver.Connector.
func (c *dsnConnector) Connect(ctx context.Context) (driver.Conn, error) {
	inner, err := c.get(ctx)
	if err != nil {
		return nil, err
	}
	return inner.Connect(ctx)
}

func (c *dsnConnector) current() (*connector.Connector, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("driver: %w", tokensource.ErrClosed)
	}
	return c.inner, nil
}

func (c *dsnConnector) get(ctx context.Context) (*connector.Connector, error) {
	if inner, err := c.current(); inner != nil || err != nil {
		return inner, err
	}
	select {
	case c.build <- struct{}{}:
		defer func() { <-c.build }()
	case <-ctx.Done():
		return nil, fmt.Errorf("driver: waiting for the connector to be built: %w", ctx.Err())
	}
	if inner, err := c.current(); inner != nil || err != nil {
		return inner, err
	}
	cfg := c.dsn.Config
	if c.dsn.Profile != "" {
		cfg.WorkspaceConfig = &config.Config{Profile: c.dsn.Profile}
	}
	inner, err := connector.New(ctx, cfg)
	if err != nil {
		var ce *connector.ConfigError
		if c.dsn.Profile != "" && errors.As(err, &ce) && strings.HasPrefix(ce.Setting, connector.EnvDatabricksHost) {
			return nil, &connector.ConfigError{Setting: "databricks_profile", Problem: "cannot use the workspace of the profile", Fix: "check the profile name in ~/.databrickscfg (or DATABRICKS_CONFIG_FILE), its credentials and that its host can be reached", Err: err}
		}
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed { // closed while building
		_ = inner.Close()
		return nil, fmt.Errorf("driver: %w", tokensource.ErrClosed)
	}
	c.inner = inner
	return inner, nil
}

// Driver implements driver.Connector.
func (c *dsnConnector) Driver() driver.Driver { return c.drv }

// Close closes the underlying connector, stopping its token refresh.
// database/sql calls it from DB.Close.
func (c *dsnConnector) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if c.inner != nil {
		return c.inner.Close()
	}
	return nil
}
