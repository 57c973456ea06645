//! The integrity engine: the scheduler re-hashes files at rest, detects a flipped byte, a
//! deleted file and an added one, raises incidents (audited, counted in /metrics, sent to a
//! local webhook receiver), blocks a pending transfer, and resumes a pass after a restart.

mod common;

use airlock::workflow::admin;
use axum::extract::State;
use axum::routing::post;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Hits = Arc<Mutex<Vec<Value>>>;

async fn receiver() -> (Hits, String) {
    async fn hit(State(h): State<Hits>, body: String) -> StatusCode {
        h.lock()
            .unwrap()
            .push(serde_json::from_str(&body).unwrap_or(Value::Null));
        StatusCode::OK
    }
    let hits: Hits = Arc::default();
    let app = axum::Router::new()
        .route("/hook", post(hit))
        .with_state(hits.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (hits, url)
}

/// Opens a transfer in proj/fast, uploads `files`, seals, waits for review.
async fn in_review(t: &TestApp, p: &People, files: &[(&str, Vec<u8>)]) -> String {
    let (s, v) = t
        .post_json(
            &p.pm,
            "/transfers",
            json!({"workspace": "proj/fast", "kind": "data-ingress", "uploader": "prov"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let up = t.upload_token(&p.pm, &id, Value::Null).await;
    for (path, b) in files {
        assert_eq!(
            t.put(&up, &id, path, b.clone()).await.0,
            StatusCode::CREATED
        );
    }
    t.post_json(&up, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    t.wait_for_state(&p.pm, &id, "in_review").await;
    id
}

fn writable(p: &Path) {
    let mut perm = std::fs::metadata(p).unwrap().permissions();
    perm.set_mode(perm.mode() | 0o200);
    std::fs::set_permissions(p, perm).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flipped_deleted_or_added_released_file_is_detected_by_the_next_pass() {
    let (hits, url) = receiver().await;
    let t = TestApp::spawn_with(|s| {
        s.integrity.poll_interval = Duration::from_millis(200);
        s.webhooks.urls = vec![url];
        s.webhooks.secret = "a-secret-of-sixteen+".into();
        s.webhooks.poll_interval = Duration::from_millis(100);
    })
    .await;
    let p = t.bootstrap(1).await;
    let pol = fast_policy(t.data_dir(), "1s");
    admin::create_workspace(&t.app, "proj", "fast", 1, Some(&pol))
        .await
        .unwrap();
    let files = [
        ("d/a.csv", bytes(200_000, 1)),
        ("d/b.csv", bytes(300_000, 2)),
        ("d/c.csv", bytes(5 << 20, 3)), // large enough for multi-threaded BLAKE3
    ];
    let id = in_review(&t, &p, &files).await;
    let (s, v) = t
        .post_json(&p.inv, &format!("/transfers/{id}/approve"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let v = t.wait_for_state(&p.pm, &id, "released").await;
    let root = PathBuf::from(v["release"]["location"].as_str().unwrap());
    // A clean pass first: every copy verified, nothing raised.
    for _ in 0..100 {
        let f = t.app.store.fixity(id.parse().unwrap()).await.unwrap();
        if f.iter().filter(|r| r.location == "released").count() == 3 {
            assert!(f.iter().all(|r| r.result == "ok"), "{f:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(integrity_incidents(&t, &id).await.is_empty());

    // Flip one byte (same size), delete one file, add one.
    writable(&root.join("d"));
    let a = root.join("d/a.csv");
    writable(&a);
    let mut bytes_a = std::fs::read(&a).unwrap();
    bytes_a[1234] ^= 0x01;
    std::fs::write(&a, &bytes_a).unwrap();
    std::fs::remove_file(root.join("d/b.csv")).unwrap();
    std::fs::write(root.join("d/extra.csv"), b"smuggled").unwrap();

    let found = wait_incidents(&t, &id, 3).await;
    assert!(
        found
            .iter()
            .any(|d| d.starts_with("released d/a.csv changed: sha256")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|d| d.starts_with("released d/b.csv is missing")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|d| d == "released d/extra.csv is not in the manifest"),
        "{found:?}"
    );
    // The release is flagged, not silently kept.
    let v = t.show(&p.pm, &id).await;
    assert_eq!(v["state"], "released");
    assert!(
        v["state_reason"]
            .as_str()
            .unwrap()
            .contains("INTEGRITY INCIDENT"),
        "{v}"
    );
    // Counted in /metrics.
    let m = t
        .http
        .get(format!("{}/metrics", t.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for kind in ["changed", "missing", "unexpected"] {
        assert!(
            m.contains(&format!(
                "airlock_integrity_incidents_total{{kind=\"{kind}\",location=\"released\"}} 1"
            )),
            "{m}"
        );
    }
    // The alert reached the webhook receiver, naming who it is for.
    let mut alerts = Vec::new();
    for _ in 0..100 {
        alerts = hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h["event"] == "incident.integrity")
            .cloned()
            .collect::<Vec<_>>();
        if alerts.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(alerts.len(), 3, "{alerts:?}");
    assert!(
        alerts[0]["detail"]["notify"]
            .as_array()
            .unwrap()
            .contains(&json!("pm")),
        "{alerts:?}"
    );
    // Later passes do not raise the same incident again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(integrity_incidents(&t, &id).await.len(), 3);

    // `airlock verify` reports the same now, and exits 1; `airlock incidents` lists them.
    let out = t.cli(None, &["verify", &id]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("3 problem(s)"), "{said}");
    assert!(said.contains("changed    released d/a.csv"), "{said}");
    let out = t.cli(None, &["incidents", "--transfer", &id]);
    assert!(out.status.success());
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listed.matches("integrity").count(), 3, "{listed}");
    // Resolving one is audited; the problem is still there, so the next pass raises it again.
    let missing = t
        .app
        .store
        .incidents(Some(id.parse().unwrap()))
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.detail.contains("d/b.csv is missing"))
        .unwrap();
    let out = t.cli(None, &["incidents", "--resolve", &missing.id]);
    assert!(!out.status.success(), "a comment is required");
    let out = t.cli(
        None,
        &[
            "incidents",
            "--resolve",
            &missing.id,
            "--comment",
            "restored from backup",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let out = t.cli(
        None,
        &["incidents", "--resolve", &missing.id, "--comment", "again"],
    );
    assert!(!out.status.success(), "resolved twice");
    let found = wait_incidents(&t, &id, 4).await;
    assert_eq!(
        found
            .iter()
            .filter(|d| d.contains("d/b.csv is missing"))
            .count(),
        2,
        "{found:?}"
    );
    let records = t.app.store.audit_records().await.unwrap();
    assert!(records
        .iter()
        .any(|r| r.action == "incident.resolved" && r.detail.contains("restored from backup")));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flipped_byte_in_quarantine_blocks_a_pending_transfer() {
    // A real SMTP server (aiosmtpd) for the email alert, reached through the older
    // `[integrity] smtp` keys (plain SMTP), which still work beside `[mail]`.
    let smtp = smtp::SmtpReceiver::start(smtp::Security::Plain, None);
    let port = smtp.port;
    let t = TestApp::spawn_with(|s| {
        s.integrity.poll_interval = Duration::from_millis(200);
        s.integrity.smtp = Some(format!("127.0.0.1:{port}"));
        s.integrity.mail_to = vec!["security@example.org".into()];
        s.integrity.mail_domain = Some("example.org".into());
    })
    .await;
    let p = t.bootstrap(1).await;
    let pol = fast_policy(t.data_dir(), "1s");
    admin::create_workspace(&t.app, "proj", "fast", 1, Some(&pol))
        .await
        .unwrap();
    let id = in_review(&t, &p, &[("a.bin", bytes(100_000, 7))]).await;
    // `airlock verify` on the intact transfer: all well, exit 0.
    let out = t.cli(None, &["verify", &id]);
    assert!(out.status.success(), "{out:?}");
    let tid: airlock::domain::TransferId = id.parse().unwrap();
    let f = &t.app.store.files(tid).await.unwrap()[0];
    let seg = t.app.volumes.segment_path(tid, f.id, 0);
    let mut b = std::fs::read(&seg).unwrap();
    b[50_000] ^= 0x80;
    std::fs::write(&seg, &b).unwrap();
    let v = t.wait_for_state(&p.pm, &id, "blocked").await;
    let reason = v["state_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("blocked: integrity failure: quarantine a.bin changed"),
        "{reason}"
    );
    // Nobody can approve it any more.
    let (s, _) = t
        .post_json(&p.inv, &format!("/transfers/{id}/approve"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    // The alert email reached the SMTP server, for the list and the project's managers.
    let got = smtp
        .until("the alert email", |m| {
            m.iter().any(|m| m.body().contains("Check now with"))
        })
        .await;
    let mail = &got[0];
    assert_eq!(
        mail.header("Subject").unwrap(),
        format!("[airlock] integrity incident in proj/fast, transfer {id}"),
        "{mail:?}"
    );
    assert_eq!(
        mail.header("To").unwrap(),
        "security@example.org, pm@example.org",
        "{mail:?}"
    );
    assert_eq!(mail.rcpt_tos, ["security@example.org", "pm@example.org"]);
    assert_eq!(mail.mail_from, "airlock@localhost.localdomain");
    assert!(
        mail.body().contains("- quarantine a.bin changed: sha256"),
        "{}",
        mail.body()
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_in_the_middle_of_a_pass_resumes_it() {
    // 1 MiB/s: each of the six 1 MiB files takes about a second.
    let throttle = |s: &mut airlock::config::Settings| {
        s.integrity.poll_interval = Duration::from_millis(100);
        s.integrity.bytes_per_second = 1 << 20;
    };
    let t = TestApp::spawn_with(throttle).await;
    let p = t.bootstrap(1).await;
    let pol = fast_policy(t.data_dir(), "1h");
    admin::create_workspace(&t.app, "proj", "fast", 1, Some(&pol))
        .await
        .unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("f{i}.bin"), bytes(1 << 20, i)))
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let id = in_review(&t, &p, &refs).await;
    // Make the files due: sealed long ago, so the hourly interval has run out.
    sqlx::query("UPDATE transfers SET sealed_at = '2000-01-01T00:00:00Z' WHERE id = $1")
        .bind(&id)
        .execute(t.app.store.pool())
        .await
        .unwrap();
    let tid: airlock::domain::TransferId = id.parse().unwrap();
    let mut before = Vec::new();
    for _ in 0..100 {
        before = t.app.store.fixity(tid).await.unwrap();
        if before.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!((2..6).contains(&before.len()), "not mid-pass: {before:?}");
    let data = t.stop().await;
    let t = TestApp::spawn_in_with(data, throttle).await;
    let mut after = Vec::new();
    for _ in 0..150 {
        after = t.app.store.fixity(tid).await.unwrap();
        if after.len() == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(after.len(), 6, "{after:?}");
    assert!(after.iter().all(|r| r.result == "ok"), "{after:?}");
    // What was verified before the restart was not verified again.
    for b in &before {
        let a = after.iter().find(|a| a.path == b.path).unwrap();
        assert_eq!(a.verified_at, b.verified_at, "{} was re-verified", b.path);
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_released_transfer_exports_a_bag_that_bagit_validates() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(1).await;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let up = t.upload_token(&p.pm, &id, Value::Null).await;
    let files = [
        ("cohort/visits.csv", bytes(70_000, 1)),
        ("cohort/notes/readme.txt", b"hello\n".to_vec()),
    ];
    for (path, b) in &files {
        assert_eq!(
            t.put(&up, &id, path, b.clone()).await.0,
            StatusCode::CREATED
        );
    }
    t.post_json(&up, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    t.wait_for_state(&p.pm, &id, "in_review").await;
    // Not released yet: refused with the reason.
    let dir = tempfile::tempdir().unwrap();
    let bag = dir.path().join("bag");
    let out = t.cli(None, &["bag", &id, "--output", bag.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only a released transfer"));
    t.post_json(&p.inv, &format!("/transfers/{id}/approve"), Value::Null)
        .await;
    t.wait_for_state(&p.pm, &id, "released").await;
    let out = t.cli(None, &["bag", &id, "--output", bag.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    // bagit.py (PyPI bagit) accepts it...
    run(std::process::Command::new("python3")
        .args(["-m", "bagit", "--validate"])
        .arg(&bag));
    let info = std::fs::read_to_string(bag.join("bag-info.txt")).unwrap();
    assert!(info.contains("Payload-Oxum: 70006.2"), "{info}");
    // ...and so does sha256sum -c against the manifest.
    let said = run(std::process::Command::new("sha256sum")
        .args(["-c", "manifest-sha256.txt"])
        .current_dir(&bag));
    assert!(said.contains("data/cohort/visits.csv: OK"), "{said}");
    // One flipped byte and bagit.py rejects it.
    let f = bag.join("data/cohort/visits.csv");
    let mut b = std::fs::read(&f).unwrap();
    b[10] ^= 1;
    std::fs::write(&f, &b).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-m", "bagit", "--validate"])
        .arg(&bag)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("visits.csv"),
        "{out:?}"
    );
    t.stop().await;
}

#[test]
fn airlock_hash_agrees_with_sha256sum_and_b3sum() {
    let dir = tempfile::tempdir().unwrap();
    let small = write(dir.path(), "d/small.bin", &bytes(1000, 1));
    let big = write(dir.path(), "d/big.bin", &bytes(6 << 20, 2));
    let empty = write(dir.path(), "d/empty", b"");
    let air = |digest: &str| {
        run(std::process::Command::new(env!("CARGO_BIN_EXE_airlock"))
            .args(["hash", "--digest", digest])
            .arg(dir.path().join("d")))
    };
    let both = air("both");
    for f in [&small, &big, &empty] {
        let line = both
            .lines()
            .find(|l| l.ends_with(f.to_str().unwrap()))
            .unwrap();
        let parts: Vec<&str> = line.split("  ").collect();
        assert_eq!(parts[0], digest_with("sha256sum", f));
        assert_eq!(parts[1], digest_with("b3sum", f));
        assert_eq!(parts[2], std::fs::metadata(f).unwrap().len().to_string());
    }
    // Each alone is in the format its checker reads back.
    let sums = dir.path().join("SHA256SUMS");
    std::fs::write(&sums, air("sha256")).unwrap();
    run(std::process::Command::new("sha256sum").arg("-c").arg(&sums));
    let b3 = dir.path().join("B3SUMS");
    std::fs::write(&b3, air("blake3")).unwrap();
    run(std::process::Command::new("b3sum").arg("-c").arg(&b3));
}

/// `airlock verify --released-only` reads the released copies alone: a flipped byte in a
/// quarantine copy goes unseen by it (a whole verify finds it), one in a released copy is
/// found; a transfer not released is refused. The same through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_released_only_reads_the_released_copies_alone() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(1).await;
    // Passes an hour apart: only the checks this test asks for run.
    let pol = fast_policy(t.data_dir(), "1h");
    admin::create_workspace(&t.app, "proj", "fast", 1, Some(&pol))
        .await
        .unwrap();
    let pending = in_review(&t, &p, &[("x.bin", bytes(1000, 9))]).await;
    let files = [
        ("d/a.csv", bytes(200_000, 1)),
        ("d/b.csv", bytes(300_000, 2)),
    ];
    let id = in_review(&t, &p, &files).await;
    let (s, v) = t
        .post_json(&p.inv, &format!("/transfers/{id}/approve"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let v = t.wait_for_state(&p.pm, &id, "released").await;
    let root = PathBuf::from(v["release"]["location"].as_str().unwrap());
    let report = |args: &[&str]| -> (bool, Value) {
        let out = t.cli(None, args);
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.success(), v[0].clone())
    };
    let (ok, r) = report(&["verify", &id, "--released-only", "--json"]);
    assert!(ok, "{r}");
    assert_eq!(
        (r["ok"].as_u64(), r["bytes"].as_u64()),
        (Some(2), Some(500_000)),
        "{r}"
    );
    assert_eq!(r["counts"], json!({"released": {"ok": 2}}), "{r}");
    let (ok, r) = report(&["verify", &id, "--json"]);
    assert!(ok, "{r}");
    assert_eq!(
        (r["ok"].as_u64(), r["bytes"].as_u64()),
        (Some(4), Some(1_000_000)),
        "{r}"
    );

    // A flipped byte in quarantine: not read by --released-only, found by the whole check.
    let tid: airlock::domain::TransferId = id.parse().unwrap();
    let a = t
        .app
        .store
        .files(tid)
        .await
        .unwrap()
        .into_iter()
        .find(|f| f.path == "d/a.csv")
        .unwrap();
    let seg = t.app.volumes.segment_path(tid, a.id, 0);
    let mut b = std::fs::read(&seg).unwrap();
    b[100] ^= 0x01;
    std::fs::write(&seg, &b).unwrap();
    let (ok, r) = report(&["verify", &id, "--released-only", "--json"]);
    assert!(ok, "{r}");
    let (ok, r) = report(&["verify", &id, "--json"]);
    assert!(!ok, "{r}");
    assert_eq!(r["counts"]["quarantine"]["changed"], 1, "{r}");

    // A flipped byte in the released copy is what --released-only is for.
    let rb = root.join("d/b.csv");
    writable(&rb);
    let mut b = std::fs::read(&rb).unwrap();
    b[100] ^= 0x01;
    std::fs::write(&rb, &b).unwrap();
    let (ok, r) = report(&["verify", &id, "--released-only", "--json"]);
    assert!(!ok, "{r}");
    assert_eq!(
        r["counts"],
        json!({"released": {"ok": 1, "changed": 1}}),
        "{r}"
    );
    assert_eq!(r["problems"][0]["path"], "d/b.csv", "{r}");

    // Through the API: the workspace's releases, a transfer not released, a bad value.
    let (s, v) = t
        .post_json(
            &p.pm,
            "/workspaces/proj/fast/verify?released_only=true",
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(
        v[0]["counts"],
        json!({"released": {"ok": 1, "changed": 1}}),
        "{v}"
    );
    let (s, v) = t
        .post_json(
            &p.pm,
            &format!("/transfers/{pending}/verify?released_only=true"),
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v.to_string().contains("not released"), "{v}");
    let (s, v) = t
        .post_json(
            &p.pm,
            &format!("/transfers/{id}/verify?released_only=maybe"),
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    t.stop().await;
}
