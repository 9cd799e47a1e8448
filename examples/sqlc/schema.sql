CREATE TABLE IF NOT EXISTS authors (
    id   bigserial PRIMARY KEY,
    name text NOT NULL,
    bio  text
);
