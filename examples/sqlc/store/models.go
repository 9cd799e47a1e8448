package store

import (
	"github.com/jackc/pgx/v5/pgtype"
)

// Author is a row of the authors table.
type Author struct {
	ID   int64
	Name string
	Bio  pgtype.Text
}
