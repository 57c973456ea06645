-- Leases on background jobs (workflow::lease): one row per job held (`release:<transfer>`,
-- `scan:<transfer>`, `fixity`, `webhooks`, `mail`, `expiry`), by the replica named in
-- `holder`, until `expires_at` (Unix milliseconds) unless renewed. Another replica takes a job
-- only once its lease has run out.
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
