// Command pgxpool uses the connector's token hook with pgxpool.
package main

import (
	"context"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/examples/internal/demo"
)

func main() { demo.Main(run) }

func run(ctx context.Context, out io.Writer) error {
	env, release, err := demo.Setup(ctx, out)
	if err != nil {
		return err
	}
	defer release()
	c, err := connector.New(ctx, env.Config)
	if err != nil {
		return err
	}
	defer c.Close()
	pc, err := c.PoolConfig() // BeforeConnect sets the current token
	if err != nil {
		return err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return err
	}
	defer pool.Close()
	var user string
	var n int
	if err := pool.QueryRow(ctx, "SELECT current_user, $1::int + 1", 41).Scan(&user, &n); err != nil {
		return err
	}
	s := pool.Stat()
	fmt.Fprintf(out, "pgxpool connected as %s, answer %d; pool: total=%d idle=%d\n", user, n, s.TotalConns(), s.IdleConns())
	return nil
}
