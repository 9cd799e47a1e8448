-- +goose Up
ALTER TABLE accounts ADD COLUMN email text UNIQUE;

-- +goose Down
ALTER TABLE accounts DROP COLUMN email;
