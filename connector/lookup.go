package connector

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"

	"github.com/databricks/databricks-sdk-go"
	"github.com/databricks/databricks-sdk-go/apierr"
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
// workspace client. It returns the client it built, if any (still bound to
// ctx until released).
func lookup(ctx context.Context, r *resolved) (*sdkclient.Bounded, error) {
	c := &r.Config
	if c.Host != "" && c.User != "" {
		return nil, nil
	}
	var built *sdkclient.Bounded
	if c.Workspace == nil {
		b, err := sdkclient.Build(ctx, nil)
		if err != nil {
			return nil, workspaceError(err, "", "build the Databricks workspace client")
		}
		if b.Client.Config == nil || b.Client.Config.Host == "" {
			b.Release()
			b.Close()
			return nil, &ConfigError{Setting: EnvDatabricksHost, Problem: "not set, and no Databricks profile provides a workspace URL, so " + missingWhat(c) + " cannot be looked up",
				Fix: "set DATABRICKS_HOST (https://<workspace>.cloud.databricks.com) with credentials (DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET, DATABRICKS_TOKEN or a profile), or set Config.Host/PGHOST and Config.User/PGUSER"}
		}
		c.Workspace = b.Client
		built = b
	}
	fail := func(err error) (*sdkclient.Bounded, error) {
		if built != nil {
			built.Release()
			built.Close()
		}
		return nil, err
	}
	if c.Host == "" {
		if err := lookupHost(ctx, r, built); err != nil {
			return fail(err)
		}
	}
	if c.User == "" {
		var me *iam.User
		err := bounded(ctx, built, func() (err error) {
			me, err = c.Workspace.CurrentUser.Me(ctx, iam.MeRequest{})
			return err
		})
		if err != nil {
			ce := workspaceError(err, workspaceHost(c.Workspace), "look up the Postgres role (GET /api/2.0/preview/scim/v2/Me)")
			var ae *apierr.APIError
			if errors.As(err, &ae) && ae.StatusCode != 401 {
				ce = &ConfigError{Setting: "User (" + EnvUser + ")", Problem: "cannot look up the Postgres role from the workspace identity", Err: err, detail: tokensource.Scrub(err.Error()),
					Fix: "set Config.User or PGUSER to your Databricks user email or service principal application id"}
			}
			return fail(ce)
		}
		if me == nil || me.UserName == "" {
			return fail(&ConfigError{Setting: "User (" + EnvUser + ")", Problem: "the workspace returned no user name for its identity", Fix: "set Config.User or PGUSER to your Databricks user email or service principal application id"})
		}
		c.User = me.UserName
	}
	if built != nil {
		built.Release()
	}
	return built, nil
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
func lookupHost(ctx context.Context, r *resolved, built *sdkclient.Bounded) error {
	c := &r.Config
	var (
		host, pooled, setting, op string
	)
	err := bounded(ctx, built, func() error {
		if c.Endpoint != "" {
			setting, op = "Endpoint ("+EnvEndpoint+")", "look up the endpoint's host (GET /api/2.0/postgres/"+c.Endpoint+")"
			ep, err := c.Workspace.Postgres.GetEndpoint(ctx, postgres.GetEndpointRequest{Name: c.Endpoint})
			if err == nil && ep != nil && ep.Status != nil && ep.Status.Hosts != nil {
				host, pooled = ep.Status.Hosts.Host, ep.Status.Hosts.ReadWritePooledHost
			}
			return err
		}
		setting, op = "Instance ("+EnvInstance+")", "look up the instance's host"
		inst, err := c.Workspace.Database.GetDatabaseInstance(ctx, database.GetDatabaseInstanceRequest{Name: c.Instance})
		if err == nil && inst != nil {
			host = inst.ReadWriteDns
		}
		return err
	})
	if err != nil {
		var ae *apierr.APIError
		if errors.As(err, &ae) && ae.StatusCode == 404 {
			return &ConfigError{Setting: setting, Problem: "not found in the workspace " + workspaceHost(c.Workspace), Fix: "check the name (databricks postgres list-endpoints), or set Config.Host / PGHOST", Err: err, detail: tokensource.Scrub(err.Error())}
		}
		if errors.As(err, &ae) && ae.StatusCode == 403 {
			return &ConfigError{Setting: setting, Problem: "the workspace identity may not read it", Fix: "grant the identity CAN_USE on the project, or set Config.Host / PGHOST", Err: err, detail: tokensource.Scrub(err.Error())}
		}
		return workspaceError(err, workspaceHost(c.Workspace), op)
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
// comes first. A client this package built fails its requests at once after
// ctx ends, so f returns soon after; a caller's own client may go on in
// the background until the SDK gives up.
func bounded(ctx context.Context, built *sdkclient.Bounded, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		if err != nil && built != nil {
			err = built.Cause(err)
		}
		return err
	case <-ctx.Done():
		err := ctx.Err()
		if built != nil {
			err = built.Cause(err)
		}
		return err
	}
}

// workspaceHost is the workspace URL of w, for messages.
func workspaceHost(w *databricks.WorkspaceClient) string {
	if w == nil || w.Config == nil {
		return ""
	}
	return w.Config.Host
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

// lazyWorkspace builds the default workspace client on the first token
// fetch, so that New makes no network call when Host and User are known.
type lazyWorkspace struct {
	mu sync.Mutex
	b  *sdkclient.Bounded
}

func (l *lazyWorkspace) get(ctx context.Context) (*databricks.WorkspaceClient, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b != nil {
		return l.b.Client, nil
	}
	b, err := sdkclient.Build(ctx, nil)
	if err != nil {
		return nil, workspaceError(err, "", "build the Databricks workspace client")
	}
	b.Release()
	if b.Client.Config == nil || b.Client.Config.Host == "" {
		b.Close()
		return nil, &ConfigError{Setting: EnvDatabricksHost, Problem: "not set, and no Databricks profile provides a workspace URL, so no token can be minted",
			Fix: "set DATABRICKS_HOST with credentials (DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET, DATABRICKS_TOKEN or a profile), or pass Config.Workspace"}
	}
	l.b = b
	return b.Client, nil
}

// built returns the client if it has been built.
func (l *lazyWorkspace) built() *databricks.WorkspaceClient {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b == nil {
		return nil
	}
	return l.b.Client
}

func (l *lazyWorkspace) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b != nil {
		l.b.Close()
	}
}
