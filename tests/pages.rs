//! Big transfers are read in pages and streams: the summary has a constant size, `/files`
//! walks every file exactly once in path byte order, `/sha256sums` is a `sha256sum -c` file,
//! the JSON manifest and `transfer show --json` still hold every file.

mod common;

use common::*;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::BTreeSet;

/// Names whose byte order differs from a per-folder walk's (`a/b` sorts after `a.txt` and
/// `a-b`), plus enough numbered files to need more than one full page.
fn tree() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = [
        "a/b",
        "a.txt",
        "a-b",
        "a/c/d",
        "b",
        "Z",
        "ü.txt",
        "sp ace.txt",
        "a0",
    ]
    .iter()
    .enumerate()
    .map(|(i, p)| (p.to_string(), bytes(10 + i * 7, i as u64)))
    .collect();
    for i in 0..1010 {
        out.push((format!("n/{i:04}"), bytes(i % 50, 1000 + i as u64)));
    }
    out
}

async fn filled(t: &TestApp, people: &People) -> (String, String, Vec<(String, Vec<u8>)>) {
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let files = tree();
    let results: Vec<_> = futures::stream::iter(files.iter().cloned())
        .map(|(p, b)| {
            let (t, tok, id) = (&t, &tok, &id);
            async move { t.put(tok, id, &encode_all(&p), b).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (s, v) in results {
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    (id, tok, files)
}

async fn walk(t: &TestApp, token: &str, id: &str, limit: u32) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut req = t
            .http
            .get(t.api(&format!("/transfers/{id}/files")))
            .bearer_auth(token)
            .query(&[("limit", limit.to_string())]);
        if let Some(a) = &after {
            req = req.query(&[("after", a)]);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.unwrap();
        let page = v["files"].as_array().unwrap();
        assert!(page.len() <= limit as usize, "a page longer than its limit");
        out.extend(page.iter().cloned());
        match v["next"].as_str() {
            Some(n) => {
                assert_eq!(
                    page.last().unwrap()["path"],
                    n,
                    "next is the page's last path"
                );
                after = Some(n.to_owned());
            }
            None => break,
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_streams_and_the_summary_cover_every_file_once() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let (id, tok, files) = filled(&t, &people).await;
    let want: BTreeSet<String> = files.iter().map(|(p, _)| p.clone()).collect();
    let bytes_total: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();

    // Walked in small pages by the uploader and in default pages by staff: every file exactly
    // once, in strictly increasing byte order of the path.
    for (token, limit) in [(&tok, 7), (&people.pm, 1000)] {
        let got = walk(&t, token, &id, limit).await;
        let paths: Vec<String> = got
            .iter()
            .map(|f| f["path"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(paths.len(), want.len(), "limit {limit}: each file once");
        assert!(
            paths.windows(2).all(|w| w[0].as_bytes() < w[1].as_bytes()),
            "limit {limit}: not in byte order"
        );
        assert_eq!(paths.into_iter().collect::<BTreeSet<_>>(), want);
    }

    // A limit above the cap is capped; 0 and non-numbers are refused, naming the parameter.
    let (s, v) = t
        .get_json(&people.pm, &format!("/transfers/{id}/files?limit=5000"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["files"].as_array().unwrap().len(), 1000);
    assert!(v["next"].is_string());
    for bad in ["limit=0", "limit=abc", "limit=-1"] {
        let (s, v) = t
            .get_json(&people.pm, &format!("/transfers/{id}/files?{bad}"))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(v["error"].as_str().unwrap().contains("limit"), "{v}");
    }

    // The summary has a constant size: counts and bytes, no file list.
    let v = t.show(&people.pm, &id).await;
    assert!(v.get("files").is_none(), "the summary lists files");
    assert_eq!(v["file_count"], files.len());
    assert_eq!(v["complete_count"], files.len());
    assert_eq!(v["total_bytes"], bytes_total);

    // sha256sums: `sha256sum -c` passes over a copy of the tree, and the text equals
    // sha256sum's own, in byte order.
    let dir = tempfile::tempdir().unwrap();
    for (p, b) in &files {
        write(dir.path(), p, b);
    }
    let r = t
        .http
        .get(t.api(&format!("/transfers/{id}/sha256sums")))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let sums = r.text().await.unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let sums_file = elsewhere.path().join("sums.txt");
    std::fs::write(&sums_file, &sums).unwrap();
    let check = std::process::Command::new("sha256sum")
        .arg("-c")
        .arg("--quiet")
        .arg(&sums_file)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "sha256sum -c: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    let mut sorted: Vec<&String> = want.iter().collect();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let theirs = run(std::process::Command::new("sha256sum")
        .args(sorted.iter().map(|s| s.as_str()))
        .current_dir(dir.path()));
    assert_eq!(sums, theirs);

    // The JSON manifest is still whole (streamed by the server).
    let (s, m) = t.get_json(&tok, &format!("/transfers/{id}/manifest")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(m["id"], id.as_str());
    assert_eq!(m["files"].as_array().unwrap().len(), files.len());

    // `transfer show --json` assembles every file from the pages.
    let out = t.cli(Some(&people.pm), &["transfer", "show", &id, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: BTreeSet<String> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, want);
    assert_eq!(v["file_count"], files.len());
    for f in v["files"].as_array().unwrap() {
        let p = f["path"].as_str().unwrap();
        assert_eq!(
            f["sha256"],
            digest_with("sha256sum", &dir.path().join(p)),
            "{p}"
        );
    }

    // Deleting a file moves the kept totals with it.
    let r = t
        .http
        .delete(t.api(&format!("/transfers/{id}/files/n/0007")))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let v = t.show(&people.pm, &id).await;
    assert_eq!(v["file_count"], files.len() - 1);
    assert_eq!(v["total_bytes"], bytes_total - 7);
}
