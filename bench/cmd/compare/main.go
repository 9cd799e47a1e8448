// Command compare runs the benchmark cases of package bench side by side on
// one local emulator and prints a Markdown table of medians and ratios:
//
//	go run ./bench/cmd/compare          # the README table
//	go run ./bench/cmd/compare -quick   # a fast smoke run
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/lakebase-go/lakebase/bench"
)

func main() {
	quick := flag.Bool("quick", false, "small sizes (seconds instead of minutes)")
	rounds := flag.Int("rounds", 0, "interleaved rounds per case (0: the preset's)")
	flag.Parse()
	o := bench.Full
	if *quick {
		o = bench.Quick
	}
	if *rounds > 0 {
		o.Rounds = *rounds
	}
	if _, err := bench.Compare(context.Background(), os.Stdout, o); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}
