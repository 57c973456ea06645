-- airlock metadata schema for PostgreSQL: the same tables, columns and indexes as
-- migrations/sqlite/0001_schema.sql. Numbers are BIGINT (read as i64 through sqlx's Any
-- driver); text compares bytewise (COLLATE "C") as SQLite's does, so paths sort and page the
-- same on both; the per-transfer totals are kept by trigger functions.
CREATE TABLE users (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at TEXT COLLATE "C" NOT NULL
);
CREATE TABLE user_roles (
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    role TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (user_id, role)
);
-- Users cut off by a Programme Manager: every token of theirs is refused from the next request.
-- A table of its own (not a column) so that a data directory made before it upgrades in place.
CREATE TABLE user_disabled (
    user_id TEXT COLLATE "C" PRIMARY KEY REFERENCES users(id),
    disabled_by TEXT COLLATE "C" NOT NULL,
    reason TEXT COLLATE "C" NOT NULL,
    at TEXT COLLATE "C" NOT NULL
);
CREATE TABLE projects (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at TEXT COLLATE "C" NOT NULL
);
CREATE TABLE project_members (
    project_id TEXT COLLATE "C" NOT NULL REFERENCES projects(id),
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    role TEXT COLLATE "C" NOT NULL,
    -- `active`, or `pending` until the Dataset Provider Representative counter-approves
    -- (a Researcher joining a project with a tier 3+ workspace, paper 11.6).
    state TEXT COLLATE "C" NOT NULL DEFAULT 'active',
    added_by TEXT COLLATE "C",
    added_at TEXT COLLATE "C",
    approved_by TEXT COLLATE "C",
    PRIMARY KEY (project_id, user_id, role)
);
CREATE TABLE workspaces (
    id TEXT COLLATE "C" PRIMARY KEY,
    project_id TEXT COLLATE "C" NOT NULL REFERENCES projects(id),
    name TEXT COLLATE "C" NOT NULL,
    tier BIGINT NOT NULL,
    -- A policy file overriding the tier's default; NULL for the default.
    policy_file TEXT COLLATE "C",
    created_at TEXT COLLATE "C" NOT NULL,
    UNIQUE (project_id, name)
);
CREATE TABLE transfers (
    id TEXT COLLATE "C" PRIMARY KEY,
    workspace_id TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id),
    kind TEXT COLLATE "C" NOT NULL,
    state TEXT COLLATE "C" NOT NULL,
    state_reason TEXT COLLATE "C" NOT NULL,
    uploader_id TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    created_by TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    created_at TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL,
    sealed_at TEXT COLLATE "C",
    root_digest TEXT COLLATE "C",
    expected_root_digest TEXT COLLATE "C",
    release_location TEXT COLLATE "C",
    released_at TEXT COLLATE "C",
    -- SHA-256 of the policy file in force when the transfer was sealed.
    policy_version TEXT COLLATE "C",
    -- 1 when scanning left files unscannable and the policy lets review go on: a Referee must
    -- acknowledge them, on the record, when approving.
    ack_required BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX transfers_state ON transfers(state);
CREATE TABLE upload_tokens (
    id TEXT COLLATE "C" PRIMARY KEY,
    transfer_id TEXT COLLATE "C" NOT NULL REFERENCES transfers(id),
    issued_by TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    issued_at TEXT COLLATE "C" NOT NULL,
    expires_at BIGINT NOT NULL,
    cidrs TEXT COLLATE "C" NOT NULL,
    revoked_at TEXT COLLATE "C",
    revoked_reason TEXT COLLATE "C"
);
CREATE INDEX upload_tokens_transfer ON upload_tokens(transfer_id);
CREATE TABLE staff_tokens (
    id TEXT COLLATE "C" PRIMARY KEY,
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    issued_at TEXT COLLATE "C" NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at TEXT COLLATE "C"
);
-- Browser sign-in (src/ui, workflow::sessions). Only SHA-256 hashes of login-link secrets and
-- session ids are stored: a copy of the database opens no session.
CREATE TABLE login_links (
    hash TEXT COLLATE "C" PRIMARY KEY,
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE TABLE ui_sessions (
    hash TEXT COLLATE "C" PRIMARY KEY,
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    csrf TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    ended_at BIGINT,
    ended_reason TEXT COLLATE "C"
);
CREATE INDEX ui_sessions_user ON ui_sessions(user_id) WHERE ended_at IS NULL;
CREATE TABLE files (
    id TEXT COLLATE "C" PRIMARY KEY,
    transfer_id TEXT COLLATE "C" NOT NULL REFERENCES transfers(id),
    path TEXT COLLATE "C" NOT NULL,
    collision_key TEXT COLLATE "C" NOT NULL,
    length BIGINT,
    received BIGINT NOT NULL,
    complete BIGINT NOT NULL,
    sha256 TEXT COLLATE "C",
    blake3 TEXT COLLATE "C",
    expected_sha256 TEXT COLLATE "C",
    created_at TEXT COLLATE "C" NOT NULL,
    completed_at TEXT COLLATE "C",
    -- A small member of a tar archive is stored inside its archive's pack (`packs`), at this
    -- offset, and has no `segments`; every other file is its own segments.
    pack TEXT COLLATE "C",
    pack_offset BIGINT,
    UNIQUE (transfer_id, collision_key)
);
CREATE TABLE segments (
    file_id TEXT COLLATE "C" NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (file_id, seq)
);
-- What a streaming upload of unknown length (a chunked PUT) may still send: bytes granted
-- from the transfer's size budget as they arrive, so uploads in flight count against it. One
-- row per such upload in progress; the row goes when the file completes or is discarded.
CREATE TABLE upload_claims (
    file_id TEXT COLLATE "C" PRIMARY KEY REFERENCES files(id) ON DELETE CASCADE,
    transfer_id TEXT COLLATE "C" NOT NULL,
    bytes BIGINT NOT NULL
);
CREATE INDEX upload_claims_transfer ON upload_claims(transfer_id);
CREATE TABLE decisions (
    -- Insertion order (SQLite's implicit rowid): decisions made in the same millisecond.
    rowid BIGINT GENERATED ALWAYS AS IDENTITY,
    id TEXT COLLATE "C" PRIMARY KEY,
    transfer_id TEXT COLLATE "C" NOT NULL REFERENCES transfers(id),
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    role TEXT COLLATE "C" NOT NULL,
    decision TEXT COLLATE "C" NOT NULL,
    comment TEXT COLLATE "C" NOT NULL,
    root_digest TEXT COLLATE "C" NOT NULL,
    policy_version TEXT COLLATE "C" NOT NULL DEFAULT '',
    at TEXT COLLATE "C" NOT NULL,
    -- Why the decision no longer counts (the transfer was returned, say); NULL while it does.
    void_reason TEXT COLLATE "C",
    -- The unscannable files a Referee acknowledged with this approval (JSON list), or ''.
    acknowledged TEXT COLLATE "C" NOT NULL DEFAULT ''
);
CREATE INDEX decisions_transfer ON decisions(transfer_id);
-- Referees assigned to a transfer from the referee college (paper 10.1). At tier 3+ an
-- assignment is `pending` until the Dataset Provider Representative counter-approves it.
CREATE TABLE referee_assignments (
    transfer_id TEXT COLLATE "C" NOT NULL REFERENCES transfers(id),
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    state TEXT COLLATE "C" NOT NULL,
    assigned_by TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    assigned_at TEXT COLLATE "C" NOT NULL,
    approved_by TEXT COLLATE "C",
    PRIMARY KEY (transfer_id, user_id)
);
CREATE TABLE incidents (
    id TEXT COLLATE "C" PRIMARY KEY,
    transfer_id TEXT COLLATE "C" REFERENCES transfers(id),
    kind TEXT COLLATE "C" NOT NULL,
    detail TEXT COLLATE "C" NOT NULL,
    state TEXT COLLATE "C" NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL
);
CREATE TABLE audit_events (
    seq BIGINT PRIMARY KEY,
    at TEXT COLLATE "C" NOT NULL,
    actor TEXT COLLATE "C" NOT NULL,
    action TEXT COLLATE "C" NOT NULL,
    transfer_id TEXT COLLATE "C",
    detail TEXT COLLATE "C" NOT NULL,
    prev_hash TEXT COLLATE "C" NOT NULL,
    hash TEXT COLLATE "C" NOT NULL,
    mac TEXT COLLATE "C"
);
CREATE INDEX audit_transfer ON audit_events(transfer_id);
-- Webhook outbox, fed from the audit log: `webhook_cursor` is the last audit seq looked at.
CREATE TABLE webhook_cursor (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
CREATE TABLE webhook_deliveries (
    id TEXT COLLATE "C" PRIMARY KEY,
    audit_seq BIGINT NOT NULL,
    url TEXT COLLATE "C" NOT NULL,
    event TEXT COLLATE "C" NOT NULL,
    transfer_id TEXT COLLATE "C",
    -- The exact body that is signed and sent.
    payload TEXT COLLATE "C" NOT NULL,
    -- `pending`, `delivered` or `failed` (after the last attempt; `webhooks retry` resets it).
    state TEXT COLLATE "C" NOT NULL,
    attempts BIGINT NOT NULL,
    -- Unix milliseconds.
    next_attempt_at BIGINT NOT NULL,
    last_status BIGINT,
    last_error TEXT COLLATE "C",
    created_at TEXT COLLATE "C" NOT NULL,
    delivered_at TEXT COLLATE "C"
);
CREATE INDEX webhook_due ON webhook_deliveries(state, next_attempt_at);
-- Email outbox, fed from the audit log as the webhook outbox is (`notify::email`): one row per
-- event and person mailed; `mail_cursor` is the last audit seq looked at.
CREATE TABLE mail_cursor (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
CREATE TABLE mail_outbox (
    id TEXT COLLATE "C" PRIMARY KEY,
    audit_seq BIGINT NOT NULL,
    event TEXT COLLATE "C" NOT NULL,
    transfer_id TEXT COLLATE "C",
    -- The user mailed, and the address (`USER@[mail] domain` when queued).
    recipient TEXT COLLATE "C" NOT NULL,
    address TEXT COLLATE "C" NOT NULL,
    subject TEXT COLLATE "C" NOT NULL,
    body TEXT COLLATE "C" NOT NULL,
    -- `pending`, `sent` or `failed` (after the last attempt).
    state TEXT COLLATE "C" NOT NULL,
    attempts BIGINT NOT NULL,
    -- Unix milliseconds; while a sender holds the row, the end of its lease.
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT COLLATE "C",
    created_at TEXT COLLATE "C" NOT NULL,
    sent_at TEXT COLLATE "C",
    -- One message per event and person, however many reasons name them.
    UNIQUE (audit_seq, recipient)
);
CREATE INDEX mail_due ON mail_outbox(state, next_attempt_at);

-- One verdict per file (or archive member) and scanner, from the transfer's latest scan. Each is
-- pinned to the digest of the bytes scanned and to the scanner's and its database's versions.
CREATE TABLE scan_verdicts (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    transfer_id TEXT COLLATE "C" NOT NULL REFERENCES transfers(id),
    file_id TEXT COLLATE "C" NOT NULL,
    path TEXT COLLATE "C" NOT NULL,
    -- The member's path inside the file when it came out of an archive ("inner.zip!a.txt").
    member TEXT COLLATE "C" NOT NULL DEFAULT '',
    scanner TEXT COLLATE "C" NOT NULL,
    verdict TEXT COLLATE "C" NOT NULL,
    -- The signature or finding name, or why it was unscannable, or the error.
    detail TEXT COLLATE "C" NOT NULL,
    sha256 TEXT COLLATE "C" NOT NULL,
    scanner_version TEXT COLLATE "C" NOT NULL,
    db_version TEXT COLLATE "C" NOT NULL,
    scanned_at TEXT COLLATE "C" NOT NULL
);
CREATE INDEX scan_verdicts_transfer ON scan_verdicts(transfer_id);
-- Transfers whose scan failed (a scanner down or timing out), and when to try again.
CREATE TABLE scan_jobs (
    transfer_id TEXT COLLATE "C" PRIMARY KEY REFERENCES transfers(id),
    attempts BIGINT NOT NULL,
    retry_at BIGINT NOT NULL,
    last_error TEXT COLLATE "C" NOT NULL
);
-- Fixity: when each file at rest was last re-hashed, where, and what was found.
CREATE TABLE fixity (
    transfer_id TEXT COLLATE "C" NOT NULL REFERENCES transfers(id),
    location TEXT COLLATE "C" NOT NULL,
    path TEXT COLLATE "C" NOT NULL,
    verified_at BIGINT NOT NULL,
    result TEXT COLLATE "C" NOT NULL,
    detail TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (transfer_id, location, path)
);
-- Per-transfer totals, kept by triggers on `files`, so a limit check, a counter or a summary
-- costs the same with 10 files as with 100,000 (no SUM or COUNT over a transfer's files).
-- `reserved` is what the size limit counts: a file's declared length until more arrives.
CREATE TABLE transfer_totals (
    transfer_id TEXT COLLATE "C" PRIMARY KEY REFERENCES transfers(id),
    files BIGINT NOT NULL DEFAULT 0,
    complete BIGINT NOT NULL DEFAULT 0,
    received BIGINT NOT NULL DEFAULT 0,
    reserved BIGINT NOT NULL DEFAULT 0
);
CREATE OR REPLACE FUNCTION airlock_totals_new() RETURNS trigger AS $$
BEGIN
    INSERT INTO transfer_totals (transfer_id) VALUES (NEW.id) ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER transfer_totals_new AFTER INSERT ON transfers
    FOR EACH ROW EXECUTE FUNCTION airlock_totals_new();
CREATE OR REPLACE FUNCTION airlock_files_totals() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE transfer_totals SET files = files + 1, complete = complete + NEW.complete,
            received = received + NEW.received,
            reserved = reserved + GREATEST(NEW.received, COALESCE(NEW.length, 0))
        WHERE transfer_id = NEW.transfer_id;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE transfer_totals SET files = files - 1, complete = complete - OLD.complete,
            received = received - OLD.received,
            reserved = reserved - GREATEST(OLD.received, COALESCE(OLD.length, 0))
        WHERE transfer_id = OLD.transfer_id;
    ELSE
        UPDATE transfer_totals SET complete = complete - OLD.complete + NEW.complete,
            received = received - OLD.received + NEW.received,
            reserved = reserved - GREATEST(OLD.received, COALESCE(OLD.length, 0))
                                + GREATEST(NEW.received, COALESCE(NEW.length, 0))
        WHERE transfer_id = NEW.transfer_id;
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER files_totals_insert AFTER INSERT ON files
    FOR EACH ROW EXECUTE FUNCTION airlock_files_totals();
CREATE TRIGGER files_totals_delete AFTER DELETE ON files
    FOR EACH ROW EXECUTE FUNCTION airlock_files_totals();
CREATE TRIGGER files_totals_update AFTER UPDATE OF received, length, complete ON files
    FOR EACH ROW EXECUTE FUNCTION airlock_files_totals();
-- Listing a transfer's files in path order (pagination, streamed manifests) and finding one by
-- path use this index, not a scan of the transfer.
CREATE INDEX files_by_path ON files(transfer_id, path);
-- tus uploads of tar archives for the server to expand (workflow::archive_upload). Not files of
-- the manifest: never listed or counted; their members become files only when the whole archive
-- is accepted, in one transaction that also deletes the upload. Seal refuses while one exists.
CREATE TABLE archive_uploads (
    id TEXT COLLATE "C" PRIMARY KEY,
    transfer_id TEXT COLLATE "C" NOT NULL REFERENCES transfers(id),
    prefix TEXT COLLATE "C",
    length BIGINT NOT NULL,
    received BIGINT NOT NULL DEFAULT 0,
    created_at TEXT COLLATE "C" NOT NULL
);
-- The small members of one accepted tar archive, stored one after another in one quarantine
-- object (`transfers/<transfer>/<pack>/0000000000`): creating one file per 4 KiB member would
-- cost more than everything else the upload does. Members name their pack and offset.
-- `members` counts the members still there: the pack goes when the last is deleted.
CREATE TABLE packs (
    id TEXT COLLATE "C" PRIMARY KEY,
    transfer_id TEXT COLLATE "C" NOT NULL REFERENCES transfers(id),
    size BIGINT NOT NULL,
    members BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX archive_uploads_transfer ON archive_uploads(transfer_id);
CREATE TABLE archive_segments (
    archive_id TEXT COLLATE "C" NOT NULL REFERENCES archive_uploads(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (archive_id, seq)
);
-- Which rows of `scan_verdicts` are a transfer's current verdicts (ids first_seq..last_seq:
-- a scan writes in batches above them and moves the range when it ends), and their counts
-- by kind, so a status read gets them from one row whatever the file count.
CREATE TABLE scan_counts (
    transfer_id TEXT COLLATE "C" PRIMARY KEY REFERENCES transfers(id),
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    clean BIGINT NOT NULL DEFAULT 0,
    infected BIGINT NOT NULL DEFAULT 0,
    unscannable BIGINT NOT NULL DEFAULT 0,
    error BIGINT NOT NULL DEFAULT 0
);
-- The (scanner, database version) pairs of each transfer's current verdicts: a handful of
-- rows per transfer, so the signature watcher never reads the verdicts themselves.
CREATE TABLE scan_databases (
    transfer_id TEXT COLLATE "C" NOT NULL REFERENCES transfers(id),
    scanner TEXT COLLATE "C" NOT NULL,
    db_version TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (transfer_id, scanner, db_version)
);
-- Re-verification reads each location's oldest check of a transfer, and how many files have
-- one, from this index alone.
CREATE INDEX fixity_age ON fixity(transfer_id, location, verified_at);
-- Egress (DESIGN.md, "Egress in detail"). An egress request is a transfer of kind `egress`;
-- these tables hold what only egress has. Tables of their own, so that a data directory made
-- before egress upgrades in place.
-- A workspace's output volume when it is not `<project>/<workspace>/output` in the volumes.
CREATE TABLE workspace_output (
    workspace_id TEXT COLLATE "C" PRIMARY KEY REFERENCES workspaces(id),
    dir TEXT COLLATE "C" NOT NULL
);
-- The request: its context, its target workspace (a derived workspace) if any, and its round
-- (1 at the first submit, one more at each resubmit: votes of earlier rounds are void).
CREATE TABLE egress_requests (
    transfer_id TEXT COLLATE "C" PRIMARY KEY REFERENCES transfers(id),
    context TEXT COLLATE "C" NOT NULL,
    target_workspace_id TEXT COLLATE "C" REFERENCES workspaces(id),
    round BIGINT NOT NULL DEFAULT 0
);
-- What the researcher chose: files or folders of the output volume, each with its role
-- (`output`, `supporting`, `code`). A folder's files take its role at submit.
CREATE TABLE egress_items (
    transfer_id TEXT COLLATE "C" NOT NULL REFERENCES transfers(id),
    path TEXT COLLATE "C" NOT NULL,
    role TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (transfer_id, path)
);
CREATE TABLE egress_recipients (
    transfer_id TEXT COLLATE "C" NOT NULL REFERENCES transfers(id),
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    PRIMARY KEY (transfer_id, user_id)
);
-- The role of each pinned file (the files table holds its digests), and the size and
-- modification time it had in the output volume when pinned: a file changed since shows so.
CREATE TABLE egress_files (
    transfer_id TEXT COLLATE "C" NOT NULL REFERENCES transfers(id),
    path TEXT COLLATE "C" NOT NULL,
    role TEXT COLLATE "C" NOT NULL,
    size BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    PRIMARY KEY (transfer_id, path)
);
-- Per-file votes of output checkers, per round.
CREATE TABLE egress_votes (
    transfer_id TEXT COLLATE "C" NOT NULL REFERENCES transfers(id),
    round BIGINT NOT NULL,
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    role TEXT COLLATE "C" NOT NULL,
    path TEXT COLLATE "C" NOT NULL,
    vote TEXT COLLATE "C" NOT NULL,
    comment TEXT COLLATE "C" NOT NULL,
    -- `checkers` or `shared` (with the researcher).
    visibility TEXT COLLATE "C" NOT NULL,
    at TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (transfer_id, round, user_id, path)
);
-- A checker's review, submitted once every file has their vote.
CREATE TABLE egress_reviews (
    transfer_id TEXT COLLATE "C" NOT NULL REFERENCES transfers(id),
    round BIGINT NOT NULL,
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    role TEXT COLLATE "C" NOT NULL,
    outcome TEXT COLLATE "C" NOT NULL,
    -- The checker's comment on the whole request, and who sees it (`shared` or `checkers`).
    comment TEXT COLLATE "C" NOT NULL DEFAULT '',
    visibility TEXT COLLATE "C" NOT NULL DEFAULT 'shared',
    at TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (transfer_id, round, user_id)
);
-- What the disclosure scanner found, per round. Never the value itself.
-- `id` (`F<round>-<n>`) is what checkers name a finding by: unique within its request.
CREATE TABLE disclosure_findings (
    id TEXT COLLATE "C" NOT NULL,
    transfer_id TEXT COLLATE "C" NOT NULL REFERENCES transfers(id),
    round BIGINT NOT NULL,
    path TEXT COLLATE "C" NOT NULL,
    rule TEXT COLLATE "C" NOT NULL,
    status TEXT COLLATE "C" NOT NULL,
    location TEXT COLLATE "C" NOT NULL,
    message TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (transfer_id, id)
);
CREATE INDEX disclosure_findings_transfer ON disclosure_findings(transfer_id, round);
-- Each file's disclosure report (ACRO-style JSON: kind, status, counts), per round.
CREATE TABLE disclosure_reports (
    transfer_id TEXT COLLATE "C" NOT NULL REFERENCES transfers(id),
    round BIGINT NOT NULL,
    path TEXT COLLATE "C" NOT NULL,
    report TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (transfer_id, round, path)
);
CREATE TABLE finding_acks (
    transfer_id TEXT COLLATE "C" NOT NULL,
    finding_id TEXT COLLATE "C" NOT NULL,
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    role TEXT COLLATE "C" NOT NULL,
    comment TEXT COLLATE "C" NOT NULL,
    at TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (transfer_id, finding_id, user_id),
    FOREIGN KEY (transfer_id, finding_id) REFERENCES disclosure_findings(transfer_id, id)
);
-- Read-only tokens of named recipients. The token itself is never stored.
CREATE TABLE collection_tokens (
    id TEXT COLLATE "C" PRIMARY KEY,
    transfer_id TEXT COLLATE "C" NOT NULL REFERENCES transfers(id),
    recipient_id TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    root_digest TEXT COLLATE "C" NOT NULL,
    issued_by TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    issued_at TEXT COLLATE "C" NOT NULL,
    expires_at BIGINT NOT NULL,
    cidrs TEXT COLLATE "C" NOT NULL,
    -- NULL: no limit.
    max_downloads BIGINT,
    downloads BIGINT NOT NULL DEFAULT 0,
    revoked_at TEXT COLLATE "C"
);
CREATE INDEX collection_tokens_transfer ON collection_tokens(transfer_id);
-- Who collected what and when.
CREATE TABLE collections (
    id TEXT COLLATE "C" PRIMARY KEY,
    token_id TEXT COLLATE "C" NOT NULL REFERENCES collection_tokens(id),
    transfer_id TEXT COLLATE "C" NOT NULL REFERENCES transfers(id),
    recipient TEXT COLLATE "C" NOT NULL,
    client TEXT COLLATE "C" NOT NULL,
    what TEXT COLLATE "C" NOT NULL,
    bytes BIGINT NOT NULL DEFAULT 0,
    started_at TEXT COLLATE "C" NOT NULL,
    finished_at TEXT COLLATE "C"
);
CREATE INDEX collections_transfer ON collections(transfer_id);
-- An ACRO output folder the researcher included (its results.json, and its checksums/ checked
-- against the pinned files), per round: shown beside airlock's own disclosure checks.
CREATE TABLE acro_reports (
    transfer_id TEXT COLLATE "C" NOT NULL REFERENCES transfers(id),
    round BIGINT NOT NULL,
    path TEXT COLLATE "C" NOT NULL,
    report TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (transfer_id, round, path)
);
