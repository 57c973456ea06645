//! The audit log is hash-chained and keyed: `airlock audit verify` catches an edited,
//! deleted, inserted or reordered row, naming the first bad event; a rewrite of the chain
//! (events deleted and every hash recomputed) is caught by the audit key, and with the key
//! too by the signed anchors, without a head pinned by hand. Export and per-transfer history
//! work.

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
    // The forged event itself: it cannot carry the audit key.
    assert!(out.contains("broken at event 7"), "{out}");

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
    let (ok, out) = audit_cli(&d, &["verify"]);
    assert!(!ok, "a consistent rewrite is caught by the audit key alone");
    assert!(out.contains("broken at event 7"), "{out}");
    let (ok, out) = audit_cli(&d, &["verify", "--head", &head]);
    assert!(!ok);
    assert!(out.contains("broken at event 7"), "{out}");
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

/// The chain of `all` without events `from..=to`, renumbered and every hash recomputed, the
/// way someone with write access to the database would rewrite it; with `key`, the macs too.
fn recompute_without(all: &[Record], from: i64, to: i64, key: Option<&[u8]>) -> Vec<String> {
    use hmac::{Hmac, Mac};
    let mut sql = vec![format!(
        "DELETE FROM audit_events WHERE seq BETWEEN {from} AND {to}"
    )];
    let mut prev = all[from as usize - 2].hash.clone();
    for (i, r) in all[to as usize..].iter().enumerate() {
        let mut x = Record {
            seq: from + i as i64,
            prev_hash: prev.clone(),
            hash: String::new(),
            ..r.clone()
        };
        x.hash = x.compute_hash();
        prev = x.hash.clone();
        let mac = match key {
            Some(k) => {
                let mut m = Hmac::<sha2::Sha256>::new_from_slice(k).unwrap();
                m.update(b"airlock-audit-v1\n");
                m.update(x.hash.as_bytes());
                format!(", mac = '{}'", hex::encode(m.finalize().into_bytes()))
            }
            None => String::new(),
        };
        sql.push(format!(
            "UPDATE audit_events SET seq = {}, prev_hash = '{}', hash = '{}'{mac} WHERE seq = {}",
            x.seq, x.prev_hash, x.hash, r.seq
        ));
    }
    sql
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_events_and_recomputing_the_chain_is_caught_without_a_pinned_head() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    for _ in 0..3 {
        let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
        let tok = t.upload_token(&people.pm, &id, Value::Null).await;
        t.put(&tok, &id, "a.bin", bytes(100, 2)).await;
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
    }
    // A graceful stop anchors the head.
    let holder = t.stop().await;
    let base = holder.path().to_owned();
    let scratch = tempfile::tempdir().unwrap();
    let (ok, out) = audit_cli(&base, &["verify"]);
    assert!(ok, "{out}");
    assert!(out.contains("agree with the chain"), "{out}");
    let all = records(&base).await;
    let n = all.len() as i64;
    assert!(n > 40, "{n}");

    // Most of the chain deleted, the rest renumbered and rehashed: the chain is consistent,
    // but the records no longer carry the audit key.
    let sql = recompute_without(&all, 6, n - 4, None);
    let refs: Vec<&str> = sql.iter().map(String::as_str).collect();
    let d = tampered(&base, scratch.path(), "recomputed", &refs).await;
    let (ok, out) = audit_cli(&d, &["verify"]);
    assert!(!ok, "a recomputed chain passed: {out}");
    assert!(out.contains("broken at event 6"), "{out}");

    // The same with the macs cleared, as if the events predated the key: they do not.
    let mut cleared = sql.clone();
    cleared.push("UPDATE audit_events SET mac = NULL WHERE seq >= 6".into());
    let refs: Vec<&str> = cleared.iter().map(String::as_str).collect();
    let d = tampered(&base, scratch.path(), "cleared", &refs).await;
    let (ok, out) = audit_cli(&d, &["verify"]);
    assert!(!ok);
    assert!(out.contains("broken at event 6"), "{out}");

    // The newest events deleted: every remaining record is intact, the anchor is not met.
    let d = tampered(
        &base,
        scratch.path(),
        "truncated",
        &[&format!("DELETE FROM audit_events WHERE seq > {}", n - 5)],
    )
    .await;
    let (ok, out) = audit_cli(&d, &["verify"]);
    assert!(!ok, "a truncated chain passed: {out}");
    assert!(out.contains("events were deleted"), "{out}");

    // Database and audit key: the macs are recomputed too; the signed anchor still catches it.
    let key = std::fs::read(base.join("keys/audit.key")).unwrap();
    let sql = recompute_without(&all, 6, n - 4, Some(&key));
    let refs: Vec<&str> = sql.iter().map(String::as_str).collect();
    let d = tampered(&base, scratch.path(), "with-key", &refs).await;
    let (ok, out) = audit_cli(&d, &["verify"]);
    assert!(!ok, "a chain rewritten with the key passed: {out}");
    assert!(out.contains("anchor"), "{out}");

    // An edited anchor is named.
    let d = tampered(&base, scratch.path(), "anchor-edit", &[]).await;
    let af = d.join("audit-anchors.jsonl");
    let text = std::fs::read_to_string(&af).unwrap();
    std::fs::write(&af, text.replace(&format!("\"seq\":{n}"), "\"seq\":6")).unwrap();
    let (ok, out) = audit_cli(&d, &["verify"]);
    assert!(!ok);
    assert!(out.contains("line 1"), "{out}");

    // A lost audit key is not silently replaced by a new one.
    let d = tampered(&base, scratch.path(), "lost-key", &[]).await;
    std::fs::remove_file(d.join("keys/audit.key")).unwrap();
    let (ok, out) = audit_cli(&d, &["verify"]);
    assert!(!ok);
    assert!(out.contains("audit key"), "{out}");
    assert!(!d.join("keys/audit.key").exists());

    // A data directory from before the key: its events are checked by linkage only, and the
    // key created now covers every later event.
    let d = tampered(
        &base,
        scratch.path(),
        "legacy",
        &["UPDATE audit_events SET mac = NULL"],
    )
    .await;
    std::fs::remove_file(d.join("keys/audit.key")).unwrap();
    let (ok, out) = audit_cli(&d, &["verify"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("{n} event(s) from before the audit key")),
        "{out}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["audit.key", "anchor.key"] {
            let mode = std::fs::metadata(d.join("keys").join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }
    let added = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .arg("--data-dir")
        .arg(&d)
        .args(["admin", "user", "add", "newcomer", "--role", "researcher"])
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    let (ok, out) = audit_cli(&d, &["verify"]);
    assert!(ok, "{out}");
    let d2 = tampered(
        &d,
        scratch.path(),
        "legacy-later",
        &[&format!(
            "UPDATE audit_events SET mac = NULL WHERE seq > {n}"
        )],
    )
    .await;
    let (ok, out) = audit_cli(&d2, &["verify"]);
    assert!(!ok, "{out}");
    assert!(out.contains("predate the audit key"), "{out}");
    drop(holder);
}
