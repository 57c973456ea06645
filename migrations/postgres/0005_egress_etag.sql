-- The entity tag of each pinned file of an egress request whose workspace output volume is on
-- S3 (volumes::output): the store gives a new one for every write of the key, so a pinned file
-- rewritten since submit shows as changed even within the same second and at the same size.
-- NULL for files pinned from a local output folder (compared by modification time there).
ALTER TABLE egress_files ADD COLUMN etag TEXT;
