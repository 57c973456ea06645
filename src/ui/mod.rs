//! The browser UI: server-rendered pages (askama, auto-escaped) over the same workflow
//! functions as the API. No business rule lives here: each form calls the workflow function
//! its API route calls.
//!
//! - [`assets`]: the vendored scripts and our stylesheet, at content-hashed URLs.
//! - [`preview`]: uploaded bytes turned into plain values a template escapes.
//! - [`pages`]: the handlers.
//!
//! Every response of these routes carries a strict CSP, `nosniff`, `no-referrer` and
//! `no-store` ([`page_headers`]). Every POST is checked for a same-origin source
//! (`Sec-Fetch-Site`, else `Origin`) before anything else ([`same_origin_posts`]), and every
//! POST but the sign-in itself carries the session's synchronizer token.

pub mod assets;
mod pages;
pub mod preview;

use crate::server::error::status_of;
use crate::server::AppState;
use crate::workflow::sessions::{self, Session};
use crate::workflow::Error;
use askama::Template;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

/// The session cookie. `__Host-`: only ever set Secure, from this host, for path `/`.
pub const COOKIE: &str = "__Host-airlock-session";

/// The CSP of every page.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; frame-src 'self'; frame-ancestors 'none'; \
     form-action 'self'; base-uri 'none'";
/// The upload page hashes files with WebAssembly (hash-wasm).
pub const CSP_UPLOAD: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; frame-ancestors 'none'; \
     form-action 'self'; base-uri 'none'";
/// Previews: a sandbox (no script, no same origin), shown only inside our own pages.
pub const CSP_PREVIEW: &str = "sandbox; default-src 'none'; style-src 'self'; img-src 'self'; \
     frame-ancestors 'self'; form-action 'none'; base-uri 'none'";

/// Every UI route.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(pages::inbox))
        .route("/ui/login", get(pages::login_page).post(pages::login))
        .route("/ui/logout", post(pages::logout))
        .route("/ui/transfers", post(pages::open_transfer))
        .route("/ui/transfers/{id}", get(pages::transfer))
        .route("/ui/transfers/{id}/decide", post(pages::decide))
        .route("/ui/transfers/{id}/vote", post(pages::vote))
        .route("/ui/transfers/{id}/review", post(pages::review))
        .route("/ui/transfers/{id}/acknowledge", post(pages::acknowledge))
        .route("/ui/transfers/{id}/upload-link", post(pages::upload_link))
        .route("/ui/transfers/{id}/referees", post(pages::assign_referee))
        .route(
            "/ui/transfers/{id}/collection-link",
            post(pages::collection_link),
        )
        .route("/ui/transfers/{id}/preview/{*path}", get(pages::preview))
        .route("/ui/transfers/{id}/download/{*path}", get(pages::download))
        .route(
            "/ui/egress",
            get(pages::egress_page).post(pages::egress_submit),
        )
        .route("/upload", get(pages::upload_page))
        .route("/collect", get(pages::collect_page))
        .route("/static/{file}", get(assets::serve))
        .layer(axum::middleware::from_fn(same_origin_posts))
        .layer(axum::middleware::from_fn(page_headers))
}

/// Headers on every UI response: the handler's own CSP if it set one, else [`CSP`].
pub async fn page_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// Refuses a POST that a browser says came from another site, or whose `Origin` is not
/// this host; a POST with neither header is refused too (every browser sends one of them).
pub async fn same_origin_posts(req: Request, next: Next) -> Response {
    if req.method() == Method::POST {
        if let Err(why) = same_origin(req.headers()) {
            return page_error(Error::Forbidden(why));
        }
    }
    next.run(req).await
}

fn same_origin(h: &axum::http::HeaderMap) -> Result<(), String> {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        return match site {
            "same-origin" => Ok(()),
            other => Err(format!(
                "this form was posted from another site (Sec-Fetch-Site: {other}); \
                 open the page in airlock and post it from there"
            )),
        };
    }
    let (Some(origin), Some(host)) = (get("origin"), get("host")) else {
        return Err("a form must come with its Origin: post it from airlock's own page".into());
    };
    let bare = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    if bare == Some(host) {
        Ok(())
    } else {
        Err(format!(
            "this form was posted from {origin}, not from this site"
        ))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    title: String,
    message: String,
}

/// A workflow error as a page, with the same status (and wording) as the API gives.
pub fn page_error(e: Error) -> Response {
    let status = status_of(&e);
    let message = if let Error::Internal(cause) = &e {
        let request_id = uuid::Uuid::new_v4();
        tracing::error!(%request_id, %cause, "internal error");
        format!("internal error; quote request id {request_id} to the operator")
    } else {
        e.to_string()
    };
    let page = ErrorPage {
        status: status.as_u16(),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        message,
    };
    let mut r = render(status, &page);
    if let Error::TooManyRequests { retry_after, .. } = &e {
        r.headers_mut()
            .insert(header::RETRY_AFTER, (*retry_after).into());
    }
    r
}

/// Renders a template with a status.
fn render<T: Template>(status: StatusCode, t: &T) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot render a page");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render this page").into_response()
        }
    }
}

/// An error on its way out of a page handler.
pub struct PageError(pub Error);

impl From<Error> for PageError {
    fn from(e: Error) -> Self {
        PageError(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        page_error(self.0)
    }
}

/// A signed-in person on a page request. Without a live session: a GET gets the sign-in
/// page (or, on a cross-site first hop, a page that reloads itself same-site so the
/// SameSite=Strict cookie comes along); a POST gets 401.
pub struct Viewer(pub Session);

pub enum NoSession {
    Page(Response),
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        match self {
            NoSession::Page(r) => r,
        }
    }
}

#[derive(Template)]
#[template(path = "reload.html")]
struct Reload;

#[derive(Template)]
#[template(path = "login.html")]
pub(crate) struct LoginPage {
    pub message: Option<String>,
    pub login_js: &'static str,
    pub css: &'static str,
}

impl LoginPage {
    pub fn new(message: Option<String>) -> Self {
        Self {
            message,
            login_js: assets::url("login.js"),
            css: assets::url("airlock.css"),
        }
    }
}

pub fn cookie_value(parts: &Parts) -> Option<String> {
    let raw = parts.headers.get_all(header::COOKIE);
    for v in raw {
        let Ok(s) = v.to_str() else { continue };
        for pair in s.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=') {
                if k == COOKIE {
                    return Some(v.to_owned());
                }
            }
        }
    }
    None
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = NoSession;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, NoSession> {
        let cookie = cookie_value(parts);
        if let Some(c) = &cookie {
            match sessions::session(app, c).await {
                Ok(Some(s)) => return Ok(Viewer(s)),
                Ok(None) => {}
                Err(e) => return Err(NoSession::Page(page_error(e))),
            }
        }
        if parts.method != Method::GET {
            return Err(NoSession::Page(page_error(Error::Unauthenticated(
                "you are not signed in (or your session ended): sign in again".into(),
            ))));
        }
        let site = parts
            .headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok());
        if cookie.is_none() && site == Some("cross-site") {
            return Err(NoSession::Page(render(StatusCode::OK, &Reload)));
        }
        let msg = cookie.map(|_| "Your session has ended. Sign in again.".to_owned());
        Err(NoSession::Page(render(
            StatusCode::UNAUTHORIZED,
            &LoginPage::new(msg),
        )))
    }
}

impl Viewer {
    /// The synchronizer token a form posted must be this session's.
    pub fn check(&self, posted: &str) -> Result<(), PageError> {
        if sessions::same(posted, &self.0.csrf) {
            Ok(())
        } else {
            Err(PageError(Error::Forbidden(
                "this form's security token is missing or belongs to another session: reload \
                 the page and try again"
                    .into(),
            )))
        }
    }
}

/// The `Set-Cookie` value of a new session.
pub fn session_cookie(id: &str, max_age: u64) -> String {
    format!("{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}")
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn cleared_cookie() -> String {
    format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn posts_from_this_site_pass_and_from_others_are_refused() {
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])).is_ok());
        assert!(same_origin(&headers(&[("sec-fetch-site", "cross-site")])).is_err());
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-site")])).is_err());
        assert!(same_origin(&headers(&[("sec-fetch-site", "none")])).is_err());
        let ok = [
            ("origin", "http://a.example:8080"),
            ("host", "a.example:8080"),
        ];
        assert!(same_origin(&headers(&ok)).is_ok());
        let evil = [
            ("origin", "https://evil.example"),
            ("host", "a.example:8080"),
        ];
        assert!(same_origin(&headers(&evil)).is_err());
        assert!(same_origin(&headers(&[("host", "a.example")])).is_err());
    }

    #[test]
    fn the_session_cookie_is_host_only_secure_httponly_and_strict() {
        let c = session_cookie("abc", 60);
        assert!(c.starts_with("__Host-airlock-session=abc; Path=/;"));
        for flag in ["Secure", "HttpOnly", "SameSite=Strict"] {
            assert!(c.contains(flag), "{c}");
        }
        assert!(!c.contains("Domain"));
    }
}
