package driver

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
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
	parsed, err := ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	if parsed.Profile == "" {
		if err := parsed.Config.Validate(); err != nil {
			return nil, err
		}
	}
	return newConnector(d, parsed), nil
}

// dsnConnector is the driver.Connector returned by OpenConnector. The
// underlying connector.Connector (and its token cache) is created by the
// first Connect, with that call's context; a failed creation is retried by
// the next Connect.
type dsnConnector struct {
	dsn DSN
	drv *lakebaseDriver

	build  chan struct{} // a one-slot semaphore: one build at a time, waiters honour ctx
	mu     sync.Mutex
	inner  *connector.Connector
	closed bool
}

func newConnector(d *lakebaseDriver, dsn DSN) *dsnConnector {
	return &dsnConnector{dsn: dsn, drv: d, build: make(chan struct{}, 1)}
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
