//! Regression tests for the security review (issue 10), findings 4, 6 (anchors sent to the
//! webhooks) and 15: refused and repeated upload-token requests do not each cost a synced
//! audit write and long paths are not stored whole; the audit head is anchored, signed, on a
//! schedule and at shutdown; webhooks do not follow redirects.

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxStatus};
use axum::response::IntoResponse;
use axum::routing::post;
use common::*;
use reqwest::StatusCode;
use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn db(dir: &Path) -> sqlx::AnyPool {
    common::raw_db(dir).await
}

/// `(rows, total count)` of `action` events for `transfer`: a summary row counts `count`.
async fn counted(pool: &sqlx::AnyPool, action: &str, transfer: &str) -> (usize, u64) {
    let details: Vec<String> = sqlx::query_scalar(
        "SELECT detail FROM audit_events WHERE action = $1 AND transfer_id = $2",
    )
    .bind(action)
    .bind(transfer)
    .fetch_all(pool)
    .await
    .unwrap();
    let total = details
        .iter()
        .map(|d| {
            let v: Value = serde_json::from_str(d).unwrap();
            v["count"].as_u64().unwrap_or(1)
        })
        .sum();
    (details.len(), total)
}

/// Sends `n` requests made by `req`, 16 at a time; returns their statuses.
async fn burst(n: usize, req: impl Fn() -> reqwest::RequestBuilder) -> Vec<StatusCode> {
    use futures::StreamExt;
    futures::stream::iter((0..n).map(|_| req().send()))
        .buffer_unordered(16)
        .map(|r| r.unwrap().status())
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_refusals_of_an_expired_token_are_one_write_and_one_summary() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t
        .upload_token(&people.pm, &id, serde_json::json!({ "ttl": "1s" }))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let long = "a".repeat(60_000);
    let url = t.api(&format!("/transfers/{id}/tus/{long}"));
    let statuses = burst(1000, || {
        t.http
            .head(&url)
            .bearer_auth(&tok)
            .header("Tus-Resumable", "1.0.0")
    })
    .await;
    assert!(statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED));
    let pool = t.app.store.pool().clone();
    let (rows, _) = counted(&pool, "token.refused", &id).await;
    assert!(
        rows <= 2,
        "1,000 refusals of one token from one address wrote {rows} audit rows"
    );
    let longest: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(LENGTH(detail)), 0) FROM audit_events WHERE transfer_id = $1",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(longest < 1_000, "a stored detail is {longest} characters");
    // The repeats are not lost: one summary with their count, written at the window's end
    // (here: at shutdown).
    let dir = t.stop().await;
    let pool = db(dir.path()).await;
    let (rows, total) = counted(&pool, "token.refused", &id).await;
    assert_eq!(total, 1000, "every refusal is counted");
    assert!(rows <= 3, "{rows} rows");
    let summary: String = sqlx::query_scalar(
        "SELECT detail FROM audit_events WHERE action = 'token.refused' AND detail LIKE '%summary%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let summary: Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["clients"]["127.0.0.1"], summary["count"]);
    assert!(summary["reasons"]["token has expired"].as_u64().unwrap() > 0);
    assert!(summary.to_string().len() < 2_000, "{summary}");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_head_heavy_client_is_not_a_synced_token_used_write_per_request() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let r = t
        .tus_create(&tok, &id)
        .header("Upload-Length", "10")
        .header("Upload-Metadata", tus_meta("a.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = format!("{}{}", t.url, r.headers()["location"].to_str().unwrap());
    let pool = t.app.store.pool().clone();
    let (before, _) = counted(&pool, "token.used", &id).await;
    let statuses = burst(500, || {
        t.http
            .head(&location)
            .bearer_auth(&tok)
            .header("Tus-Resumable", "1.0.0")
    })
    .await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));
    let (after, _) = counted(&pool, "token.used", &id).await;
    assert!(
        after - before <= 1,
        "500 HEADs wrote {} token.used rows",
        after - before
    );
    let dir = t.stop().await;
    let pool = db(dir.path()).await;
    let (_, total) = counted(&pool, "token.used", &id).await;
    assert_eq!(total, 501, "the creation and every HEAD are counted");
    pool.close().await;
}

#[derive(Clone, Default)]
struct Hits(Arc<Mutex<Vec<(HeaderMap, String)>>>);

/// A receiver at `/hook` that records what it gets and answers `answer`.
async fn receiver(
    answer: impl Fn() -> axum::response::Response + Clone + Send + Sync + 'static,
) -> (Hits, String) {
    let hits = Hits::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            post(
                move |State(h): State<Hits>, headers: HeaderMap, body: String| {
                    let answer = answer.clone();
                    async move {
                        h.0.lock().unwrap().push((headers, body));
                        answer()
                    }
                },
            ),
        )
        .with_state(hits.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (hits, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_redirect_to_another_address_is_not_followed() {
    let (internal, internal_url) = receiver(|| AxStatus::NO_CONTENT.into_response()).await;
    let target = internal_url.clone();
    let (outer, outer_url) = receiver(move || {
        (AxStatus::TEMPORARY_REDIRECT, [("location", target.clone())]).into_response()
    })
    .await;
    let url = outer_url.clone();
    let t = TestApp::spawn_with(move |s| {
        s.webhooks.urls = vec![url];
        s.webhooks.secret = "a-webhook-secret-of-some-length".into();
        s.webhooks.poll_interval = Duration::from_millis(50);
        s.webhooks.backoff_initial = Duration::from_millis(100);
        s.webhooks.max_attempts = 2;
    })
    .await;
    let people = t.bootstrap(1).await;
    t.open_transfer(&people.pm, "data-ingress", "prov").await;
    // Wait until the outer receiver has been tried twice, and the delivery is failed.
    let mut failed = Vec::new();
    for _ in 0..100 {
        failed = t.app.store.deliveries(Some("failed")).await.unwrap();
        if !failed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!failed.is_empty(), "the redirected delivery never failed");
    assert_eq!(failed[0].last_status, Some(307), "{:?}", failed[0]);
    assert!(!outer.0.lock().unwrap().is_empty());
    assert!(
        internal.0.lock().unwrap().is_empty(),
        "the redirect was followed to {internal_url}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_head_is_anchored_signed_on_schedule_and_at_shutdown() {
    let (hits, url) = receiver(|| AxStatus::NO_CONTENT.into_response()).await;
    let t = TestApp::spawn_with(move |s| {
        s.webhooks.urls = vec![url];
        s.webhooks.secret = "a-webhook-secret-of-some-length".into();
        s.webhooks.poll_interval = Duration::from_millis(50);
        s.audit.anchor_interval = Duration::from_millis(300);
    })
    .await;
    let people = t.bootstrap(1).await;
    let anchors = |hits: &Hits| -> Vec<Value> {
        hits.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(h, _)| h["airlock-event"] == "audit.anchor")
            .map(|(_, b)| serde_json::from_str::<Value>(b).unwrap()["detail"].clone())
            .collect()
    };
    let mut got = Vec::new();
    for _ in 0..100 {
        got = anchors(&hits);
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!got.is_empty(), "no scheduled anchor arrived");
    // The receiver checks it with the published key alone.
    let public = hex::decode(
        std::fs::read_to_string(t.data_dir().join("keys/anchor.pub"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let check = |a: &Value| {
        let msg = format!(
            "airlock-audit-anchor-v1\n{}\n{}\n{}\n",
            a["seq"],
            a["hash"].as_str().unwrap(),
            a["at"].as_str().unwrap()
        );
        let sig = hex::decode(a["signature"].as_str().unwrap()).unwrap();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public)
            .verify(msg.as_bytes(), &sig)
            .is_ok()
    };
    assert!(check(&got[0]), "{}", got[0]);
    let mut forged = got[0].clone();
    forged["seq"] = (forged["seq"].as_i64().unwrap() + 1).into();
    assert!(!check(&forged));
    let records = t.app.store.audit_records().await.unwrap();
    let seq = got[0]["seq"].as_i64().unwrap();
    assert_eq!(
        records[seq as usize - 1].hash,
        got[0]["hash"].as_str().unwrap()
    );

    // More events, then a stop: the last anchor names the final head, on disk and sent.
    t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let dir = t.stop().await;
    let app = airlock::app::App::open(settings(dir.path())).await.unwrap();
    let (head_seq, head_hash) = app.store.audit_head().await.unwrap();
    let file = std::fs::read_to_string(dir.path().join("audit-anchors.jsonl")).unwrap();
    let last: Value = serde_json::from_str(file.lines().last().unwrap()).unwrap();
    assert_eq!(last["seq"], head_seq);
    assert_eq!(last["hash"], head_hash.as_str());
    assert!(anchors(&hits)
        .iter()
        .any(|a| a["seq"] == head_seq && check(a)));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("audit-anchors.jsonl"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    app.store.pool().close().await;
}

/// Finding 4, the rate limit: refusals are counted per credential and per client address;
/// past the limits every further request is answered 429 with Retry-After before any token is
/// checked or any row read or written, until the window ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_past_the_limit_get_429_before_any_lookup() {
    let t = TestApp::spawn_with(|s| {
        s.audit.refusals_per_token = 5;
        s.audit.refusals_per_client = 12;
        s.audit.summary_window = Duration::from_secs(3);
    })
    .await;
    let p = t.bootstrap(1).await;
    let me = |tok: String| {
        let t = &t;
        async move {
            let r = t
                .http
                .get(t.api("/me"))
                .bearer_auth(tok)
                .send()
                .await
                .unwrap();
            (r.status(), r.headers().get("retry-after").cloned())
        }
    };
    // One dead credential: 5 refusals, then 429 with the wait.
    for _ in 0..5 {
        assert_eq!(
            me("dead.token.here".into()).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let (s, retry) = me("dead.token.here".into()).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let secs: u64 = retry.unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=3).contains(&secs), "{secs}");
    // A valid token from the same address still works: the address has 5 of its 12.
    assert_eq!(me(p.inv.clone()).await.0, StatusCode::OK);
    // Guessing with ever new credentials: the address is throttled after 12 refusals in all,
    // and then even a valid token from it waits.
    for n in 0..7 {
        assert_eq!(me(format!("guess-{n}")).await.0, StatusCode::UNAUTHORIZED);
    }
    let rows_before = t.app.store.audit_records().await.unwrap().len();
    for n in 0..200 {
        assert_eq!(
            me(format!("more-{n}")).await.0,
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    assert_eq!(me(p.inv.clone()).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        t.app.store.audit_records().await.unwrap().len(),
        rows_before,
        "throttled requests write nothing"
    );
    // The window ends; the valid token works again, the dead one is refused afresh.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(me(p.inv.clone()).await.0, StatusCode::OK);
    assert_eq!(
        me("dead.token.here".into()).await.0,
        StatusCode::UNAUTHORIZED
    );
    t.stop().await;
}
