//! Behind a reverse proxy: with `[server] trusted_proxies`, the client named by a trusted
//! proxy's `X-Forwarded-For` or `Forwarded` header is the one token IP ranges and the audit
//! log see; from anyone else, those headers change nothing.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn put_from(t: &TestApp, tok: &str, id: &str, path: &str, header: (&str, &str)) -> u16 {
    t.http
        .put(t.api(&format!("/transfers/{id}/files/{path}")))
        .bearer_auth(tok)
        .header(header.0, header.1)
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn refused_clients(t: &TestApp) -> Vec<String> {
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT detail FROM audit_events WHERE action = 'token.refused'")
            .fetch_all(t.app.store.pool())
            .await
            .unwrap();
    rows.iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["client"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client_for_ip_bound_tokens_and_the_audit_log() {
    let t = TestApp::spawn_with(|s| {
        s.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let p = t.bootstrap(1).await;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let tok = t
        .upload_token(&p.pm, &id, json!({"cidrs": ["203.0.113.0/24"]}))
        .await;
    let xff = "x-forwarded-for";
    assert_eq!(
        put_from(&t, &tok, &id, "a", (xff, "203.0.113.7")).await,
        201
    );
    assert_eq!(
        put_from(
            &t,
            &tok,
            &id,
            "b",
            ("forwarded", "for=203.0.113.8;proto=https")
        )
        .await,
        201
    );
    // A proxy chain: the right-most address that is not a trusted proxy.
    assert_eq!(
        put_from(
            &t,
            &tok,
            &id,
            "c",
            (xff, "198.51.100.9, 203.0.113.9, 127.0.0.5")
        )
        .await,
        201,
        "a forged left-most entry is not the client"
    );
    assert_eq!(
        put_from(&t, &tok, &id, "d", (xff, "203.0.113.7, 198.51.100.1")).await,
        401,
        "the client is 198.51.100.1, outside the token's range"
    );
    assert!(
        refused_clients(&t)
            .await
            .iter()
            .any(|c| c == "198.51.100.1"),
        "the audit log names the client, not the proxy: {:?}",
        refused_clients(&t).await
    );
    let v = t.show(&p.pm, &id).await;
    assert_eq!(v["file_count"], 3);
}

#[tokio::test]
async fn without_trusted_proxies_forwarding_headers_change_nothing() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(1).await;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let tok = t
        .upload_token(&p.pm, &id, json!({"cidrs": ["203.0.113.0/24"]}))
        .await;
    assert_eq!(
        put_from(&t, &tok, &id, "a", ("x-forwarded-for", "203.0.113.7")).await,
        401,
        "the peer (127.0.0.1) is the client"
    );
    assert!(refused_clients(&t).await.iter().any(|c| c == "127.0.0.1"));
    let (s, _) = t.put(&tok, &id, "b", b"x".to_vec()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
