//! A crash (SIGKILL, no graceful shutdown) never loses an acknowledged byte: a tus chunk
//! answered with 204 is there after the restart, and the upload finishes with the right
//! digests.

mod common;

use airlock::domain::Role;
use common::*;
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_acknowledged_chunk_survives_a_kill_and_the_upload_completes() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    // Bootstrap on the data directory with the library, as `airlock admin` does.
    let pm = {
        use airlock::workflow::admin::*;
        let app = airlock::app::App::open(settings(&data_dir)).await.unwrap();
        add_user(&app, "pm", &[Role::ProjectManager]).await.unwrap();
        add_user(&app, "prov", &[Role::Provider]).await.unwrap();
        create_project(&app, "proj").await.unwrap();
        add_member(&app, "proj", "pm", Role::ProjectManager)
            .await
            .unwrap();
        create_workspace(&app, "proj", "ws", 2, None).await.unwrap();
        let pm = staff_token(&app, "pm", None).await.unwrap();
        app.store.pool().close().await;
        pm
    };
    let (mut child, url) = serve_binary(&data_dir);
    let http = reqwest::Client::new();
    let v: Value = http
        .post(format!("{url}/api/v1/transfers"))
        .bearer_auth(&pm)
        .json(&serde_json::json!({ "workspace": "proj/ws", "kind": "data-ingress", "uploader": "prov" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = v["id"].as_str().unwrap().to_owned();
    let v: Value = http
        .post(format!("{url}/api/v1/transfers/{id}/tokens"))
        .bearer_auth(&pm)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tok = v["token"].as_str().unwrap().to_owned();
    let data = bytes(3_000_000, 77);
    let r = http
        .post(format!("{url}/api/v1/transfers/{id}/tus"))
        .bearer_auth(&tok)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", data.len().to_string())
        .header("Upload-Metadata", "relativePath a2lsbGVkLmJpbg==")
        .send()
        .await
        .unwrap();
    let path = r.headers()["location"].to_str().unwrap().to_owned();
    let patch = |url: &str, offset: usize, body: &[u8]| {
        http.patch(format!("{url}{path}"))
            .bearer_auth(&tok)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .body(body.to_vec())
            .send()
    };
    let r = patch(&url, 0, &data[..1_200_000]).await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // SIGKILL: no shutdown code runs.
    child.kill().unwrap();
    child.wait().unwrap();
    let (mut child, url) = serve_binary(&data_dir);
    let r = http
        .head(format!("{url}{path}"))
        .bearer_auth(&tok)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["upload-offset"], "1200000");
    let r = patch(&url, 1_200_000, &data[1_200_000..]).await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let m: Value = http
        .get(format!("{url}/api/v1/transfers/{id}/manifest"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let f = write(dir.path(), "killed.bin", &data);
    assert_eq!(m["files"][0]["sha256"], digest_with("sha256sum", &f));
    assert_eq!(m["files"][0]["blake3"], digest_with("b3sum", &f));
    child.kill().unwrap();
    child.wait().unwrap();
}
