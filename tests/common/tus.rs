//! tus helpers shared by the tus and S3 suites: a PATCH cut off mid-body, and the offset a
//! HEAD reports.
#![allow(dead_code)]

use super::TestApp;
use reqwest::StatusCode;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Sends a PATCH that claims `total` bytes but stops after `sent`, then drops the connection.
pub async fn patch_then_cut(
    addr: &str,
    path: &str,
    token: &str,
    offset: u64,
    body: &[u8],
    total: usize,
) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\n\
         Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: {total}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    s.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s);
}

pub async fn head_offset(t: &TestApp, location: &str, tok: &str) -> u64 {
    let r = t
        .http
        .head(format!("{}{location}", t.url))
        .bearer_auth(tok)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["tus-resumable"], "1.0.0");
    assert!(r.headers().contains_key("upload-expires"));
    r.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

pub async fn wait_offset(t: &TestApp, location: &str, tok: &str, at_least: u64) -> u64 {
    for _ in 0..100 {
        let o = head_offset(t, location, tok).await;
        if o >= at_least {
            return o;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("offset never reached {at_least}");
}
