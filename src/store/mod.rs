//! The metadata store: users, projects, workspaces, transfers, tokens, files and the audit log.
//!
//! SQLite is the embedded default; PostgreSQL (`[database] url = "postgres://…"`) is for
//! several replicas. Both run through sqlx's `Any` driver and the same statements: portable SQL
//! with `$n` placeholders, TEXT and BIGINT columns. The few constructs the two spell
//! differently go through [`Backend`]. Each backend's schema is a list of versioned migrations
//! (`migrations/sqlite`, `migrations/postgres`), applied at open.
//!
//! Writes that change a transfer's state go through [`Store::begin`], which hands out a
//! [`Tx`]: the state change and its audit event commit together or not at all.

use crate::audit::{self, AuditEvent};
use crate::domain::*;
use chrono::Utc;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor, Row};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

mod archives;
pub mod durable;
mod fixity;
mod governance;
mod metrics;
mod scans;
pub use archives::{keys_under_sql, ArchiveUploadRow, MemberRow};
pub use fixity::{AtRest, FixityRow};
pub use metrics::Queues;
pub use scans::{ScanJob, ScanTally, VerdictRow, VERDICT_KINDS};
mod browse;
mod egress;
mod leases;
mod uploads;
pub use uploads::S3Upload;
mod mail;
pub mod migrate;
mod ops;
mod sessions;
mod webhooks;
pub use browse::Entry;
pub use egress::{
    AckRow, CollectionRow, CollectionTokenRow, EgressRow, FindingRow, PinnedRow, ReviewRow, VoteRow,
};
pub use governance::{Member, RefereeRow};
pub use mail::{MailRow, NewMail};
pub use ops::IncidentScope;
pub use sessions::SessionRow;
pub use webhooks::{AuditRow, Delivery};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// The schema cannot be used: newer than this release, or a migration failed.
    #[error("database schema: {0}")]
    Schema(String),
    /// The database named by `[database] url` could not be reached at start.
    #[error("cannot connect to the database at {url}: {source}")]
    Connect {
        /// The URL, its password hidden (`redact_url`).
        url: String,
        source: sqlx::Error,
    },
    #[error("corrupt row in {table}: {message}")]
    Corrupt {
        table: &'static str,
        message: String,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

fn corrupt(table: &'static str) -> impl Fn(String) -> StoreError {
    move |message| StoreError::Corrupt { table, message }
}

pub fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub roles: Vec<Role>,
    /// Disabled by a Programme Manager (`airlock user disable`): none of their tokens work.
    pub disabled: bool,
}

#[derive(Debug, Clone)]
pub struct Project {
    pub id: ProjectId,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub project_id: ProjectId,
    pub project_name: String,
    pub name: String,
    pub tier: Tier,
    /// A policy file overriding the tier's default.
    pub policy_file: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Transfer {
    pub id: TransferId,
    pub workspace_id: WorkspaceId,
    pub kind: TransferKind,
    pub state: TransferState,
    pub state_reason: String,
    pub uploader_id: UserId,
    pub created_by: UserId,
    pub created_at: String,
    pub updated_at: String,
    pub sealed_at: Option<String>,
    pub root_digest: Option<String>,
    pub expected_root_digest: Option<String>,
    pub release_location: Option<String>,
    pub released_at: Option<String>,
    /// The policy version (its file's SHA-256) in force when the transfer was sealed.
    pub policy_version: Option<String>,
    /// Scanning left files unscannable and the policy lets review go on: a Referee must
    /// acknowledge them when approving.
    pub ack_required: bool,
}

#[derive(Debug, Clone)]
pub struct UploadTokenRow {
    pub id: TokenId,
    pub transfer_id: TransferId,
    pub expires_at: i64,
    pub cidrs: Vec<ipnet::IpNet>,
    pub revoked_reason: Option<String>,
}

#[derive(Debug, Clone)]
pub struct FileRow {
    pub id: FileId,
    pub transfer_id: TransferId,
    pub path: String,
    /// Declared length (tus `Upload-Length`); `None` for a plain PUT in progress.
    pub length: Option<u64>,
    /// Bytes durably stored so far.
    pub received: u64,
    pub complete: bool,
    pub sha256: Option<String>,
    pub blake3: Option<String>,
    pub expected_sha256: Option<String>,
    pub created_at: String,
    /// Where a packed archive member's bytes lie (it has no segments of its own).
    pub pack: Option<PackRef>,
}

/// A packed file's place: `len` bytes (its `length`) at `offset` in the pack object `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackRef {
    pub id: FileId,
    pub offset: u64,
}

#[derive(Debug, Clone)]
pub struct Decision {
    pub user_id: UserId,
    pub user: String,
    pub role: String,
    pub decision: String,
    pub comment: String,
    pub root_digest: String,
    pub policy_version: String,
    pub at: String,
    /// Why it no longer counts; `None` while it does.
    pub void_reason: Option<String>,
    /// Unscannable files acknowledged with this approval (JSON list), or "".
    pub acknowledged: String,
}

#[derive(Debug, Clone)]
pub struct Incident {
    pub id: String,
    pub transfer_id: Option<String>,
    pub kind: String,
    pub detail: String,
    pub state: String,
    pub created_at: String,
}

/// Which database a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// `sql` as this backend spells it. The shared statements are written as SQLite spells
    /// the two constructs that differ: `json_each($n) j` (the rows of a JSON list of strings
    /// bound at `$n`, as `j.value`) and `group_concat(x, sep)`.
    pub(crate) fn sql(self, sql: &str) -> std::borrow::Cow<'_, str> {
        match self {
            Backend::Sqlite => std::borrow::Cow::Borrowed(sql),
            Backend::Postgres => {
                // `CROSS JOIN … ON` is SQLite's way to fix the join order; PostgreSQL plans
                // the same inner join, written plainly.
                let mut out = sql
                    .replace("group_concat(", "string_agg(")
                    .replace(" CROSS JOIN ", " JOIN ");
                for n in 1..=9 {
                    out = out.replace(
                        &format!("json_each(${n}) j"),
                        &format!("json_array_elements_text(CAST(${n} AS json)) AS j(value)"),
                    );
                }
                std::borrow::Cow::Owned(out)
            }
        }
    }

    /// The statement that opens a write transaction. SQLite: IMMEDIATE takes the write lock
    /// now (a deferred transaction that reads first, the audit chain's head, fails with
    /// SQLITE_BUSY without waiting if another connection commits before it writes).
    fn begin_sql(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }
}

/// The key of the PostgreSQL advisory lock that serialises audited writes across replicas
/// (every [`Tx`] holds it until it ends), so the audit chain never forks: "airlock\0\0".
pub const AUDIT_LOCK_KEY: i64 = 0x6169_726c_6f63_6b00;

/// The metadata store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Serialises audited writes so each audit event sees the hash of the one before it.
    audit_lock: Arc<tokio::sync::Mutex<()>>,
    /// Keys every new audit record (`App::open` sets it; `None` writes unkeyed records).
    chain_key: Option<Arc<audit::ChainKey>>,
    /// Group commit (`durable`): commits run with `synchronous=NORMAL` and wait on one shared
    /// fdatasync of the `-wal` file. `None`: each commit syncs itself (`synchronous=FULL`).
    wal_sync: Option<durable::GroupSync>,
}

/// A write transaction that also appends audit events to the hash chain.
pub struct Tx<'a> {
    _guard: tokio::sync::MutexGuard<'a, ()>,
    tx: sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    chain_key: Option<Arc<audit::ChainKey>>,
    wal_sync: Option<durable::GroupSync>,
}

fn parse<T: FromStr>(table: &'static str, s: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse::<T>()
        .map_err(|e| corrupt(table)(format!("`{s}`: {e}")))
}

fn transfer_from_row(r: &sqlx::any::AnyRow) -> Result<Transfer> {
    let t = "transfers";
    Ok(Transfer {
        id: parse(t, r.try_get("id")?)?,
        workspace_id: parse(t, r.try_get("workspace_id")?)?,
        kind: parse(t, r.try_get("kind")?)?,
        state: parse(t, r.try_get("state")?)?,
        state_reason: r.try_get("state_reason")?,
        uploader_id: parse(t, r.try_get("uploader_id")?)?,
        created_by: parse(t, r.try_get("created_by")?)?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        sealed_at: r.try_get("sealed_at")?,
        root_digest: r.try_get("root_digest")?,
        expected_root_digest: r.try_get("expected_root_digest")?,
        release_location: r.try_get("release_location")?,
        released_at: r.try_get("released_at")?,
        policy_version: r.try_get("policy_version")?,
        ack_required: r.try_get::<i64, _>("ack_required")? != 0,
    })
}

fn file_from_row(r: &sqlx::any::AnyRow) -> Result<FileRow> {
    let t = "files";
    Ok(FileRow {
        id: parse(t, r.try_get("id")?)?,
        transfer_id: parse(t, r.try_get("transfer_id")?)?,
        path: r.try_get("path")?,
        length: r.try_get::<Option<i64>, _>("length")?.map(|v| v as u64),
        received: r.try_get::<i64, _>("received")? as u64,
        complete: r.try_get::<i64, _>("complete")? != 0,
        sha256: r.try_get("sha256")?,
        blake3: r.try_get("blake3")?,
        expected_sha256: r.try_get("expected_sha256")?,
        created_at: r.try_get("created_at")?,
        pack: match r.try_get::<Option<String>, _>("pack")? {
            Some(id) => Some(PackRef {
                id: parse(t, &id)?,
                offset: r
                    .try_get::<Option<i64>, _>("pack_offset")?
                    .unwrap_or(0)
                    .max(0) as u64,
            }),
            None => None,
        },
    })
}

/// Connections in the SQLite pool.
pub const CONNECTIONS: u32 = 8;
/// Each connection's page cache, KiB (`PRAGMA cache_size = -N`). Measured (benches/many.sh,
/// api.sh): 128 KiB keeps a 100,000- or 200,000-file transfer's every step under 58 MiB with
/// the same times and status-read latency as SQLite's default of about 2 MiB, which filled to
/// 16 MiB across the pool and took the peak to 74-77 MiB.
pub const PAGE_CACHE_KIB: u32 = 128;
/// Connections in the PostgreSQL pool (per replica).
pub const PG_CONNECTIONS: u32 = 16;

/// `sqlite://PATH?mode=rwc`, the path percent-encoded (a `?` or `#` in it stays part of it).
fn sqlite_url(path: &Path) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'?')
        .add(b'<')
        .add(b'>');
    let p = path.to_string_lossy();
    format!(
        "sqlite://{}?mode=rwc",
        percent_encoding::utf8_percent_encode(&p, SET)
    )
}

/// `VALUES ($1, …, $cols), (…)` for `rows` rows of `cols` values: numbered placeholders, which
/// both backends read (sqlx's `QueryBuilder` writes `?` for the Any driver, which PostgreSQL
/// does not). Bind the values row by row, in order.
pub(crate) fn values_list(rows: usize, cols: usize) -> String {
    let mut out = String::from(" VALUES ");
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..cols {
            if c > 0 {
                out.push_str(", ");
            }
            out.push_str(&format!("${}", r * cols + c + 1));
        }
        out.push(')');
    }
    out
}

/// A database URL with its password replaced, for messages.
/// How long the start waits for PostgreSQL, and a request for a pooled connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and applies the schema.
    pub async fn open_sqlite(path: &Path) -> Result<Self> {
        Self::open_sqlite_with(path, false).await
    }

    /// The store `url` names: `sqlite://PATH` or `postgres://…`. `group_commit` applies to
    /// SQLite only (PostgreSQL syncs its own WAL at commit).
    pub async fn open_url(url: &str, group_commit: bool) -> Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::open_postgres(url).await
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or(path);
            Self::open_sqlite_with(Path::new(path), group_commit).await
        } else {
            Err(StoreError::Corrupt {
                table: "[database] url",
                message: format!(
                    "`{}` is neither sqlite://PATH nor postgres://USER@HOST:PORT/DB",
                    redact_url(url)
                ),
            })
        }
    }

    /// Connects to PostgreSQL and applies the migrations this release knows (serialised
    /// across replicas starting at once by sqlx's advisory lock).
    pub async fn open_postgres(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        // One connection first, for the error that says why (refused, unknown host, bad
        // password): the pool's own would only say that it timed out.
        let connect_err = |source| StoreError::Connect {
            url: redact_url(url),
            source,
        };
        let connect = <sqlx::AnyConnection as sqlx::Connection>::connect(url);
        let first = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| connect_err(sqlx::Error::PoolTimedOut))?
            .map_err(connect_err)?;
        let _ = sqlx::Connection::close(first).await;
        let pool = AnyPoolOptions::new()
            .max_connections(PG_CONNECTIONS)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect(url)
            .await
            .map_err(connect_err)?;
        migrate::run(&pool, Backend::Postgres).await?;
        Ok(Self {
            pool,
            backend: Backend::Postgres,
            audit_lock: Arc::new(tokio::sync::Mutex::new(())),
            chain_key: None,
            wal_sync: None,
        })
    }

    /// As [`Store::open_sqlite`]; with `group_commit`, commits share their fsync (`durable`).
    pub async fn open_sqlite_with(path: &Path, group_commit: bool) -> Result<Self> {
        sqlx::any::install_default_drivers();
        // FULL: a committed row (an acknowledged byte's bookkeeping) survives power loss.
        // NORMAL under group commit: `Tx::commit` waits on the shared WAL fdatasync instead.
        let synchronous = if group_commit { "NORMAL" } else { "FULL" };
        let pool = AnyPoolOptions::new()
            .max_connections(CONNECTIONS)
            // No ping before each checkout: an embedded file cannot have dropped the
            // connection, and the ping is one more round trip to the connection's worker
            // thread (two thread wake-ups) for every query.
            .test_before_acquire(false)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    for pragma in [
                        "PRAGMA journal_mode = WAL".to_string(),
                        format!("PRAGMA synchronous = {synchronous}"),
                        "PRAGMA foreign_keys = ON".to_string(),
                        // The memory the database may hold whatever the file count: each
                        // connection's page cache is capped, so the pool's is at most
                        // `CONNECTIONS * PAGE_CACHE_KIB` (1 MiB), the fixed allowance over
                        // the server's 64 MiB. The OS page cache holds the rest.
                        format!("PRAGMA cache_size = -{PAGE_CACHE_KIB}"),
                        "PRAGMA busy_timeout = 10000".to_string(),
                    ] {
                        conn.execute(pragma.as_str()).await?;
                    }
                    Ok(())
                })
            })
            .connect(&sqlite_url(path))
            .await?;
        migrate::run(&pool, Backend::Sqlite).await?;
        // A database from before versioned migrations: `audit_events.mac` (from before the
        // chain was keyed), `files.pack*` (from before archives were packed), and the totals
        // and scan counts of transfers from before those tables.
        add_column(&pool, "audit_events", "mac", "TEXT").await?;
        add_column(&pool, "files", "pack", "TEXT").await?;
        add_column(&pool, "files", "pack_offset", "INTEGER").await?;
        backfill_totals(&pool).await?;
        scans::backfill_scan_counts(&pool).await?;
        let wal = {
            let mut p = path.as_os_str().to_owned();
            p.push("-wal");
            std::path::PathBuf::from(p)
        };
        Ok(Self {
            pool,
            backend: Backend::Sqlite,
            audit_lock: Arc::new(tokio::sync::Mutex::new(())),
            chain_key: None,
            wal_sync: group_commit.then(|| durable::wal_sync(wal)),
        })
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// `sql` as this store's backend spells it ([`Backend::sql`]).
    pub(crate) fn sql<'s>(&self, sql: &'s str) -> std::borrow::Cow<'s, str> {
        self.backend.sql(sql)
    }

    /// Keys every audit record written from now on (see `audit::key`).
    pub fn with_chain_key(mut self, key: audit::ChainKey) -> Self {
        self.chain_key = Some(Arc::new(key));
        self
    }

    /// How many shared WAL fdatasyncs group commit has made (`None` without group commit).
    pub fn wal_syncs(&self) -> Option<u64> {
        self.wal_sync.as_ref().map(durable::GroupSync::runs)
    }

    /// The key new audit records are written with.
    pub fn chain_key(&self) -> Option<&audit::ChainKey> {
        self.chain_key.as_deref()
    }

    /// The chain's length and how many of its records carry a mac.
    pub async fn audit_counts(&self) -> Result<(u64, u64)> {
        let r = sqlx::query("SELECT COUNT(*) AS n, COUNT(mac) AS k FROM audit_events")
            .fetch_one(&self.pool)
            .await?;
        Ok((
            r.try_get::<i64, _>("n")? as u64,
            r.try_get::<i64, _>("k")? as u64,
        ))
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn begin(&self) -> Result<Tx<'_>> {
        let guard = self.audit_lock.lock().await;
        let mut tx = self.pool.begin_with(self.backend.begin_sql()).await?;
        if self.backend == Backend::Postgres {
            // Every replica's audited writes queue here, as SQLite's IMMEDIATE queues them: the
            // chain's head read below is the head when this transaction appends. Released at
            // commit or rollback.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(AUDIT_LOCK_KEY)
                .execute(&mut *tx)
                .await?;
        }
        Ok(Tx {
            _guard: guard,
            tx,
            backend: self.backend,
            chain_key: self.chain_key.clone(),
            wal_sync: self.wal_sync.clone(),
        })
    }

    /// Appends one audit event in a transaction of its own.
    pub async fn audit(&self, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.audit(event).await?;
        tx.commit().await
    }

    // ---- users, projects, workspaces -------------------------------------------------------

    pub async fn user_by_name(&self, name: &str) -> Result<Option<User>> {
        let row = sqlx::query(&self.sql(&format!("{USER_SELECT} FROM users u WHERE u.name = $1")))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(Some(Self::user_from_row(&r)?)),
            None => Ok(None),
        }
    }

    pub async fn user(&self, id: UserId) -> Result<Option<User>> {
        let row = sqlx::query(&self.sql(&format!("{USER_SELECT} FROM users u WHERE u.id = $1")))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(Some(Self::user_from_row(&r)?)),
            None => Ok(None),
        }
    }

    /// A user from a row of [`USER_SELECT`]: roles and the disabled flag come with it, so a
    /// user costs one query (this runs on every staff request).
    fn user_from_row(r: &sqlx::any::AnyRow) -> Result<User> {
        let id: UserId = parse("users", r.try_get("id")?)?;
        let list = r.try_get::<Option<String>, _>("roles")?.unwrap_or_default();
        // In name order, as the roles were always listed.
        let mut names: Vec<&str> = list.split(',').filter(|s| !s.is_empty()).collect();
        names.sort_unstable();
        let roles = names
            .into_iter()
            .map(|s| parse("user_roles", s))
            .collect::<Result<Vec<Role>>>()?;
        Ok(User {
            id,
            name: r.try_get("name")?,
            roles,
            disabled: r.try_get::<i64, _>("disabled")? != 0,
        })
    }

    /// The user of a staff token, if both exist, with whether the token is unrevoked: one
    /// query for what every staff request checks first.
    pub async fn staff_token_user(
        &self,
        token: TokenId,
        user: UserId,
    ) -> Result<Option<(bool, User)>> {
        let sql = format!(
            "{USER_SELECT}, CASE WHEN t.revoked_at IS NULL THEN 1 ELSE 0 END AS live \
             FROM staff_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = $1 AND u.id = $2"
        );
        let row = sqlx::query(&self.sql(&sql))
            .bind(token.to_string())
            .bind(user.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get::<i64, _>("live")? != 0, Self::user_from_row(&r)?)))
            .transpose()
    }

    /// Names of users by id (one query; ids not found are left out).
    pub async fn user_names(
        &self,
        ids: &[UserId],
    ) -> Result<std::collections::HashMap<UserId, String>> {
        let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        sqlx::query(
            &self.sql(
                "SELECT u.id, u.name FROM json_each($1) j CROSS JOIN users u ON u.id = j.value",
            ),
        )
        .bind(serde_json::to_string(&list).unwrap_or_else(|_| "[]".into()))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((parse("users", r.try_get("id")?)?, r.try_get("name")?)))
        .collect()
    }

    pub async fn project_by_name(&self, name: &str) -> Result<Option<Project>> {
        let row = sqlx::query("SELECT id, name FROM projects WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(Project {
                id: parse("projects", r.try_get("id")?)?,
                name: r.try_get("name")?,
            })
        })
        .transpose()
    }

    /// The roles `user` holds in `project` (counter-approved where that was needed).
    pub async fn member_roles(&self, project: ProjectId, user: UserId) -> Result<Vec<Role>> {
        sqlx::query(
            "SELECT role FROM project_members WHERE project_id = $1 AND user_id = $2 \
             AND state = 'active'",
        )
        .bind(project.to_string())
        .bind(user.to_string())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| parse("project_members", r.try_get("role")?))
        .collect()
    }

    const WORKSPACE_SELECT: &'static str =
        "SELECT w.id, w.project_id, p.name AS project_name, w.name, w.tier, w.policy_file \
         FROM workspaces w JOIN projects p ON p.id = w.project_id";

    fn workspace_from_row(r: &sqlx::any::AnyRow) -> Result<Workspace> {
        let t = "workspaces";
        Ok(Workspace {
            id: parse(t, r.try_get("id")?)?,
            project_id: parse(t, r.try_get("project_id")?)?,
            project_name: r.try_get("project_name")?,
            name: r.try_get("name")?,
            tier: Tier::try_from(r.try_get::<i64, _>("tier")?).map_err(corrupt(t))?,
            policy_file: r.try_get("policy_file")?,
        })
    }

    pub async fn workspace_by_name(&self, project: &str, name: &str) -> Result<Option<Workspace>> {
        let q = format!(
            "{} WHERE p.name = $1 AND w.name = $2",
            Self::WORKSPACE_SELECT
        );
        let row = sqlx::query(&q)
            .bind(project)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::workspace_from_row).transpose()
    }

    pub async fn workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>> {
        let q = format!("{} WHERE w.id = $1", Self::WORKSPACE_SELECT);
        let row = sqlx::query(&q)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::workspace_from_row).transpose()
    }

    // ---- transfers -------------------------------------------------------------------------

    /// A transfer with its workspace, in one query (every request about a transfer starts
    /// here). `None` if either is missing.
    pub async fn transfer_with_workspace(
        &self,
        id: TransferId,
    ) -> Result<Option<(Transfer, Workspace)>> {
        let row = sqlx::query(
            "SELECT t.*, w.project_id AS ws_project_id, p.name AS ws_project_name, \
             w.name AS ws_name, w.tier AS ws_tier, w.policy_file AS ws_policy_file \
             FROM transfers t JOIN workspaces w ON w.id = t.workspace_id \
             JOIN projects p ON p.id = w.project_id WHERE t.id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        let t = transfer_from_row(&r)?;
        let w = "workspaces";
        let ws = Workspace {
            id: t.workspace_id,
            project_id: parse(w, r.try_get("ws_project_id")?)?,
            project_name: r.try_get("ws_project_name")?,
            name: r.try_get("ws_name")?,
            tier: Tier::try_from(r.try_get::<i64, _>("ws_tier")?).map_err(corrupt(w))?,
            policy_file: r.try_get("ws_policy_file")?,
        };
        Ok(Some((t, ws)))
    }

    pub async fn transfer(&self, id: TransferId) -> Result<Option<Transfer>> {
        let row = sqlx::query("SELECT * FROM transfers WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(transfer_from_row).transpose()
    }

    /// Transfers of the given workspaces, newest first.
    pub async fn transfers_in(&self, workspace: WorkspaceId) -> Result<Vec<Transfer>> {
        sqlx::query("SELECT * FROM transfers WHERE workspace_id = $1 ORDER BY created_at DESC")
            .bind(workspace.to_string())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(transfer_from_row)
            .collect()
    }

    pub async fn transfers_in_state(&self, state: TransferState) -> Result<Vec<Transfer>> {
        sqlx::query("SELECT * FROM transfers WHERE state = $1")
            .bind(state.as_str())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(transfer_from_row)
            .collect()
    }

    /// Open transfers that have been given tokens and whose every token has run out.
    pub async fn open_transfers_with_expired_tokens(&self, now: i64) -> Result<Vec<TransferId>> {
        // Only a token that ran out of time counts: one a manager revoked (and that was still
        // live when revoked) leaves the transfer open for the next token.
        sqlx::query(
            "SELECT t.id FROM transfers t WHERE t.state = 'open' \
             AND EXISTS (SELECT 1 FROM upload_tokens u WHERE u.transfer_id = t.id \
                         AND u.revoked_at IS NULL AND u.expires_at <= $1) \
             AND NOT EXISTS (SELECT 1 FROM upload_tokens u WHERE u.transfer_id = t.id \
                             AND u.revoked_at IS NULL AND u.expires_at > $1)",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| parse("transfers", r.try_get("id")?))
        .collect()
    }

    /// Everyone who was ever given an upload token of the transfer.
    pub async fn token_issuers(&self, transfer: TransferId) -> Result<Vec<UserId>> {
        sqlx::query("SELECT DISTINCT issued_by FROM upload_tokens WHERE transfer_id = $1")
            .bind(transfer.to_string())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| parse("upload_tokens", r.try_get("issued_by")?))
            .collect()
    }

    pub async fn decisions(&self, transfer: TransferId) -> Result<Vec<Decision>> {
        let mut conn = self.pool.acquire().await?;
        decisions_on(&mut conn, transfer).await
    }

    pub async fn incidents(&self, transfer: Option<TransferId>) -> Result<Vec<Incident>> {
        // Two statements, not `($1 IS NULL OR transfer_id = $1)`: a plan made for either
        // case cannot use the index for one transfer's.
        let rows = match transfer {
            Some(t) => {
                sqlx::query(INCIDENTS_OF_SQL)
                    .bind(t.to_string())
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM incidents ORDER BY created_at, id")
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter()
            .map(|r| {
                Ok(Incident {
                    id: r.try_get("id")?,
                    transfer_id: r.try_get("transfer_id")?,
                    kind: r.try_get("kind")?,
                    detail: r.try_get("detail")?,
                    state: r.try_get("state")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    // ---- tokens ----------------------------------------------------------------------------

    pub async fn upload_token(&self, id: TokenId) -> Result<Option<UploadTokenRow>> {
        let row = sqlx::query("SELECT * FROM upload_tokens WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let t = "upload_tokens";
            let cidrs: String = r.try_get("cidrs")?;
            Ok(UploadTokenRow {
                id: parse(t, r.try_get("id")?)?,
                transfer_id: parse(t, r.try_get("transfer_id")?)?,
                expires_at: r.try_get("expires_at")?,
                cidrs: serde_json::from_str(&cidrs).map_err(|e| corrupt(t)(e.to_string()))?,
                revoked_reason: r.try_get("revoked_reason")?,
            })
        })
        .transpose()
    }

    /// Whether a staff token id is known and not revoked.
    /// Whether `user` has been disabled: one indexed lookup, for the upload path.
    pub async fn user_disabled(&self, user: UserId) -> Result<bool> {
        Ok(
            sqlx::query("SELECT 1 FROM user_disabled WHERE user_id = $1")
                .bind(user.to_string())
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// The user a staff token was minted for, if it exists.
    pub async fn staff_token_owner(&self, id: TokenId) -> Result<Option<UserId>> {
        sqlx::query("SELECT user_id FROM staff_tokens WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| parse("staff_tokens", r.try_get("user_id")?))
            .transpose()
    }

    pub async fn staff_token_live(&self, id: TokenId) -> Result<bool> {
        let row = sqlx::query("SELECT revoked_at FROM staff_tokens WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(matches!(row, Some(r) if r.try_get::<Option<String>, _>("revoked_at")?.is_none()))
    }

    // ---- files -----------------------------------------------------------------------------

    pub async fn files(&self, transfer: TransferId) -> Result<Vec<FileRow>> {
        sqlx::query("SELECT * FROM files WHERE transfer_id = $1 ORDER BY path")
            .bind(transfer.to_string())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(file_from_row)
            .collect()
    }

    pub async fn file(&self, id: FileId) -> Result<Option<FileRow>> {
        let row = sqlx::query("SELECT * FROM files WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(file_from_row).transpose()
    }

    pub async fn file_by_path(&self, transfer: TransferId, path: &str) -> Result<Option<FileRow>> {
        let row = sqlx::query(FILE_BY_PATH_SQL)
            .bind(transfer.to_string())
            .bind(path)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(file_from_row).transpose()
    }

    /// The transfer's counts (files, complete, bytes), at a constant cost.
    pub async fn totals(&self, transfer: TransferId) -> Result<Totals> {
        let mut conn = self.pool.acquire().await?;
        totals_on(&mut conn, transfer).await
    }

    /// One page of the transfer's files in path order, after the cursor `after`.
    pub async fn files_page(
        &self,
        transfer: TransferId,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<FileRow>> {
        let mut conn = self.pool.acquire().await?;
        files_page_on(&mut conn, transfer, after, limit).await
    }

    /// Every file of the transfer in path order, read `FILE_BATCH` rows at a time. For states
    /// in which the file list no longer changes (sealed and after); under an open transfer a
    /// walk sees each path at most once.
    pub fn file_stream(
        &self,
        transfer: TransferId,
    ) -> futures::stream::BoxStream<'static, Result<FileRow>> {
        use futures::{StreamExt, TryStreamExt};
        let store = self.clone();
        futures::stream::try_unfold(
            (store, None::<String>, false),
            move |(store, after, done)| async move {
                if done {
                    return Ok::<_, StoreError>(None);
                }
                let page = store
                    .files_page(transfer, after.as_deref(), FILE_BATCH)
                    .await?;
                let last = page.last().map(|f| f.path.clone());
                let done = (page.len() as u32) < FILE_BATCH;
                Ok(Some((
                    futures::stream::iter(page.into_iter().map(Ok)),
                    (store, last, done),
                )))
            },
        )
        .try_flatten()
        .boxed()
    }

    /// The sizes of a file's stored segments, in order.
    pub async fn segments(&self, file: FileId) -> Result<Vec<u64>> {
        sqlx::query("SELECT size FROM segments WHERE file_id = $1 ORDER BY seq")
            .bind(file.to_string())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok(r.try_get::<i64, _>("size")? as u64))
            .collect()
    }

    /// Records one more durably stored segment of `size` bytes and the new received count.
    pub async fn add_segment(&self, file: FileId, seq: u64, size: u64) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        record_segment(&mut tx, file, seq, size).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest event's seq and hash, or `(0, GENESIS)` for an empty chain.
    pub async fn audit_head(&self) -> Result<(i64, String)> {
        let row = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => (r.try_get("seq")?, r.try_get("hash")?),
            None => (0, audit::GENESIS.to_string()),
        })
    }

    /// The whole audit chain, in order.
    pub async fn audit_records(&self) -> Result<Vec<audit::Record>> {
        sqlx::query("SELECT * FROM audit_events ORDER BY seq")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(audit::Record {
                    seq: r.try_get("seq")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    transfer_id: r.try_get("transfer_id")?,
                    detail: r.try_get("detail")?,
                    prev_hash: r.try_get("prev_hash")?,
                    hash: r.try_get("hash")?,
                    mac: r.try_get("mac")?,
                })
            })
            .collect()
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// Adds a column a database made by an older release lacks (table and column names are
/// constants of this file, never input).
async fn add_column(pool: &AnyPool, table: &str, column: &str, decl: &str) -> Result<()> {
    let has: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pragma_table_info($1) WHERE name = $2")
        .bind(table)
        .bind(column)
        .fetch_one(pool)
        .await?;
    if has == 0 {
        sqlx::query(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Gives every transfer from before `transfer_totals` existed its totals, counted once.
async fn backfill_totals(pool: &AnyPool) -> Result<()> {
    sqlx::query(
        "INSERT INTO transfer_totals (transfer_id, files, complete, received, reserved) \
         SELECT t.id, COUNT(f.id), COALESCE(SUM(f.complete), 0), COALESCE(SUM(f.received), 0), \
                COALESCE(SUM(MAX(f.received, COALESCE(f.length, 0))), 0) \
         FROM transfers t LEFT JOIN files f ON f.transfer_id = t.id \
         WHERE t.id NOT IN (SELECT transfer_id FROM transfer_totals) GROUP BY t.id",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A transfer's counts, kept by triggers (schema.sql, `transfer_totals`).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Totals {
    pub files: u64,
    pub complete: u64,
    /// Bytes stored.
    pub received: u64,
    /// What the size limit counts: declared lengths of unfinished uploads, or what arrived.
    pub reserved: u64,
}

async fn totals_on(conn: &mut sqlx::AnyConnection, transfer: TransferId) -> Result<Totals> {
    let row = sqlx::query(TOTALS_SQL)
        .bind(transfer.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    let Some(r) = row else {
        return Ok(Totals::default());
    };
    let n = |c: &str| -> Result<u64> { Ok(r.try_get::<i64, _>(c)?.max(0) as u64) };
    Ok(Totals {
        files: n("files")?,
        complete: n("complete")?,
        received: n("received")?,
        reserved: n("reserved")?,
    })
}

/// Up to `limit` of a transfer's files in path (byte) order, after `after`.
async fn files_page_on(
    conn: &mut sqlx::AnyConnection,
    transfer: TransferId,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<FileRow>> {
    sqlx::query(FILES_PAGE_SQL)
        .bind(transfer.to_string())
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(file_from_row)
        .collect()
}

// Queries run once per file (or per upload request). Each must be an index search, never a
// scan of the transfer's files: `per_file_queries_use_an_index` checks their query plans.
/// A user with their roles and disabled flag, in one row (`u` is `users`).
const USER_SELECT: &str = "SELECT u.id, u.name, \
     (SELECT group_concat(role, ',') FROM user_roles WHERE user_id = u.id) AS roles, \
     CASE WHEN EXISTS (SELECT 1 FROM user_disabled WHERE user_id = u.id) THEN 1 ELSE 0 END \
     AS disabled";
/// A transfer's incidents, in the order they are listed (index `incidents_by_transfer`).
pub(crate) const INCIDENTS_OF_SQL: &str =
    "SELECT * FROM incidents WHERE transfer_id = $1 ORDER BY created_at, id";

pub(crate) const SAME_KEY_SQL: &str =
    "SELECT path FROM files WHERE transfer_id = $1 AND collision_key = $2";
const UNDER_KEY_SQL: &str = "SELECT path FROM files WHERE transfer_id = $1 \
     AND collision_key >= $2 AND collision_key < $3 LIMIT 1";
const FILES_PAGE_SQL: &str =
    "SELECT * FROM files WHERE transfer_id = $1 AND path > $2 ORDER BY path LIMIT $3";
const FILE_BY_PATH_SQL: &str = "SELECT * FROM files WHERE transfer_id = $1 AND path = $2";
const TOTALS_SQL: &str =
    "SELECT files, complete, received, reserved FROM transfer_totals WHERE transfer_id = $1";
const CLAIMS_SQL: &str =
    "SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM upload_claims WHERE transfer_id = $1";
// MAX(seq) on the integer key is a lookup (`SEARCH`); it finds the same row as
// `ORDER BY seq DESC LIMIT 1`, which SQLite reports as a SCAN that stops at once.
const AUDIT_HEAD_SQL: &str =
    "SELECT hash FROM audit_events WHERE seq = (SELECT MAX(seq) FROM audit_events)";

/// How many rows a streamed walk over a transfer's files reads at a time: memory stays flat
/// whatever the file count.
pub const FILE_BATCH: u32 = 1000;

/// A segment row and the file's new received count, on whatever connection holds the
/// transaction.
async fn record_segment(
    conn: &mut sqlx::AnyConnection,
    file: FileId,
    seq: u64,
    size: u64,
) -> Result<()> {
    sqlx::query("INSERT INTO segments (file_id, seq, size) VALUES ($1, $2, $3)")
        .bind(file.to_string())
        .bind(seq as i64)
        .bind(size as i64)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE files SET received = received + $2 WHERE id = $1")
        .bind(file.to_string())
        .bind(size as i64)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

const DECISION_SELECT: &str =
    "SELECT d.user_id, u.name, d.role, d.decision, d.comment, d.root_digest, d.policy_version, \
     d.at, d.void_reason, d.acknowledged FROM decisions d JOIN users u ON u.id = d.user_id \
     WHERE d.transfer_id = $1 ORDER BY d.at, d.rowid";

/// A transfer's decisions, oldest first, on whatever connection is given.
async fn decisions_on(
    conn: &mut sqlx::AnyConnection,
    transfer: TransferId,
) -> Result<Vec<Decision>> {
    let rows = sqlx::query(DECISION_SELECT)
        .bind(transfer.to_string())
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Decision {
                user_id: parse("decisions", r.try_get("user_id")?)?,
                user: r.try_get("name")?,
                role: r.try_get("role")?,
                decision: r.try_get("decision")?,
                comment: r.try_get("comment")?,
                root_digest: r.try_get("root_digest")?,
                policy_version: r.try_get("policy_version")?,
                at: r.try_get("at")?,
                void_reason: r.try_get("void_reason")?,
                acknowledged: r.try_get("acknowledged")?,
            })
        })
        .collect()
}

/// A decision to record, bound to the manifest and policy version it saw.
pub struct NewDecision<'a> {
    pub transfer: TransferId,
    pub user: UserId,
    pub role: Role,
    pub decision: &'a str,
    pub comment: &'a str,
    pub root_digest: &'a str,
    pub policy_version: &'a str,
    /// Unscannable files a Referee acknowledges with this approval (JSON list), or "".
    pub acknowledged: &'a str,
}

/// What `insert_file` found in the way.
#[derive(Debug)]
pub enum FileConflict {
    /// Another file already has this collision key.
    SameName(String),
    /// A folder of the new path is a file, or the new path is a folder of an existing file.
    FileFolder(String),
}

impl Tx<'_> {
    /// The transfer's state, read on this transaction's connection (a second pool connection
    /// could wait on writers that wait on this transaction).
    pub async fn transfer_state(&mut self, id: TransferId) -> Result<Option<TransferState>> {
        let row = sqlx::query("SELECT state FROM transfers WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|r| parse("transfers", r.try_get("state")?))
            .transpose()
    }

    /// Whether the transfer has an upload token that is neither revoked nor expired at `now`.
    pub async fn has_live_token(&mut self, transfer: TransferId, now: i64) -> Result<bool> {
        let r = sqlx::query(
            "SELECT COUNT(*) AS n FROM upload_tokens WHERE transfer_id = $1 \
             AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(transfer.to_string())
        .bind(now)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(r.try_get::<i64, _>("n")? > 0)
    }

    /// Why an upload token was revoked, if it was.
    pub async fn token_revoked(&mut self, id: TokenId) -> Result<Option<String>> {
        let row = sqlx::query("SELECT revoked_reason FROM upload_tokens WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<Option<String>, _>("revoked_reason")?,
            None => Some("unknown token".into()),
        })
    }

    pub async fn file_count(&mut self, transfer: TransferId) -> Result<u64> {
        Ok(totals_on(&mut self.tx, transfer).await?.files)
    }

    /// The transfer's counts, on this transaction's connection.
    pub async fn totals(&mut self, transfer: TransferId) -> Result<Totals> {
        totals_on(&mut self.tx, transfer).await
    }

    /// One page of the transfer's files, on this transaction's connection.
    pub async fn files_page(
        &mut self,
        transfer: TransferId,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<FileRow>> {
        files_page_on(&mut self.tx, transfer, after, limit).await
    }

    /// Bytes a transfer holds or has been promised: declared lengths of unfinished uploads,
    /// and what streaming uploads of unknown length have been granted so far. The files' part
    /// is a kept total; the grants are one row per upload in flight.
    pub async fn transfer_bytes(&mut self, transfer: TransferId) -> Result<u64> {
        let claims: i64 = sqlx::query_scalar(CLAIMS_SQL)
            .bind(transfer.to_string())
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(totals_on(&mut self.tx, transfer).await?.reserved + claims.max(0) as u64)
    }

    pub async fn files(&mut self, transfer: TransferId) -> Result<Vec<FileRow>> {
        sqlx::query("SELECT * FROM files WHERE transfer_id = $1 ORDER BY path")
            .bind(transfer.to_string())
            .fetch_all(&mut *self.tx)
            .await?
            .iter()
            .map(file_from_row)
            .collect()
    }

    /// Records one more stored segment, as `Store::add_segment` does, inside this transaction.
    pub async fn add_segment(&mut self, file: FileId, seq: u64, size: u64) -> Result<()> {
        record_segment(&mut self.tx, file, seq, size).await
    }

    /// Records that segment `seq` (the file's last) was rewritten `added` bytes longer: a
    /// small piece merged with the next chunk instead of followed by a new piece.
    pub async fn grow_segment(&mut self, file: FileId, seq: u64, added: u64) -> Result<()> {
        let done =
            sqlx::query("UPDATE segments SET size = size + $3 WHERE file_id = $1 AND seq = $2")
                .bind(file.to_string())
                .bind(seq as i64)
                .bind(added as i64)
                .execute(&mut *self.tx)
                .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Corrupt {
                table: "segments",
                message: format!("file {file} has no segment {seq} to grow"),
            });
        }
        sqlx::query("UPDATE files SET received = received + $2 WHERE id = $1")
            .bind(file.to_string())
            .bind(added as i64)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Sets how many bytes a streaming upload of unknown length has been granted.
    pub async fn set_claim(
        &mut self,
        file: FileId,
        transfer: TransferId,
        bytes: u64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO upload_claims (file_id, transfer_id, bytes) VALUES ($1, $2, $3) \
             ON CONFLICT (file_id) DO UPDATE SET bytes = excluded.bytes",
        )
        .bind(file.to_string())
        .bind(transfer.to_string())
        .bind(bytes as i64)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Drops a streaming upload's grant (it completed: its received bytes count instead).
    pub async fn drop_claim(&mut self, file: FileId) -> Result<()> {
        sqlx::query("DELETE FROM upload_claims WHERE file_id = $1")
            .bind(file.to_string())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Commits; returns once the commit is durable. Under group commit the write lock is
    /// let go first, so the writers behind this one commit while it waits and share its sync.
    pub async fn commit(self) -> Result<()> {
        let Tx {
            _guard,
            tx,
            wal_sync,
            ..
        } = self;
        tx.commit().await?;
        drop(_guard);
        if let Some(sync) = wal_sync {
            sync.wait().await.map_err(sqlx::Error::Io)?;
        }
        Ok(())
    }

    pub async fn audit(&mut self, event: AuditEvent) -> Result<()> {
        let prev: String = sqlx::query(AUDIT_HEAD_SQL)
            .fetch_optional(&mut *self.tx)
            .await?
            .map(|r| r.try_get("hash"))
            .transpose()?
            .unwrap_or_else(|| audit::GENESIS.to_string());
        let seq: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM audit_events")
            .fetch_one(&mut *self.tx)
            .await?
            .try_get("n")?;
        let rec = match &self.chain_key {
            Some(key) => audit::Record::seal_keyed(seq, now(), event, prev, key),
            None => audit::Record::seal(seq, now(), event, prev),
        };
        sqlx::query(
            "INSERT INTO audit_events (seq, at, actor, action, transfer_id, detail, prev_hash, hash, mac) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(rec.seq)
        .bind(&rec.at)
        .bind(&rec.actor)
        .bind(&rec.action)
        .bind(&rec.transfer_id)
        .bind(&rec.detail)
        .bind(&rec.prev_hash)
        .bind(&rec.hash)
        .bind(&rec.mac)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn create_user(&mut self, name: &Name, roles: &[Role]) -> Result<UserId> {
        let id = UserId::new();
        sqlx::query("INSERT INTO users (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(id.to_string())
            .bind(name.as_str())
            .bind(now())
            .execute(&mut *self.tx)
            .await?;
        for r in roles {
            self.add_user_role(id, *r).await?;
        }
        Ok(id)
    }

    pub async fn add_user_role(&mut self, user: UserId, role: Role) -> Result<()> {
        sqlx::query(
            "INSERT INTO user_roles (user_id, role) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(user.to_string())
        .bind(role.as_str())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn create_project(&mut self, name: &Name) -> Result<ProjectId> {
        let id = ProjectId::new();
        sqlx::query("INSERT INTO projects (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(id.to_string())
            .bind(name.as_str())
            .bind(now())
            .execute(&mut *self.tx)
            .await?;
        Ok(id)
    }

    pub async fn create_workspace(
        &mut self,
        project: ProjectId,
        name: &Name,
        tier: Tier,
        policy_file: Option<&str>,
    ) -> Result<WorkspaceId> {
        let id = WorkspaceId::new();
        sqlx::query(
            "INSERT INTO workspaces (id, project_id, name, tier, policy_file, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id.to_string())
        .bind(project.to_string())
        .bind(name.as_str())
        .bind(i64::from(tier))
        .bind(policy_file)
        .bind(now())
        .execute(&mut *self.tx)
        .await?;
        Ok(id)
    }

    pub async fn insert_transfer(&mut self, t: &Transfer) -> Result<()> {
        sqlx::query(
            "INSERT INTO transfers (id, workspace_id, kind, state, state_reason, uploader_id, \
             created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(t.id.to_string())
        .bind(t.workspace_id.to_string())
        .bind(t.kind.as_str())
        .bind(t.state.as_str())
        .bind(&t.state_reason)
        .bind(t.uploader_id.to_string())
        .bind(t.created_by.to_string())
        .bind(&t.created_at)
        .bind(&t.updated_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Moves a transfer from `from` to `to`. Returns false (changing nothing) if it was no
    /// longer in `from`: someone else got there first.
    pub async fn set_state(
        &mut self,
        id: TransferId,
        from: TransferState,
        to: TransferState,
        reason: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE transfers SET state = $3, state_reason = $4, updated_at = $5 \
             WHERE id = $1 AND state = $2",
        )
        .bind(id.to_string())
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(reason)
        .bind(now())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn set_sealed(
        &mut self,
        id: TransferId,
        root: &HexDigest,
        expected_root: Option<&HexDigest>,
        policy_version: &HexDigest,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE transfers SET sealed_at = $2, root_digest = $3, expected_root_digest = $4, \
             policy_version = $5 WHERE id = $1",
        )
        .bind(id.to_string())
        .bind(now())
        .bind(root.as_str())
        .bind(expected_root.map(|d| d.as_str().to_owned()))
        .bind(policy_version.as_str())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn set_released(&mut self, id: TransferId, location: &str) -> Result<()> {
        sqlx::query("UPDATE transfers SET release_location = $2, released_at = $3 WHERE id = $1")
            .bind(id.to_string())
            .bind(location)
            .bind(now())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn insert_upload_token(
        &mut self,
        id: TokenId,
        transfer: TransferId,
        issued_by: UserId,
        expires_at: i64,
        cidrs: &[ipnet::IpNet],
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO upload_tokens (id, transfer_id, issued_by, issued_at, expires_at, cidrs) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id.to_string())
        .bind(transfer.to_string())
        .bind(issued_by.to_string())
        .bind(now())
        .bind(expires_at)
        .bind(serde_json::to_string(cidrs).unwrap_or_else(|_| "[]".into()))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Revokes every live upload token of a transfer; returns how many.
    pub async fn revoke_upload_tokens(
        &mut self,
        transfer: TransferId,
        reason: &str,
    ) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE upload_tokens SET revoked_at = $2, revoked_reason = $3 \
             WHERE transfer_id = $1 AND revoked_at IS NULL",
        )
        .bind(transfer.to_string())
        .bind(now())
        .bind(reason)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected())
    }

    /// Revokes the upload tokens of a transfer that are still live at `now`; returns how
    /// many. A token that already ran out keeps counting as run out (it expires the
    /// transfer), so a late revocation cannot keep a transfer open that should expire.
    pub async fn revoke_live_upload_tokens(
        &mut self,
        transfer: TransferId,
        reason: &str,
        now_unix: i64,
    ) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE upload_tokens SET revoked_at = $2, revoked_reason = $3 \
             WHERE transfer_id = $1 AND revoked_at IS NULL AND expires_at > $4",
        )
        .bind(transfer.to_string())
        .bind(now())
        .bind(reason)
        .bind(now_unix)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn insert_staff_token(
        &mut self,
        id: TokenId,
        user: UserId,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO staff_tokens (id, user_id, issued_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id.to_string())
        .bind(user.to_string())
        .bind(now())
        .bind(expires_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Reserves `path` in a transfer, refusing any collision with an existing file or folder.
    pub async fn insert_file(
        &mut self,
        f: &FileRow,
        path: &RelPath,
    ) -> Result<std::result::Result<(), FileConflict>> {
        let key = path.collision_key();
        let tid = f.transfer_id.to_string();
        if let Some(r) = sqlx::query(SAME_KEY_SQL)
            .bind(&tid)
            .bind(&key)
            .fetch_optional(&mut *self.tx)
            .await?
        {
            return Ok(Err(FileConflict::SameName(r.try_get("path")?)));
        }
        for parent in path.parent_keys() {
            if let Some(r) = sqlx::query(SAME_KEY_SQL)
                .bind(&tid)
                .bind(&parent)
                .fetch_optional(&mut *self.tx)
                .await?
            {
                return Ok(Err(FileConflict::FileFolder(r.try_get("path")?)));
            }
        }
        // Keys under `key/` are exactly those in [`key/`, `key0`) in byte order ('0' follows
        // '/'): a range on the (transfer_id, collision_key) index, not a scan of the transfer.
        let prefix = format!("{key}/");
        let upper = format!("{key}0");
        if let Some(r) = sqlx::query(UNDER_KEY_SQL)
            .bind(&tid)
            .bind(&prefix)
            .bind(&upper)
            .fetch_optional(&mut *self.tx)
            .await?
        {
            return Ok(Err(FileConflict::FileFolder(r.try_get("path")?)));
        }
        sqlx::query(
            "INSERT INTO files (id, transfer_id, path, collision_key, length, received, complete, \
             expected_sha256, created_at) VALUES ($1, $2, $3, $4, $5, 0, 0, $6, $7)",
        )
        .bind(f.id.to_string())
        .bind(&tid)
        .bind(path.as_str())
        .bind(&key)
        .bind(f.length.map(|l| l as i64))
        .bind(&f.expected_sha256)
        .bind(&f.created_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(Ok(()))
    }

    pub async fn complete_file(
        &mut self,
        id: FileId,
        sha256: &HexDigest,
        blake3: &HexDigest,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE files SET complete = 1, sha256 = $2, blake3 = $3, completed_at = $4 WHERE id = $1",
        )
        .bind(id.to_string())
        .bind(sha256.as_str())
        .bind(blake3.as_str())
        .bind(now())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn set_expected_sha256(&mut self, id: FileId, expected: &HexDigest) -> Result<()> {
        sqlx::query("UPDATE files SET expected_sha256 = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(expected.as_str())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Deletes a file's row and segments. A packed member leaves its pack one member fewer;
    /// when it was the last, the pack's row goes too and its id is returned, for the caller to
    /// delete its object once this commits (a crash in between leaves a stray object that
    /// re-verification reports).
    pub async fn delete_file(&mut self, f: &FileRow) -> Result<Option<FileId>> {
        let id = f.id;
        self.drop_claim(id).await?;
        sqlx::query("DELETE FROM segments WHERE file_id = $1")
            .bind(id.to_string())
            .execute(&mut *self.tx)
            .await?;
        sqlx::query("DELETE FROM files WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *self.tx)
            .await?;
        let Some(p) = f.pack else {
            return Ok(None);
        };
        let left: Option<i64> = sqlx::query_scalar(
            "UPDATE packs SET members = members - 1 WHERE id = $1 RETURNING members",
        )
        .bind(p.id.to_string())
        .fetch_optional(&mut *self.tx)
        .await?;
        if left.is_some_and(|n| n > 0) {
            return Ok(None);
        }
        sqlx::query("DELETE FROM packs WHERE id = $1")
            .bind(p.id.to_string())
            .execute(&mut *self.tx)
            .await?;
        Ok(Some(p.id))
    }

    pub async fn insert_decision(&mut self, d: NewDecision<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO decisions (id, transfer_id, user_id, role, decision, comment, root_digest, \
             at, policy_version, acknowledged) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(d.transfer.to_string())
        .bind(d.user.to_string())
        .bind(d.role.as_str())
        .bind(d.decision)
        .bind(d.comment)
        .bind(d.root_digest)
        .bind(now())
        .bind(d.policy_version)
        .bind(d.acknowledged)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn insert_incident(
        &mut self,
        transfer: Option<TransferId>,
        kind: &str,
        detail: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO incidents (id, transfer_id, kind, detail, state, created_at) \
             VALUES ($1, $2, $3, $4, 'open', $5)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(transfer.map(|t| t.to_string()))
        .bind(kind)
        .bind(detail)
        .bind(now())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}

/// Seconds since the epoch, for token expiry comparisons.
pub fn unix_now() -> i64 {
    Utc::now().timestamp()
}

#[cfg(test)]
mod plan_tests {
    use super::*;

    /// The plan of each per-file query, with every placeholder bound to a string.
    async fn plan(store: &Store, sql: &str, params: usize) -> Vec<String> {
        let text = format!("EXPLAIN QUERY PLAN {sql}");
        let mut q = sqlx::query(&text);
        for _ in 0..params {
            q = q.bind("x");
        }
        q.fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get::<String, _>("detail").unwrap())
            .collect()
    }

    /// Flat cost per file: a query that scans the files of a transfer (or the audit log) costs
    /// more with every file already there. SQLite says SCAN for a full walk of a table or an
    /// index, SEARCH for an index lookup or range.
    #[tokio::test]
    async fn per_file_queries_use_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("t.db")).await.unwrap();
        // `files_of_transfer`: a search on the transfer alone walks all its files, which is
        // a scan in disguise; such queries must narrow by a second key column too. (Claims are
        // one row per upload in flight, so a search by transfer is bounded there.)
        for (name, sql, params, files_of_transfer) in [
            ("same key", SAME_KEY_SQL, 2, true),
            ("under key", UNDER_KEY_SQL, 3, true),
            ("files page", FILES_PAGE_SQL, 3, true),
            ("file by path", FILE_BY_PATH_SQL, 2, true),
            ("totals", TOTALS_SQL, 1, false),
            ("claims", CLAIMS_SQL, 1, false),
            ("audit head", AUDIT_HEAD_SQL, 0, false),
            ("incidents of a transfer", INCIDENTS_OF_SQL, 1, false),
            ("audit page of a transfer", ops::AUDIT_PAGE_OF_SQL, 4, false),
        ] {
            let steps = plan(&store, sql, params).await;
            assert!(!steps.is_empty(), "{name}: no plan");
            for s in &steps {
                assert!(!s.starts_with("SCAN"), "{name}: {s} ({steps:?})");
                assert!(
                    !(files_of_transfer && s.contains("(transfer_id=?)")),
                    "{name} walks the transfer's files: {s}"
                );
            }
        }
        // The batched member checks walk their bound list, and search the files by key.
        for (name, sql) in [
            ("keys taken", archives::KEYS_TAKEN_SQL),
            ("keys under", archives::KEYS_UNDER_SQL),
        ] {
            let steps = plan(&store, sql, 2).await;
            assert!(
                steps
                    .iter()
                    .any(|s| s.starts_with("SEARCH f USING") && s.contains("collision_key")),
                "{name}: {steps:?}"
            );
            for s in &steps {
                assert!(
                    !s.starts_with("SCAN") || s.starts_with("SCAN j"),
                    "{name}: {s} ({steps:?})"
                );
            }
        }
        // The triggers keeping the totals update one row by its key.
        let steps = plan(
            &store,
            "UPDATE transfer_totals SET files = files + 1 WHERE transfer_id = $1",
            1,
        )
        .await;
        assert!(steps.iter().all(|s| !s.starts_with("SCAN")), "{steps:?}");
    }
}

#[cfg(test)]
mod upgrade_tests {
    use super::*;

    /// Every pooled connection's page cache is capped as stated: the database's share of the
    /// server's memory is a fixed allowance, not something that grows with the file count.
    #[tokio::test]
    async fn every_connection_caps_its_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("a.db")).await.unwrap();
        let mut held = Vec::new();
        for _ in 0..CONNECTIONS {
            let mut c = store.pool().acquire().await.unwrap();
            let n: i64 = sqlx::query_scalar("PRAGMA cache_size")
                .fetch_one(&mut *c)
                .await
                .unwrap();
            assert_eq!(n, -i64::from(PAGE_CACHE_KIB));
            held.push(c);
        }
        assert_eq!(store.pool().size(), CONNECTIONS);
    }

    /// A database made before archives were packed has no `files.pack*`: opening it adds them,
    /// and its files read back as unpacked.
    #[tokio::test]
    async fn a_files_table_without_pack_columns_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let old = sqlx::sqlite::SqlitePoolOptions::new()
                .connect_with(
                    sqlx::sqlite::SqliteConnectOptions::new()
                        .filename(&path)
                        .create_if_missing(true),
                )
                .await
                .unwrap();
            sqlx::raw_sql(
                "CREATE TABLE files (id TEXT PRIMARY KEY, transfer_id TEXT NOT NULL, \
                 path TEXT NOT NULL, collision_key TEXT NOT NULL, length INTEGER, \
                 received INTEGER NOT NULL, complete INTEGER NOT NULL, sha256 TEXT, blake3 TEXT, \
                 expected_sha256 TEXT, created_at TEXT NOT NULL, completed_at TEXT, \
                 UNIQUE (transfer_id, collision_key)); \
                 INSERT INTO files VALUES ('00000000-0000-4000-8000-000000000001', \
                 '00000000-0000-4000-8000-000000000002', 'a.txt', 'a.txt', 1, 1, 1, NULL, NULL, \
                 NULL, 'then', NULL);",
            )
            .execute(&old)
            .await
            .unwrap();
            old.close().await;
        }
        let store = Store::open_sqlite(&path).await.unwrap();
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pragma_table_info('files') WHERE name IN ('pack', 'pack_offset')",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(n, 2);
        let f = store
            .file("00000000-0000-4000-8000-000000000001".parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((f.path.as_str(), f.pack), ("a.txt", None));
        // Opening again changes nothing.
        drop(store);
        Store::open_sqlite(&path).await.unwrap();
    }
}
