-- A transfer's incidents (its status page, `GET /api/v1/incidents?transfer=`) by index, in the
-- order they are listed, instead of a scan of every incident there is.
CREATE INDEX IF NOT EXISTS incidents_by_transfer ON incidents(transfer_id, created_at, id);
