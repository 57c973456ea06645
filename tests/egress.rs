//! Egress end to end on the real server, clamd, sha256sum and Python's zipfile: a researcher's
//! request pinned by hash, disclosure findings, blinded per-file votes, release of the output
//! files alone with the output-checking record, and collection by a named recipient.

mod common;

use airlock::domain::Role;
use airlock::workflow::admin;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The people of an egress flow: the bootstrap's, a Referee from the college, the provider as
/// a member of the project, and a recipient.
struct Egress {
    t: TestApp,
    p: People,
    referee: String,
    recipient: String,
    out: PathBuf,
}

async fn setup(tier: i64) -> Egress {
    let e = setup_with(tier, |_| {}).await;
    assert!(e.out.is_dir(), "every workspace has an output volume");
    e
}

async fn setup_with(tier: i64, adjust: impl FnOnce(&mut airlock::config::Settings)) -> Egress {
    let t = TestApp::spawn_with(adjust).await;
    let p = t.bootstrap(tier).await;
    admin::add_user(&t.app, "ref", &[Role::Referee])
        .await
        .unwrap();
    admin::add_user(&t.app, "recip", &[Role::Researcher])
        .await
        .unwrap();
    admin::add_member(&t.app, "proj", "prov", Role::Provider)
        .await
        .unwrap();
    let referee = admin::staff_token(&t.app, "ref", None).await.unwrap();
    let recipient = admin::staff_token(&t.app, "recip", None).await.unwrap();
    let out = t.data_dir().join("volumes/proj/ws/output");
    Egress {
        t,
        p,
        referee,
        recipient,
        out,
    }
}

/// A frequency table with no small cells.
const SAFE_TABLE: &str = "region,cases,controls\nnorth,120,340\nsouth,95,410\neast,230,180\n";
/// The underlying counts: never released.
const RAW: &str = "id,region,case\n1,north,1\n2,south,0\n";
const SCRIPT: &str =
    "import pandas as pd\ndf = pd.read_csv('raw.csv')\nprint(df.groupby('region').sum())\n";

fn outputs(out: &Path) {
    write(out, "tables/counts.csv", SAFE_TABLE.as_bytes());
    write(
        out,
        "tables/figure.txt",
        b"a plain summary with nothing to flag\n",
    );
    write(out, "analysis.py", SCRIPT.as_bytes());
    write(out, "supporting/raw.csv", RAW.as_bytes());
}

async fn create(e: &Egress, body: Value) -> (StatusCode, Value) {
    e.t.post_json(&e.p.researcher, "/egress", body).await
}

fn request() -> Value {
    json!({
        "workspace": "proj/ws",
        "context": "Case and control counts by region, all cells well above 10.",
        "files": [
            {"path": "tables", "role": "output"},
            {"path": "analysis.py", "role": "code"},
            {"path": "supporting", "role": "supporting"},
        ],
        "recipients": ["recip"],
    })
}

async fn submitted(e: &Egress) -> String {
    outputs(&e.out);
    submit_request(e, request()).await
}

/// Creates the request `body` as the researcher, submits it and waits until it is in review.
async fn submit_request(e: &Egress, body: Value) -> String {
    let (s, v) = create(e, body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["kind"], "egress");
    assert_eq!(v["state"], "open");
    let id = v["id"].as_str().unwrap().to_owned();
    let (s, v) =
        e.t.post_json(
            &e.p.researcher,
            &format!("/egress/{id}/submit"),
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    e.t.wait_for_state(&e.p.researcher, &id, "in_review").await;
    id
}

/// A Referee assigned, every tier-2 checker (investigator, provider, referee) approves every
/// output file; waits for the release and returns `transfer show`.
async fn release_by_every_checker(e: &Egress, id: &str) -> Value {
    assign_referee(e, id).await;
    approve_all(
        e,
        id,
        &[
            (&e.p.inv, "investigator"),
            (&e.p.prov, "provider"),
            (&e.referee, "referee"),
        ],
    )
    .await;
    e.t.wait_for_state(&e.p.pm, id, "released").await
}

async fn vote(
    e: &Egress,
    tok: &str,
    id: &str,
    path: &str,
    role: &str,
    v: &str,
    c: &str,
) -> (StatusCode, Value) {
    e.t.post_json(
        tok,
        &format!("/egress/{id}/votes"),
        json!({"path": path, "as": role, "vote": v, "comment": c}),
    )
    .await
}

async fn acknowledge_all(e: &Egress, tok: &str, id: &str, role: &str) {
    let v = e.t.show(tok, id).await;
    for f in v["disclosure"]["findings"].as_array().unwrap() {
        let (s, r) =
            e.t.post_json(
                tok,
                &format!("/egress/{id}/acknowledge"),
                json!({"finding": f["id"], "as": role, "comment": "seen"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{r}");
    }
}

async fn review(e: &Egress, tok: &str, id: &str, role: &str) -> (StatusCode, Value) {
    e.t.post_json(tok, &format!("/egress/{id}/review"), json!({"as": role}))
        .await
}

/// Every required checker approves every output file and submits.
async fn approve_all(e: &Egress, id: &str, checkers: &[(&str, &str)]) {
    let v = e.t.show(&e.p.pm, id).await;
    let outputs: Vec<String> = v["pinned"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["role"] == "output")
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .collect();
    for (tok, role) in checkers {
        for p in &outputs {
            let (s, r) = vote(e, tok, id, p, role, "approve", "").await;
            assert_eq!(s, StatusCode::OK, "{role} on {p}: {r}");
        }
        acknowledge_all(e, tok, id, role).await;
        let (s, r) = review(e, tok, id, role).await;
        assert_eq!(s, StatusCode::OK, "{role}: {r}");
    }
}

async fn assign_referee(e: &Egress, id: &str) {
    let (s, v) =
        e.t.post_json(
            &e.p.pm,
            &format!("/transfers/{id}/referees"),
            json!({"user": "ref"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

async fn collection_token(e: &Egress, id: &str, body: Value) -> String {
    let (s, v) =
        e.t.post_json(&e.p.pm, &format!("/egress/{id}/collection-tokens"), body)
            .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

async fn get(e: &Egress, tok: &str, path: &str) -> reqwest::Response {
    e.t.http
        .get(e.t.api(path))
        .bearer_auth(tok)
        .send()
        .await
        .unwrap()
}

/// A ranged GET of a collected file (`Range: bytes=FROM-`).
async fn get_from(e: &Egress, tok: &str, path: &str, from: u64) -> reqwest::Response {
    e.t.http
        .get(e.t.api(path))
        .bearer_auth(tok)
        .header("range", format!("bytes={from}-"))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tier_2_egress_is_pinned_checked_blind_released_without_supporting_files_and_collected() {
    let e = setup(2).await;
    let id = submitted(&e).await;
    let v = e.t.show(&e.p.researcher, &id).await;
    // Pinned by hash: every file with its role and sha256sum's digest.
    let pinned = v["pinned"].as_array().unwrap();
    let roles: Vec<(String, String)> = pinned
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().into(),
                f["role"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        vec![
            ("analysis.py".into(), "code".into()),
            ("supporting/raw.csv".into(), "supporting".into()),
            ("tables/counts.csv".into(), "output".into()),
            ("tables/figure.txt".into(), "output".into()),
        ]
    );
    for f in pinned {
        let want = digest_with("sha256sum", &e.out.join(f["path"].as_str().unwrap()));
        assert_eq!(f["sha256"], want.as_str(), "{f}");
        assert!(f.get("changed_on_disk").is_none(), "{f}");
    }
    assert!(v["root_digest"].as_str().is_some());
    // The paged file list gains each file's role.
    let (_, page) =
        e.t.get_json(&e.p.pm, &format!("/transfers/{id}/files"))
            .await;
    assert!(
        page["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["role"].is_string()),
        "{page}"
    );

    // Egress is never approved outside output checking.
    let (s, r) =
        e.t.post_json(
            &e.p.inv,
            &format!("/transfers/{id}/approve"),
            json!({"as": "investigator"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{r}");
    // The requester never checks.
    let (s, r) = vote(
        &e,
        &e.p.researcher,
        &id,
        "tables/counts.csv",
        "investigator",
        "approve",
        "",
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{r}");
    // Votes are per output file; supporting files are not voted on.
    let (s, r) = vote(
        &e,
        &e.p.inv,
        &id,
        "supporting/raw.csv",
        "investigator",
        "approve",
        "",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{r}");
    // Request-changes needs a comment.
    let (s, r) = vote(
        &e,
        &e.p.inv,
        &id,
        "tables/counts.csv",
        "investigator",
        "request-changes",
        "",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{r}");

    // Blinded review: the investigator's vote is hidden from the provider until the provider
    // has submitted their own review.
    let (s, r) = vote(
        &e,
        &e.p.inv,
        &id,
        "tables/counts.csv",
        "investigator",
        "approve",
        "fine",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let prov_view = e.t.show(&e.p.prov, &id).await;
    assert!(prov_view["blinded"].as_bool().unwrap());
    assert_eq!(
        prov_view["votes"].as_array().unwrap().len(),
        0,
        "{prov_view}"
    );
    let inv_view = e.t.show(&e.p.inv, &id).await;
    assert_eq!(inv_view["votes"].as_array().unwrap().len(), 1, "{inv_view}");
    // A review with a file not voted on is refused, naming it.
    let (s, r) = review(&e, &e.p.inv, &id, "investigator").await;
    assert_eq!(s, StatusCode::CONFLICT, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("tables/figure.txt"),
        "{r}"
    );

    assign_referee(&e, &id).await;
    approve_all(&e, &id, &[(&e.p.inv, "investigator")]).await;
    // The investigator's review is in; the provider, still blind, sees neither its outcome
    // nor the approval it made.
    let prov_view = e.t.show(&e.p.prov, &id).await;
    assert_eq!(
        prov_view["reviews"][0]["outcome"], "submitted",
        "{prov_view}"
    );
    assert!(
        !prov_view["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["user"] == "inv"),
        "{prov_view}"
    );
    let pm_view = e.t.show(&e.p.pm, &id).await;
    assert!(pm_view["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["user"] == "inv"));
    approve_all(&e, &id, &[(&e.p.prov, "provider"), (&e.referee, "referee")]).await;
    let v = e.t.wait_for_state(&e.p.pm, &id, "released").await;
    // Once the outcome is in, everyone's votes are visible to the checkers.
    let prov_view = e.t.show(&e.p.prov, &id).await;
    assert!(
        prov_view["votes"].as_array().unwrap().len() >= 6,
        "{prov_view}"
    );

    // The package: the output files alone, read-only, with the output-checking record.
    let loc = PathBuf::from(v["release"]["location"].as_str().unwrap());
    let loc = if loc.is_absolute() {
        loc
    } else {
        e.t.data_dir().join("volumes").join(loc)
    };
    let mut names: Vec<String> = walk(&loc);
    names.sort();
    assert_eq!(
        names,
        vec![
            "disclosure-record.json",
            "manifest-sha256.txt",
            "tables/counts.csv",
            "tables/figure.txt",
        ]
    );
    let check = std::process::Command::new("sha256sum")
        .arg("-c")
        .arg("manifest-sha256.txt")
        .current_dir(&loc)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let record: Value =
        serde_json::from_slice(&std::fs::read(loc.join("disclosure-record.json")).unwrap())
            .unwrap();
    assert_eq!(record["reviews"].as_array().unwrap().len(), 3, "{record}");
    assert_eq!(record["provenance"]["code"][0]["path"], "analysis.py");
    assert!(
        record["disclosure"]["rules"]["threshold"].is_number(),
        "{record}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(loc.join("tables/counts.csv"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o222, 0, "released files are read-only");

    // Collection by the named recipient only.
    let (s, r) =
        e.t.post_json(
            &e.p.pm,
            &format!("/egress/{id}/collection-tokens"),
            json!({"recipient": "outsider"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{r}");
    let tok = collection_token(&e, &id, json!({"recipient": "recip", "ttl": "1h"})).await;
    let pkg: Value = get(&e, &tok, "/collect").await.json().await.unwrap();
    assert_eq!(pkg["files"].as_array().unwrap().len(), 2, "{pkg}");
    // Whole file, with Repr-Digest.
    let r = get(&e, &tok, "/collect/files/tables/counts.csv").await;
    assert_eq!(r.status(), StatusCode::OK);
    let digest = r.headers()["repr-digest"].to_str().unwrap().to_owned();
    let body = r.bytes().await.unwrap();
    assert_eq!(&body[..], SAFE_TABLE.as_bytes());
    use base64::Engine;
    let sha = digest_with("sha256sum", &e.out.join("tables/counts.csv"));
    let b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(&sha).unwrap());
    assert_eq!(digest, format!("sha-256=:{b64}:"));
    // A range resumes: the rest of the file, byte for byte.
    let r = get_from(&e, &tok, "/collect/files/tables/counts.csv", 10).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 10-{}/{}", SAFE_TABLE.len() - 1, SAFE_TABLE.len()).as_str()
    );
    assert_eq!(&r.bytes().await.unwrap()[..], &SAFE_TABLE.as_bytes()[10..]);
    let r =
        e.t.http
            .get(e.t.api("/collect/files/tables/counts.csv"))
            .bearer_auth(&tok)
            .header("range", "bytes=9999-")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    // Supporting and code files are never collected.
    let r = get(&e, &tok, "/collect/files/supporting/raw.csv").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = get(&e, &tok, "/collect/files/analysis.py").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // The zip stream, read by Python's zipfile, with the digests of the manifest.
    let zip = get(&e, &tok, "/collect/package.zip").await;
    assert_eq!(zip.status(), StatusCode::OK);
    let zip_path = e.t.data_dir().join("pkg.zip");
    std::fs::write(&zip_path, zip.bytes().await.unwrap()).unwrap();
    let py = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, zipfile, hashlib\n\
             z = zipfile.ZipFile(sys.argv[1])\n\
             assert z.testzip() is None\n\
             for n in sorted(z.namelist()):\n    print(hashlib.sha256(z.read(n)).hexdigest(), n)\n",
        )
        .arg(&zip_path)
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let listed = String::from_utf8(py.stdout).unwrap();
    for f in ["tables/counts.csv", "tables/figure.txt"] {
        let want = digest_with("sha256sum", &e.out.join(f));
        assert!(listed.contains(&format!("{want} {f}")), "{listed}");
    }
    assert!(listed.contains("manifest-sha256.txt") && listed.contains("disclosure-record.json"));
    assert!(
        !listed.contains("raw.csv") && !listed.contains("analysis.py"),
        "{listed}"
    );
    // The tar stream, read by GNU tar.
    let tar = get(&e, &tok, "/collect/package.tar").await;
    let tar_path = e.t.data_dir().join("pkg.tar");
    std::fs::write(&tar_path, tar.bytes().await.unwrap()).unwrap();
    let list = run(std::process::Command::new("tar").arg("-tf").arg(&tar_path));
    assert!(
        list.contains("tables/counts.csv") && !list.contains("raw.csv"),
        "{list}"
    );

    // `airlock collect`: resumable, every digest checked.
    let dest = e.t.data_dir().join("collected");
    let out = e.t.cli(
        None,
        &[
            "collect",
            "--token",
            &tok,
            "--output",
            dest.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(dest.join("tables/counts.csv")).unwrap(),
        SAFE_TABLE.as_bytes()
    );

    // What a collection token cannot do, and who cannot collect.
    let r =
        e.t.http
            .put(e.t.api(&format!("/transfers/{id}/files/x.txt")))
            .bearer_auth(&tok)
            .body("x")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (s, _) =
        e.t.post_json(
            &tok,
            &format!("/transfers/{id}/reject"),
            json!({"comment": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = e.t.get_json(&tok, &format!("/transfers/{id}")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    for staff in [&e.p.pm, &e.recipient] {
        assert_eq!(
            get(&e, staff, "/collect").await.status(),
            StatusCode::FORBIDDEN
        );
    }
    // The whole story is on the request: who collected what.
    let v = e.t.show(&e.p.pm, &id).await;
    let collections = v["collections"].as_array().unwrap();
    assert!(
        collections
            .iter()
            .any(|c| c["what"] == "package.zip" && c["recipient"] == "recip"),
        "{v}"
    );
    assert!(
        collections.iter().all(|c| c["client"] == "127.0.0.1"),
        "{v}"
    );

    // Revocation cuts access at once.
    let (s, r) =
        e.t.post_json(
            &e.p.pm,
            &format!("/egress/{id}/collection-tokens/revoke"),
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        get(&e, &tok, "/collect").await.status(),
        StatusCode::UNAUTHORIZED
    );
    e.t.stop().await;
}

/// Every file under `root`, relative, with `/`.
fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collection_tokens_expire_are_bound_to_ranges_and_counts_and_cannot_be_forged() {
    let e = setup(1).await;
    let id = submitted(&e).await;
    approve_all(
        &e,
        &id,
        &[(&e.p.inv, "investigator"), (&e.p.prov, "provider")],
    )
    .await;
    e.t.wait_for_state(&e.p.pm, &id, "released").await;

    // Count: one download of a file from its first byte; the second is refused everywhere.
    let tok = collection_token(&e, &id, json!({"recipient": "recip", "max_downloads": 1})).await;
    assert_eq!(
        get(&e, &tok, "/collect/files/tables/counts.csv")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        get(&e, &tok, "/collect/files/tables/counts.csv")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&e, &tok, "/collect").await.status(),
        StatusCode::UNAUTHORIZED
    );
    // CIDR: bound to a range the test's address is outside.
    let tok = collection_token(
        &e,
        &id,
        json!({"recipient": "recip", "cidrs": ["10.0.0.0/8"]}),
    )
    .await;
    let r = get(&e, &tok, "/collect").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let tok = collection_token(
        &e,
        &id,
        json!({"recipient": "recip", "cidrs": ["127.0.0.0/8"]}),
    )
    .await;
    assert_eq!(get(&e, &tok, "/collect").await.status(), StatusCode::OK);
    // Expiry; and a ttl beyond the policy's cap is refused.
    let (s, r) =
        e.t.post_json(
            &e.p.pm,
            &format!("/egress/{id}/collection-tokens"),
            json!({"recipient": "recip", "ttl": "400d"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{r}");
    let tok = collection_token(&e, &id, json!({"recipient": "recip", "ttl": "1s"})).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        get(&e, &tok, "/collect").await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Forged: the same claims signed with another key.
    let good = collection_token(&e, &id, json!({"recipient": "recip"})).await;
    let claims = airlock::auth::peek_claims(&good).unwrap();
    let other = airlock::auth::Keys::from_secret(b"not the server's key");
    let (_, forged, _) = other.mint_collect(
        claims.sub.parse().unwrap(),
        std::time::Duration::from_secs(600),
    );
    assert_eq!(
        get(&e, &forged, "/collect").await.status(),
        StatusCode::UNAUTHORIZED
    );
    // An upload token cannot collect.
    let up_id = e.t.open_transfer(&e.p.pm, "data-ingress", "prov").await;
    let up = e.t.upload_token(&e.p.pm, &up_id, Value::Null).await;
    assert_eq!(
        get(&e, &up, "/collect").await.status(),
        StatusCode::FORBIDDEN
    );
    // Revoking the release cuts every token at once.
    let (s, r) =
        e.t.post_json(
            &e.p.pm,
            &format!("/transfers/{id}/revoke"),
            json!({"reason": "recalled"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        get(&e, &good, "/collect").await.status(),
        StatusCode::UNAUTHORIZED
    );
    e.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_return_voids_the_votes_a_changed_file_is_flagged_and_bad_requests_are_refused() {
    let e = setup(1).await;
    // Refusals, each naming what is wrong, and nothing made.
    outputs(&e.out);
    std::os::unix::fs::symlink("/etc/passwd", e.out.join("tables/passwd")).unwrap();
    let (s, v) = create(&e, request()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("tables/passwd"),
        "{v}"
    );
    std::fs::remove_file(e.out.join("tables/passwd")).unwrap();
    let mut no_code = request();
    no_code["files"] = json!([{"path": "tables", "role": "output"}]);
    let (s, v) = create(&e, no_code).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("code"), "{v}");
    let mut outside = request();
    outside["files"][0]["path"] = json!("../../other/ws/output");
    let (s, v) = create(&e, outside).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let mut no_context = request();
    no_context["context"] = json!(" ");
    assert_eq!(create(&e, no_context).await.0, StatusCode::BAD_REQUEST);
    let (s, _) = e.t.post_json(&e.p.pm, "/egress", request()).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "only a researcher makes a request"
    );
    let (s, v) =
        e.t.post_json(
            &e.p.pm,
            "/transfers",
            json!({"workspace": "proj/ws", "kind": "egress", "uploader": "res"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    let id = submitted(&e).await;
    // Changed on disk after submit: flagged, the pinned copy unchanged.
    std::fs::write(e.out.join("tables/counts.csv"), "region,cases\nnorth,3\n").unwrap();
    let v = e.t.show(&e.p.inv, &id).await;
    let f = v["pinned"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "tables/counts.csv")
        .unwrap()
        .clone();
    assert!(
        f["changed_on_disk"]
            .as_str()
            .unwrap()
            .contains("changed on disk since submit"),
        "{f}"
    );
    let r = get(
        &e,
        &e.p.inv,
        &format!("/transfers/{id}/files/tables/counts.csv"),
    )
    .await;
    assert_eq!(r.bytes().await.unwrap(), SAFE_TABLE.as_bytes());

    // Request-changes on a file returns the request, with the comment.
    let (s, r) = vote(
        &e,
        &e.p.inv,
        &id,
        "tables/counts.csv",
        "investigator",
        "request-changes",
        "round the counts",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let (s, r) = vote(
        &e,
        &e.p.inv,
        &id,
        "tables/figure.txt",
        "investigator",
        "approve",
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    acknowledge_all(&e, &e.p.inv, &id, "investigator").await;
    // The review's own comment on the request is for the checkers only.
    let (s, r) =
        e.t.post_json(
            &e.p.inv,
            &format!("/egress/{id}/review"),
            json!({"as": "investigator", "comment": "suspect a linkage", "visibility": "checkers"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["state"], "returned", "{r}");
    assert_eq!(r["reviews"][0]["comment"], "suspect a linkage", "{r}");
    let seen = e.t.show(&e.p.researcher, &id).await;
    assert!(!seen.to_string().contains("suspect a linkage"), "{seen}");
    assert!(
        r["state_reason"]
            .as_str()
            .unwrap()
            .contains("round the counts"),
        "{r}"
    );
    // The researcher sees the shared comment once the outcome is in.
    let v = e.t.show(&e.p.researcher, &id).await;
    assert!(
        v["votes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["comment"] == "round the counts"),
        "{v}"
    );

    // Resubmitted: a new snapshot, round 2, every earlier vote void.
    let (s, r) =
        e.t.post_json(
            &e.p.researcher,
            &format!("/egress/{id}/submit"),
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let v = e.t.wait_for_state(&e.p.inv, &id, "in_review").await;
    assert_eq!(v["round"], 2);
    assert_eq!(v["votes"].as_array().unwrap().len(), 0, "{v}");
    let f = v["pinned"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "tables/counts.csv")
        .unwrap()
        .clone();
    assert_eq!(
        f["sha256"],
        digest_with("sha256sum", &e.out.join("tables/counts.csv")).as_str()
    );
    // Withdrawn before the outcome: cancelled, with the reason.
    let (s, r) =
        e.t.post_json(
            &e.p.researcher,
            &format!("/egress/{id}/withdraw"),
            json!({"reason": "wrong table"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["state"], "cancelled");
    assert!(r["state_reason"].as_str().unwrap().contains("wrong table"));
    e.t.stop().await;
}

/// A table with one small cell (row 2, column 3), a note with an email address and a phone
/// number, and an image.
const SMALL_TABLE: &str = "region,cases,deaths\nnorth,120,40\nsouth,95,3\neast,230,55\n";
const EMAIL: &str = "jane.doe@example.org";
const NOTES: &str = "Summary of the run.\nContact jane.doe@example.org for the raw data.\n";
const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

fn disclosive(out: &Path) {
    write(out, "t/small.csv", SMALL_TABLE.as_bytes());
    write(out, "t/notes.txt", NOTES.as_bytes());
    write(out, "t/figure.png", PNG);
    write(out, "analysis.py", SCRIPT.as_bytes());
}

fn disclosive_request() -> Value {
    json!({
        "workspace": "proj/ws",
        "context": "Counts by region",
        "files": [{"path": "t", "role": "output"}, {"path": "analysis.py", "role": "code"}],
        "recipients": ["recip"],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disclosure_findings_name_file_rule_and_cell_never_the_value_and_need_acknowledging() {
    let e = setup(1).await;
    disclosive(&e.out);
    let (s, v) = create(&e, disclosive_request()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let (s, v) =
        e.t.post_json(
            &e.p.researcher,
            &format!("/egress/{id}/submit"),
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let v = e.t.wait_for_state(&e.p.inv, &id, "in_review").await;
    let findings = v["disclosure"]["findings"].as_array().unwrap().clone();
    let find = |path: &str, rule: &str| {
        findings
            .iter()
            .find(|f| f["path"] == path && f["rule"] == rule)
            .unwrap_or_else(|| panic!("no {rule} finding in {path}: {findings:?}"))
            .clone()
    };
    let cell = find("t/small.csv", "small-cell");
    assert_eq!(cell["status"], "fail");
    assert_eq!(
        cell["location"],
        json!({"kind": "cell", "row": 2, "col": 3})
    );
    let mail = find("t/notes.txt", "email");
    assert_eq!(mail["location"]["kind"], "line");
    assert_eq!(mail["location"]["line"], 2);
    let image = find("t/figure.png", "unscannable");
    assert_eq!(image["status"], "review");
    // The code file is checked too; the table's other cells are not flagged.
    assert!(
        !findings
            .iter()
            .any(|f| f["path"] == "t/small.csv" && f["rule"] != "small-cell"),
        "{findings:?}"
    );
    // Never the value: not in a message, nor in the audit log (which feeds the webhooks).
    for f in &findings {
        let m = f["message"].as_str().unwrap();
        assert!(!m.contains(EMAIL) && !m.contains(",3"), "{m}");
    }
    let export = e.t.cli(None, &["audit", "export"]);
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let log = String::from_utf8_lossy(&export.stdout);
    assert!(
        log.contains("egress.disclosure_checked"),
        "the checks are audited"
    );
    assert!(!log.contains(EMAIL), "the audit log holds a flagged value");
    // ACRO-compatible results.json.
    let (s, r) =
        e.t.get_json(&e.p.inv, &format!("/egress/{id}/results.json"))
            .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["results"]["t/small.csv"]["status"], "fail", "{r}");
    let cells = &r["results"]["t/small.csv"]["files"][0]["sdc"]["cells"]["threshold"];
    assert_eq!(cells, &json!([[1, 2]]), "{r}");
    // Advice, not approval: a review waits until the checker has acknowledged every finding.
    for p in ["t/small.csv", "t/notes.txt", "t/figure.png"] {
        let (s, r) = vote(&e, &e.p.inv, &id, p, "investigator", "approve", "").await;
        assert_eq!(s, StatusCode::OK, "{r}");
    }
    let (s, r) = review(&e, &e.p.inv, &id, "investigator").await;
    assert_eq!(s, StatusCode::CONFLICT, "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains(cell["id"].as_str().unwrap()),
        "{r}"
    );
    acknowledge_all(&e, &e.p.inv, &id, "investigator").await;
    let (s, r) =
        e.t.post_json(
            &e.p.inv,
            &format!("/egress/{id}/acknowledge"),
            json!({"finding": cell["id"], "as": "investigator"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "acknowledged twice: {r}");
    let (s, r) = review(&e, &e.p.inv, &id, "investigator").await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let v = e.t.show(&e.p.pm, &id).await;
    assert_eq!(
        v["state"], "in_review",
        "the provider is still awaited: {v}"
    );
    // Any checker may reject, with a reason (final).
    let (s, r) =
        e.t.post_json(
            &e.p.prov,
            &format!("/transfers/{id}/reject"),
            json!({"as": "provider", "comment": "identifiable"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["state"], "rejected");
    e.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policy_that_blocks_findings_blocks_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("strict.toml");
    let text = std::fs::read_to_string("policies/tier1.toml").unwrap()
        + "\n[egress]\nfindings = \"block\"\n\n[egress.disclosure]\nthreshold = 7\n";
    std::fs::write(&policy, text).unwrap();
    let e = setup(1).await;
    admin::create_workspace(&e.t.app, "proj", "strict", 1, Some(&policy))
        .await
        .unwrap();
    let out = e.t.data_dir().join("volumes/proj/strict/output");
    disclosive(&out);
    let mut req = disclosive_request();
    req["workspace"] = json!("proj/strict");
    let (s, v) = create(&e, req).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    e.t.post_json(
        &e.p.researcher,
        &format!("/egress/{id}/submit"),
        Value::Null,
    )
    .await;
    let v = e.t.wait_for_state(&e.p.researcher, &id, "blocked").await;
    assert!(
        v["state_reason"].as_str().unwrap().contains("disclosure"),
        "{v}"
    );
    e.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_contract_from_workspace_show_to_collect() {
    let e = setup(1).await;
    let show =
        e.t.cli(None, &["admin", "workspace", "show", "proj/ws", "--json"]);
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    let ws: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(
        PathBuf::from(ws["volumes"]["output"].as_str().unwrap()),
        e.out
    );
    for k in ["data", "software"] {
        assert!(
            ws["volumes"][k]
                .as_str()
                .unwrap()
                .ends_with(&format!("proj/ws/{k}")),
            "{ws}"
        );
    }
    outputs(&e.out);
    let ok = |o: std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let id = ok(e.t.cli(
        Some(&e.p.researcher),
        &[
            "egress",
            "create",
            "--workspace",
            "proj/ws",
            "--context",
            "counts by region",
            "--code",
            "analysis.py",
            "--supporting",
            "supporting/raw.csv",
            "--recipient",
            "recip",
            // A folder as a shell's completion types it, with its slash.
            "tables/",
        ],
    ))
    .trim()
    .to_owned();
    ok(e.t.cli(Some(&e.p.researcher), &["egress", "submit", &id]));
    e.t.wait_for_state(&e.p.researcher, &id, "in_review").await;
    // `transfer show --json`: kind egress, files[] with their roles, the disclosure part.
    let v: Value = serde_json::from_str(&ok(e
        .t
        .cli(Some(&e.p.inv), &["transfer", "show", &id, "--json"])))
    .unwrap();
    assert_eq!(v["kind"], "egress");
    let roles: Vec<(&str, &str)> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["role"].as_str().unwrap()))
        .collect();
    assert!(
        roles.contains(&("supporting/raw.csv", "supporting")),
        "{roles:?}"
    );
    assert!(roles.contains(&("analysis.py", "code")), "{roles:?}");
    assert!(v["disclosure"]["findings"].is_array(), "{v}");
    let text = ok(e.t.cli(Some(&e.p.inv), &["transfer", "show", &id]));
    assert!(
        text.contains("supporting/raw.csv  (supporting)") && text.contains("recipients recip"),
        "{text}"
    );
    for (tok, role) in [(&e.p.inv, "investigator"), (&e.p.prov, "provider")] {
        for f in ["tables/counts.csv", "tables/figure.txt"] {
            ok(e.t.cli(
                Some(tok),
                &["egress", "vote", &id, f, "--as", role, "--approve"],
            ));
        }
        let v = e.t.show(tok, &id).await;
        for f in v["disclosure"]["findings"].as_array().unwrap() {
            ok(e.t.cli(
                Some(tok),
                &[
                    "egress",
                    "acknowledge",
                    &id,
                    "--as",
                    role,
                    "--finding",
                    f["id"].as_str().unwrap(),
                ],
            ));
        }
        ok(e.t.cli(Some(tok), &["egress", "review", &id, "--as", role]));
    }
    e.t.wait_for_state(&e.p.pm, &id, "released").await;
    // The released package verifies like any release.
    let verify = e.t.cli(None, &["verify", &id]);
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let tok = ok(e.t.cli(
        Some(&e.p.pm),
        &[
            "egress",
            "token",
            &id,
            "--recipient",
            "recip",
            "--ttl",
            "2h",
            "--max-downloads",
            "5",
        ],
    ))
    .trim()
    .to_owned();
    let dest = e.t.data_dir().join("got");
    ok(e.t.cli(
        None,
        &[
            "collect",
            "--token",
            &tok,
            "--output",
            dest.to_str().unwrap(),
        ],
    ));
    for f in ["tables/counts.csv", "tables/figure.txt"] {
        assert_eq!(
            digest_with("sha256sum", &dest.join(f)),
            digest_with("sha256sum", &e.out.join(f))
        );
    }
    assert!(!dest.join("supporting").exists());
    // A resumed collect: a partial file is completed with a range, and verified.
    std::fs::remove_file(dest.join("tables/counts.csv")).unwrap();
    std::fs::write(
        dest.join("tables/counts.csv.part"),
        &SAFE_TABLE.as_bytes()[..7],
    )
    .unwrap();
    ok(e.t.cli(
        None,
        &[
            "collect",
            "--token",
            &tok,
            "--output",
            dest.to_str().unwrap(),
        ],
    ));
    assert_eq!(
        std::fs::read(dest.join("tables/counts.csv")).unwrap(),
        SAFE_TABLE.as_bytes()
    );
    // A corrupt partial file fails the digest check: exit 1, named.
    std::fs::remove_file(dest.join("tables/counts.csv")).unwrap();
    std::fs::write(dest.join("tables/counts.csv.part"), b"XXXXXXX").unwrap();
    let bad = e.t.cli(
        None,
        &[
            "collect",
            "--token",
            &tok,
            "--output",
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("tables/counts.csv"));
    // The zip form.
    let zip = e.t.data_dir().join("p.zip");
    ok(e.t.cli(
        None,
        &["collect", "--token", &tok, "--zip", zip.to_str().unwrap()],
    ));
    assert!(std::fs::metadata(&zip).unwrap().len() > 0);
    e.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_derived_workspace_gets_the_outputs_read_only_with_provenance_under_both_policies() {
    let e = setup(1).await;
    // The target: a tier 2 workspace of the same project, whose egress policy also asks a
    // Referee: the stricter of the two applies.
    admin::create_workspace(&e.t.app, "proj", "lower", 2, None)
        .await
        .unwrap();
    outputs(&e.out);
    let mut req = request();
    req["recipients"] = json!([]);
    req["target_workspace"] = json!("proj/lower");
    let (s, v) = create(&e, req.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    req["recipients"] = json!(["recip"]);
    assert_eq!(
        create(&e, req).await.0,
        StatusCode::BAD_REQUEST,
        "recipients or a target, not both"
    );
    e.t.post_json(
        &e.p.researcher,
        &format!("/egress/{id}/submit"),
        Value::Null,
    )
    .await;
    let v = e.t.wait_for_state(&e.p.inv, &id, "in_review").await;
    let mut roles: Vec<&str> = v["awaiting"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["role"].as_str().unwrap())
        .collect();
    roles.sort();
    assert_eq!(roles, vec!["investigator", "provider", "referee"], "{v}");
    let v = release_by_every_checker(&e, &id).await;
    let loc = PathBuf::from(v["release"]["location"].as_str().unwrap());
    let want = e.t.data_dir().join("volumes/proj/lower/data").join(&id);
    assert_eq!(loc, want, "{v}");
    assert_eq!(
        std::fs::read(loc.join("tables/counts.csv")).unwrap(),
        SAFE_TABLE.as_bytes()
    );
    assert!(!loc.join("supporting").exists() && !loc.join("analysis.py").exists());
    let record: Value =
        serde_json::from_slice(&std::fs::read(loc.join("disclosure-record.json")).unwrap())
            .unwrap();
    assert_eq!(record["provenance"]["origin_workspace"], "proj/ws");
    assert_eq!(record["provenance"]["request"], id.as_str());
    assert_eq!(
        record["provenance"]["code"][0]["sha256"],
        digest_with("sha256sum", &e.out.join("analysis.py")).as_str()
    );
    assert_eq!(record["target_workspace"], "proj/lower");
    // No recipient: nothing to collect.
    let (s, _) =
        e.t.post_json(
            &e.p.pm,
            &format!("/egress/{id}/collection-tokens"),
            json!({"recipient": "recip"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    e.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tier_4_egress_needs_a_counter_approved_referee_and_a_programme_manager_and_exports_as_a_bag(
) {
    let e = setup(4).await;
    admin::add_user(&e.t.app, "progm", &[Role::ProgrammeManager])
        .await
        .unwrap();
    let progm = admin::staff_token(&e.t.app, "progm", None).await.unwrap();
    let id = submitted(&e).await;
    // A draft can be edited only before submit; this one is in review.
    let mut edit = request();
    edit.as_object_mut().unwrap().remove("workspace");
    let (s, _) =
        e.t.http
            .put(e.t.api(&format!("/egress/{id}")))
            .bearer_auth(&e.p.researcher)
            .json(&edit)
            .send()
            .await
            .map(|r| (r.status(), ()))
            .unwrap();
    assert_eq!(s, StatusCode::CONFLICT);
    assign_referee(&e, &id).await;
    // At tier 3+ the referee waits for the Dataset Provider Representative.
    let (s, r) = vote(
        &e,
        &e.referee,
        &id,
        "tables/counts.csv",
        "referee",
        "approve",
        "",
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{r}");
    let (s, r) =
        e.t.post_json(
            &e.p.prov,
            &format!("/transfers/{id}/referees/approve"),
            json!({"user": "ref"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    approve_all(
        &e,
        &id,
        &[
            (&e.p.inv, "investigator"),
            (&e.p.prov, "provider"),
            (&e.referee, "referee"),
        ],
    )
    .await;
    let v = e.t.show(&e.p.pm, &id).await;
    assert_eq!(v["state"], "in_review", "{v}");
    assert_eq!(v["awaiting"][0]["role"], "programme-manager", "{v}");
    approve_all(&e, &id, &[(&progm, "programme-manager")]).await;
    e.t.wait_for_state(&e.p.pm, &id, "released").await;
    // The package exports as a BagIt bag: the outputs and the record, never the rest.
    let bag = e.t.data_dir().join("bag");
    let out =
        e.t.cli(None, &["bag", &id, "--output", bag.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = std::process::Command::new("python3")
        .args(["-m", "bagit", "--validate"])
        .arg(&bag)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    assert!(bag.join("data/tables/counts.csv").exists());
    assert!(bag.join("data/disclosure-record.json").exists());
    assert!(!bag.join("data/supporting").exists() && !bag.join("data/analysis.py").exists());
    e.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_return_to_provider_goes_to_providers_and_is_collected_only_from_an_ip_range_in_a_window()
{
    let e = setup(1).await;
    admin::add_user(&e.t.app, "progm", &[Role::ProgrammeManager])
        .await
        .unwrap();
    let progm = admin::staff_token(&e.t.app, "progm", None).await.unwrap();
    // Another folder as the output volume.
    let elsewhere = e.t.data_dir().join("analysis-out");
    std::fs::create_dir_all(&elsewhere).unwrap();
    admin::create_workspace(&e.t.app, "proj", "ret", 1, None)
        .await
        .unwrap();
    admin::set_output_volume(&e.t.app, "proj", "ret", &elsewhere)
        .await
        .unwrap();
    outputs(&elsewhere);
    let mut req = request();
    req["workspace"] = json!("proj/ret");
    req["kind"] = json!("return-to-provider");
    // The recipients are the data's providers.
    let (s, v) = create(&e, req.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    req["recipients"] = json!(["prov"]);
    let (s, v) = create(&e, req).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["kind"], "return-to-provider");
    let id = v["id"].as_str().unwrap().to_owned();
    let (s, v) =
        e.t.post_json(
            &e.p.researcher,
            &format!("/egress/{id}/submit"),
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let v = e.t.wait_for_state(&e.p.researcher, &id, "in_review").await;
    assert_eq!(
        v["pinned"][2]["sha256"],
        digest_with("sha256sum", &elsewhere.join("tables/counts.csv")).as_str(),
        "{v}"
    );
    // Provider Rep + Programme Manager, as [approvals.return-to-provider] says.
    approve_all(
        &e,
        &id,
        &[(&e.p.prov, "provider"), (&progm, "programme-manager")],
    )
    .await;
    e.t.wait_for_state(&e.p.pm, &id, "released").await;
    for body in [
        json!({"recipient": "prov", "ttl": "2h"}),
        json!({"recipient": "prov", "cidrs": ["127.0.0.0/8"]}),
    ] {
        let (s, r) =
            e.t.post_json(&e.p.pm, &format!("/egress/{id}/collection-tokens"), body)
                .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{r}");
        assert!(r["error"].as_str().unwrap().contains("IP ranges"), "{r}");
    }
    let tok = collection_token(
        &e,
        &id,
        json!({"recipient": "prov", "ttl": "2h", "cidrs": ["127.0.0.0/8"]}),
    )
    .await;
    let r = get(&e, &tok, "/collect/files/tables/counts.csv").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(&r.bytes().await.unwrap()[..], SAFE_TABLE.as_bytes());
    e.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acro_results_and_checksums_among_the_supporting_files_are_verified_against_the_pinned_files(
) {
    let e = setup(1).await;
    let table = "sex,n\nf,120\nm,95\n";
    write(&e.out, "acro/output_0.csv", table.as_bytes());
    write(&e.out, "acro/output_1.csv", table.as_bytes());
    write(&e.out, "analysis.py", SCRIPT.as_bytes());
    let results = json!({
        "version": "0.4.8",
        "results": {
            "output_0": {"uid": "output_0", "status": "pass", "type": "table",
                "files": [{"name": "output_0.csv", "sdc": {}}], "exception": ""},
            "output_1": {"uid": "output_1", "status": "pass", "type": "table",
                "files": [{"name": "output_1.csv", "sdc": {}}], "exception": ""},
        }
    });
    write(&e.out, "acro/results.json", results.to_string().as_bytes());
    let right = digest_with("sha256sum", &e.out.join("acro/output_0.csv"));
    write(&e.out, "acro/checksums/output_0.csv.txt", right.as_bytes());
    // ACRO checked another output_1.csv than the one in the request.
    write(
        &e.out,
        "acro/checksums/output_1.csv.txt",
        "ab".repeat(32).as_bytes(),
    );
    let (s, v) = create(
        &e,
        json!({
            "workspace": "proj/ws", "context": "ACRO-checked tables",
            "files": [
                {"path": "acro/output_0.csv", "role": "output"},
                {"path": "acro/output_1.csv", "role": "output"},
                {"path": "acro/results.json", "role": "supporting"},
                {"path": "acro/checksums", "role": "supporting"},
                {"path": "analysis.py", "role": "code"},
            ],
            "recipients": ["recip"],
        }),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    e.t.post_json(
        &e.p.researcher,
        &format!("/egress/{id}/submit"),
        Value::Null,
    )
    .await;
    let v = e.t.wait_for_state(&e.p.inv, &id, "in_review").await;
    let acro = &v["acro"][0];
    assert_eq!(acro["path"], "acro/results.json", "{v}");
    let checks = acro["checksums"].as_array().unwrap();
    let ok = |f: &str| checks.iter().find(|c| c["file"] == f).unwrap()["matches"].clone();
    assert_eq!(ok("acro/output_0.csv"), json!(true), "{acro}");
    assert_eq!(ok("acro/output_1.csv"), json!(false), "{acro}");
    assert_eq!(acro["outputs"].as_array().unwrap().len(), 2, "{acro}");
    let finding = v["disclosure"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "acro-checksum")
        .unwrap_or_else(|| panic!("no acro-checksum finding: {v}"))
        .clone();
    assert_eq!(finding["path"], "acro/output_1.csv");
    assert_eq!(finding["status"], "fail");
    e.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_output_released_before_shows_its_checkers_which_cells_changed() {
    let e = setup(1).await;
    let first = submitted(&e).await;
    approve_all(
        &e,
        &first,
        &[(&e.p.inv, "investigator"), (&e.p.prov, "provider")],
    )
    .await;
    e.t.wait_for_state(&e.p.pm, &first, "released").await;
    // The same table again, one cell different: a differencing risk across the two releases.
    let changed = SAFE_TABLE.replace("north,120,340", "north,121,340");
    std::fs::write(e.out.join("tables/counts.csv"), &changed).unwrap();
    let (s, v) = create(&e, request()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    e.t.post_json(
        &e.p.researcher,
        &format!("/egress/{id}/submit"),
        Value::Null,
    )
    .await;
    let v = e.t.wait_for_state(&e.p.inv, &id, "in_review").await;
    let diffs = v["released_before"].as_array().unwrap();
    let d = diffs
        .iter()
        .find(|d| d["path"] == "tables/counts.csv")
        .unwrap();
    assert_eq!(d["released_by"], first.as_str());
    assert_eq!(d["same_bytes"], false);
    assert_eq!(d["cells"], json!([[2, 2]]), "{d}");
    let same = diffs
        .iter()
        .find(|d| d["path"] == "tables/figure.txt")
        .unwrap();
    assert_eq!(same["same_bytes"], true);
    assert_eq!(v["past_requests"][0]["id"], first.as_str());
    // The researcher is not shown the checkers' comparison.
    let v = e.t.show(&e.p.researcher, &id).await;
    assert!(v.get("released_before").is_none(), "{v}");
    e.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_requests_with_findings_in_one_workspace_each_reach_review_with_their_own_findings() {
    let e = setup(1).await;
    disclosive(&e.out);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (s, v) = create(&e, disclosive_request()).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        e.t.post_json(
            &e.p.researcher,
            &format!("/egress/{id}/submit"),
            Value::Null,
        )
        .await;
        let v = e.t.wait_for_state(&e.p.inv, &id, "in_review").await;
        assert!(
            !v["disclosure"]["findings"].as_array().unwrap().is_empty(),
            "{v}"
        );
        ids.push(id);
    }
    // Acknowledging a finding of one request leaves the other's with the same id open.
    acknowledge_all(&e, &e.p.inv, &ids[0], "investigator").await;
    let v = e.t.show(&e.p.inv, &ids[1]).await;
    for f in v["disclosure"]["findings"].as_array().unwrap() {
        assert!(f["acknowledged_by"].as_array().unwrap().is_empty(), "{f}");
    }
    e.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn egress_on_s3_is_published_to_the_bucket_and_collected_through_airlock_with_a_range() {
    let g = common::garage::Garage::start();
    let e = setup_with(2, |s| g.apply(s)).await;
    let id = submitted(&e).await;
    let v = release_by_every_checker(&e, &id).await;
    // The package lies in the egress volume's prefix of the bucket, published by its manifest.
    let dest = format!("egress/proj/ws/egress/{id}");
    assert_eq!(v["release"]["location"], format!("s3://airlock/{dest}/"));
    let mut names = g.ls(&dest);
    names.sort();
    assert_eq!(
        names,
        vec![
            "disclosure-record.json",
            "manifest-sha256.txt",
            "tables/counts.csv",
            "tables/figure.txt",
        ]
    );
    assert!(g.cat(&format!("{dest}.manifest.jsonl")).is_some());
    assert!(g
        .ls(&format!("egress/proj/ws/egress/{id}/supporting"))
        .is_empty());

    // Collected through airlock (no presigned URL), whole and from an offset.
    let tok = collection_token(&e, &id, json!({"recipient": "recip", "ttl": "1h"})).await;
    let r = get(&e, &tok, "/collect/files/tables/counts.csv").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(&r.bytes().await.unwrap()[..], SAFE_TABLE.as_bytes());
    let r = get_from(&e, &tok, "/collect/files/tables/counts.csv", 10).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 10-{}/{}", SAFE_TABLE.len() - 1, SAFE_TABLE.len()).as_str()
    );
    for h in r.headers().values() {
        assert!(!h.to_str().unwrap_or("").contains("X-Amz"), "{h:?}");
    }
    assert_eq!(&r.bytes().await.unwrap()[..], &SAFE_TABLE.as_bytes()[10..]);
    // The tar stream of the package, from S3 too, with the record files.
    let tar = get(&e, &tok, "/collect/package.tar").await;
    assert_eq!(tar.status(), StatusCode::OK);
    let tar = tar.bytes().await.unwrap();
    let mut a = tar::Archive::new(&tar[..]);
    let mut got: Vec<String> = a
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    got.sort();
    assert_eq!(got.len(), 4, "{got:?}");

    // Revocation takes the manifest away first, then the objects.
    let (s, r) =
        e.t.post_json(
            &e.p.pm,
            &format!("/transfers/{id}/revoke"),
            json!({"reason": "wrong recipient"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert!(g.cat(&format!("{dest}.manifest.jsonl")).is_none());
    assert!(g.ls(&dest).is_empty());
    let r = get(&e, &tok, "/collect/files/tables/counts.csv").await;
    assert_ne!(r.status(), StatusCode::OK);
    e.t.stop().await;
}

/// The workspace's outputs on S3: written by its own S3 client (rclone here) under
/// `output/proj/ws/`, listed for picking, pinned by streaming the listed objects into
/// quarantine, compared with the bucket while in review, and released from the pinned copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn egress_from_outputs_on_s3_pins_the_listed_objects_flags_rewrites_and_releases_the_pinned()
{
    let g = common::garage::Garage::start();
    let e = setup_with(2, |s| g.apply_all(s)).await;
    assert!(!e.out.exists(), "no local output folder is made");
    let ws = admin::show_workspace(&e.t.app, "proj/ws").await.unwrap();
    assert_eq!(
        ws["volumes"]["output"], "s3://airlock/output/proj/ws/",
        "{ws}"
    );
    assert_eq!(ws["volumes"]["data"], "s3://airlock/released/proj/ws/data/");
    assert_eq!(
        ws["volumes"]["egress"],
        "s3://airlock/egress/proj/ws/egress/"
    );
    let ready: Value =
        e.t.http
            .get(format!("{}/readyz", e.t.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(ready["storage"]["output"], "s3", "{ready}");

    let figure = b"a plain summary with nothing to flag\n";
    let files: [(&str, &[u8]); 5] = [
        ("tables/counts.csv", SAFE_TABLE.as_bytes()),
        ("tables/figure.txt", figure),
        ("analysis.py", SCRIPT.as_bytes()),
        ("supporting/raw.csv", RAW.as_bytes()),
        // Another workspace's outputs, and a name that only starts like a chosen folder.
        ("tables-old/x.csv", b"not chosen\n"),
    ];
    for (path, bytes) in files {
        g.put(&format!("output/proj/ws/{path}"), bytes);
    }
    g.put(
        "output/proj/other/tables/secret.csv",
        b"another workspace\n",
    );

    // Listed for picking: this workspace's objects alone, in path order, with their sizes.
    let res = e.t.app.store.user_by_name("res").await.unwrap().unwrap();
    let who = airlock::workflow::access::Principal::Staff(res);
    let listed: Vec<(String, u64)> =
        airlock::workflow::egress::output_entries(&e.t.app, &who, "proj/ws")
            .await
            .unwrap()
            .into_iter()
            .map(|o| (o.path, o.size))
            .collect();
    let mut want: Vec<(String, u64)> = files
        .iter()
        .map(|(p, b)| (p.to_string(), b.len() as u64))
        .collect();
    want.sort();
    assert_eq!(listed, want);

    // A name that is not in the bucket, or leads out of the prefix, is refused by name.
    let mut missing = request();
    missing["files"][0]["path"] = json!("tabels");
    let (s, v) = create(&e, missing).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v.to_string().contains("tabels: not in the output volume"),
        "{v}"
    );
    let mut outside = request();
    outside["files"][0]["path"] = json!("../other/tables");
    let (s, v) = create(&e, outside).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    let id = submit_request(&e, request()).await;
    let v = e.t.show(&e.p.researcher, &id).await;
    let pinned = v["pinned"].as_array().unwrap();
    let got: Vec<(&str, &str)> = pinned
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["sha256"].as_str().unwrap()))
        .collect();
    let digest = |b: &[u8]| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b))
    };
    assert_eq!(
        got,
        vec![
            ("analysis.py", digest(SCRIPT.as_bytes()).as_str()),
            ("supporting/raw.csv", digest(RAW.as_bytes()).as_str()),
            ("tables/counts.csv", digest(SAFE_TABLE.as_bytes()).as_str()),
            ("tables/figure.txt", digest(figure).as_str()),
        ]
    );
    assert!(
        pinned.iter().all(|f| f.get("changed_on_disk").is_none()),
        "{v}"
    );

    // In review, the bucket moves on: one object rewritten with other bytes of the same
    // size, one rewritten with the same bytes, one deleted.
    let mut other = figure.to_vec();
    other[2] = b'P';
    g.put("output/proj/ws/tables/figure.txt", &other);
    g.put("output/proj/ws/analysis.py", SCRIPT.as_bytes());
    g.delete("output/proj/ws/supporting/raw.csv");
    let v = e.t.show(&e.p.inv, &id).await;
    let changed = |path: &str| {
        v["pinned"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == path)
            .unwrap()
            .get("changed_on_disk")
            .and_then(|c| c.as_str())
            .map(str::to_owned)
    };
    assert!(
        changed("tables/figure.txt").is_some_and(|c| c.contains("the digest differs")),
        "{v}"
    );
    assert!(
        changed("supporting/raw.csv").is_some_and(|c| c.contains("gone")),
        "{v}"
    );
    assert_eq!(changed("analysis.py"), None, "same bytes: unchanged");
    assert_eq!(changed("tables/counts.csv"), None);

    // Released from the pinned copies, not from what the bucket holds now.
    let v = release_by_every_checker(&e, &id).await;
    let dest = format!("egress/proj/ws/egress/{id}");
    assert_eq!(v["release"]["location"], format!("s3://airlock/{dest}/"));
    assert_eq!(
        g.cat(&format!("{dest}/tables/figure.txt")).unwrap(),
        figure.to_vec()
    );
    let tok = collection_token(&e, &id, json!({"recipient": "recip", "ttl": "1h"})).await;
    let r = get(&e, &tok, "/collect/files/tables/figure.txt").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(&r.bytes().await.unwrap()[..], figure);
    // airlock never wrote into the output volume.
    let mut keys = g.ls("output/proj/ws");
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "analysis.py",
            "tables-old/x.csv",
            "tables/counts.csv",
            "tables/figure.txt"
        ]
    );
    e.t.stop().await;
}

/// Past 64 pinned files, the comparison with the bucket is one listing of the workspace's
/// prefix merge-joined with them, not a HEAD each: it flags the same things, and keys before,
/// between and after the pinned ones change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_outputs_on_s3_are_compared_with_the_bucket_by_one_listing() {
    let g = common::garage::Garage::start();
    let e = setup_with(2, |s| g.apply_all(s)).await;
    let local = tempfile::tempdir().unwrap();
    for i in 0..70 {
        write(
            local.path(),
            &format!("tables/t{i:03}.csv"),
            SAFE_TABLE.as_bytes(),
        );
    }
    write(local.path(), "analysis.py", SCRIPT.as_bytes());
    write(local.path(), "a-first.txt", b"not chosen\n");
    write(local.path(), "tables-old/x.csv", b"not chosen\n");
    write(local.path(), "zz-last.txt", b"not chosen\n");
    let out = g.rclone(&[
        "copy",
        local.path().to_str().unwrap(),
        "g:airlock/output/proj/ws",
    ]);
    assert!(out.status.success(), "{out:?}");
    let mut body = request();
    body["files"] = json!([
        {"path": "tables", "role": "output"},
        {"path": "analysis.py", "role": "code"},
    ]);
    let id = submit_request(&e, body).await;
    let flagged = |v: &Value| -> Vec<(String, String)> {
        v["pinned"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| {
                Some((
                    f["path"].as_str()?.to_owned(),
                    f.get("changed_on_disk")?.as_str()?.to_owned(),
                ))
            })
            .collect()
    };
    let v = e.t.show(&e.p.inv, &id).await;
    assert_eq!(v["pinned"].as_array().unwrap().len(), 71, "{v}");
    assert!(flagged(&v).is_empty(), "{v}");

    let mut other = SAFE_TABLE.as_bytes().to_vec();
    other[30] = b'9';
    g.put("output/proj/ws/tables/t010.csv", &other);
    g.delete("output/proj/ws/tables/t050.csv");
    g.delete("output/proj/ws/analysis.py");
    let v = e.t.show(&e.p.inv, &id).await;
    let got = flagged(&v);
    let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        ["analysis.py", "tables/t010.csv", "tables/t050.csv"],
        "{got:?}"
    );
    assert!(got[0].1.contains("gone"), "{got:?}");
    assert!(got[1].1.contains("the digest differs"), "{got:?}");
    assert!(got[2].1.contains("gone"), "{got:?}");
    e.t.stop().await;
}
