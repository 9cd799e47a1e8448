package peruser_test

import (
	"fmt"
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
