//! The browser UI over plain HTTP (the browser itself drives `tests/ui_browser.rs`): sign-in
//! links and sessions, the headers every page carries, forms refused from another origin or
//! without their synchronizer token, stale decisions, and previews that never serve uploaded
//! bytes as markup.

mod common;

use airlock::domain::Role;
use airlock::workflow::admin;
use common::*;
use reqwest::{header, redirect, Client, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

fn no_redirects() -> Client {
    Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap()
}

/// A signed-in browser, as far as HTTP goes: the session cookie and the form token.
struct Browser {
    url: String,
    cookie: String,
    csrf: String,
    http: Client,
}

fn login_secret(url: &str) -> String {
    url.split_once("/ui/login#")
        .expect("a login link ends /ui/login#SECRET")
        .1
        .to_owned()
}

async fn post_login(t: &TestApp, secret: &str) -> reqwest::Response {
    no_redirects()
        .post(format!("{}/ui/login", t.url))
        .header("sec-fetch-site", "same-origin")
        .form(&[("token", secret)])
        .send()
        .await
        .unwrap()
}

impl Browser {
    async fn sign_in(t: &TestApp, user: &str) -> Browser {
        let link = airlock::workflow::sessions::admin_login_link(&t.app, user)
            .await
            .unwrap();
        let r = post_login(t, &login_secret(&link.url)).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[header::LOCATION], "/ui/");
        let set = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
        let cookie = set.split(';').next().unwrap().to_owned();
        let mut b = Browser {
            url: t.url.clone(),
            cookie,
            csrf: String::new(),
            http: no_redirects(),
        };
        let page = b.page("/ui/").await;
        b.csrf = field(&page, "csrf");
        b
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .header(header::COOKIE, &self.cookie)
            .send()
            .await
            .unwrap()
    }

    async fn page(&self, path: &str) -> String {
        let r = self.get(path).await;
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        r.text().await.unwrap()
    }

    /// A form posted as the browser posts it from our own page.
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .header(header::COOKIE, &self.cookie)
            .header("sec-fetch-site", "same-origin")
            .form(form)
            .send()
            .await
            .unwrap()
    }
}

/// The value of the first hidden field `name` of a page.
fn field(page: &str, name: &str) -> String {
    let key = format!("name=\"{name}\" value=\"");
    let at = page.find(&key).unwrap_or_else(|| panic!("no field {name}")) + key.len();
    page[at..at + page[at..].find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn a_login_link_signs_in_once_into_a_host_only_strict_session_that_logout_ends() {
    let t = TestApp::spawn().await;
    t.bootstrap(1).await;
    let out = t.cli(None, &["admin", "login-link", "inv"]);
    assert!(out.status.success(), "{out:?}");
    let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(
        url.starts_with("http://") && url.contains("/ui/login#"),
        "{url}"
    );
    let secret = login_secret(&url);

    // Fetching the link (what a mail scanner does) consumes nothing: the secret is not even
    // sent, and the page is a form.
    let page = no_redirects()
        .get(format!("{}/ui/login", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("name=\"token\""));

    let r = post_login(&t, &secret).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let set = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(set.starts_with("__Host-airlock-session="), "{set}");
    for flag in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(set.contains(flag), "{flag} in {set}");
    }
    assert!(!set.contains("Domain"), "{set}");
    // Only a hash of the session id is stored.
    let id = set.split(';').next().unwrap().split_once('=').unwrap().1;
    let stored: Vec<String> = sqlx::query_scalar("SELECT hash FROM ui_sessions")
        .fetch_all(t.app.store.pool())
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], id);
    let links: Vec<String> = sqlx::query_scalar("SELECT hash FROM login_links")
        .fetch_all(t.app.store.pool())
        .await
        .unwrap();
    assert!(!links.contains(&secret));

    // Used once: a second POST of the same link is refused, and so is a made-up one.
    let again = post_login(&t, &secret).await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    assert!(again.text().await.unwrap().contains("not valid"));
    let forged = post_login(&t, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").await;
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    let b = Browser {
        url: t.url.clone(),
        cookie: set.split(';').next().unwrap().to_owned(),
        csrf: String::new(),
        http: no_redirects(),
    };
    let inbox = b.page("/ui/").await;
    assert!(inbox.contains(">inv<"), "the inbox names who is signed in");
    let csrf = field(&inbox, "csrf");

    // Logout without the form's token is refused; with it, the session ends.
    let r = b.post("/ui/logout", &[("csrf", "wrong")]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(b.get("/ui/").await.status(), StatusCode::OK);
    let r = b.post("/ui/logout", &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let after = b.get("/ui/").await;
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    assert!(after.text().await.unwrap().contains("Sign in"));

    // The sign-in and sign-out are in the audit log.
    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM audit_events")
        .fetch_all(t.app.store.pool())
        .await
        .unwrap();
    for a in ["ui.login_link_issued", "ui.signed_in", "ui.signed_out"] {
        assert!(actions.iter().any(|x| x == a), "{a}");
    }
}

#[tokio::test]
async fn an_expired_login_link_and_an_idle_session_are_refused() {
    let t = TestApp::spawn_with(|s| {
        s.ui.login_link_ttl = Duration::from_secs(1);
        s.ui.session_idle = Duration::from_secs(1);
    })
    .await;
    t.bootstrap(1).await;
    let link = airlock::workflow::sessions::admin_login_link(&t.app, "inv")
        .await
        .unwrap();
    let b = Browser::sign_in(&t, "inv").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = post_login(&t, &login_secret(&link.url)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "expired link");
    let r = b.get("/ui/").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "idle session");
    assert!(r.text().await.unwrap().contains("session has ended"));
}

#[tokio::test]
async fn revoking_a_users_tokens_or_disabling_them_ends_their_sessions() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(1).await;
    let b = Browser::sign_in(&t, "inv").await;
    let (s, v) = t
        .post_json(&p.inv, "/tokens/revoke", json!({"user": "inv"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(b.get("/ui/").await.status(), StatusCode::UNAUTHORIZED);

    let b = Browser::sign_in(&t, "res").await;
    assert_eq!(b.get("/ui/").await.status(), StatusCode::OK);
    admin::disable_user(&t.app, "res", "left the project")
        .await
        .unwrap();
    assert_eq!(b.get("/ui/").await.status(), StatusCode::UNAUTHORIZED);
    // A disabled user gets no link at all.
    assert!(airlock::workflow::sessions::admin_login_link(&t.app, "res")
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_mints_a_login_link_only_for_the_caller_himself() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(1).await;
    let (s, v) = t.post_json(&p.pm, "/login-links", Value::Null).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["user"], "pm");
    let r = post_login(&t, &login_secret(v["url"].as_str().unwrap())).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let upload = t.upload_token(&p.pm, &id, Value::Null).await;
    let (s, _) = t.post_json(&upload, "/login-links", Value::Null).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let r = t.http.post(t.api("/login-links")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // `airlock ui --print` prints the caller's link.
    let out = t.cli(Some(&p.inv), &["ui", "--print"]);
    assert!(out.status.success(), "{out:?}");
    let url = String::from_utf8(out.stdout).unwrap();
    assert!(url.trim().contains("/ui/login#"), "{url}");
}

#[tokio::test]
async fn every_page_carries_a_strict_csp_nosniff_no_referrer_and_no_store() {
    let t = TestApp::spawn().await;
    t.bootstrap(1).await;
    let b = Browser::sign_in(&t, "pm").await;
    for path in ["/ui/", "/ui/login", "/upload", "/collect", "/ui/egress"] {
        let r = b.get(path).await;
        assert!(r.status().is_success(), "{path}: {}", r.status());
        let h = r.headers();
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        for d in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'self'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(d), "{path}: {d} in {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(
            csp.contains("'wasm-unsafe-eval'"),
            path == "/upload",
            "{path}: WebAssembly only on the upload page: {csp}"
        );
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer", "{path}");
        assert_eq!(h[header::CACHE_CONTROL], "no-store", "{path}");
        let html = r.text().await.unwrap();
        assert!(!html.contains("<script>"), "{path}: no inline script");
        assert!(!html.contains(" style="), "{path}: no inline style");
        assert!(!html.contains("hx-on"), "{path}: never hx-on");
    }
    // htmx, where pages load it, runs with eval off, no history cache (previews must not land
    // in localStorage) and requests to this origin only.
    let inbox = b.page("/ui/").await;
    for setting in [
        "\"allowEval\":false",
        "\"historyCacheSize\":0",
        "\"selfRequestsOnly\":true",
        "\"includeIndicatorStyles\":false",
    ] {
        assert!(inbox.contains(setting), "{setting}");
    }
    // Error pages too.
    let r = b.get("/ui/transfers/not-a-transfer").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.headers().contains_key(header::CONTENT_SECURITY_POLICY));
}

#[tokio::test]
async fn a_cross_site_first_hop_reloads_itself_same_site() {
    let t = TestApp::spawn().await;
    let r = no_redirects()
        .get(format!("{}/ui/", t.url))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(html.contains("http-equiv=\"refresh\""), "{html}");
    // The same request from this site gets the sign-in page.
    let r = no_redirects()
        .get(format!("{}/ui/", t.url))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forms_from_another_origin_or_without_their_token_are_refused_and_change_nothing() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(1).await;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let b = Browser::sign_in(&t, "pm").await;
    let path = format!("/ui/transfers/{id}/upload-link");
    let send = |site: Option<&'static str>, origin: Option<&'static str>, csrf: String| {
        let mut r = b
            .http
            .post(format!("{}{path}", b.url))
            .header(header::COOKIE, &b.cookie)
            .form(&[("csrf", csrf.as_str())]);
        if let Some(s) = site {
            r = r.header("sec-fetch-site", s);
        }
        if let Some(o) = origin {
            r = r.header(header::ORIGIN, o);
        }
        r.send()
    };
    let cases = [
        (Some("cross-site"), None, b.csrf.clone(), "cross-site"),
        (Some("same-site"), None, b.csrf.clone(), "same-site"),
        (None, Some("https://evil.example"), b.csrf.clone(), "origin"),
        (None, None, b.csrf.clone(), "no origin at all"),
        (Some("same-origin"), None, String::new(), "no token"),
        (Some("same-origin"), None, "x".repeat(43), "another token"),
    ];
    for (site, origin, csrf, what) in cases {
        let r = send(site, origin, csrf).await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{what}");
    }
    let tokens: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM upload_tokens")
        .fetch_one(t.app.store.pool())
        .await
        .unwrap();
    assert_eq!(tokens, 0, "no refused form issued a token");

    // From our own page, with the token: the link is shown once, token in the fragment.
    let r = b.post(&path, &[("csrf", &b.csrf)]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("/upload#eyJ"),
        "the link carries the token after #"
    );
    assert!(!html.contains("/upload?"), "never in a query");
    // An Origin equal to the host passes too (browsers without Sec-Fetch-Site).
    let host = t.url.trim_start_matches("http://").to_owned();
    let r = b
        .http
        .post(format!("{}{path}", b.url))
        .header(header::COOKIE, &b.cookie)
        .header(header::ORIGIN, format!("http://{host}"))
        .form(&[("csrf", b.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// A data-ingress transfer at tier 1 with `files` uploaded, sealed and scanned into review.
async fn in_review(t: &TestApp, p: &People, files: &[(&str, &[u8])]) -> String {
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&p.pm, &id, Value::Null).await;
    for (path, body) in files {
        let (s, v) = t.put(&tok, &id, &encode_all(path), body.to_vec()).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, v) = t
        .post_json(&tok, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.wait_for_state(&p.pm, &id, "in_review").await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_decision_from_a_stale_page_is_refused_and_one_from_a_fresh_page_counts() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(1).await;
    let id = in_review(&t, &p, &[("a.txt", b"hello\n")]).await;
    let b = Browser::sign_in(&t, "inv").await;
    let page = b.page(&format!("/ui/transfers/{id}")).await;
    assert!(page.contains("id=\"approve\""), "the form is there");
    assert!(!page.contains("id=\"why-not\""), "and live for inv");
    let root = field(&page, "root_digest");
    let version = field(&page, "policy_version");
    assert_eq!(root.len(), 64);
    let decide = |root: String, action: &'static str, comment: &'static str| {
        let (b, id, version) = (&b, id.clone(), version.clone());
        async move {
            b.post(
                &format!("/ui/transfers/{id}/decide"),
                &[
                    ("csrf", b.csrf.as_str()),
                    ("action", action),
                    ("root_digest", &root),
                    ("policy_version", &version),
                    ("comment", comment),
                ],
            )
            .await
        }
    };
    let stale = decide("0".repeat(64), "approve", "").await;
    assert_eq!(stale.status(), StatusCode::CONFLICT);
    assert!(stale
        .text()
        .await
        .unwrap()
        .contains("changed since your page"));
    let no_comment = decide(root.clone(), "reject", "").await;
    assert_eq!(no_comment.status(), StatusCode::BAD_REQUEST);
    assert_eq!(t.show(&p.pm, &id).await["state"], "in_review");

    let ok = decide(root, "approve", "fine").await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    t.wait_for_state(&p.pm, &id, "released").await;

    // The uploader's page says why they cannot decide.
    let prov = Browser::sign_in(&t, "prov").await;
    let page = prov.page(&format!("/ui/transfers/{id}")).await;
    assert!(page.contains("id=\"why-not\""), "{page}");
    assert!(page.contains("nothing to decide"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn previews_escape_markup_show_images_by_their_magic_and_downloads_are_attachments() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(1).await;
    let html = b"<html><body><script>document.title='pwned'</script><b>x</b></body></html>";
    let svg = b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>";
    // A JPEG's magic, named .png: shown as what it is.
    let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0];
    jpeg.extend_from_slice(&[0u8; 64]);
    let csv = b"region,cases\nnorth,120\nsouth,3\neast,230\n";
    let id = in_review(
        &t,
        &p,
        &[
            ("page.html", html),
            ("pic.svg", svg),
            ("photo.png", &jpeg),
            ("t/counts.csv", csv),
        ],
    )
    .await;
    let b = Browser::sign_in(&t, "inv").await;
    let preview = |path: &str| {
        let url = format!("/ui/transfers/{id}/preview/{path}");
        let b = &b;
        async move { b.get(&url).await }
    };

    for (path, needle) in [("page.html", "&#60;script&#62;"), ("pic.svg", "&#60;svg")] {
        let r = preview(path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.starts_with("sandbox"), "{path}: {csp}");
        assert!(r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let body = r.text().await.unwrap();
        assert!(
            body.contains(needle),
            "{path}: escaped source shown: {body}"
        );
        assert!(!body.contains("<script>"), "{path}: never live markup");
    }
    let r = preview("photo.png").await;
    assert_eq!(r.headers()[header::CONTENT_TYPE], "image/jpeg");
    assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(r.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .starts_with("sandbox"));
    assert_eq!(r.bytes().await.unwrap().to_vec(), jpeg);

    // A table: escaped cells, the small cell flagged, a column summary.
    let body = preview("t/counts.csv").await.text().await.unwrap();
    assert!(body.contains("class=\"flagged\""), "{body}");
    let flagged = body.split("class=\"flagged\"").nth(1).unwrap();
    assert!(flagged.starts_with(" title=\"small-cell\">3<"), "{flagged}");
    assert!(body.contains("id=\"column-summary\""));

    let r = b
        .get(&format!("/ui/transfers/{id}/download/page.html"))
        .await;
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "application/octet-stream"
    );
    assert!(r.headers()[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    assert_eq!(r.bytes().await.unwrap().to_vec(), html.to_vec());
    let reads: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE action = 'content.read'")
            .fetch_one(t.app.store.pool())
            .await
            .unwrap();
    assert!(
        reads >= 4,
        "each preview and download is an audited read: {reads}"
    );

    // Someone outside the project sees nothing of it.
    let o = Browser::sign_in(&t, "outsider").await;
    let r = o
        .get(&format!("/ui/transfers/{id}/preview/page.html"))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = o.get(&format!("/ui/transfers/{id}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_folder_tree_pages_a_big_folder_and_folds_sub_folders_into_one_entry() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(1).await;
    admin::add_member(&t.app, "proj", "prov", Role::Provider)
        .await
        .unwrap();
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&p.pm, &id, Value::Null).await;
    let mut paths: Vec<String> = (0..450).map(|i| format!("big/f{i:04}.txt")).collect();
    paths.extend((0..30).map(|i| format!("deep/x/y/{i}.txt")));
    paths.push("top.txt".into());
    paths.push("big.txt".into());
    for chunk in paths.chunks(32) {
        let puts = chunk
            .iter()
            .map(|path| t.put(&tok, &id, path, path.as_bytes().to_vec()));
        for (s, v) in futures::future::join_all(puts).await {
            assert_eq!(s, StatusCode::CREATED, "{v}");
        }
    }
    let b = Browser::sign_in(&t, "pm").await;
    let top = b.page(&format!("/ui/transfers/{id}")).await;
    let names = |page: &str| -> Vec<String> {
        page.split("<tr class=\"")
            .skip(1)
            .map(|row| {
                let a = row.find("<td>").unwrap() + 4;
                let text = &row[a..];
                let text = text
                    .strip_prefix("<a href=")
                    .map_or(text, |_| &text[text.find('>').unwrap() + 1..]);
                text[..text.find('<').unwrap()]
                    .trim_start_matches("📁 ")
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(names(&top), ["big.txt", "big/", "deep/", "top.txt"]);
    let mut seen = Vec::new();
    let mut next = Some(format!("/ui/transfers/{id}?dir=big%2F"));
    let mut pages = 0;
    while let Some(url) = next {
        assert!(pages < 10, "the pages end: {url}");
        let page = b.page(&url).await;
        seen.extend(names(&page));
        pages += 1;
        next = match page.find("id=\"next-page\"") {
            None => None,
            Some(at) => {
                let before = &page[..at];
                let i = before.rfind("href=\"").unwrap() + 6;
                let end = before[i..].find('"').unwrap();
                // The page escapes `&` in the attribute, as HTML wants.
                Some(before[i..i + end].replace("&#38;", "&"))
            }
        };
    }
    assert_eq!(pages, 3, "200 entries a page");
    let want: Vec<String> = (0..450).map(|i| format!("f{i:04}.txt")).collect();
    assert_eq!(seen, want);
    let deep = b.page(&format!("/ui/transfers/{id}?dir=deep%2F")).await;
    assert_eq!(names(&deep), ["x/"]);
}

#[tokio::test]
async fn a_client_that_keeps_sending_bad_login_links_is_throttled() {
    let t = TestApp::spawn_with(|s| s.audit.refusals_per_client = 3).await;
    t.bootstrap(1).await;
    let mut statuses = Vec::new();
    for i in 0..5 {
        let r = post_login(&t, &format!("made-up-{i}")).await;
        statuses.push(r.status().as_u16());
    }
    assert_eq!(&statuses[..3], [401, 401, 401], "{statuses:?}");
    assert_eq!(statuses[4], 429, "{statuses:?}");
    // Even a good link waits until the window passes: nothing is looked up meanwhile.
    let link = airlock::workflow::sessions::admin_login_link(&t.app, "inv")
        .await
        .unwrap();
    let r = post_login(&t, &login_secret(&link.url)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key(header::RETRY_AFTER));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_project_manager_opens_a_transfer_issues_its_link_and_assigns_a_referee_from_the_pages() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(2).await;
    admin::add_user(&t.app, "ref", &[Role::Referee])
        .await
        .unwrap();
    let b = Browser::sign_in(&t, "pm").await;
    let r = b
        .post(
            "/ui/transfers",
            &[
                ("csrf", b.csrf.as_str()),
                ("workspace", "proj/ws"),
                ("kind", "data-ingress"),
                ("uploader", "prov"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()[header::LOCATION].to_str().unwrap().to_owned();
    let id = to
        .trim_start_matches("/ui/transfers/")
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(t.show(&p.pm, &id).await["state"], "open");
    let page = b.page(&to).await;
    assert!(
        page.contains("Transfer opened"),
        "the page says what happened"
    );
    assert!(page.contains("id=\"issue-upload-link\""));

    // The upload link, shown once, works for an upload.
    let r = b
        .post(
            &format!("/ui/transfers/{id}/upload-link"),
            &[("csrf", b.csrf.as_str()), ("ttl", "2h")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    let at = html.find("/upload#").unwrap() + "/upload#".len();
    let token = &html[at..at + html[at..].find('"').unwrap()];
    let (s, v) = t.put(token, &id, "a.txt", b"hello\n".to_vec()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // A referee assigned from the page is on the transfer.
    let r = b
        .post(
            &format!("/ui/transfers/{id}/referees"),
            &[("csrf", b.csrf.as_str()), ("user", "ref")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let v = t.show(&p.pm, &id).await;
    assert_eq!(v["referees"][0]["user"], "ref", "{v}");
    // A bad name is refused with a page saying why, and changes nothing.
    let r = b
        .post(
            &format!("/ui/transfers/{id}/referees"),
            &[("csrf", b.csrf.as_str()), ("user", "nobody")],
        )
        .await;
    assert!(r.status().is_client_error(), "{}", r.status());
    assert!(r.text().await.unwrap().contains("nobody"));
    assert_eq!(
        t.show(&p.pm, &id).await["referees"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Someone who is not the project's manager cannot open one.
    let inv = Browser::sign_in(&t, "inv").await;
    let r = inv
        .post(
            "/ui/transfers",
            &[
                ("csrf", inv.csrf.as_str()),
                ("workspace", "proj/ws"),
                ("kind", "data-ingress"),
                ("uploader", "prov"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_researcher_follows_a_request_through_a_return_and_resubmits_it_from_the_pages() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(1).await;
    admin::add_member(&t.app, "proj", "prov", Role::Provider)
        .await
        .unwrap();
    admin::add_user(&t.app, "recip", &[Role::Researcher])
        .await
        .unwrap();
    let out = t.data_dir().join("volumes/proj/ws/output");
    write(&out, "t/a.csv", b"region,cases\nnorth,120\nsouth,95\n");
    write(&out, "run.py", b"print(1)\n");
    let res = Browser::sign_in(&t, "res").await;
    let page = res.page("/ui/egress?workspace=proj%2Fws").await;
    assert!(
        page.contains("name=\"role:t/a.csv\""),
        "the output volume is listed"
    );
    let form = |id: &str| {
        vec![
            ("csrf".to_owned(), res.csrf.clone()),
            ("workspace".to_owned(), "proj/ws".to_owned()),
            ("id".to_owned(), id.to_owned()),
            ("role:t/a.csv".to_owned(), "output".to_owned()),
            ("role:run.py".to_owned(), "code".to_owned()),
            ("context".to_owned(), "Counts by region.".to_owned()),
            ("recipients".to_owned(), "recip".to_owned()),
        ]
    };
    let post = |f: Vec<(String, String)>| {
        res.http
            .post(format!("{}/ui/egress", res.url))
            .header(header::COOKIE, &res.cookie)
            .header("sec-fetch-site", "same-origin")
            .form(&f)
            .send()
    };
    let r = post(form("")).await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
    let to = r.headers()[header::LOCATION].to_str().unwrap().to_owned();
    let id = to
        .trim_start_matches("/ui/transfers/")
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    t.wait_for_state(&p.pm, &id, "in_review").await;

    // The investigator asks for changes on the file from the page; a shared comment.
    let inv = Browser::sign_in(&t, "inv").await;
    let page = inv.page(&format!("/ui/transfers/{id}")).await;
    let root = field(&page, "root_digest");
    let r = inv
        .post(
            &format!("/ui/transfers/{id}/vote"),
            &[
                ("csrf", inv.csrf.as_str()),
                ("root_digest", &root),
                ("path", "t/a.csv"),
                ("vote", "request-changes"),
                ("comment", "round to 5"),
                ("visibility", "shared"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = inv
        .post(
            &format!("/ui/transfers/{id}/review"),
            &[("csrf", inv.csrf.as_str()), ("root_digest", &root)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    t.wait_for_state(&p.pm, &id, "returned").await;

    // The researcher's inbox has it under "Returned to you"; the page links back to edit it.
    let inbox = res.page("/ui/").await;
    let returned = inbox
        .split("id=\"returned\"")
        .nth(1)
        .expect("a returned table");
    assert!(
        returned.split("</table>").next().unwrap().contains(&id),
        "{inbox}"
    );
    let page = res.page(&format!("/ui/transfers/{id}")).await;
    assert!(page.contains("round to 5"), "the shared comment");
    assert!(page.contains("id=\"resubmit\""));
    write(
        &out,
        "t/a.csv",
        b"region,cases\nnorth,120\nsouth,95\nwest,100\n",
    );
    let r = post(form(&id)).await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
    let v = t.wait_for_state(&p.pm, &id, "in_review").await;
    assert_eq!(v["round"], 2);
    // A vote from the page before the resubmission is now stale.
    let r = inv
        .post(
            &format!("/ui/transfers/{id}/vote"),
            &[
                ("csrf", inv.csrf.as_str()),
                ("root_digest", &root),
                ("path", "t/a.csv"),
                ("vote", "approve"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r.text().await.unwrap().contains("changed since your page"));
}
