//! A big transfer end to end through the client: 20,000 small files in nested folders (sent
//! as tar batches) plus a few larger ones (sent by tus), then seal, scan (real clamd), approve,
//! release, verify and a BagIt export. Every digest is checked against sha256sum of the source.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const SMALL: usize = 20_000;

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "airlock failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `sha256sum` of every file under `root`, by relative path, computed by sha256sum itself
/// (one process over all files, reading a list on stdin would need GNU extensions).
fn sha256sums(root: &Path) -> BTreeMap<String, String> {
    let out = run(Command::new("sh")
        .arg("-c")
        .arg("find . -type f -print0 | sort -z | xargs -0 sha256sum")
        .current_dir(root));
    out.lines()
        .map(|l| {
            let (d, p) = l.split_once("  ").unwrap();
            (p.trim_start_matches("./").to_owned(), d.to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_thousand_files_go_through_every_step() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("cohort");
    for i in 0..SMALL {
        let content = format!("participant {i}, visit {}\n", i % 7).repeat(1 + i % 9);
        write(
            &src,
            &format!("site-{:02}/p{i:05}.csv", i % 20),
            content.as_bytes(),
        );
    }
    for i in 0..3 {
        write(&src, &format!("imaging/scan-{i}.bin"), &bytes(9 << 20, i));
    }
    let want = sha256sums(work.path());
    assert_eq!(want.len(), SMALL + 3);

    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let token = t.upload_token(&people.pm, &id, Value::Null).await;
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .current_dir(work.path())
        .env("AIRLOCK_SERVER", &t.url)
        .env("AIRLOCK_CACHE_DIR", cache.path())
        .args(["upload", "--token", &token, "--json", "cohort"])
        .output()
        .unwrap();
    let stdout = ok(out);
    let done = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "done")
        .count();
    assert_eq!(done, SMALL + 3, "one done event per file");

    ok(Command::new(env!("CARGO_BIN_EXE_airlock"))
        .env("AIRLOCK_SERVER", &t.url)
        .args(["seal", "--token", &token])
        .output()
        .unwrap());
    t.scans_done(&id).await;
    let v = t.show(&people.pm, &id).await;
    assert_eq!(v["state"], "in_review", "{}", v["state_reason"]);
    assert_eq!(v["file_count"], SMALL + 3);
    assert_eq!(v["scans"]["counts"]["clean"], SMALL + 3, "{}", v["scans"]);

    // The manifest, assembled page by page by the CLI, equals sha256sum of the source.
    let shown: Value = serde_json::from_str(&ok(
        t.cli(Some(&people.pm), &["transfer", "show", &id, "--json"])
    ))
    .unwrap();
    let got: BTreeMap<String, String> = shown["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(got, want);

    ok(t.cli(
        Some(&people.inv),
        &[
            "transfer",
            "approve",
            &id,
            "--as",
            "investigator",
            "--comment",
            "ok",
        ],
    ));
    let v = t.wait_for_state(&people.pm, &id, "released").await;
    let loc = Path::new(v["release"]["location"].as_str().unwrap()).to_owned();
    assert_eq!(sha256sums(&loc), want, "the released tree");

    let verified = ok(t.cli(None, &["verify", &id, "--json"]));
    assert!(!verified.contains("\"missing\":[\""), "{verified}");

    let bag = work.path().join("bag");
    ok(t.cli(None, &["bag", &id, "--output", bag.to_str().unwrap()]));
    let said = run(Command::new("sha256sum")
        .args(["-c", "--quiet", "manifest-sha256.txt"])
        .current_dir(&bag));
    assert!(said.trim().is_empty(), "{said}");
    assert_eq!(sha256sums(&bag.join("data")), want, "the bag's payload");
    t.stop().await;
}
