package peruser_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/lakebase-go/lakebase/peruser"
)

func ExampleIdentityFromRequest() {
	r := httptest.NewRequest("GET", "/todos", nil)
	r.Header.Set(peruser.HeaderEmail, "ada@example.com")
	_, err := peruser.IdentityFromRequest(r) // no access token
	fmt.Println(err, peruser.StatusCode(err))

	r.Header.Set(peruser.HeaderAccessToken, "eyJhbGciOi.secret")
	id, err := peruser.IdentityFromRequest(r)
	fmt.Printf("%v %v\n", id, err) // the token is never printed
	// Output:
	// peruser: X-Forwarded-Access-Token: missing or empty 401
	// Identity{ada@example.com, user } <nil>
}

// A Config.ErrorHandler renders Middleware's error responses; StatusCode
// gives the status the default handler would answer with. Here a request
// without an access token.
func ExampleConfig_errorHandler() {
	cfg := peruser.Config{
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			code := peruser.StatusCode(err)
			w.WriteHeader(code)
			fmt.Fprintf(w, "<h1>%d</h1><p>Please sign in again.</p>", code)
		},
	}
	r := httptest.NewRequest("GET", "/todos", nil)
	r.Header.Set(peruser.HeaderEmail, "ada@example.com")
	_, err := peruser.IdentityFromRequest(r)
	rec := httptest.NewRecorder()
	cfg.ErrorHandler(rec, r, err)
	fmt.Println(rec.Code, rec.Body.String())
	// Output:
	// 401 <h1>401</h1><p>Please sign in again.</p>
}
