//! Versioned schema migrations (sqlx migrate), one list per backend, embedded in the binary.
//!
//! - `migrations/sqlite/NNNN_*.sql` and `migrations/postgres/NNNN_*.sql` hold the same versions.
//! - They run at open, each in its own transaction. On PostgreSQL sqlx holds an advisory lock
//!   while it migrates, so replicas starting at once apply each migration once; on SQLite the
//!   database file's write lock does the same.
//! - Version 1 is the schema as it was before versions existed, every statement `IF NOT
//!   EXISTS`: a data directory made by an earlier release takes it as a no-op (and `Store`'s
//!   column and total backfills bring it the rest of the way), then any later versions.
//! - A database whose schema is newer than this release knows is refused: an older replica
//!   must not write to tables whose meaning changed under it.

use super::{Backend, Result, StoreError};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Row};
use std::borrow::Cow;

// Never edit a migration once released: sqlx refuses a database whose applied migration's
// checksum differs. Add the next version to both lists instead.
const SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "schema",
        include_str!("../../migrations/sqlite/0001_schema.sql"),
    ),
    (
        2,
        "leases",
        include_str!("../../migrations/sqlite/0002_leases.sql"),
    ),
    (
        3,
        "incidents by transfer",
        include_str!("../../migrations/sqlite/0003_incidents_by_transfer.sql"),
    ),
    (
        4,
        "s3 uploads",
        include_str!("../../migrations/sqlite/0004_s3_uploads.sql"),
    ),
    (
        5,
        "egress etag",
        include_str!("../../migrations/sqlite/0005_egress_etag.sql"),
    ),
];
const POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "schema",
        include_str!("../../migrations/postgres/0001_schema.sql"),
    ),
    (
        2,
        "leases",
        include_str!("../../migrations/postgres/0002_leases.sql"),
    ),
    (
        3,
        "incidents by transfer",
        include_str!("../../migrations/postgres/0003_incidents_by_transfer.sql"),
    ),
    (
        4,
        "s3 uploads",
        include_str!("../../migrations/postgres/0004_s3_uploads.sql"),
    ),
    (
        5,
        "egress etag",
        include_str!("../../migrations/postgres/0005_egress_etag.sql"),
    ),
];

fn list(backend: Backend) -> &'static [(i64, &'static str, &'static str)] {
    match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    }
}

/// The newest schema version this release knows.
pub fn latest(backend: Backend) -> i64 {
    list(backend).iter().map(|m| m.0).max().unwrap_or(0)
}

fn migrator(backend: Backend) -> Migrator {
    let migrations: Vec<Migration> = list(backend)
        .iter()
        .map(|(version, name, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*name),
                MigrationType::Simple,
                Cow::Borrowed(*sql),
                false,
            )
        })
        .collect();
    Migrator {
        migrations: Cow::Owned(migrations),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    }
}

/// The highest version applied to the database, or `None` before any migration ran.
pub async fn applied(pool: &AnyPool, backend: Backend) -> Result<Option<i64>> {
    let exists = match backend {
        Backend::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
        }
        Backend::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'"
        }
    };
    let n: i64 = sqlx::query_scalar(exists).fetch_one(pool).await?;
    if n == 0 {
        return Ok(None);
    }
    let row = sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await?;
    Ok(row.try_get::<Option<i64>, _>("v")?)
}

/// Refuses a schema newer than this release, then applies the migrations not yet applied.
pub async fn run(pool: &AnyPool, backend: Backend) -> Result<()> {
    check_not_newer(pool, backend).await?;
    migrator(backend).run(pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::Execute(e) => StoreError::Db(e),
        e => StoreError::Schema(e.to_string()),
    })?;
    Ok(())
}

async fn check_not_newer(pool: &AnyPool, backend: Backend) -> Result<()> {
    let known = latest(backend);
    match applied(pool, backend).await? {
        Some(v) if v > known => Err(StoreError::Schema(format!(
            "the database's schema is at version {v}, newer than this release of airlock \
             knows (version {known}): a newer airlock has migrated it. Run that release \
             (or newer); this one will not write to a schema it does not know"
        ))),
        _ => Ok(()),
    }
}
