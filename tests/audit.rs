//! The audit log is hash-chained: `airlock audit verify` catches an edited, deleted,
//! inserted or reordered row, naming the first bad event, and a rewrite of the chain's tail
//! is caught against a head pinned elsewhere. Export and per-transfer history work.

mod common;

use airlock::audit::Record;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn audit_cli(data: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .arg("--data-dir")
        .arg(data)
        .arg("audit")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A copy of the data directory with `tamper` applied to its database.
async fn tampered(base: &Path, scratch: &Path, name: &str, tamper: &[&str]) -> PathBuf {
    let dir = scratch.join(name);
    run(Command::new("cp").arg("-r").arg(base).arg(&dir));
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.join("airlock.db").display()))
        .await
        .unwrap();
    for sql in tamper {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    pool.close().await;
    dir
}

async fn records(data: &Path) -> Vec<Record> {
    let app = airlock::app::App::open(settings(data)).await.unwrap();
    let all = app.store.audit_records().await.unwrap();
    app.store.pool().close().await;
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_verify_names_the_first_tampered_event() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    t.put(&tok, &id, "a.bin", bytes(1000, 1)).await;
    t.post_json(&tok, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    t.scans_done(&id).await;
    t.post_json(
        &people.inv,
        &format!("/transfers/{id}/approve"),
        Value::Null,
    )
    .await;
    t.wait_for_state(&people.pm, &id, "released").await;
    let holder = t.stop().await;
    let base = holder.path().to_owned();
    let scratch = tempfile::tempdir().unwrap();

    let (ok, out) = audit_cli(&base, &["verify"]);
    assert!(ok, "{out}");
    let head = out.split("head ").nth(1).unwrap().trim().to_owned();
    let all = records(&base).await;
    let n = all.len() as i64;
    assert!(n > 20, "{n}");

    // Edited content.
    let d = tampered(
        &base,
        scratch.path(),
        "edit",
        &["UPDATE audit_events SET detail = '{\"forged\":true}' WHERE seq = 7"],
    )
    .await;
    let (ok, out) = audit_cli(&d, &["verify"]);
    assert!(!ok);
    assert!(out.contains("broken at event 7"), "{out}");

    // A deleted event.
    let d = tampered(
        &base,
        scratch.path(),
        "delete",
        &["DELETE FROM audit_events WHERE seq = 7"],
    )
    .await;
    let (ok, out) = audit_cli(&d, &["verify"]);
    assert!(!ok);
    assert!(out.contains("broken at event 8"), "{out}");

    // An inserted event, well formed and chained to the one before it.
    let mut forged = Record::seal(
        7,
        all[6].at.clone(),
        airlock::audit::AuditEvent::new("user:mallory", "transfer.approved"),
        all[5].hash.clone(),
    );
    forged.hash = forged.compute_hash();
    let insert = format!(
        "INSERT INTO audit_events (seq, at, actor, action, transfer_id, detail, prev_hash, hash) VALUES (7, '{}', '{}', '{}', NULL, '{}', '{}', '{}')",
        forged.at, forged.actor, forged.action, forged.detail, forged.prev_hash, forged.hash
    );
    let d = tampered(
        &base,
        scratch.path(),
        "insert",
        &[
            "UPDATE audit_events SET seq = seq + 100000 WHERE seq >= 7",
            "UPDATE audit_events SET seq = seq - 99999 WHERE seq >= 100007",
            &insert,
        ],
    )
    .await;
    let (ok, out) = audit_cli(&d, &["verify"]);
    assert!(!ok);
    assert!(out.contains("broken at event 8"), "{out}");

    // Two events swapped.
    let d = tampered(
        &base,
        scratch.path(),
        "reorder",
        &[
            "UPDATE audit_events SET seq = -1 WHERE seq = 7",
            "UPDATE audit_events SET seq = 7 WHERE seq = 8",
            "UPDATE audit_events SET seq = 8 WHERE seq = -1",
        ],
    )
    .await;
    let (ok, out) = audit_cli(&d, &["verify"]);
    assert!(!ok);
    assert!(out.contains("broken at event 7"), "{out}");

    // A whole rewritten tail verifies on its own, but not against the pinned head.
    let mut rewritten = Vec::new();
    let mut prev = all[5].hash.clone();
    for r in &all[6..] {
        let detail = if r.seq == 7 {
            "{\"rewritten\":true}".to_string()
        } else {
            r.detail.clone()
        };
        let mut x = Record {
            detail,
            prev_hash: prev.clone(),
            hash: String::new(),
            ..r.clone()
        };
        x.hash = x.compute_hash();
        prev = x.hash.clone();
        rewritten.push(format!(
            "UPDATE audit_events SET detail = '{}', prev_hash = '{}', hash = '{}' WHERE seq = {}",
            x.detail.replace('\'', "''"),
            x.prev_hash,
            x.hash,
            x.seq
        ));
    }
    let refs: Vec<&str> = rewritten.iter().map(String::as_str).collect();
    let d = tampered(&base, scratch.path(), "rewrite", &refs).await;
    let (ok, _) = audit_cli(&d, &["verify"]);
    assert!(ok, "a consistent rewrite passes the chain check alone");
    let (ok, out) = audit_cli(&d, &["verify", "--head", &head]);
    assert!(!ok);
    assert!(out.contains("not in the chain"), "{out}");
    let (ok, out) = audit_cli(&base, &["verify", "--head", &head]);
    assert!(ok, "{out}");

    // Export and history.
    let (ok, out) = audit_cli(&base, &["export"]);
    assert!(ok);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as i64, n);
    assert_eq!(lines.last().unwrap()["hash"], head.as_str());
    let (ok, out) = audit_cli(&base, &["show", "--transfer", &id]);
    assert!(ok);
    for action in [
        "transfer.created",
        "transfer.sealed",
        "transfer.approved",
        "transfer.released",
    ] {
        assert!(out.contains(action), "{action} missing:\n{out}");
    }
    drop(holder);
}
