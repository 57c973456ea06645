//! The store's conformance suite: the same checks on both backends, SQLite and a real
//! PostgreSQL (common::pg), in every run, as object_store's backends share one suite. Each
//! `conformance!` case becomes `sqlite` and `postgres` tests of one module.
//!
//! What is checked is what the workflow layer counts on whichever backend it runs on:
//! exclusive leases that expire; a state change and its audit event committed together or not
//! at all; one unforked audit chain when two store handles (two replicas) append at once;
//! bytewise path order and keyset paging; totals past 32 bits; the same migration version.
//! The workflow suites (scripts/test.sh) run on both backends as well.

mod common;

use airlock::app::App;
use airlock::audit::{self, AuditEvent};
use airlock::domain::{FileId, RelPath, TransferId, TransferKind, TransferState, WorkspaceId};
use airlock::store::{migrate, FileRow, Store, Transfer};
use common::*;
use std::sync::Arc;
use std::time::Duration;

/// A backend under test: the app (for setup through the workflow layer) on its store.
struct Backend {
    app: Arc<App>,
    _dir: tempfile::TempDir,
}

async fn open(postgres: bool) -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    // On PostgreSQL, a database whose default collation is not bytewise (pg.rs).
    s.database.url = postgres.then(pg::fresh_database);
    let app = App::open(s).await.unwrap();
    Backend { app, _dir: dir }
}

macro_rules! conformance {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread")]
            async fn sqlite() {
                super::$name(super::open(false).await).await;
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn postgres() {
                super::$name(super::open(true).await).await;
            }
        }
    };
}

conformance!(leases_are_exclusive_renewable_and_expire);
conformance!(a_transaction_not_committed_leaves_neither_change_nor_event);
conformance!(two_handles_appending_at_once_keep_one_chain);
conformance!(paths_sort_and_page_bytewise_and_totals_pass_32_bits);
conformance!(the_schema_is_at_the_latest_version);

/// An open data-ingress transfer in a new workspace `proj/ws`, written through the store.
async fn open_transfer(app: &App) -> TransferId {
    use airlock::workflow::admin;
    let pm = admin::add_user(app, "pm", &[]).await.unwrap();
    admin::create_project(app, "proj").await.unwrap();
    let ws: WorkspaceId = admin::create_workspace(app, "proj", "ws", 1, None)
        .await
        .unwrap();
    let id = TransferId::new();
    let now = airlock::store::now();
    let mut tx = app.store.begin().await.unwrap();
    tx.insert_transfer(&Transfer {
        id,
        workspace_id: ws,
        kind: TransferKind::DataIngress,
        state: TransferState::Open,
        state_reason: "open".into(),
        uploader_id: pm,
        created_by: pm,
        created_at: now.clone(),
        updated_at: now,
        sealed_at: None,
        root_digest: None,
        expected_root_digest: None,
        release_location: None,
        released_at: None,
        policy_version: None,
        ack_required: false,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    id
}

/// A file of `length` bytes declared, none received yet.
fn file_row(transfer: TransferId, path: &str, length: u64) -> FileRow {
    FileRow {
        id: FileId::new(),
        transfer_id: transfer,
        path: path.to_owned(),
        length: Some(length),
        received: 0,
        complete: false,
        sha256: None,
        blake3: None,
        expected_sha256: None,
        created_at: airlock::store::now(),
        pack: None,
    }
}

async fn leases_are_exclusive_renewable_and_expire(b: Backend) {
    let s = &b.app.store;
    let long = Duration::from_secs(60);
    assert!(s.lease("job", "a", long).await.unwrap());
    assert!(!s.lease("job", "b", long).await.unwrap(), "two holders");
    assert!(
        s.lease("job", "a", long).await.unwrap(),
        "the holder cannot renew"
    );
    assert_eq!(s.lease_holder("job").await.unwrap().as_deref(), Some("a"));
    // Another name is another lease.
    assert!(s.lease("other", "b", long).await.unwrap());
    // Giving up a lease one does not hold changes nothing.
    s.unlease("job", "b").await.unwrap();
    assert_eq!(s.lease_holder("job").await.unwrap().as_deref(), Some("a"));
    // A lease that runs out is anyone's; its old holder cannot renew it then.
    assert!(s
        .lease("job", "a", Duration::from_millis(50))
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(s.lease_holder("job").await.unwrap(), None);
    assert!(s.lease("job", "b", long).await.unwrap());
    assert!(!s.lease("job", "a", long).await.unwrap());
    // Eight replicas asking at once: exactly one gets it.
    let mut asks = Vec::new();
    for i in 0..8 {
        let app = b.app.clone();
        asks.push(tokio::spawn(async move {
            app.store
                .lease("race", &format!("r{i}"), Duration::from_secs(60))
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for a in asks {
        won += usize::from(a.await.unwrap());
    }
    assert_eq!(won, 1);
    assert_eq!(s.unlease_all("b").await.unwrap(), 2);
    assert_eq!(s.lease_holder("other").await.unwrap(), None);
}

async fn a_transaction_not_committed_leaves_neither_change_nor_event(b: Backend) {
    let s = &b.app.store;
    let (events, _) = s.audit_counts().await.unwrap();
    let name = airlock::domain::Name::parse("ghost").unwrap();
    {
        let mut tx = s.begin().await.unwrap();
        tx.create_user(&name, &[]).await.unwrap();
        tx.audit(AuditEvent::new("admin", "user.created"))
            .await
            .unwrap();
        // Dropped without commit (an error on the way, a client gone).
    }
    assert!(s.user_by_name("ghost").await.unwrap().is_none());
    assert_eq!(s.audit_counts().await.unwrap().0, events);
    let mut tx = s.begin().await.unwrap();
    tx.create_user(&name, &[]).await.unwrap();
    tx.audit(AuditEvent::new("admin", "user.created"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(s.user_by_name("ghost").await.unwrap().is_some());
    assert_eq!(s.audit_counts().await.unwrap().0, events + 1);
}

async fn two_handles_appending_at_once_keep_one_chain(b: Backend) {
    // A second handle on the same database, as a second replica has, with the same key.
    let url = b.app.settings.database.url.clone();
    let dir = b.app.settings.storage.data_dir.clone();
    let key = || audit::ChainKey::load_or_create(&b.app.settings.storage.keys_dir(), 1, 1);
    let other = match url {
        Some(u) => Store::open_url(&u, false).await.unwrap(),
        None => Store::open_sqlite(&dir.join("airlock.db")).await.unwrap(),
    }
    .with_chain_key(key().unwrap());
    let other = Arc::new(other);
    let mut tasks = Vec::new();
    for i in 0..60 {
        let (app, other) = (b.app.clone(), other.clone());
        tasks.push(tokio::spawn(async move {
            let s = if i % 2 == 0 { &app.store } else { &*other };
            s.audit(AuditEvent::new(format!("writer-{i}"), "test.event"))
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let records = b.app.store.audit_records().await.unwrap();
    assert!(records.len() >= 60);
    let seqs: Vec<i64> = records.iter().map(|r| r.seq).collect();
    let want: Vec<i64> = (1..=records.len() as i64).collect();
    assert_eq!(seqs, want, "gaps or duplicates in the chain's numbering");
    audit::verify(&records, &key().unwrap(), &[]).unwrap_or_else(|e| panic!("{e:?}"));
}

async fn paths_sort_and_page_bytewise_and_totals_pass_32_bits(b: Backend) {
    let app = &b.app;
    let id = open_transfer(app).await;
    let mut tx = app.store.begin().await.unwrap();
    // Upper case before lower, '_' between them, and multi-byte UTF-8 after all of ASCII:
    // the byte order, which a locale's collation would not keep. (No two differ only in case:
    // those collide, as they would on a case-insensitive disk.)
    let paths = [
        "b.txt", "C.txt", "a/z.txt", "D", "_x", "é.txt", "f.txt", "a-b", "Z", "ä/1", "0",
    ];
    const BIG: u64 = 3 << 30;
    for p in paths {
        let row = file_row(id, p, BIG);
        tx.insert_file(&row, &RelPath::parse(p).unwrap())
            .await
            .unwrap()
            .unwrap();
    }
    // A name taken is refused inside the transaction, and the transaction goes on.
    let dup = file_row(id, "b.txt", 1);
    assert!(tx
        .insert_file(&dup, &RelPath::parse("b.txt").unwrap())
        .await
        .unwrap()
        .is_err());
    tx.commit().await.unwrap();

    if app.store.backend() == airlock::store::Backend::Postgres {
        // The database's own collation is not bytewise, so the order below is airlock's doing.
        let bytewise: i64 = sqlx::query_scalar("SELECT CASE WHEN 'B' < 'a' THEN 1 ELSE 0 END")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
        assert_eq!(bytewise, 0, "the test database collates bytewise");
    }
    let mut want: Vec<&str> = paths.to_vec();
    want.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut got = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = app.store.files_page(id, after.as_deref(), 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        after = page.last().map(|f| f.path.clone());
        got.extend(page.into_iter().map(|f| f.path));
    }
    assert_eq!(got, want);
    let totals = app.store.totals(id).await.unwrap();
    assert_eq!(totals.files, paths.len() as u64);
    assert_eq!(totals.reserved, BIG * paths.len() as u64, "{totals:?}");
}

async fn the_schema_is_at_the_latest_version(b: Backend) {
    let s = &b.app.store;
    let latest = migrate::latest(s.backend());
    assert!(latest >= 2);
    assert_eq!(
        migrate::applied(s.pool(), s.backend()).await.unwrap(),
        Some(latest)
    );
}

conformance!(a_batch_folder_check_reads_no_more_rows_as_the_transfer_grows);

/// The folder check of a batch of archive members (is any existing file under a new
/// member's path?) costs one index range per key, however many files the transfer already
/// holds. On PostgreSQL it once filtered every file of the transfer for every key: 20,000
/// small files went in at a fifth of SQLite's rate, slower as the transfer grew
/// (benches/replicas.sh).
async fn a_batch_folder_check_reads_no_more_rows_as_the_transfer_grows(b: Backend) {
    let app = &b.app;
    let id = open_transfer(app).await;
    let mut tx = app.store.begin().await.unwrap();
    const FILES: usize = 4000;
    for i in 0..FILES {
        let p = format!("d{}/f{i}.txt", i % 40);
        let row = file_row(id, &p, 1);
        tx.insert_file(&row, &RelPath::parse(&p).unwrap())
            .await
            .unwrap()
            .unwrap();
    }
    tx.commit().await.unwrap();
    // A batch of 200 new members, none of them a folder of an existing file.
    let keys: Vec<String> = (0..200).map(|i| format!("new/m{i}.txt")).collect();
    let keys = serde_json::to_string(&keys).unwrap();
    let sql = airlock::store::keys_under_sql(app.store.backend());
    let pool = app.store.pool();
    match app.store.backend() {
        airlock::store::Backend::Sqlite => {
            let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                .bind(id.to_string())
                .bind(&keys)
                .fetch_all(pool)
                .await
                .unwrap()
                .iter()
                .map(|r| sqlx::Row::try_get::<String, _>(r, "detail").unwrap())
                .collect();
            assert!(plan.iter().all(|s| !s.starts_with("SCAN f")), "{plan:?}");
        }
        airlock::store::Backend::Postgres => {
            sqlx::query("ANALYZE files").execute(pool).await.unwrap();
            // Through sqlx's PostgreSQL driver: the Any driver reads no `json` column.
            let url = b.app.settings.database.url.clone().unwrap();
            let pg = sqlx::PgPool::connect(&url).await.unwrap();
            let rows = sqlx::query(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {sql}"))
                .bind(id.to_string())
                .bind(&keys)
                .fetch_all(&pg)
                .await
                .unwrap();
            let text: String = sqlx::Row::try_get_unchecked(&rows[0], 0).unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            // Every row a node of the plan read and threw away, over the whole plan.
            fn removed(n: &serde_json::Value) -> i64 {
                let own: i64 = ["Rows Removed by Filter", "Rows Removed by Join Filter"]
                    .iter()
                    .filter_map(|k| n[*k].as_i64())
                    .sum();
                let loops = n["Actual Loops"].as_i64().unwrap_or(1).max(1);
                own * loops
                    + n["Plans"]
                        .as_array()
                        .map(|c| c.iter().map(removed).sum())
                        .unwrap_or(0)
            }
            let thrown = removed(&v[0]["Plan"]);
            assert!(
                thrown < FILES as i64,
                "the folder check read and dropped {thrown} rows for 200 keys in a transfer \
                 of {FILES} files: {text}"
            );
        }
    }
}
