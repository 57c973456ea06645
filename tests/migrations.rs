//! Versioned migrations (store::migrate): a data directory made before versions existed
//! upgrades in place with its data, and a schema newer than this release is refused.
//! Runs on SQLite, and on PostgreSQL too under `AIRLOCK_TEST_DATABASE=postgres` (the refusal).

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Seal, scan, approve and release one file: the whole workflow on this database.
async fn one_release(t: &TestApp, people: &People) -> Value {
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let token = t.upload_token(&people.pm, &id, json!({})).await;
    let body = bytes(100_000, 7);
    let (s, _) = t.put(&token, &id, "d/a.bin", body.clone()).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = t
        .post_json(&token, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert!(s.is_success(), "{s}");
    t.scans_done(&id).await;
    let (s, v) = t
        .post_json(
            &people.inv,
            &format!("/transfers/{id}/approve"),
            json!({"as": "investigator"}),
        )
        .await;
    assert!(s.is_success(), "{s} {v}");
    let v = t.wait_for_state(&people.pm, &id, "released").await;
    let loc = std::path::Path::new(v["release"]["location"].as_str().unwrap()).join("d/a.bin");
    assert_eq!(std::fs::read(&loc).unwrap(), body);
    v
}

fn audit_verify(t: &TestApp) {
    let out = t.cli(None, &["audit", "verify"]);
    assert!(
        out.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A data directory whose database was made by the release before versioned migrations (its
/// schema is that release's `schema.sql`, which became migration 1 unchanged and, like every
/// released migration, is never edited; plus the column that release added at open), holding
/// a user: opening it applies version 1 as a no-op, keeps
/// the data, and the whole workflow then runs on it.
#[tokio::test(flavor = "multi_thread")]
async fn a_data_directory_from_before_versioned_migrations_upgrades_in_place() {
    if pg::enabled() {
        // PostgreSQL support starts with versioned migrations: no older database exists.
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let old = sqlx::sqlite::SqlitePoolOptions::new()
            .connect_with(
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(dir.path().join("airlock.db"))
                    .create_if_missing(true),
            )
            .await
            .unwrap();
        sqlx::raw_sql(include_str!("../migrations/sqlite/0001_schema.sql"))
            .execute(&old)
            .await
            .unwrap();
        sqlx::raw_sql(
            "ALTER TABLE audit_events ADD COLUMN mac TEXT; \
             INSERT INTO users VALUES ('00000000-0000-4000-8000-0000000000aa', 'veteran', \
             '2026-01-01T00:00:00.000Z'); \
             INSERT INTO user_roles VALUES ('00000000-0000-4000-8000-0000000000aa', \
             'programme-manager');",
        )
        .execute(&old)
        .await
        .unwrap();
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = '_sqlx_migrations'",
        )
        .fetch_one(&old)
        .await
        .unwrap();
        assert_eq!(n, 0, "the old schema has no migration table");
        old.close().await;
    }
    let t = TestApp::spawn_in(dir).await;
    let applied =
        airlock::store::migrate::applied(t.app.store.pool(), airlock::store::Backend::Sqlite)
            .await
            .unwrap();
    assert_eq!(
        applied,
        Some(airlock::store::migrate::latest(
            airlock::store::Backend::Sqlite
        ))
    );
    let veteran = t.app.store.user_by_name("veteran").await.unwrap().unwrap();
    assert_eq!(veteran.roles, vec![airlock::domain::Role::ProgrammeManager]);
    let people = t.bootstrap(1).await;
    one_release(&t, &people).await;
    audit_verify(&t);
    // A second start finds every version applied and changes nothing.
    let dir = t.stop().await;
    let t = TestApp::spawn_in(dir).await;
    assert!(t.app.store.user_by_name("pm").await.unwrap().is_some());
    audit_verify(&t);
}

/// A database migrated by a newer airlock (a version this release does not know) is refused at
/// open, by the library and by `airlock serve`, with a message saying so; nothing is written.
#[tokio::test(flavor = "multi_thread")]
async fn a_schema_newer_than_this_release_is_refused() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let _ = people;
    let pool = t.app.store.pool().clone();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(9_999i64)
    .bind("from the future")
    .bind(true)
    .bind(vec![0u8; 48])
    .bind(0i64)
    .execute(&pool)
    .await
    .unwrap();
    // A running replica whose database a newer release has migrated drains itself.
    let r = t
        .http
        .get(format!("{}/readyz", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["migrations"]
            .as_str()
            .unwrap()
            .starts_with("newer: version 9999"),
        "{v}"
    );
    let events_before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    let dir = t.stop().await;

    let settings = settings(dir.path());
    let err = match airlock::app::App::open(settings).await {
        Ok(_) => panic!("a newer schema was opened"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("version 9999") && err.contains("newer"),
        "{err}"
    );

    let out = airlock_at(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("AIRLOCK__SCANNING__CLAMD", shared_clamd())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("newer"), "{stderr}");

    let pool = raw_db(dir.path()).await;
    let events_after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(events_after, events_before);
}

/// `/readyz` names clamd's state without draining the replica for it: uploads go on while
/// scans wait for clamd.
#[tokio::test(flavor = "multi_thread")]
async fn readiness_reports_clamd_down_without_draining() {
    let dead = format!("127.0.0.1:{}", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    let t = TestApp::spawn_with(|s| s.scanning.clamd = Some(dead)).await;
    let r = t
        .http
        .get(format!("{}/readyz", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["clamd"], "unreachable", "{v}");
    assert_eq!(v["metadata_store"], "ok");
}

/// A PostgreSQL that cannot be reached stops `airlock serve` with a message naming the
/// database (its password hidden) and the reason, not only sqlx's "pool timed out".
#[test]
fn an_unreachable_postgresql_is_named_at_start() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("postgres://airlock:s3cret@127.0.0.1:{port}/airlock");
    let started = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_airlock"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("AIRLOCK__DATABASE__URL", &url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains("refused"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("s3cret"),
        "the password is printed: {stderr}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}
