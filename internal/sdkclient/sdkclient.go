// Package sdkclient builds Databricks workspace clients from nothing but a
// host and a bearer token (see DESIGN.md, SDK traps): no DATABRICKS_*
// environment variables, no ~/.databrickscfg profile, and no
// /.well-known/databricks-config lookup that could hang for minutes.
package sdkclient

import (
	"context"

	"github.com/databricks/databricks-sdk-go"
	"github.com/databricks/databricks-sdk-go/config"
)

type noLoader struct{}

func (noLoader) Name() string                   { return "lakebase-no-loader" }
func (noLoader) Configure(*config.Config) error { return nil }

// PAT returns a client for host that authenticates with token only.
func PAT(host, token string) (*databricks.WorkspaceClient, error) {
	return databricks.NewWorkspaceClient(&databricks.Config{
		Host:                 host,
		Token:                token,
		Credentials:          config.PatCredentials{},
		AuthType:             "pat",
		Loaders:              []config.Loader{noLoader{}},
		HostMetadataResolver: func(context.Context, string) (*config.HostMetadata, error) { return nil, nil },
	})
}
