// Package schema holds the ent schema of the example; the code in ../ is
// generated from it with `go generate ./ent` (entgo.io/ent/cmd/ent).
package schema

import (
	"time"

	"entgo.io/ent"
	"entgo.io/ent/schema/field"
)

// Todo holds the schema definition for the Todo entity.
type Todo struct {
	ent.Schema
}

// Fields of the Todo.
func (Todo) Fields() []ent.Field {
	return []ent.Field{
		field.String("title").NotEmpty(),
		field.Bool("done").Default(false),
		field.Time("created_at").Default(time.Now).Immutable(),
	}
}

// Edges of the Todo.
func (Todo) Edges() []ent.Edge {
	return nil
}
