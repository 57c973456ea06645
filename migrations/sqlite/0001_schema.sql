-- airlock metadata schema. Portable SQL (SQLite now, PostgreSQL next): TEXT ids, INTEGER
-- numbers, RFC 3339 UTC timestamps as TEXT, `$n` placeholders in every query.
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS user_roles (
    user_id TEXT NOT NULL REFERENCES users(id),
    role TEXT NOT NULL,
    PRIMARY KEY (user_id, role)
);
-- Users cut off by a Programme Manager: every token of theirs is refused from the next request.
-- A table of its own (not a column) so that a data directory made before it upgrades in place.
CREATE TABLE IF NOT EXISTS user_disabled (
    user_id TEXT PRIMARY KEY REFERENCES users(id),
    disabled_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS project_members (
    project_id TEXT NOT NULL REFERENCES projects(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    role TEXT NOT NULL,
    -- `active`, or `pending` until the Dataset Provider Representative counter-approves
    -- (a Researcher joining a project with a tier 3+ workspace, paper 11.6).
    state TEXT NOT NULL DEFAULT 'active',
    added_by TEXT,
    added_at TEXT,
    approved_by TEXT,
    PRIMARY KEY (project_id, user_id, role)
);
CREATE TABLE IF NOT EXISTS workspaces (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    name TEXT NOT NULL,
    tier INTEGER NOT NULL,
    -- A policy file overriding the tier's default; NULL for the default.
    policy_file TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (project_id, name)
);
CREATE TABLE IF NOT EXISTS transfers (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    state_reason TEXT NOT NULL,
    uploader_id TEXT NOT NULL REFERENCES users(id),
    created_by TEXT NOT NULL REFERENCES users(id),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    sealed_at TEXT,
    root_digest TEXT,
    expected_root_digest TEXT,
    release_location TEXT,
    released_at TEXT,
    -- SHA-256 of the policy file in force when the transfer was sealed.
    policy_version TEXT,
    -- 1 when scanning left files unscannable and the policy lets review go on: a Referee must
    -- acknowledge them, on the record, when approving.
    ack_required INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS transfers_state ON transfers(state);
CREATE TABLE IF NOT EXISTS upload_tokens (
    id TEXT PRIMARY KEY,
    transfer_id TEXT NOT NULL REFERENCES transfers(id),
    issued_by TEXT NOT NULL REFERENCES users(id),
    issued_at TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    cidrs TEXT NOT NULL,
    revoked_at TEXT,
    revoked_reason TEXT
);
CREATE INDEX IF NOT EXISTS upload_tokens_transfer ON upload_tokens(transfer_id);
CREATE TABLE IF NOT EXISTS staff_tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    issued_at TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at TEXT
);
-- Browser sign-in (src/ui, workflow::sessions). Only SHA-256 hashes of login-link secrets and
-- session ids are stored: a copy of the database opens no session.
CREATE TABLE IF NOT EXISTS login_links (
    hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);
CREATE TABLE IF NOT EXISTS ui_sessions (
    hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    csrf TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    ended_at INTEGER,
    ended_reason TEXT
);
CREATE INDEX IF NOT EXISTS ui_sessions_user ON ui_sessions(user_id) WHERE ended_at IS NULL;
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    transfer_id TEXT NOT NULL REFERENCES transfers(id),
    path TEXT NOT NULL,
    collision_key TEXT NOT NULL,
    length INTEGER,
    received INTEGER NOT NULL,
    complete INTEGER NOT NULL,
    sha256 TEXT,
    blake3 TEXT,
    expected_sha256 TEXT,
    created_at TEXT NOT NULL,
    completed_at TEXT,
    -- A small member of a tar archive is stored inside its archive's pack (`packs`), at this
    -- offset, and has no `segments`; every other file is its own segments.
    pack TEXT,
    pack_offset INTEGER,
    UNIQUE (transfer_id, collision_key)
);
CREATE TABLE IF NOT EXISTS segments (
    file_id TEXT NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (file_id, seq)
);
-- What a streaming upload of unknown length (a chunked PUT) may still send: bytes granted
-- from the transfer's size budget as they arrive, so uploads in flight count against it. One
-- row per such upload in progress; the row goes when the file completes or is discarded.
CREATE TABLE IF NOT EXISTS upload_claims (
    file_id TEXT PRIMARY KEY REFERENCES files(id) ON DELETE CASCADE,
    transfer_id TEXT NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS upload_claims_transfer ON upload_claims(transfer_id);
CREATE TABLE IF NOT EXISTS decisions (
    id TEXT PRIMARY KEY,
    transfer_id TEXT NOT NULL REFERENCES transfers(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    role TEXT NOT NULL,
    decision TEXT NOT NULL,
    comment TEXT NOT NULL,
    root_digest TEXT NOT NULL,
    policy_version TEXT NOT NULL DEFAULT '',
    at TEXT NOT NULL,
    -- Why the decision no longer counts (the transfer was returned, say); NULL while it does.
    void_reason TEXT,
    -- The unscannable files a Referee acknowledged with this approval (JSON list), or ''.
    acknowledged TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS decisions_transfer ON decisions(transfer_id);
-- Referees assigned to a transfer from the referee college (paper 10.1). At tier 3+ an
-- assignment is `pending` until the Dataset Provider Representative counter-approves it.
CREATE TABLE IF NOT EXISTS referee_assignments (
    transfer_id TEXT NOT NULL REFERENCES transfers(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    state TEXT NOT NULL,
    assigned_by TEXT NOT NULL REFERENCES users(id),
    assigned_at TEXT NOT NULL,
    approved_by TEXT,
    PRIMARY KEY (transfer_id, user_id)
);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    transfer_id TEXT REFERENCES transfers(id),
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_events (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    transfer_id TEXT,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_transfer ON audit_events(transfer_id);
-- Webhook outbox, fed from the audit log: `webhook_cursor` is the last audit seq looked at.
CREATE TABLE IF NOT EXISTS webhook_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id TEXT PRIMARY KEY,
    audit_seq INTEGER NOT NULL,
    url TEXT NOT NULL,
    event TEXT NOT NULL,
    transfer_id TEXT,
    -- The exact body that is signed and sent.
    payload TEXT NOT NULL,
    -- `pending`, `delivered` or `failed` (after the last attempt; `webhooks retry` resets it).
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    -- Unix milliseconds.
    next_attempt_at INTEGER NOT NULL,
    last_status INTEGER,
    last_error TEXT,
    created_at TEXT NOT NULL,
    delivered_at TEXT
);
CREATE INDEX IF NOT EXISTS webhook_due ON webhook_deliveries(state, next_attempt_at);
-- Email outbox, fed from the audit log as the webhook outbox is (`notify::email`): one row per
-- event and person mailed; `mail_cursor` is the last audit seq looked at.
CREATE TABLE IF NOT EXISTS mail_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS mail_outbox (
    id TEXT PRIMARY KEY,
    audit_seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    transfer_id TEXT,
    -- The user mailed, and the address (`USER@[mail] domain` when queued).
    recipient TEXT NOT NULL,
    address TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    -- `pending`, `sent` or `failed` (after the last attempt).
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    -- Unix milliseconds; while a sender holds the row, the end of its lease.
    next_attempt_at INTEGER NOT NULL,
    last_error TEXT,
    created_at TEXT NOT NULL,
    sent_at TEXT,
    -- One message per event and person, however many reasons name them.
    UNIQUE (audit_seq, recipient)
);
CREATE INDEX IF NOT EXISTS mail_due ON mail_outbox(state, next_attempt_at);

-- One verdict per file (or archive member) and scanner, from the transfer's latest scan. Each is
-- pinned to the digest of the bytes scanned and to the scanner's and its database's versions.
CREATE TABLE IF NOT EXISTS scan_verdicts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    transfer_id TEXT NOT NULL REFERENCES transfers(id),
    file_id TEXT NOT NULL,
    path TEXT NOT NULL,
    -- The member's path inside the file when it came out of an archive ("inner.zip!a.txt").
    member TEXT NOT NULL DEFAULT '',
    scanner TEXT NOT NULL,
    verdict TEXT NOT NULL,
    -- The signature or finding name, or why it was unscannable, or the error.
    detail TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    scanner_version TEXT NOT NULL,
    db_version TEXT NOT NULL,
    scanned_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS scan_verdicts_transfer ON scan_verdicts(transfer_id);
-- Transfers whose scan failed (a scanner down or timing out), and when to try again.
CREATE TABLE IF NOT EXISTS scan_jobs (
    transfer_id TEXT PRIMARY KEY REFERENCES transfers(id),
    attempts INTEGER NOT NULL,
    retry_at INTEGER NOT NULL,
    last_error TEXT NOT NULL
);
-- Fixity: when each file at rest was last re-hashed, where, and what was found.
CREATE TABLE IF NOT EXISTS fixity (
    transfer_id TEXT NOT NULL REFERENCES transfers(id),
    location TEXT NOT NULL,
    path TEXT NOT NULL,
    verified_at INTEGER NOT NULL,
    result TEXT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (transfer_id, location, path)
);
-- Per-transfer totals, kept by triggers on `files`, so a limit check, a counter or a summary
-- costs the same with 10 files as with 100,000 (no SUM or COUNT over a transfer's files).
-- `reserved` is what the size limit counts: a file's declared length until more arrives.
CREATE TABLE IF NOT EXISTS transfer_totals (
    transfer_id TEXT PRIMARY KEY REFERENCES transfers(id),
    files INTEGER NOT NULL DEFAULT 0,
    complete INTEGER NOT NULL DEFAULT 0,
    received INTEGER NOT NULL DEFAULT 0,
    reserved INTEGER NOT NULL DEFAULT 0
);
CREATE TRIGGER IF NOT EXISTS transfer_totals_new AFTER INSERT ON transfers BEGIN
    INSERT OR IGNORE INTO transfer_totals (transfer_id) VALUES (NEW.id);
END;
CREATE TRIGGER IF NOT EXISTS files_totals_insert AFTER INSERT ON files BEGIN
    UPDATE transfer_totals SET files = files + 1, complete = complete + NEW.complete,
        received = received + NEW.received,
        reserved = reserved + MAX(NEW.received, COALESCE(NEW.length, 0))
    WHERE transfer_id = NEW.transfer_id;
END;
CREATE TRIGGER IF NOT EXISTS files_totals_delete AFTER DELETE ON files BEGIN
    UPDATE transfer_totals SET files = files - 1, complete = complete - OLD.complete,
        received = received - OLD.received,
        reserved = reserved - MAX(OLD.received, COALESCE(OLD.length, 0))
    WHERE transfer_id = OLD.transfer_id;
END;
CREATE TRIGGER IF NOT EXISTS files_totals_update AFTER UPDATE OF received, length, complete ON files
BEGIN
    UPDATE transfer_totals SET complete = complete - OLD.complete + NEW.complete,
        received = received - OLD.received + NEW.received,
        reserved = reserved - MAX(OLD.received, COALESCE(OLD.length, 0))
                            + MAX(NEW.received, COALESCE(NEW.length, 0))
    WHERE transfer_id = NEW.transfer_id;
END;
-- Listing a transfer's files in path order (pagination, streamed manifests) and finding one by
-- path use this index, not a scan of the transfer.
CREATE INDEX IF NOT EXISTS files_by_path ON files(transfer_id, path);
-- tus uploads of tar archives for the server to expand (workflow::archive_upload). Not files of
-- the manifest: never listed or counted; their members become files only when the whole archive
-- is accepted, in one transaction that also deletes the upload. Seal refuses while one exists.
CREATE TABLE IF NOT EXISTS archive_uploads (
    id TEXT PRIMARY KEY,
    transfer_id TEXT NOT NULL REFERENCES transfers(id),
    prefix TEXT,
    length INTEGER NOT NULL,
    received INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
-- The small members of one accepted tar archive, stored one after another in one quarantine
-- object (`transfers/<transfer>/<pack>/0000000000`): creating one file per 4 KiB member would
-- cost more than everything else the upload does. Members name their pack and offset.
-- `members` counts the members still there: the pack goes when the last is deleted.
CREATE TABLE IF NOT EXISTS packs (
    id TEXT PRIMARY KEY,
    transfer_id TEXT NOT NULL REFERENCES transfers(id),
    size INTEGER NOT NULL,
    members INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS archive_uploads_transfer ON archive_uploads(transfer_id);
CREATE TABLE IF NOT EXISTS archive_segments (
    archive_id TEXT NOT NULL REFERENCES archive_uploads(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (archive_id, seq)
);
-- Which rows of `scan_verdicts` are a transfer's current verdicts (ids first_seq..last_seq:
-- a scan writes in batches above them and moves the range when it ends), and their counts
-- by kind, so a status read gets them from one row whatever the file count.
CREATE TABLE IF NOT EXISTS scan_counts (
    transfer_id TEXT PRIMARY KEY REFERENCES transfers(id),
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    clean INTEGER NOT NULL DEFAULT 0,
    infected INTEGER NOT NULL DEFAULT 0,
    unscannable INTEGER NOT NULL DEFAULT 0,
    error INTEGER NOT NULL DEFAULT 0
);
-- The (scanner, database version) pairs of each transfer's current verdicts: a handful of
-- rows per transfer, so the signature watcher never reads the verdicts themselves.
CREATE TABLE IF NOT EXISTS scan_databases (
    transfer_id TEXT NOT NULL REFERENCES transfers(id),
    scanner TEXT NOT NULL,
    db_version TEXT NOT NULL,
    PRIMARY KEY (transfer_id, scanner, db_version)
);
-- Re-verification reads each location's oldest check of a transfer, and how many files have
-- one, from this index alone.
CREATE INDEX IF NOT EXISTS fixity_age ON fixity(transfer_id, location, verified_at);
-- Egress (DESIGN.md, "Egress in detail"). An egress request is a transfer of kind `egress`;
-- these tables hold what only egress has. Tables of their own, so that a data directory made
-- before egress upgrades in place.
-- A workspace's output volume when it is not `<project>/<workspace>/output` in the volumes.
CREATE TABLE IF NOT EXISTS workspace_output (
    workspace_id TEXT PRIMARY KEY REFERENCES workspaces(id),
    dir TEXT NOT NULL
);
-- The request: its context, its target workspace (a derived workspace) if any, and its round
-- (1 at the first submit, one more at each resubmit: votes of earlier rounds are void).
CREATE TABLE IF NOT EXISTS egress_requests (
    transfer_id TEXT PRIMARY KEY REFERENCES transfers(id),
    context TEXT NOT NULL,
    target_workspace_id TEXT REFERENCES workspaces(id),
    round INTEGER NOT NULL DEFAULT 0
);
-- What the researcher chose: files or folders of the output volume, each with its role
-- (`output`, `supporting`, `code`). A folder's files take its role at submit.
CREATE TABLE IF NOT EXISTS egress_items (
    transfer_id TEXT NOT NULL REFERENCES transfers(id),
    path TEXT NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (transfer_id, path)
);
CREATE TABLE IF NOT EXISTS egress_recipients (
    transfer_id TEXT NOT NULL REFERENCES transfers(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    PRIMARY KEY (transfer_id, user_id)
);
-- The role of each pinned file (the files table holds its digests), and the size and
-- modification time it had in the output volume when pinned: a file changed since shows so.
CREATE TABLE IF NOT EXISTS egress_files (
    transfer_id TEXT NOT NULL REFERENCES transfers(id),
    path TEXT NOT NULL,
    role TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    PRIMARY KEY (transfer_id, path)
);
-- Per-file votes of output checkers, per round.
CREATE TABLE IF NOT EXISTS egress_votes (
    transfer_id TEXT NOT NULL REFERENCES transfers(id),
    round INTEGER NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id),
    role TEXT NOT NULL,
    path TEXT NOT NULL,
    vote TEXT NOT NULL,
    comment TEXT NOT NULL,
    -- `checkers` or `shared` (with the researcher).
    visibility TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (transfer_id, round, user_id, path)
);
-- A checker's review, submitted once every file has their vote.
CREATE TABLE IF NOT EXISTS egress_reviews (
    transfer_id TEXT NOT NULL REFERENCES transfers(id),
    round INTEGER NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id),
    role TEXT NOT NULL,
    outcome TEXT NOT NULL,
    -- The checker's comment on the whole request, and who sees it (`shared` or `checkers`).
    comment TEXT NOT NULL DEFAULT '',
    visibility TEXT NOT NULL DEFAULT 'shared',
    at TEXT NOT NULL,
    PRIMARY KEY (transfer_id, round, user_id)
);
-- What the disclosure scanner found, per round. Never the value itself.
-- `id` (`F<round>-<n>`) is what checkers name a finding by: unique within its request.
CREATE TABLE IF NOT EXISTS disclosure_findings (
    id TEXT NOT NULL,
    transfer_id TEXT NOT NULL REFERENCES transfers(id),
    round INTEGER NOT NULL,
    path TEXT NOT NULL,
    rule TEXT NOT NULL,
    status TEXT NOT NULL,
    location TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (transfer_id, id)
);
CREATE INDEX IF NOT EXISTS disclosure_findings_transfer ON disclosure_findings(transfer_id, round);
-- Each file's disclosure report (ACRO-style JSON: kind, status, counts), per round.
CREATE TABLE IF NOT EXISTS disclosure_reports (
    transfer_id TEXT NOT NULL REFERENCES transfers(id),
    round INTEGER NOT NULL,
    path TEXT NOT NULL,
    report TEXT NOT NULL,
    PRIMARY KEY (transfer_id, round, path)
);
CREATE TABLE IF NOT EXISTS finding_acks (
    transfer_id TEXT NOT NULL,
    finding_id TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id),
    role TEXT NOT NULL,
    comment TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (transfer_id, finding_id, user_id),
    FOREIGN KEY (transfer_id, finding_id) REFERENCES disclosure_findings(transfer_id, id)
);
-- Read-only tokens of named recipients. The token itself is never stored.
CREATE TABLE IF NOT EXISTS collection_tokens (
    id TEXT PRIMARY KEY,
    transfer_id TEXT NOT NULL REFERENCES transfers(id),
    recipient_id TEXT NOT NULL REFERENCES users(id),
    root_digest TEXT NOT NULL,
    issued_by TEXT NOT NULL REFERENCES users(id),
    issued_at TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    cidrs TEXT NOT NULL,
    -- NULL: no limit.
    max_downloads INTEGER,
    downloads INTEGER NOT NULL DEFAULT 0,
    revoked_at TEXT
);
CREATE INDEX IF NOT EXISTS collection_tokens_transfer ON collection_tokens(transfer_id);
-- Who collected what and when.
CREATE TABLE IF NOT EXISTS collections (
    id TEXT PRIMARY KEY,
    token_id TEXT NOT NULL REFERENCES collection_tokens(id),
    transfer_id TEXT NOT NULL REFERENCES transfers(id),
    recipient TEXT NOT NULL,
    client TEXT NOT NULL,
    what TEXT NOT NULL,
    bytes INTEGER NOT NULL DEFAULT 0,
    started_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS collections_transfer ON collections(transfer_id);
-- An ACRO output folder the researcher included (its results.json, and its checksums/ checked
-- against the pinned files), per round: shown beside airlock's own disclosure checks.
CREATE TABLE IF NOT EXISTS acro_reports (
    transfer_id TEXT NOT NULL REFERENCES transfers(id),
    round INTEGER NOT NULL,
    path TEXT NOT NULL,
    report TEXT NOT NULL,
    PRIMARY KEY (transfer_id, round, path)
);
