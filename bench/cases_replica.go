package bench

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/lakebase-go/lakebase/connector"
)

// The names of case 13 in the table.
const (
	ReplicaReadCase    = "13a. read by key on an open pool: the replica path (Connector.Reader) vs the primary path"
	ReplicaConnectCase = "13b. new connection (TLS + login + read-only session check): the replica path vs the primary path"
)

// replicaRows is the size of the table case 13a reads.
const replicaRows = 1000

// replicaCase is case 13: the same read on the primary path (a connector
// on the endpoint's host) and on the replica path (its Reader: the
// endpoint's read_only_host, a streaming hot standby of the emulator,
// started here), paired per cycle. Both are the same PostgreSQL build on
// the same machine, so the ratio prices what the library adds on the
// replica path (nothing per query; per connection, the read-only session
// check, which reads the login's ParameterStatus without a round trip)
// and is expected within noise of 1.
func (env *Env) replicaCase(ctx context.Context, o Options) ([]Row, error) {
	e := env.E
	s, err := e.StartStandby(ctx)
	if err != nil {
		return nil, err
	}
	cfg, err := env.connectorConfig()
	if err != nil {
		return nil, err
	}
	w, err := connector.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	r, err := w.Reader(ctx)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if err := e.AdminExec(ctx, fmt.Sprintf(`DROP TABLE IF EXISTS bench_replica; CREATE TABLE bench_replica (k int PRIMARY KEY, v text);
		INSERT INTO bench_replica SELECT g, md5(g::text) FROM generate_series(1, %d) g; GRANT SELECT ON bench_replica TO %q`, replicaRows, e.ServicePrincipal())); err != nil {
		return nil, err
	}
	// Stats and hint bits set before either side reads (VACUUM cannot run
	// in AdminExec's implicit transaction with the statements above).
	if err := e.AdminExec(ctx, "VACUUM ANALYZE bench_replica"); err != nil {
		return nil, err
	}
	if err := s.CatchUp(ctx); err != nil {
		return nil, err
	}
	open := func(c *connector.Connector, wantRecovery bool) (*sql.DB, error) {
		db := sql.OpenDB(c) // closing it closes c (again: Close is idempotent)
		db.SetMaxOpenConns(1)
		var rec bool
		if err := db.QueryRowContext(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil {
			_ = db.Close()
			return nil, err
		}
		if rec != wantRecovery {
			_ = db.Close()
			return nil, fmt.Errorf("bench: %s: in recovery %v, want %v", c.Host(), rec, wantRecovery)
		}
		return db, nil
	}
	primary, err := open(w, false)
	if err != nil {
		return nil, err
	}
	defer primary.Close()
	replica, err := open(r, true)
	if err != nil {
		return nil, err
	}
	defer replica.Close()

	read := func(db *sql.DB) op {
		k := 0
		return func(ctx context.Context) (time.Duration, error) {
			start := time.Now()
			for i := 0; i < o.QueryBatch; i++ {
				k = k%replicaRows + 1
				var v string
				if err := db.QueryRowContext(ctx, "SELECT v FROM bench_replica WHERE k = $1", k).Scan(&v); err != nil {
					return 0, err
				}
			}
			return time.Since(start), nil
		}
	}
	cs := []contender{{"primary path (the endpoint's host)", read(primary)}, {"replica path (Reader: read_only_host)", read(replica)}}
	samples, err := paired(ctx, cs, o.QueryPairs, 10, 0, o.Seed)
	if err != nil {
		return nil, err
	}
	rows := pairedRows(ReplicaReadCase, cs, samples, 100*time.Nanosecond, o.QueryBatch, nil)

	cs = []contender{{"primary path (the endpoint's host)", connectOp(w)}, {"replica path (Reader: read_only_host)", connectOp(r)}}
	samples, err = paired(ctx, cs, o.ConnectPairs, 10, 0, o.Seed)
	if err != nil {
		return nil, err
	}
	return append(rows, pairedRows(ReplicaConnectCase, cs, samples, time.Microsecond, 1, nil)...), nil
}
