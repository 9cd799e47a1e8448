package bench

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// op is one timed operation of a contender (one new connection, one batch
// of queries, ...). It returns the duration it measured itself, so setup
// and teardown around the timed part stay out of the figure.
type op func(ctx context.Context) (time.Duration, error)

// contender is a named op.
type contender struct {
	name string
	op   op
}

// paired runs cycles of every contender's op, interleaved: each cycle runs
// each contender once, in a freshly shuffled order (A C B, B A C, ...), so a
// load spike, a GC or a CPU frequency change hits every contender alike
// and no contender always follows another. The first warm cycles are
// discarded. pace, if set, is the least duration of a cycle (the rest is
// waited out after the cycle, outside every timed part) for contenders that
// must stay under a client-side rate limit. It returns samples[i][c], the
// duration of contender i in cycle c.
func paired(ctx context.Context, cs []contender, cycles, warm int, pace time.Duration, seed uint64) ([][]time.Duration, error) {
	rng := rand.New(rand.NewPCG(seed, 15))
	out := make([][]time.Duration, len(cs))
	for i := range out {
		out[i] = make([]time.Duration, 0, cycles)
	}
	order := make([]int, len(cs))
	for i := range order {
		order[i] = i
	}
	for c := 0; c < warm+cycles; c++ {
		start := time.Now()
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, i := range order {
			d, err := cs[i].op(ctx)
			if err != nil {
				return nil, fmt.Errorf("bench: %s: %w", cs[i].name, err)
			}
			if c >= warm {
				out[i] = append(out[i], d)
			}
		}
		if pace > 0 {
			if rest := pace - time.Since(start); rest > 0 {
				t := time.NewTimer(rest)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return nil, ctx.Err()
				}
			}
		}
	}
	return out, nil
}

// pairedRows turns paired samples into rows: each contender's median
// duration with its interval, and its per-pair ratio to contender 0 (the
// baseline) as a median with its interval, its sample count and a verdict.
func pairedRows(caseName string, cs []contender, samples [][]time.Duration, round time.Duration, per int, note func(i int) string) []Row {
	var rows []Row
	for i, c := range cs {
		r := Row{Case: caseName, Contender: c.name, Value: MedianCI(floats(samples[i], per)).Durations(round), N: len(samples[i])}
		if i == 0 {
			r.Ratio, r.Note = "1 (baseline)", ""
		} else {
			est := MedianCI(ratios(samples[i], samples[0]))
			r.Est = &est
			r.Ratio = est.Ratio()
			r.Note = est.Verdict()
		}
		if note != nil {
			if n := note(i); n != "" {
				if r.Note != "" {
					r.Note += "; "
				}
				r.Note += n
			}
		}
		rows = append(rows, r)
	}
	return rows
}

// selectOneBatch times n SELECT 1 round trips made by selectOne.
func selectOneBatch(n int, selectOne func(ctx context.Context) error) op {
	return func(ctx context.Context) (time.Duration, error) {
		start := time.Now()
		for i := 0; i < n; i++ {
			if err := selectOne(ctx); err != nil {
				return 0, err
			}
		}
		return time.Since(start), nil
	}
}

// dbSelectOne is one SELECT 1 on db; poolSelectOne is one on p.
func dbSelectOne(db *sql.DB) func(context.Context) error {
	return func(ctx context.Context) error {
		var one int
		return db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
	}
}

func poolSelectOne(p *pgxpool.Pool) func(context.Context) error {
	return func(ctx context.Context) error {
		var one int
		return p.QueryRow(ctx, "SELECT 1").Scan(&one)
	}
}
