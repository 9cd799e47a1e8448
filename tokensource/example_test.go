package tokensource_test

import (
	"context"
	"fmt"
	"time"

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
