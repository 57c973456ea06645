//! The service itself: the `airlock serve` binary with a config file and environment
//! overrides, and a graceful shutdown that lets an in-flight upload finish.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_binary_serves_from_a_config_file_with_env_overrides_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("airlock.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:1\"\n[storage]\ndata_dir = \"{}\"\n[log]\nformat = \"json\"\n",
            dir.path().join("from-file").display()
        ),
    )
    .unwrap();
    // The environment overrides the file's listen address.
    let mut child = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .env("AIRLOCK__SERVER__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .expect(&line)
        .to_owned();
    let r = reqwest::get(format!("{url}/readyz")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(dir.path().join("from-file/airlock.db").exists());
    assert!(dir.path().join("from-file/quarantine").is_dir());

    let pid = child.id().to_string();
    run(Command::new("kill").args(["-TERM", &pid]));
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut logs).unwrap();
    let first: Value = serde_json::from_str(logs.lines().next().unwrap()).expect("JSON logs");
    assert!(first["fields"]["message"].is_string(), "{first}");

    // A config file with a typo is refused, naming the key.
    std::fs::write(&cfg, "[server]\nlisen = \"127.0.0.1:0\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lisen"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_lets_an_upload_in_flight_finish() {
    let mut t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let data = bytes(4_000_000, 8);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream(rx));
    let req = t
        .http
        .put(t.api(&format!("/transfers/{id}/files/slow.bin")))
        .bearer_auth(&tok)
        .body(body)
        .send();
    let pending = tokio::spawn(req);
    tx.send(Ok(data[..1_000_000].to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.signal_stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(Ok(data[1_000_000..].to_vec())).await.unwrap();
    drop(tx);
    let r = pending.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["size"], data.len());
    let files = t.app.store.files(id.parse().unwrap()).await.unwrap();
    assert!(files[0].complete);
    assert_eq!(files[0].received, data.len() as u64);
    let url = t.url.clone();
    t.stop().await;
    // Once stopped, new connections are refused.
    assert!(reqwest::get(format!("{url}/healthz")).await.is_err());
}

fn tokio_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
