//! The browser UI in real Chromium (chromedriver, fantoccini) against the real server and
//! clamd: a provider uploads a folder and a big file through the upload page (resuming after
//! a reload), a referee signs in with a login link and approves from the inbox after a
//! preview, previews run no content script, an output checker votes per file blind, and a
//! recipient collects. Each page's screenshot is written to the test's data directory
//! (`screenshots/`).

#[path = "common/browser.rs"]
mod browser;
mod common;

use airlock::domain::Role;
use airlock::workflow::{admin, sessions};
use browser::Browser;
use common::*;
use fantoccini::Locator;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn shots(t: &TestApp) -> PathBuf {
    let d = t.data_dir().join("screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn shot(b: &Browser, t: &TestApp, name: &str) {
    let p = b.screenshot(&shots(t), name).await;
    let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
    assert!(len > 1000, "screenshot {} written", p.display());
    eprintln!("screenshot: {}", p.display());
    // The test's folder goes with the test; AIRLOCK_SCREENSHOTS=DIR keeps a copy to look at.
    if let Some(keep) = std::env::var_os("AIRLOCK_SCREENSHOTS") {
        let keep = PathBuf::from(keep);
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::copy(&p, keep.join(format!("{name}.png"))).unwrap();
    }
}

/// Signs `user` in the way a person does: opens the login link, presses Sign in.
async fn sign_in(b: &Browser, t: &TestApp, user: &str) {
    let link = sessions::admin_login_link(&t.app, user).await.unwrap();
    let url = link.url.replace("http://127.0.0.1:8080", &t.url);
    b.client.goto(&url).await.unwrap();
    // The secret left the address bar for the form.
    let now = b.client.current_url().await.unwrap();
    assert!(now.fragment().is_none(), "{now}");
    shot(b, t, &format!("login-{user}")).await;
    b.client
        .find(Locator::Id("sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_text("#me", user, WAIT).await;
    let c = b
        .cookie("__Host-airlock-session")
        .await
        .expect("session cookie");
    assert!(c.http_only().unwrap_or(false) && c.secure().unwrap_or(false));
    assert_eq!(format!("{:?}", c.same_site()), "Some(Strict)");
}

fn sha256sum(p: &Path) -> String {
    digest_with("sha256sum", p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provider_uploads_a_folder_and_a_big_file_resuming_after_a_reload_and_seals() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(1).await;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let token = t.upload_token(&p.pm, &id, Value::Null).await;
    let src = tempfile::tempdir().unwrap();
    let folder = src.path().join("cohort");
    let small = [
        ("cohort/a.csv", bytes(3000, 1)),
        ("cohort/sub/a.csv", bytes(5000, 2)),
        ("cohort/sub/notes.txt", bytes(700, 3)),
    ];
    for (rel, b) in &small {
        write(src.path(), rel, b);
    }
    let big = write(src.path(), "big.bin", &bytes(50 << 20, 4));

    let b = Browser::start().await;
    b.client
        .goto(&format!("{}/upload#{token}", t.url))
        .await
        .unwrap();
    b.wait_js("!document.getElementById('uploader').hidden", WAIT)
        .await;
    let now = b.client.current_url().await.unwrap();
    assert!(
        now.fragment().is_none(),
        "the token left the address bar: {now}"
    );
    shot(&b, &t, "upload-empty").await;

    b.set_file_input("#pick-folder", &[&folder]).await;
    b.wait_js(
        "document.querySelectorAll('#file-rows tr').length === 3 && \
         [...document.querySelectorAll('#file-rows .state')].every(s => s.textContent === 'match')",
        WAIT,
    )
    .await;
    // Slow the link, start the big file, and reload once some of it has gone.
    b.throttle(5_000_000).await;
    b.set_file_input("#pick-files", &[&big]).await;
    b.wait_js(
        "(() => { const r = document.querySelector('#file-rows tr[data-path=\"big.bin\"]'); \
         return r && r.querySelector('.state').textContent === 'uploading' \
           && r.querySelector('progress').value > 12 * 1024 * 1024; })()",
        WAIT,
    )
    .await;
    shot(&b, &t, "upload-in-progress").await;
    b.client.refresh().await.unwrap();
    b.unthrottle().await;
    b.wait_js("!document.getElementById('uploader').hidden", WAIT)
        .await;
    // After the reload the person picks the same files again: nothing is sent twice.
    b.set_file_input("#pick-folder", &[&folder]).await;
    b.set_file_input("#pick-files", &[&big]).await;
    b.wait_js(
        "document.querySelectorAll('#file-rows tr').length === 4 && \
         [...document.querySelectorAll('#file-rows .state')].every(s => s.textContent === 'match')",
        Duration::from_secs(180),
    )
    .await;
    let resumed = b
        .wait_js(
            "document.querySelector('#file-rows tr[data-path=\"big.bin\"]').dataset.resumedFrom",
            WAIT,
        )
        .await;
    let resumed: u64 = resumed.as_str().unwrap().parse().unwrap();
    assert!(
        resumed > 0 && resumed < 50 << 20,
        "the big file resumed part-way: {resumed}"
    );
    // The page's two digests, side by side, equal sha256sum's.
    let rows = b
        .client
        .execute(
            "return [...document.querySelectorAll('#file-rows tr')].map(r => [r.dataset.path, \
             r.querySelector('.local-sha256').textContent, r.querySelector('.server-sha256').textContent]);",
            vec![],
        )
        .await
        .unwrap();
    let mut want: Vec<(String, PathBuf)> = small
        .iter()
        .map(|(rel, _)| (rel.to_string(), src.path().join(rel)))
        .collect();
    want.push(("big.bin".into(), big.clone()));
    for (path, file) in &want {
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r[0] == *path.as_str())
            .unwrap_or_else(|| panic!("no row for {path}: {rows}"));
        let sum = sha256sum(file);
        assert_eq!(row[1], sum.as_str(), "{path}: the browser's digest");
        assert_eq!(row[2], sum.as_str(), "{path}: airlock's digest");
    }
    shot(&b, &t, "upload-done").await;

    // Seal, in two steps: the page says the link dies.
    let warning = b.client.find(Locator::Id("seal-warning")).await.unwrap();
    assert!(warning
        .text()
        .await
        .unwrap()
        .contains("token stops working"));
    b.client
        .find(Locator::Id("seal"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.client
        .find(Locator::Id("seal-confirm"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_text("#status", "Sealed", WAIT).await;
    shot(&b, &t, "upload-sealed").await;
    assert!(
        b.csp_violations().await.is_empty(),
        "the upload page is CSP-clean"
    );
    b.close().await;

    let v = t.wait_for_state(&p.pm, &id, "in_review").await;
    assert_eq!(v["file_count"], 4);
    let (s, page) = t.get_json(&p.pm, &format!("/transfers/{id}/files")).await;
    assert_eq!(s, StatusCode::OK);
    for (path, file) in &want {
        let f = page["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == *path.as_str())
            .unwrap_or_else(|| panic!("{path} in the manifest: {page}"));
        assert_eq!(f["sha256"], sha256sum(file).as_str(), "{path}");
    }
    // The token died with the seal.
    let (s, _) = t.put(&token, &id, "late.txt", b"x".to_vec()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

/// A minimal baseline JPEG (1×1 pixel).
const JPEG_1X1: &str = "/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP//////////////////////////////////////////////////////////////////////////////////////wgALCAABAAEBAREA/8QAFBABAAAAAAAAAAAAAAAAAAAAAP/aAAgBAQABPxA=";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_referee_signs_in_previews_a_flagged_table_and_approves_and_no_content_script_runs() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(2).await;
    admin::add_user(&t.app, "ref", &[Role::Referee])
        .await
        .unwrap();
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&p.pm, &id, Value::Null).await;
    use base64::Engine;
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(JPEG_1X1)
        .unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("tables/counts.csv", b"region,cases\nnorth,120\nsouth,3\neast,230\n".to_vec()),
        (
            "page.html",
            b"<html><body><script>document.title='pwned';parent.document.title='pwned'</script><p>hi</p></body></html>".to_vec(),
        ),
        (
            "pic.svg",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>document.title='pwned'</script></svg>".to_vec(),
        ),
        ("photo.jpg", jpeg),
    ];
    for (path, body) in &files {
        let (s, v) = t.put(&tok, &id, path, body.clone()).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, v) = t
        .post_json(&tok, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.wait_for_state(&p.pm, &id, "in_review").await;
    let (s, v) = t
        .post_json(
            &p.pm,
            &format!("/transfers/{id}/referees"),
            json!({"user": "ref"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = t
        .post_json(
            &p.inv,
            &format!("/transfers/{id}/approve"),
            json!({"comment": "ok"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let b = Browser::start().await;
    sign_in(&b, &t, "ref").await;
    // The inbox lists the transfer as awaiting the referee.
    let row = b
        .wait_text(
            &format!("#to-decide tr[data-id=\"{id}\"]"),
            "in_review",
            WAIT,
        )
        .await;
    shot(&b, &t, "inbox").await;
    row.find(Locator::Css("a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_text("#state", "in_review", WAIT).await;
    shot(&b, &t, "transfer").await;

    // Preview the table: the small cell is flagged, inside a sandboxed frame.
    b.client
        .goto(&format!(
            "{}/ui/transfers/{id}?dir=tables%2F&preview=tables%2Fcounts.csv#preview",
            t.url
        ))
        .await
        .unwrap();
    let frame = b.client.find(Locator::Id("preview-frame")).await.unwrap();
    assert_eq!(frame.attr("sandbox").await.unwrap().as_deref(), Some(""));
    shot(&b, &t, "preview-csv").await;
    frame.enter_frame().await.unwrap();
    let cell = b.wait_text("td.flagged", "3", WAIT).await;
    assert!(cell.text().await.unwrap().starts_with('3'));
    assert_eq!(
        cell.attr("title").await.unwrap().as_deref(),
        Some("small-cell"),
        "the flagged cell names its rule"
    );
    b.client.enter_parent_frame().await.unwrap();

    // HTML and SVG are shown as text; the JPEG as an image; no script of theirs runs.
    for (name, path) in [("html", "page.html"), ("svg", "pic.svg")] {
        b.client
            .goto(&format!(
                "{}/ui/transfers/{id}?preview={path}#preview",
                t.url
            ))
            .await
            .unwrap();
        let frame = b.client.find(Locator::Id("preview-frame")).await.unwrap();
        frame.enter_frame().await.unwrap();
        let pre = b.wait_text("#preview-text", "<script>", WAIT).await;
        assert!(pre.text().await.unwrap().contains("document.title='pwned'"));
        let inner = b.client.title().await.unwrap();
        assert_ne!(inner, "pwned", "{name}: no script ran in the preview");
        b.client.enter_parent_frame().await.unwrap();
        shot(&b, &t, &format!("preview-{name}")).await;
        assert_ne!(b.client.title().await.unwrap(), "pwned");
    }
    b.client
        .goto(&format!(
            "{}/ui/transfers/{id}?preview=photo.jpg#preview",
            t.url
        ))
        .await
        .unwrap();
    let frame = b.client.find(Locator::Id("preview-frame")).await.unwrap();
    frame.enter_frame().await.unwrap();
    let width = b
        .wait_js(
            "document.images.length === 1 && document.images[0].naturalWidth",
            WAIT,
        )
        .await;
    assert_eq!(width, 1, "the JPEG decoded and shows");
    b.client.enter_parent_frame().await.unwrap();
    shot(&b, &t, "preview-jpeg").await;
    assert!(
        b.csp_violations().await.is_empty(),
        "our own pages break no CSP rule"
    );

    // Approve, with the digest the page showed.
    b.client
        .goto(&format!("{}/ui/transfers/{id}", t.url))
        .await
        .unwrap();
    b.client
        .find(Locator::Id("comment"))
        .await
        .unwrap()
        .send_keys("small cell noted; fine for the TRE")
        .await
        .unwrap();
    b.client
        .find(Locator::Id("approve"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_text("#note", "Recorded: approve", WAIT).await;
    t.wait_for_state(&p.pm, &id, "released").await;
    b.client.refresh().await.unwrap();
    b.wait_text("#state", "released", WAIT).await;
    shot(&b, &t, "transfer-released").await;

    // Logout ends the session: the inbox asks to sign in again.
    b.client
        .find(Locator::Id("logout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_text("h1", "Sign in", WAIT).await;
    b.client.goto(&format!("{}/ui/", t.url)).await.unwrap();
    b.wait_text("h1", "Sign in", WAIT).await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_output_checker_votes_per_file_blind_the_researcher_sees_shared_comments_and_a_recipient_collects(
) {
    let t = TestApp::spawn().await;
    // Tier 2: output checking is blind (investigator, provider and a referee check).
    let p = t.bootstrap(2).await;
    admin::add_user(&t.app, "ref", &[Role::Referee])
        .await
        .unwrap();
    let referee = admin::staff_token(&t.app, "ref", None).await.unwrap();
    admin::add_member(&t.app, "proj", "prov", Role::Provider)
        .await
        .unwrap();
    admin::add_user(&t.app, "recip", &[Role::Researcher])
        .await
        .unwrap();
    let out = t.data_dir().join("volumes/proj/ws/output");
    write(&out, "tables/a.csv", b"region,cases\nnorth,120\nsouth,95\n");
    write(
        &out,
        "tables/b.csv",
        b"region,controls\nnorth,340\nsouth,410\n",
    );
    write(&out, "analysis.py", b"print('counts')\n");

    // The researcher builds the request in the browser from the output volume.
    let b = Browser::start().await;
    sign_in(&b, &t, "res").await;
    b.client
        .goto(&format!("{}/ui/egress?workspace=proj%2Fws", t.url))
        .await
        .unwrap();
    for (path, role) in [
        ("tables/a.csv", "output"),
        ("tables/b.csv", "output"),
        ("analysis.py", "code"),
    ] {
        let sel = b
            .client
            .find(Locator::Css(&format!("select[name=\"role:{path}\"]")))
            .await
            .unwrap();
        sel.select_by_value(role).await.unwrap();
    }
    b.client
        .find(Locator::Id("eg-context"))
        .await
        .unwrap()
        .send_keys("Cases and controls by region; every cell above 10.")
        .await
        .unwrap();
    b.client
        .find(Locator::Id("eg-recipients"))
        .await
        .unwrap()
        .send_keys("recip")
        .await
        .unwrap();
    shot(&b, &t, "egress-request").await;
    b.client
        .find(Locator::Id("egress-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_text("#note", "Submitted", WAIT).await;
    let url = b.client.current_url().await.unwrap();
    let id = url.path().rsplit('/').next().unwrap().to_owned();
    t.wait_for_state(&p.pm, &id, "in_review").await;
    b.close().await;
    let (s, v) = t
        .post_json(
            &p.pm,
            &format!("/transfers/{id}/referees"),
            json!({"user": "ref"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // The investigator votes per file in the browser: one shared comment, one for checkers.
    let b = Browser::start().await;
    sign_in(&b, &t, "inv").await;
    b.client
        .goto(&format!("{}/ui/transfers/{id}", t.url))
        .await
        .unwrap();
    for (path, comment, visibility) in [
        ("tables/a.csv", "shared: fine as it is", "shared"),
        (
            "tables/b.csv",
            "checkers only: compare with last year",
            "checkers",
        ),
    ] {
        let form = b
            .client
            .find(Locator::Css(&format!(
                "#outputs tr[data-path=\"{path}\"] form.vote"
            )))
            .await
            .unwrap();
        form.find(Locator::Css("input[name=comment]"))
            .await
            .unwrap()
            .send_keys(comment)
            .await
            .unwrap();
        form.find(Locator::Css("select[name=visibility]"))
            .await
            .unwrap()
            .select_by_value(visibility)
            .await
            .unwrap();
        form.find(Locator::Css("button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        b.wait_text("#note", &format!("Vote recorded on {path}"), WAIT)
            .await;
    }
    shot(&b, &t, "egress-votes").await;
    // Blind: the provider's vote, cast meanwhile, is not shown to inv before inv's review.
    for path in ["tables/a.csv", "tables/b.csv"] {
        let (s, v) = t
            .post_json(
                &p.prov,
                &format!("/egress/{id}/votes"),
                json!({"path": path, "vote": "approve", "comment": "prov-secret-note"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    b.client.refresh().await.unwrap();
    let page = b.client.source().await.unwrap();
    assert!(
        !page.contains("prov-secret-note"),
        "blind until inv's review"
    );
    b.client
        .find(Locator::Id("submit-review"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_text("#note", "Review submitted", WAIT).await;
    b.close().await;
    let (s, v) = t
        .post_json(&p.prov, &format!("/egress/{id}/review"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for path in ["tables/a.csv", "tables/b.csv"] {
        let (s, v) = t
            .post_json(
                &referee,
                &format!("/egress/{id}/votes"),
                json!({"path": path, "vote": "approve"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, v) = t
        .post_json(&referee, &format!("/egress/{id}/review"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.wait_for_state(&p.pm, &id, "released").await;

    // The researcher sees the shared comment, never the checkers-only one.
    let b = Browser::start().await;
    sign_in(&b, &t, "res").await;
    b.client
        .goto(&format!("{}/ui/transfers/{id}", t.url))
        .await
        .unwrap();
    b.wait_text("#state", "released", WAIT).await;
    let page = b.client.source().await.unwrap();
    assert!(page.contains("shared: fine as it is"));
    assert!(!page.contains("checkers only: compare with last year"));
    shot(&b, &t, "egress-researcher").await;
    b.close().await;

    // A recipient collects with a collection link: downloads left go down, the last is refused.
    let (s, v) = t
        .post_json(
            &p.pm,
            &format!("/egress/{id}/collection-tokens"),
            json!({"recipient": "recip", "max_downloads": 2}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let token = v["token"].as_str().unwrap();
    let b = Browser::start().await;
    b.client
        .goto(&format!("{}/collect#{token}", t.url))
        .await
        .unwrap();
    b.wait_text("#downloads-left", "2", WAIT).await;
    assert!(b.client.current_url().await.unwrap().fragment().is_none());
    shot(&b, &t, "collect").await;
    let row = b
        .client
        .find(Locator::Css("#collect-rows tr[data-path=\"tables/a.csv\"]"))
        .await
        .unwrap();
    row.find(Locator::Css("button.download"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_text(
        "#collect-rows tr[data-path=\"tables/a.csv\"] .check",
        "verified",
        WAIT,
    )
    .await;
    b.wait_text("#downloads-left", "1", WAIT).await;
    let got = b.wait_download("a.csv", WAIT).await;
    assert_eq!(
        std::fs::read(got).unwrap(),
        std::fs::read(out.join("tables/a.csv")).unwrap()
    );
    b.client
        .find(Locator::Id("download-zip"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_text("#downloads-left", "0", WAIT).await;
    row.find(Locator::Css("button.download"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_text("#status", "not downloaded", WAIT).await;
    shot(&b, &t, "collect-refused").await;
    b.close().await;
}
