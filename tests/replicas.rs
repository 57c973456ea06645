//! Several replicas on one PostgreSQL and the same volumes (issue 14): an upload begun on one
//! finishes on the other, decisions made on either count, a release happens once, and a
//! release cut short by SIGKILL is taken over by the other replica once its lease runs out.
//!
//! Always on a real PostgreSQL (common::pg). Replica A is the in-process server of the test
//! helpers; replica B is the `airlock serve` binary on the same data directory and database.

mod common;

use common::garage::Garage;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Child;
use std::time::Duration;

/// Replica A on PostgreSQL, whatever `AIRLOCK_TEST_DATABASE` says (its volumes on `garage`
/// when one is given).
async fn replica_a(dir: tempfile::TempDir, lease: Duration, garage: Option<&Garage>) -> TestApp {
    let url = pg::database_for(dir.path());
    TestApp::spawn_in_with(dir, move |s| {
        s.database.url = Some(url);
        s.server.lease_ttl = lease;
        if let Some(g) = garage {
            g.apply(s);
        }
    })
    .await
}

/// Replica B: `airlock serve` on the same data directory and database (and Garage).
fn replica_b(data: &Path, lease: &str, garage: Option<&Garage>) -> (Child, String) {
    let url = pg::database_for(data);
    let mut env: Vec<(String, String)> = vec![
        ("AIRLOCK__DATABASE__URL".into(), url),
        ("AIRLOCK__SERVER__SWEEP_INTERVAL".into(), "200ms".into()),
        ("AIRLOCK__SERVER__LEASE_TTL".into(), lease.into()),
    ];
    if let Some(g) = garage {
        env.extend(g.airlock_env());
        env.push((
            "AIRLOCK__STORAGE__VOLUMES__OUTPUT__BACKEND".into(),
            "local".into(),
        ));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    serve_binary_with(data, &env)
}

/// A released file's bytes: from the folder, or from Garage for a location on S3.
fn read_released(garage: Option<&Garage>, location: &str, rel: &str) -> Vec<u8> {
    match (garage, location.strip_prefix("s3://airlock/")) {
        (Some(g), Some(key)) => g
            .cat(&format!("{key}{rel}"))
            .unwrap_or_else(|| panic!("{location}{rel} is not in the bucket")),
        _ => std::fs::read(Path::new(location).join(rel)).unwrap(),
    }
}

async fn count_events(dir: &Path, action: &str, transfer: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE action = $1 AND transfer_id = $2")
        .bind(action)
        .bind(transfer)
        .fetch_one(&raw_db(dir).await)
        .await
        .unwrap()
}

fn hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_resumes_on_the_other_replica_and_the_release_happens_once() {
    upload_resumes_on_the_other_replica(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_s3_an_upload_resumes_on_the_other_replica_and_the_release_happens_once() {
    let g = Garage::start();
    upload_resumes_on_the_other_replica(Some(&g)).await;
}

async fn upload_resumes_on_the_other_replica(garage: Option<&Garage>) {
    let t = replica_a(tempfile::tempdir().unwrap(), Duration::from_secs(5), garage).await;
    let people = t.bootstrap(1).await;
    let (mut b, b_url) = replica_b(t.data_dir(), "5s", garage);
    let http = reqwest::Client::new();

    // A token minted on A works on B: the signing keys are shared.
    let r = http
        .get(format!("{b_url}/api/v1/me"))
        .bearer_auth(&people.pm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let token = t.upload_token(&people.pm, &id, json!({})).await;
    let body = bytes(3 << 20, 11);
    let r = t
        .tus_create(&token, &id)
        .header("Upload-Length", body.len().to_string())
        .header("Upload-Metadata", tus_meta("d/big.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let path = if loc.starts_with("http") {
        loc.split_once("/api/")
            .map(|(_, p)| format!("/api/{p}"))
            .unwrap()
    } else {
        loc.clone()
    };
    // The first half on A.
    let half = body.len() / 2;
    let r = t
        .tus_patch(
            &token,
            &format!("{}{path}", t.url),
            0,
            body[..half].to_vec(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // B knows where it stands, and takes the rest.
    let r = http
        .head(format!("{b_url}{path}"))
        .bearer_auth(&token)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["upload-offset"].to_str().unwrap(),
        half.to_string()
    );
    let r = t
        .tus_patch(
            &token,
            &format!("{b_url}{path}"),
            half,
            body[half..].to_vec(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // Sealed on B, approved on A.
    let r = http
        .post(format!("{b_url}/api/v1/transfers/{id}/seal"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
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
    let out = t.cli(Some(&people.pm), &["transfer", "show", &id, "--json"]);
    assert!(out.status.success());
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = &shown["files"][0];
    assert_eq!(f["path"], "d/big.bin");
    assert_eq!(
        f["sha256"],
        hex(&body),
        "the digest of an uninterrupted upload"
    );
    let loc = v["release"]["location"].as_str().unwrap();
    assert_eq!(hex(&read_released(garage, loc, "d/big.bin")), hex(&body));
    // Both replicas' workers saw the approved transfer; one released it, once; one scanned.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        count_events(t.data_dir(), "transfer.released", &id).await,
        1
    );
    assert_eq!(count_events(t.data_dir(), "transfer.scanned", &id).await, 1);

    // Concurrent audited writes from both replicas keep one chain.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let base = if i % 2 == 0 {
            t.url.clone()
        } else {
            b_url.clone()
        };
        let pm = people.pm.clone();
        tasks.push(tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{base}/api/v1/transfers"))
                .bearer_auth(pm)
                .json(&json!({"workspace": "proj/ws", "kind": "data-ingress", "uploader": "prov"}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap().is_success());
    }
    let out = t.cli(None, &["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    b.kill().unwrap();
    let _ = b.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_cut_short_by_sigkill_is_taken_over_after_the_lease_runs_out() {
    release_taken_over_after_sigkill(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_s3_a_release_cut_short_by_sigkill_is_taken_over_after_the_lease_runs_out() {
    let g = Garage::start();
    release_taken_over_after_sigkill(Some(&g)).await;
}

async fn release_taken_over_after_sigkill(garage: Option<&Garage>) {
    // B alone first: A's workers must not take the release. A is opened without serving (the
    // helpers' bootstrap needs an App), then started as a server only after B is killed.
    let dir = tempfile::tempdir().unwrap();
    let url = pg::database_for(dir.path());
    let t = replica_a(dir, Duration::from_secs(2), garage).await;
    let people = t.bootstrap(1).await;
    let dir = t.stop().await;
    let (mut b, b_url) = replica_b(dir.path(), "2s", garage);
    let http = reqwest::Client::new();
    let pm = &people.pm;
    let (id, token) = open_with_token(&http, &b_url, pm).await;
    // Enough bytes that the release (copy, re-hash, read back) takes a while.
    let mut files = Vec::new();
    for i in 0..4 {
        let body = bytes(96 << 20, 20 + i);
        let r = http
            .put(format!("{b_url}/api/v1/transfers/{id}/files/f{i}.bin"))
            .bearer_auth(&token)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        files.push(hex(&body));
    }
    let r = http
        .post(format!("{b_url}/api/v1/transfers/{id}/seal"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let pool = raw_db(dir.path()).await;
    for _ in 0..600 {
        let s: String = sqlx::query_scalar("SELECT state FROM transfers WHERE id = $1")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
        if s == "in_review" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = http
        .post(format!("{b_url}/api/v1/transfers/{id}/approve"))
        .bearer_auth(&people.inv)
        .json(&json!({"as": "investigator"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    // Kill B once it holds the release's lease.
    let job = format!("release:{id}");
    let mut holder = None;
    for _ in 0..2000 {
        holder = sqlx::query_scalar::<_, String>("SELECT holder FROM leases WHERE name = $1")
            .bind(&job)
            .fetch_optional(&pool)
            .await
            .unwrap();
        if holder.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let holder = holder.expect("B never took the release's lease");
    b.kill().unwrap();
    let _ = b.wait();
    let state: String = sqlx::query_scalar("SELECT state FROM transfers WHERE id = $1")
        .bind(&id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        state, "approved",
        "B finished the release before it was killed"
    );

    // A takes over once B's lease has run out, and releases byte-identical files, once.
    let t = TestApp::spawn_in_with(dir, move |s| {
        s.database.url = Some(url);
        s.server.lease_ttl = Duration::from_secs(2);
        if let Some(g) = garage {
            g.apply(s);
        }
    })
    .await;
    assert_ne!(holder, t.app.replica);
    let v = t.wait_for_state(&people.pm, &id, "released").await;
    let loc = v["release"]["location"].as_str().unwrap();
    for (i, want) in files.iter().enumerate() {
        let got = hex(&read_released(garage, loc, &format!("f{i}.bin")));
        assert_eq!(&got, want, "f{i}.bin");
    }
    assert_eq!(
        count_events(t.data_dir(), "transfer.released", &id).await,
        1
    );
}

/// 1,000 concurrent status reads and 50 concurrent uploads, split across both replicas: every
/// read answers, every upload lands with its digest, and the audit chain verifies after.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reads_and_uploads_on_both_replicas_leave_one_verifiable_chain() {
    let t = replica_a(tempfile::tempdir().unwrap(), Duration::from_secs(5), None).await;
    let people = t.bootstrap(1).await;
    let (mut b, b_url) = replica_b(t.data_dir(), "5s", None);
    let bases = [t.url.clone(), b_url.clone()];
    // Two transfers, a token each: 25 uploads per token, split across the replicas.
    let mut targets = Vec::new();
    for _ in 0..2 {
        let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
        let token = t.upload_token(&people.pm, &id, json!({})).await;
        targets.push((id, token));
    }
    let http = reqwest::Client::new();
    let mut uploads = Vec::new();
    for i in 0..50usize {
        let (id, token) = targets[i % 2].clone();
        let base = bases[(i / 2) % 2].clone();
        let http = http.clone();
        uploads.push(tokio::spawn(async move {
            let body = bytes(64 * 1024 + i, i as u64);
            let r = http
                .put(format!("{base}/api/v1/transfers/{id}/files/u/{i}.bin"))
                .bearer_auth(&token)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            (r.status(), id, i, hex(&body))
        }));
    }
    let mut reads = Vec::new();
    for i in 0..1000usize {
        let base = bases[i % 2].clone();
        let id = targets[i % 2].0.clone();
        let (http, pm) = (http.clone(), people.pm.clone());
        reads.push(tokio::spawn(async move {
            http.get(format!("{base}/api/v1/transfers/{id}"))
                .bearer_auth(pm)
                .send()
                .await
                .map(|r| r.status())
        }));
    }
    let mut want = Vec::new();
    for u in uploads {
        let (s, id, i, digest) = u.await.unwrap();
        assert_eq!(s, StatusCode::CREATED, "upload {i}");
        want.push((id, format!("u/{i}.bin"), digest));
    }
    let mut ok = 0;
    for r in reads {
        let s = r.await.unwrap().expect("a status read got no answer");
        assert_eq!(s, StatusCode::OK);
        ok += 1;
    }
    assert_eq!(ok, 1000);
    // Every file, with its digest, whichever replica took it.
    for (id, token) in &targets {
        let (s, m) = t
            .get_json(token, &format!("/transfers/{id}/manifest"))
            .await;
        assert_eq!(s, StatusCode::OK);
        let files = m["files"].as_array().unwrap();
        assert_eq!(files.len(), 25);
        for f in files {
            let w = want
                .iter()
                .find(|w| &w.0 == id && w.1 == f["path"].as_str().unwrap())
                .unwrap_or_else(|| panic!("unexpected {f}"));
            assert_eq!(f["sha256"], w.2.as_str(), "{}", w.1);
        }
    }
    let out = t.cli(None, &["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    b.kill().unwrap();
    let _ = b.wait();
}

/// Webhook deliveries received by the test: (delivery id, event name, transfer id).
type Deliveries = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>;

async fn webhook_receiver() -> (Deliveries, String) {
    use axum::extract::State;
    use axum::http::HeaderMap;
    let got = Deliveries::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |State(got): State<Deliveries>, h: HeaderMap, body: String| async move {
                    let e: Value = serde_json::from_str(&body).unwrap();
                    // A slow receiver, so both replicas' senders have time to overlap.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    got.lock().unwrap().push((
                        h["airlock-delivery"].to_str().unwrap().to_owned(),
                        e["event"].as_str().unwrap_or_default().to_owned(),
                        e["transfer"]["id"].as_str().unwrap_or_default().to_owned(),
                    ));
                    axum::http::StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(got.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (got, url)
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_go_out_once_from_two_replicas_sharing_a_configured_keys_dir() {
    let (got, hook) = webhook_receiver().await;
    // The keys in a directory of their own (a mounted secret), outside the data directory.
    let keys = tempfile::tempdir().unwrap();
    let keys_dir = keys.path().join("airlock-keys");
    let dir = tempfile::tempdir().unwrap();
    let url = pg::database_for(dir.path());
    let (hook_a, keys_a) = (hook.clone(), keys_dir.clone());
    let t = TestApp::spawn_in_with(dir, move |s| {
        s.database.url = Some(url);
        s.server.lease_ttl = Duration::from_secs(5);
        s.storage.keys_dir = Some(keys_a);
        s.webhooks.urls = vec![hook_a];
        s.webhooks.secret = "a-webhook-secret-of-some-length".into();
        s.webhooks.poll_interval = Duration::from_millis(50);
    })
    .await;
    let people = t.bootstrap(1).await;
    assert!(keys_dir.join("jwt.key").exists());
    assert!(keys_dir.join("audit.key").exists());
    assert!(
        !t.data_dir().join("keys").exists(),
        "keys written to the data directory although keys_dir is set"
    );
    let db = pg::database_for(t.data_dir());
    let (mut b, b_url) = serve_binary_with(
        t.data_dir(),
        &[
            ("AIRLOCK__DATABASE__URL", db.as_str()),
            ("AIRLOCK__SERVER__LEASE_TTL", "5s"),
            ("AIRLOCK__STORAGE__KEYS_DIR", keys_dir.to_str().unwrap()),
            ("AIRLOCK__WEBHOOKS__URLS", hook.as_str()),
            (
                "AIRLOCK__WEBHOOKS__SECRET",
                "a-webhook-secret-of-some-length",
            ),
            ("AIRLOCK__WEBHOOKS__POLL_INTERVAL", "50ms"),
        ],
    );
    let http = reqwest::Client::new();
    // A token minted on A, with the keys from keys_dir, works on B.
    let r = http
        .get(format!("{b_url}/api/v1/me"))
        .bearer_auth(&people.pm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // 30 transfers opened, alternately on A and B, each raising `transfer.created`.
    let mut ids = Vec::new();
    for i in 0..30 {
        let base = if i % 2 == 0 { &t.url } else { &b_url };
        let r = http
            .post(format!("{base}/api/v1/transfers"))
            .bearer_auth(&people.pm)
            .json(&json!({"workspace": "proj/ws", "kind": "data-ingress", "uploader": "prov"}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let v: Value = r.json().await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let created = |got: &Deliveries| {
        got.lock()
            .unwrap()
            .iter()
            .filter(|d| d.1 == "transfer.created" && ids.contains(&d.2))
            .count()
    };
    for _ in 0..300 {
        if created(&got) >= ids.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Both senders keep polling a while longer: a duplicate would arrive now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = got.lock().unwrap().clone();
    assert_eq!(
        created(&got),
        ids.len(),
        "every transfer.created, once: {all:#?}"
    );
    let mut seen = std::collections::HashSet::new();
    for (delivery, event, _) in &all {
        assert!(
            seen.insert(delivery),
            "{event} delivered twice ({delivery})"
        );
    }
    // The CLI on the server, told where the keys are (it would refuse the chain without
    // the audit key).
    let out = airlock_at(t.data_dir())
        .env("AIRLOCK__STORAGE__KEYS_DIR", &keys_dir)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    b.kill().unwrap();
    let _ = b.wait();
}

/// The multipart uploads Garage holds in progress, as rclone lists them.
fn multipart_uploads(g: &Garage) -> usize {
    let out = g.rclone(&["backend", "list-multipart-uploads", "g:airlock"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["airlock"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread")]
async fn on_s3_a_replica_killed_mid_upload_leaves_no_multipart_upload_billed() {
    let g = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let url = pg::database_for(dir.path());
    let t = replica_a(dir, Duration::from_secs(2), Some(&g)).await;
    let people = t.bootstrap(1).await;
    let dir = t.stop().await;
    let (mut b, b_url) = replica_b(dir.path(), "2s", Some(&g));
    let http = reqwest::Client::new();
    let (id, token) = open_with_token(&http, &b_url, &people.pm).await;
    // A PUT whose body stops coming after 12 MiB: B streams it into a multipart upload.
    let sent = bytes(12 << 20, 5);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|x| (x, rx))
    }));
    let put = tokio::spawn(
        http.put(format!("{b_url}/api/v1/transfers/{id}/files/stuck.bin"))
            .bearer_auth(&token)
            .header("content-length", (64u64 << 20).to_string())
            .body(body)
            .send(),
    );
    for chunk in sent.chunks(1 << 20) {
        tx.send(Ok(chunk.to_vec())).await.unwrap();
    }
    let pool = raw_db(dir.path()).await;
    let mut recorded = 0i64;
    for _ in 0..200 {
        recorded = sqlx::query_scalar("SELECT COUNT(*) FROM s3_uploads")
            .fetch_one(&pool)
            .await
            .unwrap();
        if recorded > 0 && multipart_uploads(&g) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(recorded, 1, "the upload in progress is recorded");
    // SIGKILL: B can abort nothing. Garage keeps the parts.
    b.kill().unwrap();
    let _ = b.wait();
    drop(tx);
    let _ = put.await;
    assert_eq!(multipart_uploads(&g), 1);

    // A's sweep aborts what the dead replica left (here without waiting the quarter-hour a
    // live upload is given), and forgets it.
    let gr = &g;
    let t = TestApp::spawn_in_with(dir, move |s| {
        s.database.url = Some(url);
        gr.apply(s);
    })
    .await;
    assert_eq!(
        t.app.volumes.sweep_uploads(&t.app.store, 0).await.unwrap(),
        1
    );
    assert_eq!(multipart_uploads(&g), 0, "an aborted upload bills nothing");
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM s3_uploads")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    // Nothing was acknowledged: the file can be deleted and sent again whole.
    let r = http
        .delete(t.api(&format!("/transfers/{id}/files/stuck.bin")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let r = http
        .put(t.api(&format!("/transfers/{id}/files/stuck.bin")))
        .bearer_auth(&token)
        .body(sent.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["sha256"], hex(&sent));
}
