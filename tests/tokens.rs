//! Upload tokens: write-only on every route, bound to one transfer, its IP ranges and its
//! lifetime, and dead for good after seal, cancel, expiry or replacement. Hostile names.

mod common;

use base64::Engine;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

/// A marker in file content: no response to an upload token may ever contain it.
const SECRET: &[u8] = b"PATIENT-RECORD-7f3a9c-DO-NOT-LEAK";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_token_cannot_read_list_or_download_on_any_route() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let (s, _) = t.put(&tok, &id, "dir/secret.txt", SECRET.to_vec()).await;
    assert_eq!(s, StatusCode::CREATED);
    let r = t
        .tus_create(&tok, &id)
        .header("Upload-Length", SECRET.len().to_string())
        .header("Upload-Metadata", tus_meta("tus.txt"))
        .header("Content-Type", "application/offset+octet-stream")
        .body(SECRET.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let upload = r.headers()["location"]
        .to_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();

    // Walk every route that reads (GET and HEAD), filling in this transfer's ids.
    let mut allowed = Vec::new();
    for (method, route) in airlock::server::api_routes() {
        if !["get", "head"].contains(&method) {
            continue;
        }
        let path = route
            .replace("{id}", &id)
            .replace("{path}", "dir/secret.txt")
            .replace("{upload}", &upload);
        let url = if path.starts_with("/api/") {
            format!("{}{path}?workspace=proj/ws", t.url)
        } else {
            format!("{}{path}", t.url)
        };
        let r = t
            .http
            .request(
                Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                &url,
            )
            .bearer_auth(&tok)
            .header("Tus-Resumable", "1.0.0")
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.bytes().await.unwrap();
        assert!(
            !body.windows(SECRET.len()).any(|w| w == SECRET),
            "{method} {route} leaked content to an upload token"
        );
        if status.is_success() {
            allowed.push(route.clone());
        } else {
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {route}");
        }
    }
    // Only these succeed: the token's own sizes and digests (all at once, in pages, or as
    // sha256sum text), its tus offsets, and the public
    // service endpoints (health, counters, the API description), none of which carry content.
    allowed.sort();
    assert_eq!(
        allowed,
        vec![
            "/api/v1/transfers/{id}/files",
            "/api/v1/transfers/{id}/manifest",
            "/api/v1/transfers/{id}/sha256sums",
            "/api/v1/transfers/{id}/tus/{upload}",
            "/healthz",
            "/metrics",
            "/openapi.json",
            "/readyz"
        ]
    );
    let (_, m) = t.get_json(&tok, &format!("/transfers/{id}/manifest")).await;
    assert_eq!(m["files"][0]["path"], "dir/secret.txt");
    assert_eq!(m["files"][0]["size"], SECRET.len());

    // Staff reviewers can read content once it is sealed and in review (never while open and
    // unscanned), and that read is audited.
    let r = t
        .http
        .get(t.api(&format!("/transfers/{id}/files/dir/secret.txt")))
        .bearer_auth(&people.inv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let (s, _) = t
        .post_json(&tok, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK);
    t.wait_for_state(&people.pm, &id, "in_review").await;
    let r = t
        .http
        .get(t.api(&format!("/transfers/{id}/files/dir/secret.txt")))
        .bearer_auth(&people.inv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), SECRET);
    let reads: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE action = 'content.read'")
            .fetch_one(t.app.store.pool())
            .await
            .unwrap();
    assert_eq!(reads, 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_dies_at_seal_and_is_refused_everywhere_after() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    t.put(&tok, &id, "a.bin", b"abc".to_vec()).await;
    let (s, _) = t
        .post_json(&tok, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK);
    t.scans_done(&id).await;
    let (s, v) = t.put(&tok, &id, "b.bin", b"more".to_vec()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert!(v["error"].as_str().unwrap().contains("sealed"), "{v}");
    for (m, p) in [
        (Method::GET, format!("/transfers/{id}/manifest")),
        (Method::POST, format!("/transfers/{id}/seal")),
        (Method::POST, format!("/transfers/{id}/tus")),
        (Method::DELETE, format!("/transfers/{id}/files/a.bin")),
    ] {
        let r = t
            .http
            .request(m.clone(), t.api(&p))
            .bearer_auth(&tok)
            .header("Tus-Resumable", "1.0.0")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{m} {p}");
    }
    // Refusals are audited: the first at once, the repeats counted in one summary written
    // at the window's end (here, at shutdown).
    let refused: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE action = 'token.refused'")
            .fetch_one(t.app.store.pool())
            .await
            .unwrap();
    assert!(refused >= 1, "{refused}");
    let dir = t.stop().await;
    let pool = raw_db(dir.path()).await;
    let details: Vec<String> =
        sqlx::query_scalar("SELECT detail FROM audit_events WHERE action = 'token.refused'")
            .fetch_all(&pool)
            .await
            .unwrap();
    let counted: u64 = details
        .iter()
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["count"]
                .as_u64()
                .unwrap_or(1)
        })
        .sum();
    assert!(counted >= 5, "{counted}: {details:?}");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_expires_and_its_open_transfer_becomes_expired() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t
        .upload_token(&people.pm, &id, serde_json::json!({ "ttl": "2s" }))
        .await;
    assert_eq!(
        t.put(&tok, &id, "a.bin", b"abc".to_vec()).await.0,
        StatusCode::CREATED
    );
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let (s, v) = t.put(&tok, &id, "b.bin", b"abc".to_vec()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let v = t.wait_for_state(&people.pm, &id, "expired").await;
    assert!(v["state_reason"].as_str().unwrap().contains("ran out"));
    // A PM cannot revive it with a new token.
    let (s, _) = t
        .post_json(&people.pm, &format!("/transfers/{id}/tokens"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_only_works_on_its_own_transfer_and_from_its_ip_ranges() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let a = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let b = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok_a = t.upload_token(&people.pm, &a, Value::Null).await;
    let (s, v) = t.put(&tok_a, &b, "x.bin", b"x".to_vec()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, _) = t
        .post_json(&tok_a, &format!("/transfers/{b}/seal"), Value::Null)
        .await;
    t.scans_done(&b).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        t.app.store.files(b.parse().unwrap()).await.unwrap().len(),
        0
    );

    // Bound to a range the client is outside of: refused. Inside: accepted.
    let outside = t
        .upload_token(
            &people.pm,
            &a,
            serde_json::json!({ "cidrs": ["10.0.0.0/8"] }),
        )
        .await;
    let (s, v) = t.put(&outside, &a, "x.bin", b"x".to_vec()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert!(v["error"].as_str().unwrap().contains("outside"), "{v}");
    let inside = t
        .upload_token(
            &people.pm,
            &a,
            serde_json::json!({ "cidrs": ["127.0.0.0/8", "::1/128"] }),
        )
        .await;
    assert_eq!(
        t.put(&inside, &a, "x.bin", b"x".to_vec()).await.0,
        StatusCode::CREATED
    );
    // Issuing a new token revoked the earlier ones.
    let (s, v) = t.put(&tok_a, &a, "y.bin", b"y".to_vec()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(v["error"].as_str().unwrap().contains("replaced"), "{v}");

    // The tier's lifetime cap holds (tier 1: 24h).
    let (s, v) = t
        .post_json(
            &people.pm,
            &format!("/transfers/{a}/tokens"),
            serde_json::json!({ "ttl": "48h" }),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("cap"), "{v}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_and_foreign_tokens_get_401_and_strangers_403() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = tok.split('.').collect();
    let wrong_key = airlock::auth::Keys::from_secret(b"not the key")
        .mint_upload(id.parse().unwrap(), Duration::from_secs(600))
        .1;
    let alg_none = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    let mut claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["exp"] = (claims["exp"].as_i64().unwrap() + 86400 * 365).into();
    let changed = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(claims.to_string()),
        parts[2]
    );
    for bad in [
        wrong_key.as_str(),
        alg_none.as_str(),
        changed.as_str(),
        "garbage",
    ] {
        let (s, _) = t.put(bad, &id, "x.bin", b"x".to_vec()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{bad}");
    }
    let r = t
        .http
        .put(t.api(&format!("/transfers/{id}/files/x.bin")))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A staff token cannot upload (only the transfer's token can), and a researcher cannot
    // open transfers.
    let (s, _) = t.put(&people.pm, &id, "x.bin", b"x".to_vec()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = t
        .post_json(&people.researcher, "/transfers", serde_json::json!({ "workspace": "proj/ws", "kind": "data-ingress", "uploader": "prov" }))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // The PM cancels: the token is dead.
    let (s, v) = t
        .post_json(&people.pm, &format!("/transfers/{id}/cancel"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["state"], "cancelled");
    assert_eq!(
        t.put(&tok, &id, "x.bin", b"x".to_vec()).await.0,
        StatusCode::UNAUTHORIZED
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_names_are_refused_with_the_reason_and_change_nothing() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    assert_eq!(
        t.put(&tok, &id, "data/File.csv", b"1".to_vec()).await.0,
        StatusCode::CREATED
    );
    let long_name = "n".repeat(256);
    let long_path = format!("{}/x", vec!["abcdefgh"; 130].join("/"));
    let cases: Vec<(String, StatusCode, &str)> = vec![
        ("/etc/passwd".into(), StatusCode::BAD_REQUEST, "absolute"),
        ("../escape".into(), StatusCode::BAD_REQUEST, "`..`"),
        ("a/../../b".into(), StatusCode::BAD_REQUEST, "`..`"),
        ("a/./b".into(), StatusCode::BAD_REQUEST, "`.`"),
        ("nul\0byte".into(), StatusCode::BAD_REQUEST, "control"),
        ("tab\there".into(), StatusCode::BAD_REQUEST, "control"),
        ("esc\x1b[31m".into(), StatusCode::BAD_REQUEST, "control"),
        ("back\\slash".into(), StatusCode::BAD_REQUEST, "backslash"),
        ("a//b".into(), StatusCode::BAD_REQUEST, "empty segment"),
        ("trailing/".into(), StatusCode::BAD_REQUEST, "empty segment"),
        (long_name, StatusCode::BAD_REQUEST, "limit is 255"),
        (long_path, StatusCode::BAD_REQUEST, "limit is 1024"),
        ("data/file.csv".into(), StatusCode::CONFLICT, "collides"),
        ("DATA/FILE.CSV".into(), StatusCode::CONFLICT, "collides"),
        (
            "data/File.csv/inner".into(),
            StatusCode::CONFLICT,
            "file and a folder",
        ),
        ("data".into(), StatusCode::CONFLICT, "file and a folder"),
    ];
    for (name, status, says) in &cases {
        let (s, v) = t.put(&tok, &id, &encode_all(name), b"evil".to_vec()).await;
        assert_eq!(s, *status, "{name:?}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{name:?}: {v}");
        // The same through tus metadata.
        let r = t
            .tus_create(&tok, &id)
            .header("Upload-Length", "4")
            .header("Upload-Metadata", tus_meta(name))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), *status, "tus {name:?}");
    }
    // Nothing but the first file was stored.
    let files = t.app.store.files(id.parse().unwrap()).await.unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].path, "data/File.csv");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tier_three_tokens_must_be_bound_to_an_ip_range() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(3).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let (s, v) = t
        .post_json(&people.pm, &format!("/transfers/{id}/tokens"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("IP range"), "{v}");
    let (s, v) = t
        .post_json(
            &people.pm,
            &format!("/transfers/{id}/tokens"),
            serde_json::json!({ "cidrs": ["not-a-range"] }),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("not-a-range"), "{v}");
    let tok = t
        .upload_token(
            &people.pm,
            &id,
            serde_json::json!({ "cidrs": ["127.0.0.1"] }),
        )
        .await;
    assert_eq!(
        t.put(&tok, &id, "a.bin", b"a".to_vec()).await.0,
        StatusCode::CREATED
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_in_flight_when_its_token_is_replaced_is_refused_at_commit() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let pending = tokio::spawn(
        t.http
            .put(t.api(&format!("/transfers/{id}/files/slow.bin")))
            .bearer_auth(&tok)
            .body(body)
            .send(),
    );
    tx.send(Ok(bytes(500_000, 1))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The PM replaces the token while the bytes are still coming.
    let _new = t.upload_token(&people.pm, &id, Value::Null).await;
    tx.send(Ok(bytes(500_000, 2))).await.unwrap();
    drop(tx);
    let r = pending.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("revoked during the upload"),
        "{v}"
    );
    assert!(t
        .app
        .store
        .files(id.parse().unwrap())
        .await
        .unwrap()
        .is_empty());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_staff_action_is_refused_to_the_roles_that_do_not_hold_it() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(1).await;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&p.pm, &id, Value::Null).await;
    t.put(&tok, &id, "a.bin", SECRET.to_vec()).await;
    let create =
        serde_json::json!({ "workspace": "proj/ws", "kind": "data-ingress", "uploader": "prov" });
    // (who, method, path, body, expected status) before seal...
    let open_cases: Vec<(&str, &str, &str, String, Value, StatusCode)> = vec![
        (
            "inv",
            &p.inv,
            "POST",
            "/transfers".into(),
            create.clone(),
            StatusCode::FORBIDDEN,
        ),
        (
            "res",
            &p.researcher,
            "POST",
            "/transfers".into(),
            create.clone(),
            StatusCode::FORBIDDEN,
        ),
        (
            "outsider",
            &p.outsider,
            "POST",
            "/transfers".into(),
            create.clone(),
            StatusCode::NOT_FOUND,
        ),
        (
            "inv",
            &p.inv,
            "POST",
            format!("/transfers/{id}/tokens"),
            Value::Null,
            StatusCode::FORBIDDEN,
        ),
        (
            "outsider",
            &p.outsider,
            "POST",
            format!("/transfers/{id}/tokens"),
            Value::Null,
            StatusCode::NOT_FOUND,
        ),
        (
            "inv",
            &p.inv,
            "POST",
            format!("/transfers/{id}/seal"),
            Value::Null,
            StatusCode::FORBIDDEN,
        ),
        (
            "res",
            &p.researcher,
            "POST",
            format!("/transfers/{id}/seal"),
            Value::Null,
            StatusCode::FORBIDDEN,
        ),
        (
            "outsider",
            &p.outsider,
            "POST",
            format!("/transfers/{id}/cancel"),
            Value::Null,
            StatusCode::NOT_FOUND,
        ),
        (
            "inv",
            &p.inv,
            "POST",
            format!("/transfers/{id}/cancel"),
            Value::Null,
            StatusCode::FORBIDDEN,
        ),
        (
            "outsider",
            &p.outsider,
            "GET",
            "/transfers?workspace=proj/ws".into(),
            Value::Null,
            StatusCode::NOT_FOUND,
        ),
        (
            "res",
            &p.researcher,
            "GET",
            format!("/transfers/{id}/files/a.bin"),
            Value::Null,
            StatusCode::FORBIDDEN,
        ),
        (
            "outsider",
            &p.outsider,
            "GET",
            format!("/transfers/{id}/files/a.bin"),
            Value::Null,
            StatusCode::NOT_FOUND,
        ),
        (
            "prov",
            &p.prov,
            "GET",
            format!("/transfers/{id}/files/a.bin"),
            Value::Null,
            StatusCode::FORBIDDEN,
        ),
        (
            "outsider",
            &p.outsider,
            "GET",
            format!("/transfers/{id}/manifest"),
            Value::Null,
            StatusCode::NOT_FOUND,
        ),
    ]
    .into_iter()
    .map(|(n, tok, m, path, body, s)| (n, tok.as_str(), m, path, body, s))
    .collect();
    for (name, token, method, path, body, want) in open_cases {
        let req = t
            .http
            .request(method.parse().unwrap(), t.api(&path))
            .bearer_auth(token);
        let req = if body.is_null() { req } else { req.json(&body) };
        let r = req.send().await.unwrap();
        let status = r.status();
        let bytes = r.bytes().await.unwrap();
        assert_eq!(
            status,
            want,
            "{name} {method} {path}: {}",
            String::from_utf8_lossy(&bytes)
        );
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET),
            "{name} {method} {path} leaked content"
        );
    }
    // ...and at review: only the Investigator decides.
    t.post_json(&tok, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    t.scans_done(&id).await;
    for (name, token) in [
        ("pm", &p.pm),
        ("res", &p.researcher),
        ("prov", &p.prov),
        ("outsider", &p.outsider),
    ] {
        for verb in ["approve", "reject"] {
            let (s, v) = t
                .post_json(token, &format!("/transfers/{id}/{verb}"), Value::Null)
                .await;
            let want = if name == "outsider" {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(s, want, "{name} {verb}: {v}");
        }
    }
    assert_eq!(t.show(&p.pm, &id).await["state"], "in_review");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_project_manager_revokes_a_leaked_token_without_replacing_it() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    assert_eq!(
        t.put(&tok, &id, "a.bin", b"a".to_vec()).await.0,
        StatusCode::CREATED
    );
    let (s, _) = t
        .post_json(
            &people.inv,
            &format!("/transfers/{id}/tokens/revoke"),
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = t
        .post_json(&tok, &format!("/transfers/{id}/tokens/revoke"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let out = t.cli(Some(&people.pm), &["transfer", "revoke-token", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked 1"));
    let (s, v) = t.put(&tok, &id, "b.bin", b"b".to_vec()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        v["error"].as_str().unwrap().contains("revoked by pm"),
        "{v}"
    );
    // The transfer is still open: a new token works.
    assert_eq!(t.show(&people.pm, &id).await["state"], "open");
    let tok2 = t.upload_token(&people.pm, &id, Value::Null).await;
    assert_eq!(
        t.put(&tok2, &id, "b.bin", b"b".to_vec()).await.0,
        StatusCode::CREATED
    );
    t.stop().await;
}
