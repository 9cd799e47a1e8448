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
	_, err = driver.ParseDSN("lakebase_endpiont=x host=h password=secret")
	fmt.Println(err.(*driver.DSNError).Key)
	// An unquoted password with a space: nothing after "password=" is shown.
	_, err = driver.ParseDSN("host=h password=Tr0ub4dor correcthorse=batterystaple")
	fmt.Println(err.(*driver.DSNError).Problem)
	// Output:
	// app@example.com db.example.com appdb projects/p/branches/b/endpoints/e lazy
	// lakebase_endpiont
	// a setting after the unquoted value of key "password" is not valid (not shown: it may be part of the password)
}
