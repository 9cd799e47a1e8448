// Command compare runs the benchmark cases of package bench side by side on
// one local emulator and prints a Markdown table: each contender's median
// with its 95 % interval and its paired ratio to the baseline of its case.
//
//	go run ./bench/cmd/compare               # the README table (about 10 minutes)
//	go run ./bench/cmd/compare -quick        # a fast smoke run (about a minute)
//	go run ./bench/cmd/compare -cases 2,2b   # selected cases
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/lakebase-go/lakebase/bench"
)

func main() {
	quick := flag.Bool("quick", false, "small sizes (about a minute instead of ten)")
	pairs := flag.Int("pairs", 0, "interleaved cycles of case 2, new connection (0: the preset's)")
	cases := flag.String("cases", "", "comma-separated case numbers to run, e.g. 2,2b,8 (empty: all)")
	seed := flag.Uint64("seed", 0, "seed of the contender shuffling (0: the preset's)")
	flag.Parse()
	o := bench.Full
	if *quick {
		o = bench.Quick
	}
	if *pairs > 0 {
		o.ConnectPairs = *pairs
	}
	if *seed != 0 {
		o.Seed = *seed
	}
	if *cases != "" {
		o.Cases = strings.Split(*cases, ",")
	}
	if _, err := bench.Compare(context.Background(), os.Stdout, o); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}
