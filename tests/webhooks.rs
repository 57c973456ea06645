//! Signed webhooks, received by a real HTTP server in the test: every transition arrives with
//! its context and a signature the test checks itself; failures are retried with growing
//! waits; a delivery that never succeeds is marked failed, shown and audited, and can be sent
//! again.

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxStatus};
use axum::routing::post;
use common::*;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "a-webhook-secret-of-some-length";

#[derive(Clone, Debug)]
struct Hit {
    headers: HeaderMap,
    body: String,
    at: Instant,
}

#[derive(Clone, Default)]
struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    /// Answer 500 while this is above zero (counting down), or always if negative.
    fail: Arc<Mutex<i64>>,
}

impl Receiver {
    async fn start(fail: i64) -> (Receiver, String) {
        let r = Receiver::default();
        *r.fail.lock().unwrap() = fail;
        let app = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(r.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        (r, url)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Polls until `pred` holds over the hits, or panics after 20 s.
    async fn until(&self, what: &str, pred: impl Fn(&[Hit]) -> bool) -> Vec<Hit> {
        for _ in 0..200 {
            let h = self.hits();
            if pred(&h) {
                return h;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what}: never happened; got {:#?}", self.hits());
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: String) -> AxStatus {
    r.hits.lock().unwrap().push(Hit {
        headers,
        body,
        at: Instant::now(),
    });
    let mut f = r.fail.lock().unwrap();
    if *f < 0 {
        return AxStatus::INTERNAL_SERVER_ERROR;
    }
    if *f > 0 {
        *f -= 1;
        return AxStatus::INTERNAL_SERVER_ERROR;
    }
    AxStatus::NO_CONTENT
}

/// Checks the signature header the way a receiver would, with its own HMAC.
fn signed(h: &Hit, secret: &str) -> bool {
    let header = h.headers["airlock-signature"].to_str().unwrap();
    let (t, v1) = header.split_once(',').unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let v1 = hex::decode(v1.strip_prefix("v1=").unwrap()).unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", h.body).as_bytes());
    mac.verify_slice(&v1).is_ok()
}

fn event(h: &Hit) -> Value {
    serde_json::from_str(&h.body).unwrap()
}

async fn with_hook(url: &str, attempts: u32) -> TestApp {
    let url = url.to_owned();
    TestApp::spawn_with(move |s| {
        s.webhooks.urls = vec![url];
        s.webhooks.secret = SECRET.into();
        s.webhooks.poll_interval = Duration::from_millis(50);
        s.webhooks.backoff_initial = Duration::from_millis(200);
        s.webhooks.backoff_max = Duration::from_secs(5);
        s.webhooks.max_attempts = attempts;
    })
    .await
}

/// A tier 1 data ingress from open to released.
async fn release_one(t: &TestApp, p: &People) -> String {
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let up = t.upload_token(&p.pm, &id, Value::Null).await;
    assert_eq!(
        t.put(&up, &id, "a.csv", b"1,2".to_vec()).await.0,
        StatusCode::CREATED
    );
    let (s, _) = t
        .post_json(&up, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK);
    t.scans_done(&id).await;
    let (s, v) = t
        .post_json(
            &p.inv,
            &format!("/transfers/{id}/approve"),
            json!({ "as": "investigator" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.wait_for_state(&p.pm, &id, "released").await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_transition_arrives_signed_with_its_context() {
    let (rx, url) = Receiver::start(0).await;
    let t = with_hook(&url, 5).await;
    let p = t.bootstrap(1).await;
    let id = release_one(&t, &p).await;
    let wanted = [
        "transfer.created",
        "transfer.sealed",
        "transfer.scanning",
        "transfer.in_review",
        "transfer.approved",
        "transfer.released",
    ];
    let hits = rx
        .until("all transitions delivered", |h| {
            wanted
                .iter()
                .all(|w| h.iter().any(|x| event(x)["event"] == *w))
        })
        .await;
    let mut last_seq = 0;
    for h in &hits {
        assert!(signed(h, SECRET), "bad signature on {}", h.body);
        assert!(!signed(h, "another-secret-entirely"), "any key verifies");
        let mut flipped = h.clone();
        flipped.body = flipped.body.replacen("transfer", "trAnsfer", 1);
        assert!(!signed(&flipped, SECRET), "a changed body verifies");
        assert!(airlock::notify::verify(
            SECRET.as_bytes(),
            h.headers["airlock-signature"].to_str().unwrap(),
            h.body.as_bytes(),
            chrono::Utc::now().timestamp(),
            300,
        ));
        let e = event(h);
        assert_eq!(h.headers["airlock-event"], e["event"].as_str().unwrap());
        assert_eq!(h.headers["airlock-delivery"], e["id"].as_str().unwrap());
        assert!(e["seq"].as_i64().unwrap() > last_seq, "out of order");
        last_seq = e["seq"].as_i64().unwrap();
        assert!(
            !e["event"].as_str().unwrap().starts_with("token."),
            "noise sent: {e}"
        );
        assert_eq!(e["transfer"]["id"], id.as_str());
        assert_eq!(e["transfer"]["workspace"], "proj/ws");
        assert_eq!(e["transfer"]["requester"], "prov");
        assert!(
            e["transfer"].get("files").is_none(),
            "file lists are not sent"
        );
    }
    let review = hits
        .iter()
        .map(event)
        .find(|e| e["event"] == "transfer.in_review")
        .unwrap();
    // What is awaited and from whom, as seen when the event was queued (it may already be
    // approved by then, in which case nothing is awaited).
    let detail = &review["detail"]["awaiting"];
    assert_eq!(detail[0]["role"], "investigator", "{review}");
    assert_eq!(detail[0]["needed"], 1);
    assert!(review["transfer"]["awaiting"].is_array());
    let approved = hits
        .iter()
        .map(event)
        .find(|e| e["event"] == "transfer.approved")
        .unwrap();
    assert_eq!(approved["actor"], "user:inv");
    assert_eq!(approved["detail"]["role"], "investigator");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_awaiting_someone_names_them() {
    let (rx, url) = Receiver::start(0).await;
    let t = with_hook(&url, 5).await;
    let p = t.bootstrap(2).await;
    airlock::workflow::admin::add_user(&t.app, "rex", &[airlock::domain::Role::Referee])
        .await
        .unwrap();
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let up = t.upload_token(&p.pm, &id, Value::Null).await;
    t.put(&up, &id, "a", b"x".to_vec()).await;
    t.post_json(&up, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    t.scans_done(&id).await;
    let (s, _) = t
        .post_json(
            &p.pm,
            &format!("/transfers/{id}/referees"),
            json!({ "user": "rex" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = t
        .post_json(
            &p.inv,
            &format!("/transfers/{id}/approve"),
            json!({ "as": "investigator" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let hits = rx
        .until("the partial approval", |h| {
            h.iter().any(|x| event(x)["event"] == "transfer.approval")
        })
        .await;
    let e = hits
        .iter()
        .map(event)
        .find(|e| e["event"] == "transfer.approval")
        .unwrap();
    assert_eq!(
        e["transfer"]["awaiting"],
        json!([{ "role": "referee", "needed": 1, "from": ["rex"] }]),
        "{e}"
    );
    assert_eq!(e["transfer"]["state"], "in_review");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_deliveries_are_retried_with_growing_waits() {
    let (rx, url) = Receiver::start(0).await;
    let t = with_hook(&url, 6).await;
    let p = t.bootstrap(1).await;
    // Fail the next three requests: the first event's first three attempts.
    *rx.fail.lock().unwrap() = 3;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let hits = rx
        .until("the created event delivered", |h| {
            h.iter()
                .filter(|x| event(x)["event"] == "transfer.created")
                .count()
                >= 4
        })
        .await;
    let tries: Vec<&Hit> = hits
        .iter()
        .filter(|x| event(x)["event"] == "transfer.created")
        .collect();
    assert_eq!(tries.len(), 4, "delivered after exactly 4 attempts");
    // Every attempt carries the same delivery id and body.
    assert!(tries.iter().all(|h| h.body == tries[0].body));
    let gaps: Vec<Duration> = tries.windows(2).map(|w| w[1].at - w[0].at).collect();
    // 200 ms, 400 ms, 800 ms (plus up to a quarter of jitter, plus polling).
    assert!(gaps[0] >= Duration::from_millis(190), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(390), "{gaps:?}");
    assert!(gaps[2] >= Duration::from_millis(790), "{gaps:?}");
    assert!(gaps[2] > gaps[0], "{gaps:?}");
    // The receiver has the fourth request before the sender has its answer and records it.
    let mut d = None;
    for _ in 0..100 {
        let ds = t.app.store.deliveries(None).await.unwrap();
        let found = ds
            .into_iter()
            .find(|d| d.event == "transfer.created")
            .unwrap();
        if found.state == "delivered" {
            d = Some(found);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let d = d.expect("the created event recorded as delivered");
    assert_eq!(d.attempts, 4);
    assert_eq!(d.transfer_id.as_deref(), Some(id.as_str()));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_that_never_succeeds_is_failed_visible_audited_and_retryable() {
    let (rx, url) = Receiver::start(-1).await;
    let t = with_hook(&url, 2).await;
    let p = t.bootstrap(1).await;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    rx.until("two attempts", |h| h.len() >= 2).await;
    let mut failed = Vec::new();
    for _ in 0..100 {
        failed = t.app.store.deliveries(Some("failed")).await.unwrap();
        if !failed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(failed.len(), 1, "{failed:?}");
    let d = &failed[0];
    assert_eq!(d.attempts, 2);
    assert_eq!(d.last_status, Some(500));
    assert!(d.last_error.as_deref().unwrap().contains("500"), "{d:?}");
    assert_eq!(d.transfer_id.as_deref(), Some(id.as_str()));

    let out = t.cli(None, &["webhooks", "list", "--state", "failed"]);
    assert!(out.status.success(), "{out:?}");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains(&d.id) && listed.contains("500"), "{listed}");
    let out = t.cli(None, &["webhooks", "list", "--state", "lost"]);
    assert!(!out.status.success());

    // The receiver recovers; the operator sends it again.
    *rx.fail.lock().unwrap() = 0;
    let out = t.cli(None, &["webhooks", "retry", &d.id]);
    assert!(out.status.success(), "{out:?}");
    let out = t.cli(None, &["webhooks", "retry", &d.id]);
    assert!(!out.status.success(), "a pending delivery was queued twice");
    rx.until("the retried delivery", |h| h.len() >= 3).await;
    let mut state = String::new();
    for _ in 0..100 {
        state = t
            .app
            .store
            .deliveries(None)
            .await
            .unwrap()
            .into_iter()
            .find(|x| x.id == d.id)
            .unwrap()
            .state;
        if state == "delivered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, "delivered");

    let dir = t.stop().await;
    let records = {
        let app = airlock::app::App::open(settings(dir.path())).await.unwrap();
        app.store.audit_records().await.unwrap()
    };
    let failed_event = records
        .iter()
        .find(|r| r.action == "webhook.failed")
        .expect("webhook.failed audited");
    assert!(failed_event.detail.to_string().contains(&d.id));
    assert!(records.iter().any(|r| r.action == "webhook.retried"));
    assert!(airlock::audit::verify_chain(&records).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_urls_nothing_is_queued_and_a_secret_is_required_with_them() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(1).await;
    release_one(&t, &p).await;
    assert!(t.app.store.deliveries(None).await.unwrap().is_empty());
    assert_eq!(t.app.store.webhook_cursor().await.unwrap(), None);
    t.stop().await;

    let err = airlock::config::Settings::load(
        None,
        [(
            "AIRLOCK__WEBHOOKS__URLS".to_string(),
            "http://127.0.0.1:9/hook".to_string(),
        )],
    )
    .unwrap_err();
    assert!(err.to_string().contains("webhooks.secret"), "{err}");
    let s = airlock::config::Settings::load(
        None,
        [
            (
                "AIRLOCK__WEBHOOKS__URLS".to_string(),
                "http://a/h, https://b/h".to_string(),
            ),
            ("AIRLOCK__WEBHOOKS__SECRET".to_string(), SECRET.to_string()),
        ],
    )
    .unwrap();
    assert_eq!(s.webhooks.urls, vec!["http://a/h", "https://b/h"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cutting_a_person_off_arrives_as_signed_webhooks() {
    let (rx, url) = Receiver::start(0).await;
    let t = with_hook(&url, 3).await;
    let p = t.bootstrap(1).await;
    airlock::workflow::admin::add_user(&t.app, "progm", &[airlock::domain::Role::ProgrammeManager])
        .await
        .unwrap();
    let progm = airlock::workflow::admin::staff_token(&t.app, "progm", None)
        .await
        .unwrap();
    let (s, _) = t
        .post_json(
            &p.pm,
            "/projects/proj/members/remove",
            json!({ "user": "res", "reason": "moved on" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = t
        .post_json(&progm, "/tokens/revoke", json!({ "user": "inv" }))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = t
        .post_json(&progm, "/users/inv/disable", json!({ "reason": "left" }))
        .await;
    assert_eq!(s, StatusCode::OK);
    let want = ["member.removed", "user.tokens_revoked", "user.disabled"];
    let hits = rx
        .until("the three cut-off events", |h| {
            want.iter()
                .all(|w| h.iter().any(|x| event(x)["event"] == *w))
        })
        .await;
    for w in want {
        let h = hits.iter().find(|x| event(x)["event"] == w).unwrap();
        assert!(signed(h, SECRET), "{w} unsigned");
    }
    let removed = hits
        .iter()
        .find(|x| event(x)["event"] == "member.removed")
        .unwrap();
    assert_eq!(event(removed)["detail"]["user"], "res");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_egress_request_arrives_with_its_recipients_and_finding_counts_never_a_value() {
    let (r, url) = Receiver::start(0).await;
    let t = with_hook(&url, 5).await;
    let p = t.bootstrap(1).await;
    airlock::workflow::admin::add_user(&t.app, "recip", &[airlock::domain::Role::Researcher])
        .await
        .unwrap();
    let out = t.data_dir().join("volumes/proj/ws/output");
    let email = "jane.doe@example.org";
    write(
        &out,
        "notes.txt",
        format!("ask {email} for the data\n").as_bytes(),
    );
    write(&out, "a.py", b"print(1)\n");
    let (s, v) = t
        .post_json(
            &p.researcher,
            "/egress",
            json!({
                "workspace": "proj/ws", "context": "a note",
                "files": [{"path": "notes.txt", "role": "output"}, {"path": "a.py", "role": "code"}],
                "recipients": ["recip"],
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let (s, _) = t
        .post_json(&p.researcher, &format!("/egress/{id}/submit"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK);
    let hits = r
        .until("the disclosure checks' webhook", |h| {
            h.iter()
                .any(|h| event(h)["event"] == "egress.disclosure_checked")
        })
        .await;
    let h = hits
        .iter()
        .find(|h| event(h)["event"] == "egress.disclosure_checked")
        .unwrap();
    assert!(signed(h, SECRET));
    let e = event(h);
    assert_eq!(e["detail"]["fail"], 1, "{e}");
    assert_eq!(e["detail"]["rules"]["email"], 1, "{e}");
    assert_eq!(e["transfer"]["recipients"], json!(["recip"]), "{e}");
    assert_eq!(e["transfer"]["kind"], "egress");
    // In review: the findings are counted, and the checkers awaited are named.
    let hits = r
        .until("in review", |h| {
            h.iter().any(|h| {
                let e = event(h);
                e["transfer"]["state"] == "in_review" && e["transfer"]["findings"]["fail"] == 1
            })
        })
        .await;
    for h in &hits {
        assert!(
            !h.body.contains(email),
            "a webhook carried the value: {}",
            h.body
        );
    }
    assert!(hits.iter().any(|h| event(h)["event"] == "egress.submitted"));
    t.stop().await;
}
