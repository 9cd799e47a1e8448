// source: query.sql

package store

import (
	"context"

	"github.com/jackc/pgx/v5/pgtype"
)

const createAuthor = `-- name: CreateAuthor :one
INSERT INTO authors (name, bio) VALUES ($1, $2)
RETURNING id, name, bio
`

// CreateAuthorParams are the arguments of CreateAuthor.
type CreateAuthorParams struct {
	Name string
	Bio  pgtype.Text
}

// CreateAuthor inserts an author and returns the new row.
func (q *Queries) CreateAuthor(ctx context.Context, arg CreateAuthorParams) (Author, error) {
	row := q.db.QueryRow(ctx, createAuthor, arg.Name, arg.Bio)
	var i Author
	err := row.Scan(&i.ID, &i.Name, &i.Bio)
	return i, err
}

const getAuthor = `-- name: GetAuthor :one
SELECT id, name, bio FROM authors
WHERE id = $1 LIMIT 1
`

// GetAuthor returns the author with the id.
func (q *Queries) GetAuthor(ctx context.Context, id int64) (Author, error) {
	row := q.db.QueryRow(ctx, getAuthor, id)
	var i Author
	err := row.Scan(&i.ID, &i.Name, &i.Bio)
	return i, err
}

const listAuthors = `-- name: ListAuthors :many
SELECT id, name, bio FROM authors
ORDER BY name
`

// ListAuthors returns every author, by name.
func (q *Queries) ListAuthors(ctx context.Context) ([]Author, error) {
	rows, err := q.db.Query(ctx, listAuthors)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var items []Author
	for rows.Next() {
		var i Author
		if err := rows.Scan(&i.ID, &i.Name, &i.Bio); err != nil {
			return nil, err
		}
		items = append(items, i)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return items, nil
}

const updateAuthorBio = `-- name: UpdateAuthorBio :exec
UPDATE authors SET bio = $2
WHERE id = $1
`

// UpdateAuthorBioParams are the arguments of UpdateAuthorBio.
type UpdateAuthorBioParams struct {
	ID  int64
	Bio pgtype.Text
}

// UpdateAuthorBio sets an author's bio.
func (q *Queries) UpdateAuthorBio(ctx context.Context, arg UpdateAuthorBioParams) error {
	_, err := q.db.Exec(ctx, updateAuthorBio, arg.ID, arg.Bio)
	return err
}
