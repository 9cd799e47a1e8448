// Command peruser is a todo app for Databricks Apps where every request
// runs as its user: GET/POST /todos go through the user's own pool under a
// row-level security policy (created_by = current_user), while
// GET /admin/todos runs as the service principal and sees everything.
//
// Without a workspace it starts the emulator, creates two demo users and
// calls itself as each of them over HTTP, with the headers the Databricks
// Apps proxy would set. The middleware verifies that each access token
// belongs to the email it comes with (see package peruser, "Trust
// boundary"): a request with someone else's token is refused with 403.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"

	"github.com/lakebase-go/lakebase/examples/internal/demo"
	"github.com/lakebase-go/lakebase/peruser"
)

func main() { demo.Main(run) }

// Todo is one row.
type Todo struct {
	ID        int64  `json:"id"`
	Title     string `json:"title"`
	CreatedBy string `json:"created_by"`
}

// Schema is the table and its RLS policy (run once by the table owner).
const Schema = `CREATE TABLE IF NOT EXISTS todos (id bigserial PRIMARY KEY, title text NOT NULL, created_by text NOT NULL DEFAULT current_user);
ALTER TABLE todos ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS own_todos ON todos;
CREATE POLICY own_todos ON todos USING (created_by = current_user) WITH CHECK (created_by = current_user);
GRANT SELECT, INSERT ON todos TO PUBLIC;
GRANT USAGE ON SEQUENCE todos_id_seq TO PUBLIC;`

// Handler routes the app.
func Handler(m *peruser.Manager) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/todos", m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		db, _, _ := peruser.DBFromContext(r.Context())
		if r.Method == http.MethodPost {
			var t Todo
			if err := json.NewDecoder(r.Body).Decode(&t); err != nil || t.Title == "" {
				http.Error(w, "want {\"title\": ...}", http.StatusBadRequest)
				return
			}
			if _, err := db.ExecContext(r.Context(), "INSERT INTO todos (title) VALUES ($1)", t.Title); err != nil {
				http.Error(w, http.StatusText(peruser.StatusCode(err)), peruser.StatusCode(err))
				return
			}
			w.WriteHeader(http.StatusCreated)
			return
		}
		list(w, r, db)
	})))
	mux.HandleFunc("GET /admin/todos", func(w http.ResponseWriter, r *http.Request) { list(w, r, m.ServicePrincipal()) })
	return mux
}

func list(w http.ResponseWriter, r *http.Request, db *sql.DB) {
	rows, err := db.QueryContext(r.Context(), "SELECT id, title, created_by FROM todos ORDER BY id")
	if err != nil {
		http.Error(w, http.StatusText(peruser.StatusCode(err)), peruser.StatusCode(err))
		return
	}
	defer rows.Close()
	todos := []Todo{}
	for rows.Next() {
		var t Todo
		if err := rows.Scan(&t.ID, &t.Title, &t.CreatedBy); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		todos = append(todos, t)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(todos)
}

func run(ctx context.Context, out io.Writer) error {
	env, release, err := demo.Setup(ctx, out)
	if err != nil {
		return err
	}
	defer release()
	m, err := peruser.New(ctx, peruser.Config{Base: env.Config})
	if err != nil {
		return err
	}
	defer m.Close()
	if env.Emulator == nil { // a real Databricks App: serve
		addr := ":" + os.Getenv("DATABRICKS_APP_PORT")
		if addr == ":" {
			addr = ":8000"
		}
		fmt.Fprintln(out, "listening on", addr)
		return http.ListenAndServe(addr, Handler(m))
	}
	e := env.Emulator
	if err := e.AdminExec(ctx, Schema+fmt.Sprintf(`ALTER ROLE "%s" BYPASSRLS;`, e.ServicePrincipal())); err != nil {
		return err
	}
	srv := httptest.NewServer(Handler(m))
	defer srv.Close()
	users := map[string]string{}
	for _, email := range []string{"ada@example.com", "grace@example.com"} {
		tok, err := e.AddUser(ctx, email)
		if err != nil {
			return err
		}
		users[email] = tok
		if err := call(ctx, srv.URL, "POST", email, tok, `{"title":"`+email+`'s first todo"}`, nil); err != nil {
			return err
		}
	}
	for _, email := range []string{"ada@example.com", "grace@example.com"} {
		var todos []Todo
		if err := call(ctx, srv.URL, "GET", email, users[email], "", &todos); err != nil {
			return err
		}
		fmt.Fprintf(out, "%s sees %d todo(s): %v\n", email, len(todos), titles(todos))
	}
	var all []Todo
	if err := call(ctx, srv.URL+"/admin", "GET", "", "", "", &all); err != nil {
		return err
	}
	fmt.Fprintf(out, "the service principal (admin route) sees %d todos\n", len(all))
	resp, err := http.Get(srv.URL + "/todos")
	if err != nil {
		return err
	}
	resp.Body.Close()
	fmt.Fprintf(out, "a request without identity headers gets %d\n", resp.StatusCode)
	// A request claiming to be ada with grace's (real) token is refused:
	// the token proves the identity, not the header.
	err = call(ctx, srv.URL, "GET", "ada@example.com", users["grace@example.com"], "", nil)
	fmt.Fprintf(out, "ada's email with grace's token: %v\n", err)
	return nil
}

func titles(ts []Todo) string {
	var s []string
	for _, t := range ts {
		s = append(s, t.Title)
	}
	return strings.Join(s, ", ")
}

// call does one request as a user (the headers the Apps proxy would set).
func call(ctx context.Context, base, method, email, token, body string, into any) error {
	req, err := http.NewRequestWithContext(ctx, method, base+"/todos", strings.NewReader(body))
	if err != nil {
		return err
	}
	if email != "" {
		req.Header.Set(peruser.HeaderEmail, email)
		req.Header.Set(peruser.HeaderAccessToken, token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s /todos as %s: %s %s", method, email, resp.Status, b)
	}
	if into != nil {
		return json.NewDecoder(resp.Body).Decode(into)
	}
	return nil
}
