-- Open first loads (rayapp.sinks.pg_bulk): a serving table whose indexes were dropped for its
-- first load, with the statements that rebuild them and the keys that must be unique again.
CREATE TABLE IF NOT EXISTS rayapp_bulk_loads (
    table_name text PRIMARY KEY,
    keys       text[] NOT NULL,
    restore    text[] NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now()
);
