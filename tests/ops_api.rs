//! Operations through the API (issue 14, point 4), against the real server and clamd:
//! incidents seen and resolved by the managers of their project, verify finding a file changed
//! behind airlock's back, the audit log exported as JSON lines and verified, a transfer's own
//! events, the BagIt bag as a tar stream that passes `sha256sum -c`, failed webhook deliveries
//! listed and sent again, and the CLI printing the same through the API as on the data dir.

mod common;

use airlock::domain::Role;
use airlock::workflow::admin;
use axum::extract::State;
use axum::http::StatusCode as AxStatus;
use axum::routing::post;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A webhook receiver that answers 500 while `failing` is set, then 204.
async fn receiver(failing: Arc<AtomicBool>) -> String {
    async fn hit(State(f): State<Arc<AtomicBool>>) -> AxStatus {
        if f.load(Ordering::SeqCst) {
            AxStatus::INTERNAL_SERVER_ERROR
        } else {
            AxStatus::NO_CONTENT
        }
    }
    let app = axum::Router::new()
        .route("/hook", post(hit))
        .with_state(failing);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    url
}

/// A tier 1 data ingress in `ws` (`PROJECT/WORKSPACE`) from open to released.
async fn release_one(
    t: &TestApp,
    pm: &str,
    inv: &str,
    ws: &str,
    files: &[(&str, &[u8])],
) -> String {
    let id = t.open_transfer_in(pm, ws, "data-ingress", "prov").await;
    let up = t.upload_token(pm, &id, Value::Null).await;
    for (path, b) in files {
        assert_eq!(
            t.put(&up, &id, path, b.to_vec()).await.0,
            StatusCode::CREATED
        );
    }
    let (s, _) = t
        .post_json(&up, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK);
    t.scans_done(&id).await;
    let (s, v) = t
        .post_json(
            inv,
            &format!("/transfers/{id}/approve"),
            json!({ "as": "investigator" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.wait_for_state(pm, &id, "released").await;
    id
}

async fn get_text(t: &TestApp, token: &str, path: &str) -> (StatusCode, String) {
    let r = t
        .http
        .get(t.api(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs the CLI through the API: the token set, the server given, and a data directory that
/// does not exist, so nothing can be read from the real one.
fn cli_api(t: &TestApp, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(args)
        .env("AIRLOCK_SERVER", &t.url)
        .env("AIRLOCK_TOKEN", token)
        .env("AIRLOCK__STORAGE__DATA_DIR", "/nonexistent/airlock-data")
        .output()
        .unwrap()
}

fn out(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_operation_works_through_the_api_for_exactly_its_callers() {
    let failing = Arc::new(AtomicBool::new(true));
    let url = receiver(failing.clone()).await;
    let t = TestApp::spawn_with(move |s| {
        s.webhooks.urls = vec![url];
        s.webhooks.secret = "a-webhook-secret-of-some-length".into();
        s.webhooks.poll_interval = Duration::from_millis(50);
        s.webhooks.backoff_initial = Duration::from_millis(50);
        s.webhooks.max_attempts = 1;
    })
    .await;
    let p = t.bootstrap(1).await;
    let a = &t.app;
    for (name, role) in [
        ("pm2", Role::ProjectManager),
        ("inv2", Role::Investigator),
        ("progm", Role::ProgrammeManager),
        ("sysm", Role::SystemManager),
    ] {
        admin::add_user(a, name, &[role]).await.unwrap();
    }
    admin::add_member(a, "other", "pm2", Role::ProjectManager)
        .await
        .unwrap();
    admin::add_member(a, "other", "inv2", Role::Investigator)
        .await
        .unwrap();
    let mut tok = Vec::new();
    for n in ["pm2", "inv2", "progm", "sysm"] {
        tok.push(admin::staff_token(a, n, None).await.unwrap());
    }
    let [pm2, inv2, progm, sysm] = <[String; 4]>::try_from(tok).unwrap();

    let ours = release_one(
        &t,
        &p.pm,
        &p.inv,
        "proj/ws",
        &[("a.csv", b"1,2\n"), ("d/b.txt", b"bee")],
    )
    .await;
    let theirs = release_one(&t, &pm2, &inv2, "other/ws", &[("c.txt", b"sea")]).await;

    // The bag, as a tar stream, unpacked: its manifests check with sha256sum; audited.
    let r = t
        .http
        .get(t.api(&format!("/transfers/{ours}/bag")))
        .bearer_auth(&p.pm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/x-tar");
    let tar_bytes = r.bytes().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("bag.tar"), &tar_bytes).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg("bag.tar")
        .current_dir(work.path()));
    let bag = work.path().join(&ours);
    let check = run(Command::new("sha256sum")
        .args(["-c", "manifest-sha256.txt"])
        .current_dir(&bag));
    assert!(
        check.contains("data/a.csv: OK") && check.contains("data/d/b.txt: OK"),
        "{check}"
    );
    run(Command::new("sha256sum")
        .args(["-c", "tagmanifest-sha256.txt"])
        .current_dir(&bag));
    let info = std::fs::read_to_string(bag.join("bag-info.txt")).unwrap();
    assert!(info.contains("Payload-Oxum: 7.2"), "{info}");
    // Someone who sees the transfer but does not manage it, and a stranger.
    assert_eq!(
        get_text(&t, &p.inv, &format!("/transfers/{ours}/bag"))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get_text(&t, &pm2, &format!("/transfers/{ours}/bag"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    // Verify: the workspace is clean; then a file changed behind airlock's back is found.
    let (s, v) = t
        .post_json(&p.pm, "/workspaces/proj/ws/verify", Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["problems"], json!([]), "{v}");
    let loc = a
        .store
        .transfer(ours.parse().unwrap())
        .await
        .unwrap()
        .unwrap()
        .release_location
        .unwrap();
    let f = std::path::Path::new(&loc).join("a.csv");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&f, b"1,3\n").unwrap();
    let (s, v) = t
        .post_json(&p.pm, &format!("/transfers/{ours}/verify"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v[0]["problems"][0]["result"], "changed", "{v}");
    assert_eq!(
        t.post_json(&p.inv, &format!("/transfers/{ours}/verify"), Value::Null)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        t.post_json(&pm2, &format!("/transfers/{ours}/verify"), Value::Null)
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    // Incidents: one of the other project's, and a system-wide one.
    let mut tx = a.store.begin().await.unwrap();
    tx.insert_incident(Some(theirs.parse().unwrap()), "integrity", "c.txt missing")
        .await
        .unwrap();
    tx.insert_incident(None, "scan", "clamd database out of date")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let list = |who: String, q: &'static str| {
        let t = &t;
        async move {
            let (s, v) = t.get_json(&who, &format!("/incidents{q}")).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            v.as_array()
                .unwrap()
                .iter()
                .map(|i| i["transfer"].as_str().unwrap_or("-").to_owned())
                .collect::<Vec<_>>()
        }
    };
    let mine = list(p.pm.clone(), "").await;
    assert!(
        !mine.is_empty() && mine.iter().all(|x| *x == ours),
        "{mine:?}"
    );
    assert!(list(pm2.clone(), "").await.iter().all(|x| *x == theirs));
    let prog = list(progm.clone(), "").await;
    assert!(prog.contains(&ours) && prog.contains(&theirs) && !prog.contains(&"-".to_owned()));
    assert!(list(sysm.clone(), "").await.contains(&"-".to_owned()));
    assert_eq!(
        t.get_json(&p.inv, "/incidents").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        t.get_json(&p.pm, &format!("/incidents?transfer={theirs}"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (_, v) = t
        .get_json(&p.pm, &format!("/incidents?transfer={ours}&limit=1"))
        .await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    let incident = v[0]["id"].as_str().unwrap().to_owned();

    // Resolving changes the state and is audited with the actor, in one transaction.
    let (s, v) = t
        .post_json(
            &p.pm,
            &format!("/incidents/{incident}/resolve"),
            json!({ "comment": "restored from backup" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "resolved");
    assert_eq!(
        t.post_json(
            &p.pm,
            &format!("/incidents/{incident}/resolve"),
            json!({ "comment": "again" })
        )
        .await
        .0,
        StatusCode::CONFLICT
    );
    let system = t
        .get_json(&sysm, "/incidents")
        .await
        .1
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["transfer"].is_null())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        t.post_json(
            &p.pm,
            &format!("/incidents/{system}/resolve"),
            json!({ "comment": "x" })
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        t.post_json(
            &sysm,
            &format!("/incidents/{system}/resolve"),
            json!({ "comment": "" })
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );

    // A transfer's audit: its events only, the resolution with its actor among them.
    let (s, text) = get_text(&t, &p.pm, &format!("/transfers/{ours}/audit")).await;
    assert_eq!(s, StatusCode::OK);
    let evs = lines(&text);
    assert!(evs.iter().all(|e| e["transfer_id"] == json!(ours)));
    let resolved = evs
        .iter()
        .find(|e| e["action"] == "incident.resolved")
        .expect("incident.resolved");
    assert_eq!(resolved["actor"], "user:pm");
    assert!(resolved["detail"]
        .as_str()
        .unwrap()
        .contains("restored from backup"));
    assert!(evs.iter().any(|e| e["action"] == "content.read"
        && e["actor"] == "user:pm"
        && e["detail"].as_str().unwrap().contains("bag")));

    // The whole chain: exported as JSON lines, one per event, and verified.
    let before = a.store.last_audit_seq().await.unwrap();
    let (s, text) = get_text(&t, &sysm, "/audit/export").await;
    assert_eq!(s, StatusCode::OK);
    let all = lines(&text);
    assert!(all.len() as i64 >= before);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e["seq"], json!(i as i64 + 1));
    }
    assert_eq!(
        all.iter()
            .filter(|e| e["transfer_id"] == json!(ours))
            .count(),
        evs.len()
    );
    let (s, v) = t.get_json(&sysm, "/audit/verify").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["events"].as_u64().unwrap() >= all.len() as u64);
    let head = all.last().unwrap()["hash"].as_str().unwrap().to_owned();
    let (_, v) = t
        .get_json(&sysm, &format!("/audit/verify?head={head}"))
        .await;
    assert_eq!(v["pinned"]["seq"], json!(all.len()), "{v}");
    assert_eq!(
        get_text(&t, &progm, "/audit/export").await.0,
        StatusCode::FORBIDDEN
    );

    // Webhooks: the receiver failed every delivery; one is sent again and arrives.
    let failed = loop {
        let (s, v) = t.get_json(&sysm, "/webhooks?state=failed").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if let Some(d) = v.as_array().unwrap().first() {
            break d.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(failed["state"], "failed");
    assert_eq!(
        t.get_json(&progm, "/webhooks").await.0,
        StatusCode::FORBIDDEN
    );
    failing.store(false, Ordering::SeqCst);
    let id = failed["id"].as_str().unwrap();
    let (s, v) = t
        .post_json(&sysm, &format!("/webhooks/{id}/retry"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "pending");
    for i in 0.. {
        let (_, v) = t.get_json(&sysm, "/webhooks?state=delivered").await;
        if v.as_array().unwrap().iter().any(|d| d["id"] == json!(id)) {
            break;
        }
        assert!(i < 200, "the retried delivery never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, text) = get_text(&t, &sysm, "/audit/export").await;
    assert!(lines(&text)
        .iter()
        .any(|e| e["action"] == "webhook.retried" && e["actor"] == "user:sysm"));
    assert_eq!(
        t.post_json(&sysm, &format!("/webhooks/{id}/retry"), Value::Null)
            .await
            .0,
        StatusCode::CONFLICT
    );

    // The CLI prints the same through the API (no data directory) as on the data directory,
    // once the deliveries of the events so far have settled (each failure is audited).
    let mut quiet = 0;
    while quiet < 5 {
        let (_, v) = t.get_json(&sysm, "/webhooks?state=pending").await;
        quiet = if v.as_array().unwrap().is_empty() {
            quiet + 1
        } else {
            0
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for args in [
        vec!["incidents", "--json"],
        vec!["incidents", "--transfer", ours.as_str(), "--json"],
        vec!["audit", "show", "--transfer", ours.as_str(), "--json"],
        vec!["audit", "show", "--transfer", ours.as_str()],
        vec!["webhooks", "list", "--state", "failed", "--json"],
        vec!["audit", "verify"],
    ] {
        let via_api = out(&cli_api(&t, &sysm, &args));
        let on_disk = out(&t.cli(None, &args));
        assert_eq!(via_api, on_disk, "airlock {}", args.join(" "));
    }
    let exported = out(&cli_api(&t, &sysm, &["audit", "export"]));
    assert!(lines(&exported).len() >= all.len());
    // verify through the API exits 1 on the changed file, as on the data directory.
    let o = cli_api(&t, &p.pm, &["verify", &ours, "--json"]);
    assert!(!o.status.success());
    let d = t.cli(None, &["verify", &ours, "--json"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&d.stdout)
    );
    let clean = out(&cli_api(&t, &pm2, &["verify", "other/ws", "--json"]));
    assert_eq!(clean, out(&t.cli(None, &["verify", "other/ws", "--json"])));
    let cli_bag = work.path().join("cli-bag");
    out(&cli_api(
        &t,
        &pm2,
        &["bag", &theirs, "--output", cli_bag.to_str().unwrap()],
    ));
    run(Command::new("sha256sum")
        .args(["-c", "manifest-sha256.txt"])
        .current_dir(&cli_bag));
    let o = cli_api(
        &t,
        &p.pm,
        &["incidents", "--resolve", &system, "--comment", "no"],
    );
    assert!(
        !o.status.success(),
        "a Project Manager resolved a system-wide incident"
    );
    out(&cli_api(
        &t,
        &sysm,
        &[
            "incidents",
            "--resolve",
            &system,
            "--comment",
            "database updated",
        ],
    ));
    t.stop().await;
}
