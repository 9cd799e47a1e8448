// Command replicas sends reads to a read replica and writes to the
// primary: a writer and a reader *sql.DB from one Config (one workspace
// client, one token cache), then GORM with gorm.io/plugin/dbresolver on
// the same two. On the emulator the replica is a real streaming hot
// standby (lakebasetest.WithStandby); against a workspace the endpoint
// needs readable secondaries (or use a read replica's endpoint with
// Config.ReadOnly).
package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
	"gorm.io/plugin/dbresolver"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/examples/internal/demo"
	"github.com/lakebase-go/lakebase/lakebasetest"
)

// Schema is where the example writes.
const Schema = "lakebase_go_example_replicas"

// replicaWait bounds how long a read waits for the replica to replay a
// write (replicas are eventually consistent; the lag is usually
// milliseconds).
const replicaWait = 30 * time.Second

// Note is the GORM model. WrittenInRecovery is filled by the database
// (DEFAULT pg_is_in_recovery()) where the INSERT ran: false on the primary.
type Note struct {
	ID                int64 `gorm:"primaryKey"`
	Body              string
	WrittenInRecovery bool `gorm:"default:pg_is_in_recovery()"`
}

// NoteRead is a Note and where it was read.
type NoteRead struct {
	Note
	ReadInRecovery bool
}

func main() { demo.Main(run) }

func run(ctx context.Context, out io.Writer) error {
	env, release, err := demo.Setup(ctx, out, lakebasetest.WithStandby())
	if err != nil {
		return err
	}
	defer release()
	env.UseSchema(out, Schema)

	// One Config: the writer on the primary host, the reader on the
	// endpoint's read-only host, sharing the workspace client and the
	// token cache (closed with the last of the two).
	w, err := connector.New(ctx, env.Config)
	if err != nil {
		return err
	}
	writer := connector.OpenDB(w)
	defer writer.Close()
	r, err := w.Reader(ctx)
	if err != nil {
		return err
	}
	reader := connector.OpenDB(r)
	defer reader.Close()
	fmt.Fprintf(out, "writer: %s, reader: %s\n", where(ctx, writer), where(ctx, reader))

	// database/sql: writes on the writer, reads on the reader once the
	// replica has replayed them.
	for _, q := range []string{demo.CreateSchemaSQL(Schema),
		"CREATE TABLE IF NOT EXISTS notes (id bigserial PRIMARY KEY, body text NOT NULL, written_in_recovery boolean NOT NULL DEFAULT pg_is_in_recovery())"} {
		if _, err := writer.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	var id int64
	if err := writer.QueryRowContext(ctx, "INSERT INTO notes (body) VALUES ('hello from the primary') RETURNING id").Scan(&id); err != nil {
		return err
	}
	var body string
	took, err := eventually(ctx, func() error {
		return reader.QueryRowContext(ctx, "SELECT body FROM notes WHERE id = $1", id).Scan(&body)
	})
	if err != nil {
		return fmt.Errorf("the replica did not show note %d within %v: %w", id, replicaWait, err)
	}
	fmt.Fprintf(out, "database/sql: note %d read on the replica (%q) after %v of lag\n", id, body, took.Round(time.Millisecond))
	_, err = reader.ExecContext(ctx, "INSERT INTO notes (body) VALUES ('on the replica')")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "25006" {
		return fmt.Errorf("a write on the replica: %v, want SQLSTATE 25006", err)
	}
	fmt.Fprintf(out, "database/sql: a write on the replica fails with SQLSTATE %s (%s)\n", pgErr.Code, pgErr.Message)

	// GORM: dbresolver sends Create/Update/Delete and transactions to the
	// sources, queries to the replicas; Clauses(dbresolver.Write) reads
	// from the primary (read your own writes).
	gdb, err := gorm.Open(postgres.New(postgres.Config{Conn: writer}), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		return err
	}
	if err := gdb.Use(dbresolver.Register(dbresolver.Config{
		Sources:  []gorm.Dialector{postgres.New(postgres.Config{Conn: writer})},
		Replicas: []gorm.Dialector{postgres.New(postgres.Config{Conn: reader})},
	})); err != nil {
		return err
	}
	gdb = gdb.WithContext(ctx)
	note := Note{Body: "hello from GORM"}
	if err := gdb.Create(&note).Error; err != nil {
		return err
	}
	fmt.Fprintf(out, "gorm: INSERT of note %d ran in recovery: %v (the primary)\n", note.ID, note.WrittenInRecovery)
	// Each read reports where it ran: pg_is_in_recovery() in the SELECT.
	read := func(db *gorm.DB, dst *NoteRead) error {
		return db.Model(&Note{}).Select("notes.*, pg_is_in_recovery() AS read_in_recovery").Where("id = ?", note.ID).Take(dst).Error
	}
	var fresh NoteRead
	if err := read(gdb.Clauses(dbresolver.Write), &fresh); err != nil {
		return err
	}
	fmt.Fprintf(out, "gorm: Clauses(dbresolver.Write) read note %d at once, in recovery: %v (the primary)\n", fresh.ID, fresh.ReadInRecovery)
	var replayed NoteRead
	took, err = eventually(ctx, func() error { return read(gdb, &replayed) })
	if err != nil {
		return fmt.Errorf("the replica did not show note %d within %v: %w", note.ID, replicaWait, err)
	}
	fmt.Fprintf(out, "gorm: SELECT of note %d ran in recovery: %v (the replica) after %v of lag\n", replayed.ID, replayed.ReadInRecovery, took.Round(time.Millisecond))
	return nil
}

// where names the server a DB reaches: its address and whether it is a
// replica (in recovery).
func where(ctx context.Context, db *sql.DB) string {
	var addr sql.NullString
	var rec bool
	if err := db.QueryRowContext(ctx, "SELECT host(inet_server_addr()), pg_is_in_recovery()").Scan(&addr, &rec); err != nil {
		return "unreachable (" + err.Error() + ")"
	}
	role := "primary"
	if rec {
		role = "replica"
	}
	return fmt.Sprintf("%s at %s", role, addr.String)
}

// eventually retries read until it succeeds or replicaWait passes: a read
// on a replica right after a write may not see it yet.
func eventually(ctx context.Context, read func() error) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, replicaWait)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := read()
		if err == nil {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return 0, err
		case <-tick.C:
		}
	}
}
