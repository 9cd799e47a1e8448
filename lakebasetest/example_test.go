package lakebasetest_test

import (
	"context"
	"fmt"

	"github.com/lakebase-go/lakebase/lakebasetest"
)

// A program (not a test) starts the emulator with New and closes it.
func ExampleNew() {
	e, err := lakebasetest.New(context.Background())
	if err != nil {
		fmt.Println(err) // wraps ErrPostgresNotFound without PostgreSQL
		return
	}
	defer e.Close()
	fmt.Println(e.Host(), e.Database(), e.Endpoint())
}

// A hot standby served as the endpoint's read_only_host, paused replay and
// a failover.
func ExampleEmulator_StartStandby() {
	ctx := context.Background()
	e, err := lakebasetest.New(ctx, lakebasetest.WithStandby())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer e.Close()
	s := e.Standby()
	_ = s.PauseReplay(ctx) // commits on the primary stay invisible on s.Host()
	_ = s.ResumeReplay(ctx)
	_ = s.CatchUp(ctx)    // everything committed so far is visible on the standby
	_ = e.Failover(ctx)   // the primary's address now reaches the promoted standby
	fmt.Println(s.Host()) // 127.0.0.3
}
