package connector

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"

	"github.com/databricks/databricks-sdk-go/apierr"
	"github.com/databricks/databricks-sdk-go/config"
	"github.com/databricks/databricks-sdk-go/service/database"
	"github.com/databricks/databricks-sdk-go/service/iam"
	"github.com/databricks/databricks-sdk-go/service/postgres"

	"github.com/lakebase-go/lakebase/internal/sdkclient"
	"github.com/lakebase-go/lakebase/tokensource"
)

// EnvDatabricksHost is the workspace URL variable of the Databricks SDK's
// unified authentication; errors about the workspace name it.
const EnvDatabricksHost = "DATABRICKS_HOST"

// lookup is the second stage of New and its only network step: it looks up
// what is still missing (the host from the endpoint or instance, the user
// from the workspace identity). With Host and User known it makes no call
// at all. Every call is bounded by ctx, including building the default
// workspace client, and no lock is held across any of them.
func lookup(ctx context.Context, r *resolved, ws *workspace) error {
	c := &r.Config
	if c.Host != "" && c.User != "" {
		return nil
	}
	w, err := ws.get(ctx, missingWhat(c)+" cannot be looked up")
	if err != nil {
		return asConfigError(err)
	}
	unbind := w.Bind(ctx)
	defer unbind()
	if c.Host == "" {
		if err := lookupHost(ctx, r, w); err != nil {
			return err
		}
	}
	if c.User == "" {
		var me *iam.User
		err := bounded(ctx, w, func() (err error) {
			me, err = w.CurrentUser.Me(ctx, iam.MeRequest{})
			return err
		})
		if err != nil {
			ce := workspaceError(err, w.Host(), "look up the Postgres role (GET /api/2.0/preview/scim/v2/Me)")
			var ae *apierr.APIError
			if errors.As(err, &ae) && ae.StatusCode != 401 {
				ce = &ConfigError{Setting: "User (" + EnvUser + ")", Problem: "cannot look up the Postgres role from the workspace identity", Err: err, detail: tokensource.Scrub(err.Error()),
					Fix: "set Config.User or PGUSER to your Databricks user email or service principal application id"}
			}
			return ce
		}
		if me == nil || me.UserName == "" {
			return &ConfigError{Setting: "User (" + EnvUser + ")", Problem: "the workspace returned no user name for its identity", Fix: "set Config.User or PGUSER to your Databricks user email or service principal application id"}
		}
		c.User = me.UserName
	}
	return nil
}

func missingWhat(c *Config) string {
	switch {
	case c.Host == "" && c.User == "":
		return "the Postgres host and role"
	case c.Host == "":
		return "the Postgres host"
	}
	return "the Postgres role"
}

// lookupHost fills Host from the endpoint or instance.
func lookupHost(ctx context.Context, r *resolved, w *sdkclient.Client) error {
	c := &r.Config
	var (
		host, pooled, setting, op string
		primary                   string // with ReadOnly: the primary host the look-up reported
	)
	err := bounded(ctx, w, func() error {
		if c.Endpoint != "" {
			setting, op = "Endpoint ("+EnvEndpoint+")", "look up the endpoint's host (GET /api/2.0/postgres/"+c.Endpoint+")"
			ep, err := w.Postgres.GetEndpoint(ctx, postgres.GetEndpointRequest{Name: c.Endpoint})
			if err == nil && ep != nil && ep.Status != nil && ep.Status.Hosts != nil {
				host, pooled = ep.Status.Hosts.Host, ep.Status.Hosts.ReadWritePooledHost
				if c.ReadOnly {
					primary, host, pooled = host, ep.Status.Hosts.ReadOnlyHost, ep.Status.Hosts.ReadOnlyPooledHost
				}
			}
			return err
		}
		setting, op = "Instance ("+EnvInstance+")", "look up the instance's host"
		inst, err := w.Database.GetDatabaseInstance(ctx, database.GetDatabaseInstanceRequest{Name: c.Instance})
		if err == nil && inst != nil {
			host = inst.ReadWriteDns
			if c.ReadOnly {
				primary, host = host, inst.ReadOnlyDns
			}
		}
		return err
	})
	if err != nil {
		var ae *apierr.APIError
		if errors.As(err, &ae) && ae.StatusCode == 404 {
			return &ConfigError{Setting: setting, Problem: "not found in the workspace " + w.Host(), Fix: "check the name (databricks postgres list-endpoints), or set Config.Host / PGHOST", Err: err, detail: tokensource.Scrub(err.Error())}
		}
		if errors.As(err, &ae) && ae.StatusCode == 403 {
			return &ConfigError{Setting: setting, Problem: "the workspace identity may not read it", Fix: "grant the identity CAN_USE on the project, or set Config.Host / PGHOST", Err: err, detail: tokensource.Scrub(err.Error())}
		}
		return workspaceError(err, w.Host(), op)
	}
	if host == "" && primary != "" {
		return noReadOnlyHostError(c, primary)
	}
	if host == "" {
		return &ConfigError{Setting: setting, Problem: "the workspace reported no host (is the compute running?)", Fix: "start the endpoint, or set Config.Host / PGHOST"}
	}
	if pooled != "" && strings.EqualFold(host, pooled) && c.Password == "" {
		return poolerError(host)
	}
	c.Host = host
	return nil
}

// bounded runs f and returns when it does or when ctx is done, whichever
// comes first. A client this package built is bound to ctx and fails its
// requests at once after ctx ends, so f returns soon after; a caller's own
// client may go on in the background until the SDK gives up.
func bounded(ctx context.Context, w *sdkclient.Client, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		if err != nil && ctx.Err() != nil {
			err = w.Cause(err)
		}
		return err
	case <-ctx.Done():
		return w.Cause(ctx.Err())
	}
}

// workspaceError attributes a failed workspace call to the setting a user
// must change: the workspace URL when it cannot be reached, the credentials
// when the workspace refuses them, and otherwise the call that failed.
func workspaceError(err error, host, op string) *ConfigError {
	ce := classifyWorkspaceError(err, host, op)
	// The SDK's error text can quote a response body: show it scrubbed.
	ce.detail = tokensource.Scrub(err.Error())
	return ce
}

func classifyWorkspaceError(err error, host, op string) *ConfigError {
	where := "the workspace"
	if host != "" {
		where = "the workspace " + host
	}
	var (
		ne  *sdkclient.NetworkError
		ae  *apierr.APIError
		ue  *url.Error
		dns *net.DNSError
		op2 *net.OpError
	)
	msg := err.Error()
	switch {
	case errors.As(err, &ne), errors.As(err, &dns), errors.As(err, &op2), errors.As(err, &ue),
		errors.Is(err, context.DeadlineExceeded) && !errors.As(err, &ae):
		return &ConfigError{Setting: EnvDatabricksHost, Problem: "cannot " + op + ": " + where + " cannot be reached", Err: err,
			Fix: "check DATABRICKS_HOST (https://<workspace>.cloud.databricks.com) and that this machine can reach it; or set Config.Host/PGHOST and Config.User/PGUSER"}
	case errors.As(err, &ae) && (ae.StatusCode == 401 || ae.StatusCode == 403):
		return &ConfigError{Setting: EnvDatabricksHost + " credentials", Problem: "cannot " + op + ": " + where + " refused the credentials" + authTried(err), Err: err,
			Fix: "check DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET (OAuth M2M), DATABRICKS_TOKEN or the profile, and that they belong to " + where}
	case strings.Contains(msg, "cannot configure default credentials"), strings.Contains(msg, "default auth"),
		strings.Contains(msg, "oidc"), strings.Contains(msg, "oauth"), strings.Contains(msg, "inner token"):
		return &ConfigError{Setting: EnvDatabricksHost + " credentials", Problem: "cannot " + op + ": no usable Databricks credentials" + authTried(err), Err: err,
			Fix: "set DATABRICKS_HOST with DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET (OAuth M2M, what Databricks Apps provide), DATABRICKS_TOKEN, or a profile; or pass Config.Workspace"}
	}
	return &ConfigError{Setting: EnvDatabricksHost, Problem: "cannot " + op, Err: err,
		Fix: "check the workspace settings (DATABRICKS_HOST and credentials) and the workspace's status; or set Config.Host/PGHOST and Config.User/PGUSER"}
}

// authTried names the SDK auth type in err's message, if any.
func authTried(err error) string {
	msg := err.Error()
	for _, t := range []string{"oauth-m2m", "pat", "databricks-cli", "basic", "azure-client-secret", "metadata-service", "github-oidc"} {
		if strings.Contains(msg, t+":") || strings.Contains(msg, "auth: "+t) {
			return fmt.Sprintf(" (auth type %s)", t)
		}
	}
	return ""
}

// workspace is the connector's workspace client: the caller's
// (Config.Workspace), or one built from Config.WorkspaceConfig (nil: the
// SDK's unified authentication) by the first call that needs it — a look-up
// in New, else the first token fetch. One build runs at a time, bounded by
// its caller's ctx and by close; no lock is held across it, so close never
// waits on the network, and nothing is built after close.
type workspace struct {
	settings *config.Config // what to build from (nil: the environment)

	ctx    context.Context // cancelled by close: ends a build in flight
	cancel context.CancelFunc

	mu       sync.Mutex
	c        *sdkclient.Client
	own      bool          // c was built here: close closes it
	building chan struct{} // closed when the build in flight ends
	closed   bool
}

func newWorkspace(c *Config) *workspace {
	ctx, cancel := context.WithCancel(context.Background())
	ws := &workspace{settings: c.WorkspaceConfig, ctx: ctx, cancel: cancel}
	if c.Workspace != nil {
		w := c.Workspace
		ws.c = sdkclient.FromServices(w.Config, w.Postgres, w.Database, w.CurrentUser)
	}
	return ws
}

// get returns the client, building it if need be; why says what the
// client is needed for, in the error for a workspace without a host.
func (ws *workspace) get(ctx context.Context, why string) (*sdkclient.Client, error) {
	for {
		ws.mu.Lock()
		switch {
		case ws.closed:
			ws.mu.Unlock()
			return nil, fmt.Errorf("connector: %w", tokensource.ErrClosed)
		case ws.c != nil:
			c := ws.c
			ws.mu.Unlock()
			return c, nil
		case ws.building != nil:
			wait := ws.building
			ws.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("connector: waiting for the workspace client to be built: %w", ctx.Err())
			}
		}
		done := make(chan struct{})
		ws.building = done
		ws.mu.Unlock()

		c, err := ws.build(ctx, why)
		ws.mu.Lock()
		ws.building = nil
		close(done)
		if err == nil && ws.closed {
			c.Close()
			c, err = nil, fmt.Errorf("connector: %w", tokensource.ErrClosed)
		}
		if err == nil {
			ws.c, ws.own = c, true
		}
		ws.mu.Unlock()
		return c, err
	}
}

func (ws *workspace) build(ctx context.Context, why string) (*sdkclient.Client, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ws.ctx, cancel)
	defer stop()
	c, err := sdkclient.Build(ctx, ws.settings)
	if ws.ctx.Err() != nil {
		if c != nil {
			c.Close()
		}
		return nil, fmt.Errorf("connector: %w", tokensource.ErrClosed)
	}
	if err != nil {
		return nil, &buildError{err: err, ce: workspaceError(err, "", "build the Databricks workspace client")}
	}
	if c.Host() == "" {
		c.Close()
		return nil, &ConfigError{Setting: EnvDatabricksHost, Problem: "not set, and no Databricks profile provides a workspace URL, so " + why,
			Fix: "set DATABRICKS_HOST (https://<workspace>.cloud.databricks.com) with credentials (DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET, DATABRICKS_TOKEN or a profile), set Config.Host/PGHOST and Config.User/PGUSER, or pass Config.Workspace"}
	}
	return c, nil
}

// built returns the client if there is one.
func (ws *workspace) built() *sdkclient.Client {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return ws.c
}

// close ends a build in flight, refuses later builds and closes the idle
// connections of a client built here. It does not wait.
func (ws *workspace) close() {
	ws.cancel()
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ws.closed = true
	if ws.own && ws.c != nil {
		ws.c.Close()
	}
}

// asConfigError returns the *ConfigError of a failed build (what New and
// WorkspaceConfig report: the setting to check), else err.
func asConfigError(err error) error {
	var be *buildError
	if errors.As(err, &be) {
		return be.ce
	}
	return err
}

// buildError is a failed build of the workspace client: a *ConfigError
// naming DATABRICKS_HOST (what New reports), unless the workspace could not
// be reached, which is transient for a token fetch: the token cache then
// retries with backoff instead of remembering a configuration error.
type buildError struct {
	err error        // the SDK's error
	ce  *ConfigError // the same, attributed to a setting
}

func (e *buildError) Error() string { return e.ce.Error() }

// Unwrap returns the *ConfigError, and the network failure when there is
// one, so that errors.As reaches both.
func (e *buildError) Unwrap() []error {
	var ne *sdkclient.NetworkError
	if errors.As(e.err, &ne) {
		return []error{e.ce, ne}
	}
	return []error{e.ce}
}

// Transient reports whether the workspace could not be reached (a refused
// or reset connection, a timeout), which may pass; an unknown host or an
// untrusted certificate cannot.
func (e *buildError) Transient() bool {
	var ne *sdkclient.NetworkError
	return errors.As(e.err, &ne) && !ne.Permanent()
}
