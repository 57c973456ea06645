//! Regression tests for the upload findings of the security review (issue 10): the transfer
//! size budget counted as bytes stream (finding 2), a revoked token that does not expire its
//! transfer (7), an in-flight PATCH refused once its token or transfer is gone (8), and tiny
//! chunks that no longer multiply stored pieces (9).

mod common;

use airlock::workflow::admin;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

type Chunks = tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>;

/// A request body fed by hand: no Content-Length, sent chunked as the chunks arrive.
fn fed_body() -> (Chunks, reqwest::Body) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    (tx, body)
}

/// A workspace `proj/small` whose policy allows `bytes` per file and per transfer; a transfer
/// into it and its upload token.
async fn small_transfer(t: &TestApp, p: &People, bytes: u64) -> (String, String) {
    let dir = t.data_dir().join("policies-small");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("small.toml");
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/tier2.toml"),
    )
    .unwrap()
    .replace(
        "max_file_size = \"1 TiB\"",
        &format!("max_file_size = \"{bytes} B\""),
    )
    .replace(
        "max_transfer_size = \"10 TiB\"",
        &format!("max_transfer_size = \"{bytes} B\""),
    );
    std::fs::write(&file, text).unwrap();
    admin::create_workspace(&t.app, "proj", "small", 2, Some(&file))
        .await
        .unwrap();
    let (s, v) = t
        .post_json(
            &p.pm,
            "/transfers",
            json!({ "workspace": "proj/small", "kind": "data-ingress", "uploader": "prov" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let tok = t.upload_token(&p.pm, &id, Value::Null).await;
    (id, tok)
}

/// Bytes the transfer holds, read from the database (complete and unfinished files).
async fn stored_bytes(t: &TestApp, id: &str) -> u64 {
    t.app
        .store
        .files(id.parse().unwrap())
        .await
        .unwrap()
        .iter()
        .map(|f| f.received)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_chunked_puts_cannot_pass_the_transfer_size_limit() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(2).await;
    let (id, tok) = small_transfer(&t, &p, 2048).await;
    // Eight chunked PUTs of 2,000 B each, all in flight at once, against 2,048 B.
    let mut feeds = Vec::new();
    let mut pending = Vec::new();
    for i in 0..8 {
        let (tx, body) = fed_body();
        feeds.push(tx);
        pending.push(tokio::spawn(
            t.http
                .put(t.api(&format!("/transfers/{id}/files/part{i}.bin")))
                .bearer_auth(&tok)
                .body(body)
                .send(),
        ));
    }
    for (i, tx) in feeds.iter().enumerate() {
        tx.send(Ok(bytes(1000, i as u64))).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, tx) in feeds.iter().enumerate() {
        // A closed body means the server already refused this one.
        let _ = tx.send(Ok(bytes(1000, 100 + i as u64))).await;
    }
    drop(feeds);
    let mut created = 0;
    for r in pending {
        let r = r.await.unwrap().unwrap();
        match r.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::PAYLOAD_TOO_LARGE => {
                let v: Value = r.json().await.unwrap();
                assert!(v["error"].as_str().unwrap().contains("2048"), "{v}");
            }
            other => panic!("unexpected {other}: {:?}", r.text().await),
        }
    }
    assert_eq!(created, 1, "only one 2,000 B file fits in 2,048 B");
    assert!(stored_bytes(&t, &id).await <= 2048);
    let v = t.show(&p.pm, &id).await;
    assert_eq!(v["file_count"], 1, "{v}");
    assert!(v["total_bytes"].as_u64().unwrap() <= 2048, "{v}");

    // The budget left is exactly 48 B: a chunked PUT of 49 is refused as it streams, one of
    // 48 fits.
    let (tx, body) = fed_body();
    let over = tokio::spawn(
        t.http
            .put(t.api(&format!("/transfers/{id}/files/over.bin")))
            .bearer_auth(&tok)
            .body(body)
            .send(),
    );
    tx.send(Ok(bytes(49, 7))).await.unwrap();
    drop(tx);
    let r = over.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let (tx, body) = fed_body();
    let fits = tokio::spawn(
        t.http
            .put(t.api(&format!("/transfers/{id}/files/fits.bin")))
            .bearer_auth(&tok)
            .body(body)
            .send(),
    );
    tx.send(Ok(bytes(48, 8))).await.unwrap();
    drop(tx);
    let r = fits.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    assert_eq!(stored_bytes(&t, &id).await, 2048);
    let v = t.show(&p.pm, &id).await;
    assert_eq!(v["file_count"], 2, "{v}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_parallel_chunked_puts_that_fit_are_all_accepted() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(2).await;
    let (id, tok) = small_transfer(&t, &p, 2048).await;
    // Eight of 200 B (1,600 B in all) fit: streaming accounting must not refuse them.
    let mut feeds = Vec::new();
    let mut pending = Vec::new();
    for i in 0..8 {
        let (tx, body) = fed_body();
        feeds.push(tx);
        pending.push(tokio::spawn(
            t.http
                .put(t.api(&format!("/transfers/{id}/files/small{i}.bin")))
                .bearer_auth(&tok)
                .body(body)
                .send(),
        ));
    }
    for (i, tx) in feeds.iter().enumerate() {
        tx.send(Ok(bytes(100, i as u64))).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, tx) in feeds.iter().enumerate() {
        tx.send(Ok(bytes(100, 50 + i as u64))).await.unwrap();
    }
    drop(feeds);
    for r in pending {
        let r = r.await.unwrap().unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    }
    assert_eq!(stored_bytes(&t, &id).await, 1600);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_token_leaves_the_transfer_open_for_a_new_token() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(1).await;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&p.pm, &id, Value::Null).await;
    assert_eq!(
        t.put(&tok, &id, "a.bin", b"a".to_vec()).await.0,
        StatusCode::CREATED
    );
    let (s, v) = t
        .post_json(
            &p.pm,
            &format!("/transfers/{id}/tokens/revoke"),
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Several sweeps (every 200 ms in tests) run: none may count a revocation as running out.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let v = t.show(&p.pm, &id).await;
    assert_eq!(v["state"], "open", "{v}");
    assert_eq!(
        t.put(&tok, &id, "b.bin", b"b".to_vec()).await.0,
        StatusCode::UNAUTHORIZED
    );
    let tok2 = t.upload_token(&p.pm, &id, Value::Null).await;
    assert_eq!(
        t.put(&tok2, &id, "b.bin", b"b".to_vec()).await.0,
        StatusCode::CREATED
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_that_runs_out_still_expires_the_transfer_even_if_revoked_afterwards() {
    let t = TestApp::spawn_with(|s| {
        // No sweep during the test: the revocation lands after the token ran out but before
        // anything looked.
        s.server.sweep_interval = Duration::from_secs(3600);
    })
    .await;
    let p = t.bootstrap(1).await;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let _tok = t.upload_token(&p.pm, &id, json!({ "ttl": "1s" })).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, v) = t
        .post_json(
            &p.pm,
            &format!("/transfers/{id}/tokens/revoke"),
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    airlock::workflow::transfers::expire_due(&t.app)
        .await
        .unwrap();
    assert_eq!(t.show(&p.pm, &id).await["state"], "expired");
    t.stop().await;
}

/// Starts a tus upload of `len` bytes; returns its URL.
async fn tus_upload(t: &TestApp, tok: &str, id: &str, name: &str, len: usize) -> String {
    let r = t
        .tus_create(tok, id)
        .header("Upload-Length", len.to_string())
        .header("Upload-Metadata", tus_meta(name))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    format!("{}{}", t.url, r.headers()["location"].to_str().unwrap())
}

/// What the database says is stored of the transfer's only file.
async fn only_file(t: &TestApp, id: &str) -> airlock::store::FileRow {
    let files = t.app.store.files(id.parse().unwrap()).await.unwrap();
    assert_eq!(files.len(), 1);
    files[0].clone()
}

/// Starts a PATCH of 500,000 B at offset 0 whose body stays open; `cut` then happens while
/// it is in flight, and the PATCH may not be acknowledged nor its bytes recorded.
async fn patch_cut_off_by<F, Fut>(cut: F) -> (TestApp, People, String, reqwest::Response)
where
    F: FnOnce(TestApp, People, String) -> Fut,
    Fut: std::future::Future<Output = (TestApp, People)>,
{
    let t = TestApp::spawn().await;
    let p = t.bootstrap(1).await;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&p.pm, &id, Value::Null).await;
    let url = tus_upload(&t, &tok, &id, "slow.bin", 2_000_000).await;
    let (tx, body) = fed_body();
    let pending = tokio::spawn(t.tus_patch(&tok, &url, 0, body).send());
    tx.send(Ok(bytes(250_000, 1))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (t, p) = cut(t, p, id.clone()).await;
    tx.send(Ok(bytes(250_000, 2))).await.unwrap();
    drop(tx);
    let r = pending.await.unwrap().unwrap();
    (t, p, id, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_patch_in_flight_when_its_token_is_revoked_is_not_acknowledged() {
    let (t, p, id, r) = patch_cut_off_by(|t, p, id| async move {
        let (s, v) = t
            .post_json(
                &p.pm,
                &format!("/transfers/{id}/tokens/revoke"),
                Value::Null,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        (t, p)
    })
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("revoked"), "{v}");
    assert_eq!(only_file(&t, &id).await.received, 0);
    assert!(t
        .app
        .store
        .segments(only_file(&t, &id).await.id)
        .await
        .unwrap()
        .is_empty());
    // The next token resumes from what was acknowledged: nothing.
    let tok2 = t.upload_token(&p.pm, &id, Value::Null).await;
    let f = only_file(&t, &id).await;
    let url = t.api(&format!("/transfers/{id}/tus/{}", f.id));
    let r = t
        .http
        .head(&url)
        .bearer_auth(&tok2)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["upload-offset"], "0");
    let data = bytes(2_000_000, 9);
    let r = t
        .tus_patch(&tok2, &url, 0, data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let file = write(t.data_dir(), "whole.bin", &data);
    assert_eq!(
        only_file(&t, &id).await.sha256.unwrap(),
        digest_with("sha256sum", &file)
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_patch_in_flight_when_its_transfer_is_cancelled_is_not_acknowledged() {
    let (t, _p, id, r) = patch_cut_off_by(|t, p, id| async move {
        let (s, v) = t
            .post_json(&p.pm, &format!("/transfers/{id}/cancel"), Value::Null)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        (t, p)
    })
    .await;
    assert_ne!(r.status(), StatusCode::NO_CONTENT);
    assert!(r.status().is_client_error(), "{}", r.status());
    assert_eq!(only_file(&t, &id).await.received, 0);
    t.stop().await;
}

/// The stored pieces of a file on disk, and the segment rows that describe them.
async fn pieces(t: &TestApp, id: &str, f: &airlock::store::FileRow) -> (usize, usize) {
    let dir = t
        .data_dir()
        .join("quarantine/transfers")
        .join(id)
        .join(f.id.to_string());
    let on_disk = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    let rows = t.app.store.segments(f.id).await.unwrap().len();
    (on_disk, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_one_byte_patches_leave_one_stored_piece() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(1).await;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&p.pm, &id, Value::Null).await;
    let data = bytes(300, 3);
    let url = tus_upload(&t, &tok, &id, "tiny.bin", data.len()).await;
    for (i, b) in data.iter().enumerate() {
        let r = t.tus_patch(&tok, &url, i, vec![*b]).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "chunk {i}");
        if i == 150 {
            let (disk, rows) = pieces(&t, &id, &only_file(&t, &id).await).await;
            assert_eq!((disk, rows), (1, 1), "pieces are merged as they arrive");
        }
    }
    let f = only_file(&t, &id).await;
    assert!(f.complete);
    assert_eq!(pieces(&t, &id, &f).await, (1, 1));
    let file = write(t.data_dir(), "tiny.bin", &data);
    assert_eq!(f.sha256.unwrap(), digest_with("sha256sum", &file));
    assert_eq!(f.blake3.unwrap(), digest_with("b3sum", &file));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_merge_cut_off_before_it_was_recorded_is_undone_on_resume() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(1).await;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&p.pm, &id, Value::Null).await;
    let data = bytes(1000, 4);
    let url = tus_upload(&t, &tok, &id, "cut.bin", data.len()).await;
    let r = t
        .tus_patch(&tok, &url, 0, data[..400].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // A crash between writing a merged piece and recording it leaves the last piece longer
    // than the database says, with bytes nobody acknowledged.
    let f = only_file(&t, &id).await;
    let piece = t
        .data_dir()
        .join("quarantine/transfers")
        .join(&id)
        .join(f.id.to_string())
        .join(format!("{:010}", 0));
    let mut longer = data[..400].to_vec();
    longer.extend_from_slice(b"never acknowledged");
    std::fs::write(&piece, &longer).unwrap();
    let dir = t.stop().await;
    let t = TestApp::spawn_in(dir).await;
    let url = t.api(&format!("/transfers/{id}/tus/{}", f.id));
    let r = t
        .http
        .head(&url)
        .bearer_auth(&tok)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["upload-offset"], "400");
    let r = t
        .tus_patch(&tok, &url, 400, data[400..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{:?}", r.text().await);
    let f = only_file(&t, &id).await;
    assert!(f.complete);
    let file = write(t.data_dir(), "cut.bin", &data);
    assert_eq!(f.sha256.unwrap(), digest_with("sha256sum", &file));
    assert_eq!(std::fs::read(&piece).unwrap(), data);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_patch_in_flight_when_its_transfer_expires_is_not_acknowledged() {
    let (t, _p, id, r) = patch_cut_off_by(|t, p, id| async move {
        // The token runs out and the sweep expires the transfer while the bytes still come.
        sqlx::query("UPDATE upload_tokens SET expires_at = 0 WHERE transfer_id = $1")
            .bind(&id)
            .execute(t.app.store.pool())
            .await
            .unwrap();
        airlock::workflow::transfers::expire_due(&t.app)
            .await
            .unwrap();
        assert_eq!(t.show(&p.pm, &id).await["state"], "expired");
        (t, p)
    })
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("expired"), "{v}");
    assert_eq!(only_file(&t, &id).await.received, 0);
    let f = only_file(&t, &id).await;
    assert_eq!(pieces(&t, &id, &f).await, (0, 0));
    t.stop().await;
}
