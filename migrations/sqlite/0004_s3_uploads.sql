-- S3 multipart uploads in progress (volumes::tracked): one row per upload a replica started
-- and has not yet completed or aborted, with the volume, the object's key in it and the
-- store's upload id. The writer touches `touched_at` (Unix milliseconds) as its parts go
-- in; a row left untouched (its replica crashed) is aborted by the sweep, so no orphaned
-- parts stay billed.
CREATE TABLE IF NOT EXISTS s3_uploads (
    upload_id TEXT PRIMARY KEY,
    volume TEXT NOT NULL,
    object_key TEXT NOT NULL,
    touched_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS s3_uploads_by_touch ON s3_uploads (touched_at);
