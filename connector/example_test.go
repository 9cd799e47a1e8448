package connector_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/lakebase-go/lakebase/connector"
)

// A configuration problem is reported up front, naming the setting and the
// fix.
func ExampleNew_configError() {
	_, err := connector.New(context.Background(), connector.Config{
		Endpoint:  "my-endpoint",
		LookupEnv: func(string) (string, bool) { return "", false },
	})
	var ce *connector.ConfigError
	fmt.Println(errors.As(err, &ce), ce.Setting)
	fmt.Println(ce.Fix)
	// Output:
	// true Endpoint (LAKEBASE_ENDPOINT)
	// use the form "projects/{project}/branches/{branch}/endpoints/{endpoint}"
}

// In a Databricks App the environment carries everything: LAKEBASE_ENDPOINT,
// PGHOST, PGUSER, DATABRICKS_HOST and the service principal's credentials.
func ExampleOpenDB() {
	ctx := context.Background()
	c, err := connector.New(ctx, connector.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	db := connector.OpenDB(c)
	defer db.Close() // stops the token refresh too
	var user string
	_ = db.QueryRowContext(ctx, "SELECT current_user").Scan(&user)
}

// A writer and a reader from one Config: the reader connects to the
// endpoint's read-only host and shares the writer's workspace client and
// token cache.
func ExampleConnector_Reader() {
	ctx := context.Background()
	w, err := connector.New(ctx, connector.Config{}) // LAKEBASE_ENDPOINT, DATABRICKS_HOST, ...
	if err != nil {
		fmt.Println(err)
		return
	}
	writer := connector.OpenDB(w)
	defer writer.Close()
	r, err := w.Reader(ctx) // a *ConfigError naming ReadOnly if the endpoint has no read-only host
	if err != nil {
		fmt.Println(err)
		return
	}
	reader := connector.OpenDB(r)
	defer reader.Close()
	_, _ = writer.ExecContext(ctx, "INSERT INTO notes (body) VALUES ('hi')")
	var n int
	_ = reader.QueryRowContext(ctx, "SELECT count(*) FROM notes").Scan(&n) // may lag the insert
}

// libpq's prefer-standby would fall back to the primary silently; the
// connector refuses it before any network call.
func ExampleConfig_Validate_readOnly() {
	env := map[string]string{"LAKEBASE_ENDPOINT": "projects/p/branches/b/endpoints/e", "PGTARGETSESSIONATTRS": "prefer-standby"}
	err := connector.Config{LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}.Validate()
	var ce *connector.ConfigError
	fmt.Println(errors.As(err, &ce), ce.Setting)
	// Output:
	// true ReadOnly (PGTARGETSESSIONATTRS)
}
