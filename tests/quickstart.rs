//! The README's quickstart, step by step, with nothing but the `airlock` binary: admin
//! bootstrap on the data directory, `serve`, transfer, upload, seal, approve, show.

mod common;

use common::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn airlock(data: &Path, server: &str, token: Option<&str>, cwd: &Path, args: &[&str]) -> String {
    let mut c = Command::new(env!("CARGO_BIN_EXE_airlock"));
    c.current_dir(cwd)
        .arg("--data-dir")
        .arg(data)
        .env("AIRLOCK_SERVER", server)
        .env_remove("AIRLOCK_TOKEN")
        .args(args);
    // AIRLOCK_TEST_DATABASE=postgres: the server (serve_binary) and every command on one
    // database.
    if pg::enabled() {
        c.env("AIRLOCK__DATABASE__URL", pg::database_for(data));
    }
    if let Some(t) = token {
        c.env("AIRLOCK_TOKEN", t);
    }
    run(&mut c).trim().to_owned()
}

#[test]
fn the_readme_quickstart_works_with_the_binary_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("airlock-data");
    let cwd = dir.path();
    let none = "http://unused";
    for args in [
        &["admin", "user", "add", "pat", "--role", "project-manager"][..],
        &["admin", "user", "add", "ivy", "--role", "investigator"],
        &["admin", "user", "add", "dora", "--role", "provider"],
        &["admin", "user", "add", "rex", "--role", "referee"],
        &["admin", "project", "create", "genomics"],
        &[
            "admin",
            "project",
            "add-member",
            "genomics",
            "pat",
            "--role",
            "project-manager",
        ],
        &[
            "admin",
            "project",
            "add-member",
            "genomics",
            "ivy",
            "--role",
            "investigator",
        ],
        &[
            "admin",
            "workspace",
            "create",
            "genomics",
            "analysis",
            "--tier",
            "2",
        ],
    ] {
        airlock(&data, none, None, cwd, args);
    }
    // Bad admin input gets a clear error.
    let out = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .arg("--data-dir")
        .arg(&data)
        .args(["admin", "user", "add", "x", "--role", "wizard"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role"));

    let (child, url) = serve_binary(&data);
    let _server = Server(child);

    let pat = airlock(&data, &url, None, cwd, &["admin", "token", "pat"]);
    let id = airlock(
        &data,
        &url,
        Some(&pat),
        cwd,
        &[
            "transfer",
            "create",
            "--workspace",
            "genomics/analysis",
            "--kind",
            "data-ingress",
            "--uploader",
            "dora",
        ],
    );
    let upload = airlock(
        &data,
        &url,
        Some(&pat),
        cwd,
        &["transfer", "token", &id, "--ttl", "24h"],
    );
    write(cwd, "cohort/visits/2026.csv", b"id,age\n");
    write(cwd, "cohort/README", b"hello\n");
    let printed = airlock(
        &data,
        &url,
        None,
        cwd,
        &["upload", "--token", &upload, "cohort"],
    );
    assert!(printed.contains("cohort/visits/2026.csv"), "{printed}");
    let sealed = airlock(&data, &url, None, cwd, &["seal", "--token", &upload]);
    assert!(sealed.starts_with("scanning"), "{sealed}");
    // `transfer seal --wait` is for staff; the README has the provider look with `show`.
    let mut v = Value::Null;
    for _ in 0..300 {
        v = serde_json::from_str(&airlock(
            &data,
            &url,
            Some(&pat),
            cwd,
            &["transfer", "show", &id, "--json"],
        ))
        .unwrap();
        if v["state"] != "scanning" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(v["state"], "in_review", "{v}");
    let shown = airlock(&data, &url, Some(&pat), cwd, &["transfer", "show", &id]);
    assert!(
        shown.contains("scans      6 clean, 0 infected, 0 unscannable, 0 error"),
        "{shown}"
    );
    // Tier 2 asks an Investigator and a Referee from the college.
    airlock(
        &data,
        &url,
        Some(&pat),
        cwd,
        &["referee", "assign", &id, "rex"],
    );
    let ivy = airlock(&data, &url, None, cwd, &["admin", "token", "ivy"]);
    let said = airlock(
        &data,
        &url,
        Some(&ivy),
        cwd,
        &[
            "transfer",
            "approve",
            &id,
            "--as",
            "investigator",
            "--comment",
            "checked",
        ],
    );
    assert!(
        said.contains("in_review") && said.contains("1 referee"),
        "{said}"
    );
    let shown = airlock(&data, &url, Some(&pat), cwd, &["transfer", "show", &id]);
    assert!(shown.contains("awaiting   1 referee from rex"), "{shown}");
    let rex = airlock(&data, &url, None, cwd, &["admin", "token", "rex"]);
    airlock(
        &data,
        &url,
        Some(&rex),
        cwd,
        &["transfer", "approve", &id, "--as", "referee"],
    );

    let mut v = Value::Null;
    for _ in 0..100 {
        v = serde_json::from_str(&airlock(
            &data,
            &url,
            Some(&pat),
            cwd,
            &["transfer", "show", &id, "--json"],
        ))
        .unwrap();
        if v["state"] == "released" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(v["state"], "released", "{v}");
    let human = airlock(&data, &url, Some(&pat), cwd, &["transfer", "show", &id]);
    assert!(human.contains("released"), "{human}");
    let released = data
        .canonicalize()
        .unwrap()
        .join("volumes/genomics/analysis/data")
        .join(&id)
        .join("cohort");
    assert_eq!(
        v["release"]["location"].as_str().unwrap(),
        released.parent().unwrap().to_str().unwrap()
    );
    let f = released.join("visits/2026.csv");
    assert_eq!(std::fs::read(&f).unwrap(), b"id,age\n");
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o444
    );
}
