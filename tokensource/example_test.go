package tokensource_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/databricks/databricks-sdk-go/client"
	"github.com/databricks/databricks-sdk-go/config"
	"github.com/databricks/databricks-sdk-go/service/postgres"
	"go.opentelemetry.io/otel/attribute"

	"github.com/lakebase-go/lakebase/tokensource"
)

func ExampleNew() {
	mints := 0
	fetch := func(context.Context) (tokensource.Token, error) {
		mints++ // one call of the credential API
		return tokensource.Token{Value: "secret", Expiry: time.Now().Add(time.Hour)}, nil
	}
	ts := tokensource.New(fetch, tokensource.Options{Mode: tokensource.Lazy})
	defer ts.Close()
	for i := 0; i < 3; i++ {
		tok, err := ts.Token(context.Background())
		if err != nil {
			panic(err)
		}
		_ = tok.Value // the Postgres password
	}
	tok, _ := ts.Token(context.Background())
	fmt.Println("mints:", mints, "printed token:", tok.String()[:16])
	// Output: mints: 1 printed token: Token{REDACTED,
}

func ExampleStatic() {
	src := tokensource.Static("native-password", time.Time{})
	tok, _ := src.Token(context.Background())
	fmt.Printf("%v\n", tok)
	// Output: Token{REDACTED, no expiry}
}

// EndpointFetcher mints credentials through the Databricks SDK; Cached
// keeps one valid and refreshes it ahead of expiry. The SDK's client
// package with only its postgres service links far less than
// databricks.NewWorkspaceClient (whose w.Postgres works as well).
func ExampleEndpointFetcher() {
	c, err := client.New(&config.Config{}) // DATABRICKS_HOST and credentials from the environment
	if err != nil {
		log.Fatal(err)
	}
	fetch, err := tokensource.EndpointFetcher(postgres.NewPostgres(c), "projects/my-project/branches/production/endpoints/primary",
		tokensource.EndpointOptions{TTL: 30 * time.Minute})
	if err != nil {
		log.Fatal(err)
	}
	ts := tokensource.New(fetch, tokensource.Options{
		Attributes: []attribute.KeyValue{attribute.String("lakebase.endpoint", "primary")},
	})
	defer ts.Close()
	tok, err := ts.Token(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(tok) // prints the expiry, never the token
}
