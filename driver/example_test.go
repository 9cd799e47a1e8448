package driver_test

import (
	"fmt"

	"github.com/lakebase-go/lakebase/driver"
)

func ExampleParseDSN() {
	d, err := driver.ParseDSN("postgres://app%40example.com:pw@db.example.com/appdb?lakebase_endpoint=projects/p/branches/b/endpoints/e&refresh=lazy")
	if err != nil {
		panic(err)
	}
	fmt.Println(d.Config.User, d.Config.Host, d.Config.Database, d.Config.Endpoint, d.Config.Token.Mode)
	_, err = driver.ParseDSN("host=h lakebase_endpiont=x password=secret")
	fmt.Println(err.(*driver.DSNError).Key)
	// Output:
	// app@example.com db.example.com appdb projects/p/branches/b/endpoints/e lazy
	// lakebase_endpiont
}
