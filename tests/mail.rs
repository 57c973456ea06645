//! Email for every transition, received by a real SMTP server (aiosmtpd) the test starts: the
//! people awaited and the requester get one message each, linking to the transfer's page and
//! never holding a token; the transport authenticates, and speaks STARTTLS or implicit TLS to
//! a relay whose certificate only the configured private CA vouches for; failures are retried
//! across a restart and sent exactly once, or given up visibly.

mod common;

use airlock::config::{MailTls, Settings};
use airlock::domain::Role;
use airlock::workflow::admin;
use common::smtp::{Received, Security, SmtpReceiver, TestCa};
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

const USER: &str = "airlock";
const PASSWORD: &str = "a relay password";

/// `[mail]` for a relay at `addr`, mailing people at example.org.
fn mail_to(s: &mut Settings, addr: &str, tls: MailTls) {
    s.mail.smtp = Some(addr.to_owned());
    s.mail.tls = tls;
    s.mail.username = Some(USER.into());
    s.mail.password = Some(PASSWORD.into());
    s.mail.from = "airlock@tre.example.org".into();
    s.mail.domain = Some("example.org".into());
    s.mail.poll_interval = Duration::from_millis(50);
    s.mail.backoff_initial = Duration::from_millis(100);
    s.mail.backoff_max = Duration::from_millis(500);
    s.mail.timeout = Duration::from_secs(5);
}

/// A data ingress uploaded by prov, sealed and scanned into review. Returns the transfer id
/// and its (now dead) upload token.
async fn into_review(t: &TestApp, p: &People) -> (String, String) {
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let up = t.upload_token(&p.pm, &id, Value::Null).await;
    assert_eq!(
        t.put(&up, &id, "a.csv", b"region,n\nnorth,120\n".to_vec())
            .await
            .0,
        StatusCode::CREATED
    );
    let (s, v) = t
        .post_json(&up, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.wait_for_state(&p.pm, &id, "in_review").await;
    (id, up)
}

/// Every check each email must pass: the page link, no token of any kind, the context.
fn check(m: &Received, link: &str, id: &str, secrets: &[&str]) {
    let body = m.body();
    assert!(body.contains(link), "no link to {link}: {body}");
    // Whole in the raw message too: plain ASCII text goes unencoded.
    assert!(m.data.contains(link), "the link is folded: {}", m.data);
    assert!(body.contains(&format!("Transfer:  {id}")), "{body}");
    assert!(body.contains("Workspace: proj/ws"), "{body}");
    assert!(body.contains("Kind:      "), "{body}");
    assert!(body.contains("State:     "), "{body}");
    assert!(body.contains("Reason:    "), "{body}");
    // Both as sent and as decoded (a long line is sent quoted-printable).
    for text in [&m.data, &body] {
        for s in secrets {
            assert!(!text.contains(s), "a token in the email: {text}");
        }
        assert!(!text.contains("eyJ"), "something like a JWT: {text}");
        assert!(!text.contains(PASSWORD));
    }
    assert_eq!(m.mail_from, "airlock@tre.example.org");
    assert_eq!(m.login.as_deref(), Some(USER), "sent without AUTH");
}

/// Counts by envelope recipient.
fn by_rcpt(ms: &[Received], who: &str) -> usize {
    ms.iter()
        .filter(|m| m.rcpt_tos == [format!("{who}@example.org")])
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deciders_then_the_requester_are_mailed_a_link_and_never_a_token() {
    let rx = SmtpReceiver::start(Security::Plain, Some((USER, PASSWORD)));
    let addr = rx.addr();
    let t = TestApp::spawn_with(|s| {
        mail_to(s, &addr, MailTls::None);
        s.ui.public_url = Some("https://airlock.example.org/".into());
    })
    .await;
    let p = t.bootstrap(2).await;
    admin::add_user(&t.app, "rex", &[Role::Referee])
        .await
        .unwrap();
    let rex = admin::staff_token(&t.app, "rex", None).await.unwrap();
    let (id, up) = into_review(&t, &p).await;
    let link = format!("https://airlock.example.org/ui/transfers/{id}");
    let secrets = [up.as_str(), &p.pm, &p.inv, &p.prov, &rex];

    // In review at tier 2: the Investigator is awaited, and a Referee nobody has assigned,
    // which the Project Manager is told.
    let got = rx
        .until("the deciders' emails", |m| {
            by_rcpt(m, "inv") == 1 && by_rcpt(m, "pm") == 1
        })
        .await;
    let inv = got
        .iter()
        .find(|m| m.rcpt_tos == ["inv@example.org"])
        .unwrap();
    check(inv, &link, &id, &secrets);
    assert_eq!(
        inv.header("Subject").unwrap(),
        format!("[airlock] data-ingress {id} in proj/ws: awaits your approval")
    );
    assert_eq!(inv.header("To").unwrap(), "inv@example.org");
    let body = inv.body();
    assert!(
        body.contains("awaits your approval as investigator"),
        "{body}"
    );
    assert!(body.contains("State:     in_review"), "{body}");
    assert!(body.contains("Requester: prov"), "{body}");
    assert!(
        body.contains("Awaiting:  1 investigator approval from inv"),
        "{body}"
    );
    assert!(
        body.contains("1 referee approval from nobody yet"),
        "{body}"
    );
    let pm = got
        .iter()
        .find(|m| m.rcpt_tos == ["pm@example.org"])
        .unwrap();
    check(pm, &link, &id, &secrets);
    assert!(
        pm.body().contains("no Referee is assigned yet: assign one"),
        "{}",
        pm.body()
    );

    // The Referee, once assigned, is told the transfer awaits them.
    let (s, v) = t
        .post_json(
            &p.pm,
            &format!("/transfers/{id}/referees"),
            json!({ "user": "rex" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let got = rx
        .until("the referee's email", |m| by_rcpt(m, "rex") == 1)
        .await;
    let r = got
        .iter()
        .find(|m| m.rcpt_tos == ["rex@example.org"])
        .unwrap();
    check(r, &link, &id, &secrets);
    assert!(
        r.body()
            .contains("You were assigned as Referee of transfer")
            && r.body().contains("It awaits your review."),
        "{}",
        r.body()
    );

    // Both approve: the requester and the Project Manager hear the outcome (approved, then
    // released); the deciders are not mailed about their own decisions.
    for (tok, role) in [(&p.inv, "investigator"), (&rex, "referee")] {
        let (s, v) = t
            .post_json(
                tok,
                &format!("/transfers/{id}/approve"),
                json!({ "as": role }),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    t.wait_for_state(&p.pm, &id, "released").await;
    rx.until("the outcome emails", |m| {
        by_rcpt(m, "prov") == 2 && by_rcpt(m, "pm") == 3
    })
    .await;
    // Quiet for a while (many polls): nothing more, nothing twice.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let all = rx.messages();
    assert_eq!(all.len(), 7, "{all:#?}");
    for (who, n) in [("inv", 1), ("rex", 1), ("prov", 2), ("pm", 3), ("res", 0)] {
        assert_eq!(by_rcpt(&all, who), n, "{who}: {all:#?}");
    }
    for m in &all {
        check(m, &link, &id, &secrets);
    }
    let prov: Vec<&Received> = all
        .iter()
        .filter(|m| m.rcpt_tos == ["prov@example.org"])
        .collect();
    assert!(prov[0]
        .header("Subject")
        .unwrap()
        .ends_with(": was approved"));
    assert!(prov[1]
        .header("Subject")
        .unwrap()
        .ends_with(": was released"));
    assert!(
        prov[1].body().contains(&format!(
            "Transfer {id} (data-ingress) in workspace proj/ws was released."
        )),
        "{}",
        prov[1].body()
    );
    assert!(
        prov[1].body().contains("State:     released"),
        "{}",
        prov[1].body()
    );

    // AUTH was used for every message (the relay saw the login), and the outbox agrees.
    let auth = rx.auth_log();
    assert_eq!(auth.lines().count(), 7, "{auth}");
    assert!(
        auth.lines().all(|l| l.ends_with(&format!("{USER} ok"))),
        "{auth}"
    );
    let outbox = t.app.store.mail_outbox(None).await.unwrap();
    assert_eq!(outbox.len(), 7);
    assert!(
        outbox.iter().all(|m| m.state == "sent" && m.attempts == 1),
        "{outbox:#?}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_egress_request_mails_its_checkers_and_returns_to_the_researcher_without_checker_comments(
) {
    let rx = SmtpReceiver::start(Security::Plain, Some((USER, PASSWORD)));
    let addr = rx.addr();
    let t = TestApp::spawn_with(|s| mail_to(s, &addr, MailTls::None)).await;
    let p = t.bootstrap(1).await;
    admin::add_user(&t.app, "recip", &[Role::Researcher])
        .await
        .unwrap();
    admin::add_member(&t.app, "proj", "prov", Role::Provider)
        .await
        .unwrap();
    let out = t.data_dir().join("volumes/proj/ws/output");
    write(
        &out,
        "tables/counts.csv",
        b"region,cases\nnorth,120\nsouth,95\n",
    );
    write(
        &out,
        "tables/rates.csv",
        b"region,rate\nnorth,0.5\nsouth,0.25\n",
    );
    write(&out, "analysis.py", b"print(1)\n");
    let (s, v) = t
        .post_json(
            &p.researcher,
            "/egress",
            json!({
                "workspace": "proj/ws", "context": "counts by region",
                "files": [{"path": "tables", "role": "output"}, {"path": "analysis.py", "role": "code"}],
                "recipients": ["recip"],
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let (s, v) = t
        .post_json(&p.researcher, &format!("/egress/{id}/submit"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.wait_for_state(&p.researcher, &id, "in_review").await;
    // The output checkers (Investigator and Dataset Provider Representative at tier 1) are
    // asked for their review, once the disclosure checks are in.
    let link = format!("http://127.0.0.1:8080/ui/transfers/{id}");
    let got = rx
        .until("the checkers' emails", |m| {
            by_rcpt(m, "inv") == 1 && by_rcpt(m, "prov") == 1
        })
        .await;
    for m in &got {
        check(m, &link, &id, &[&p.researcher, &p.inv, &p.prov]);
        assert!(
            m.header("Subject")
                .unwrap()
                .ends_with(": awaits your review"),
            "{m:?}"
        );
        let body = m.body();
        assert!(body.contains("Egress request"), "{body}");
        assert!(body.contains("Kind:      egress"), "{body}");
    }
    // The Investigator asks for changes: one comment for the researcher, the others for the
    // checkers only.
    for (path, comment, visibility) in [
        ("tables/counts.csv", "round to fives", "shared"),
        ("tables/rates.csv", "checkers-only-remark", "checkers"),
    ] {
        let (s, v) = t
            .post_json(
                &p.inv,
                &format!("/egress/{id}/votes"),
                json!({"path": path, "as": "investigator", "vote": "request-changes",
                       "comment": comment, "visibility": visibility}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let shown = t.show(&p.inv, &id).await;
    for f in shown["disclosure"]["findings"].as_array().unwrap() {
        let (s, v) = t
            .post_json(
                &p.inv,
                &format!("/egress/{id}/acknowledge"),
                json!({"finding": f["id"], "as": "investigator", "comment": "seen"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, v) = t
        .post_json(
            &p.inv,
            &format!("/egress/{id}/review"),
            json!({"as": "investigator", "comment": "suspect a linkage", "visibility": "checkers"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "returned", "{v}");
    // The researcher (and the Project Manager) hear of the return, with the shared comment
    // and nothing meant for the checkers alone.
    let got = rx
        .until("the return's emails", |m| {
            by_rcpt(m, "res") == 1 && by_rcpt(m, "pm") == 1
        })
        .await;
    let res = got
        .iter()
        .find(|m| m.rcpt_tos == ["res@example.org"])
        .unwrap();
    check(res, &link, &id, &[&p.researcher, &p.inv]);
    let body = res.body();
    assert!(body.contains("was returned to the requester"), "{body}");
    assert!(body.contains("State:     returned"), "{body}");
    assert!(body.contains("round to fives"), "{body}");
    for hidden in ["checkers-only-remark", "suspect a linkage"] {
        assert!(
            !body.contains(hidden),
            "{hidden} reached the researcher: {body}"
        );
    }
    // Nobody is mailed about their own action: the Investigator got the review request only.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(by_rcpt(&rx.messages(), "inv"), 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn starttls_and_implicit_tls_trust_the_private_ca_and_an_unknown_one_fails_visibly() {
    let ca = TestCa::new();
    for (mode, tls) in [("starttls", MailTls::Starttls), ("tls", MailTls::Tls)] {
        let rx = SmtpReceiver::start(
            match tls {
                MailTls::Starttls => Security::Starttls(&ca),
                _ => Security::Tls(&ca),
            },
            Some((USER, PASSWORD)),
        );
        let addr = format!("localhost:{}", rx.port);
        let ca_file = ca.ca.clone();
        let t = TestApp::spawn_with(|s| {
            mail_to(s, &addr, tls);
            s.mail.ca_file = Some(ca_file);
        })
        .await;
        let p = t.bootstrap(1).await;
        let (id, up) = into_review(&t, &p).await;
        let got = rx
            .until(&format!("the email over {mode}"), |m| {
                by_rcpt(m, "inv") == 1
            })
            .await;
        let m = &got[0];
        assert!(m.tls, "{mode}: the message travelled in clear");
        check(
            m,
            &format!("http://127.0.0.1:8080/ui/transfers/{id}"),
            &id,
            &[&up],
        );
        t.stop().await;
    }

    // The same relay without the private CA: its certificate is refused, nothing is sent,
    // and after the last attempt the message is failed, logged and audited.
    let rx = SmtpReceiver::start(Security::Starttls(&ca), Some((USER, PASSWORD)));
    let addr = format!("localhost:{}", rx.port);
    let t = TestApp::spawn_with(|s| {
        mail_to(s, &addr, MailTls::Starttls);
        s.mail.max_attempts = 2;
    })
    .await;
    let p = t.bootstrap(1).await;
    let (id, _) = into_review(&t, &p).await;
    let mut failed = Vec::new();
    for _ in 0..100 {
        failed = t.app.store.mail_outbox(Some("failed")).await.unwrap();
        if !failed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(failed.len(), 1, "never failed");
    let f = &failed[0];
    assert_eq!(f.attempts, 2);
    assert_eq!(f.recipient, "inv");
    let error = f.last_error.as_deref().unwrap();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    assert!(rx.messages().is_empty());
    assert!(
        !rx.auth_log().contains(USER),
        "credentials went to an unverified relay"
    );
    let audit = t.app.store.audit_records().await.unwrap();
    let ev = audit
        .iter()
        .find(|r| r.action == "mail.failed")
        .expect("mail.failed audited");
    assert!(ev.detail.contains("\"recipient\":\"inv\""), "{}", ev.detail);
    assert!(ev.detail.contains(&id) || ev.transfer_id.as_deref() == Some(id.as_str()));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_that_is_down_gets_the_message_once_after_a_restart() {
    // Nothing listens yet where the relay will be.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let settings = move |s: &mut Settings| {
        mail_to(s, &addr, MailTls::None);
        s.mail.max_attempts = 100;
    };
    let t = TestApp::spawn_with(settings.clone()).await;
    let p = t.bootstrap(1).await;
    let (id, _) = into_review(&t, &p).await;
    // Tried and failed (connection refused), still pending.
    let mut tried = Vec::new();
    for _ in 0..100 {
        tried = t.app.store.mail_outbox(None).await.unwrap();
        if tried.iter().any(|m| m.attempts >= 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(tried.len(), 1, "{tried:#?}");
    assert_eq!(tried[0].state, "pending");
    assert!(tried[0].attempts >= 2, "{tried:#?}");
    assert!(tried[0].last_error.is_some());
    let dir = t.stop().await;

    // The relay comes up; airlock restarts on the same data directory and sends it, once.
    let rx = SmtpReceiver::start_on(port, Security::Plain, Some((USER, PASSWORD)));
    let t = TestApp::spawn_in_with(dir, settings).await;
    rx.until("the retried email", |m| by_rcpt(m, "inv") == 1)
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let all = rx.messages();
    assert_eq!(all.len(), 1, "{all:#?}");
    check(
        &all[0],
        &format!("http://127.0.0.1:8080/ui/transfers/{id}"),
        &id,
        &[],
    );
    let outbox = t.app.store.mail_outbox(None).await.unwrap();
    assert_eq!(
        outbox.len(),
        1,
        "queued again after the restart: {outbox:#?}"
    );
    assert_eq!(outbox[0].state, "sent");
    assert!(outbox[0].attempts >= 3);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_relay_nothing_is_queued() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(1).await;
    into_review(&t, &p).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(t.app.store.mail_outbox(None).await.unwrap().is_empty());
    assert_eq!(t.app.store.mail_cursor().await.unwrap(), None);
    t.stop().await;
}
