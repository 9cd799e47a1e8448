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
