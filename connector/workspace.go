package connector

import (
	"context"

	"github.com/databricks/databricks-sdk-go/config"
	"github.com/databricks/databricks-sdk-go/service/database"
	"github.com/databricks/databricks-sdk-go/service/iam"
	"github.com/databricks/databricks-sdk-go/service/postgres"

	"github.com/lakebase-go/lakebase/tokensource"
)

// Workspace is the part of a Databricks workspace client the connector
// calls: the SDK's postgres service (autoscaling credentials and
// endpoints), its database service (provisioned instances), its current
// user (the Postgres role) and its config (the workspace URL, for
// messages). A nil service is never called unless the configuration needs
// it. A program that has a *databricks.WorkspaceClient w passes
//
//	&connector.Workspace{Config: w.Config, Postgres: w.Postgres, Database: w.Database, CurrentUser: w.CurrentUser}
//
// It holds neither the full client nor the SDK's full service interfaces
// because a configuration type that does keeps every service call of the
// SDK, with its types, in every program, and importing the full client
// compiles all of the SDK's services (measured, stripped: 30.4 MB for a
// connector program that held a *databricks.WorkspaceClient, 21.0 MB now).
type Workspace struct {
	Config      *config.Config
	Postgres    PostgresAPI
	Database    DatabaseAPI
	CurrentUser CurrentUserAPI
}

// PostgresAPI is what the connector calls of the SDK's postgres service
// (postgres.PostgresInterface has it): credentials and the endpoint's host.
type PostgresAPI interface {
	tokensource.EndpointAPI
	GetEndpoint(ctx context.Context, request postgres.GetEndpointRequest) (*postgres.Endpoint, error)
}

// DatabaseAPI is what the connector calls of the SDK's database service
// (database.DatabaseInterface has it): credentials and the instance's host.
type DatabaseAPI interface {
	tokensource.InstanceAPI
	GetDatabaseInstance(ctx context.Context, request database.GetDatabaseInstanceRequest) (*database.DatabaseInstance, error)
}

// CurrentUserAPI is what the connector calls of the SDK's iam current-user
// service (iam.CurrentUserInterface has it): the workspace identity, whose
// user name is the Postgres role.
type CurrentUserAPI interface {
	Me(ctx context.Context, request iam.MeRequest) (*iam.User, error)
}
