//! The HTTP server: state, every route in one place, the error → status table, and a `run`
//! that serves until a shutdown signal and then lets in-flight requests finish.

pub mod error;
pub mod limits;
pub mod proxy;
pub mod timing;

use crate::api;
use crate::app::App;
use crate::tus;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put, MethodRouter};
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Shared by every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

const FILES: &str = "/api/v1/transfers/{id}/files/{*path}";
const TUS: &str = "/api/v1/transfers/{id}/tus";
const TUS_UPLOAD: &str = "/api/v1/transfers/{id}/tus/{upload}";

/// Upload routes stream to disk: the only size limit is the configured file-size limit. What
/// a client may hold meanwhile (uploads in progress, buffer memory) is `limits`'.
fn streaming(r: MethodRouter<AppState>) -> MethodRouter<AppState> {
    r.layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(limits::uploads))
}

/// tus routes: every response, errors from authentication included, names the version.
fn tus_route(r: MethodRouter<AppState>) -> MethodRouter<AppState> {
    streaming(r).layer(axum::middleware::map_response(
        |mut r: axum::response::Response| async move {
            r.headers_mut().insert(
                "tus-resumable",
                axum::http::HeaderValue::from_static(tus::VERSION),
            );
            r
        },
    ))
}

/// Every route, once: `(method, path as axum writes it, handler)`. The router and
/// [`api_routes`] (which the OpenAPI document and the upload-token tests are checked
/// against) are both built from this table, so they cannot drift apart.
fn routes() -> Vec<(&'static str, &'static str, MethodRouter<AppState>)> {
    use axum::routing::{delete, head, options, patch};
    vec![
        ("get", "/api/v1/me", get(api::me)),
        ("post", "/api/v1/login-links", post(api::login_link)),
        ("post", "/api/v1/transfers", post(api::create_transfer)),
        ("get", "/api/v1/transfers", get(api::list_transfers)),
        ("get", "/api/v1/transfers/{id}", get(api::show_transfer)),
        (
            "post",
            "/api/v1/transfers/{id}/tokens",
            post(api::issue_token),
        ),
        (
            "post",
            "/api/v1/transfers/{id}/tokens/revoke",
            post(api::revoke_tokens),
        ),
        ("get", "/api/v1/transfers/{id}/manifest", get(api::manifest)),
        ("get", "/api/v1/transfers/{id}/files", get(api::list_files)),
        (
            "get",
            "/api/v1/transfers/{id}/sha256sums",
            get(api::sha256sums),
        ),
        (
            "get",
            "/api/v1/transfers/{id}/verdicts",
            get(api::list_verdicts),
        ),
        ("put", FILES, streaming(put(api::put_file))),
        ("get", FILES, get(api::get_file)),
        ("delete", FILES, delete(api::delete_file)),
        (
            "put",
            "/api/v1/transfers/{id}/archive",
            streaming(put(api::put_archive)),
        ),
        ("post", "/api/v1/transfers/{id}/seal", post(api::seal)),
        ("post", "/api/v1/transfers/{id}/confirm", post(api::confirm)),
        ("post", "/api/v1/transfers/{id}/approve", post(api::approve)),
        ("post", "/api/v1/transfers/{id}/reject", post(api::reject)),
        (
            "post",
            "/api/v1/transfers/{id}/return",
            post(api::return_transfer),
        ),
        ("post", "/api/v1/transfers/{id}/cancel", post(api::cancel)),
        ("post", "/api/v1/transfers/{id}/revoke", post(api::revoke)),
        (
            "post",
            "/api/v1/transfers/{id}/referees",
            post(api::assign_referee),
        ),
        (
            "post",
            "/api/v1/transfers/{id}/referees/approve",
            post(api::approve_referee),
        ),
        ("post", "/api/v1/users", post(api::add_user)),
        (
            "post",
            "/api/v1/users/{user}/disable",
            post(api::disable_user),
        ),
        (
            "post",
            "/api/v1/tokens/revoke",
            post(api::revoke_staff_tokens),
        ),
        ("post", "/api/v1/projects", post(api::create_project)),
        (
            "get",
            "/api/v1/projects/{project}/members",
            get(api::members),
        ),
        (
            "post",
            "/api/v1/projects/{project}/members",
            post(api::add_member),
        ),
        (
            "post",
            "/api/v1/projects/{project}/members/approve",
            post(api::approve_member),
        ),
        (
            "post",
            "/api/v1/projects/{project}/members/remove",
            post(api::remove_member),
        ),
        ("options", TUS, tus_route(options(tus::options))),
        ("post", TUS, tus_route(post(tus::create))),
        ("head", TUS_UPLOAD, tus_route(head(tus::head))),
        ("patch", TUS_UPLOAD, tus_route(patch(tus::patch))),
        ("delete", TUS_UPLOAD, tus_route(delete(tus::terminate))),
        // Egress: requests, output checking, collection tokens.
        ("post", "/api/v1/egress", post(api::egress::create)),
        ("put", "/api/v1/egress/{id}", put(api::egress::edit)),
        (
            "post",
            "/api/v1/egress/{id}/submit",
            post(api::egress::submit),
        ),
        (
            "post",
            "/api/v1/egress/{id}/withdraw",
            post(api::egress::withdraw),
        ),
        ("post", "/api/v1/egress/{id}/votes", post(api::egress::vote)),
        (
            "post",
            "/api/v1/egress/{id}/review",
            post(api::egress::review),
        ),
        (
            "post",
            "/api/v1/egress/{id}/acknowledge",
            post(api::egress::acknowledge),
        ),
        (
            "get",
            "/api/v1/egress/{id}/results.json",
            get(api::egress::results),
        ),
        (
            "post",
            "/api/v1/egress/{id}/collection-tokens",
            post(api::egress::issue_collection_token),
        ),
        (
            "post",
            "/api/v1/egress/{id}/collection-tokens/revoke",
            post(api::egress::revoke_collection_tokens),
        ),
        // Collection, with a recipient's collection token.
        ("get", "/api/v1/collect", get(api::egress::package)),
        (
            "get",
            "/api/v1/collect/files/{*path}",
            get(api::egress::file),
        ),
        (
            "get",
            "/api/v1/collect/package.zip",
            get(api::egress::package_zip),
        ),
        (
            "get",
            "/api/v1/collect/package.tar",
            get(api::egress::package_tar),
        ),
        // Operations: verify, incidents, the audit log, BagIt export, webhook deliveries.
        ("get", "/api/v1/incidents", get(api::ops::incidents)),
        (
            "post",
            "/api/v1/incidents/{id}/resolve",
            post(api::ops::resolve_incident),
        ),
        (
            "post",
            "/api/v1/transfers/{id}/verify",
            post(api::ops::verify_transfer),
        ),
        (
            "post",
            "/api/v1/workspaces/{project}/{workspace}/verify",
            post(api::ops::verify_workspace),
        ),
        ("get", "/api/v1/audit/verify", get(api::ops::verify_audit)),
        ("get", "/api/v1/audit/export", get(api::ops::export_audit)),
        (
            "get",
            "/api/v1/transfers/{id}/audit",
            get(api::ops::transfer_audit),
        ),
        ("get", "/api/v1/transfers/{id}/bag", get(api::ops::bag)),
        ("get", "/api/v1/webhooks", get(api::ops::webhooks)),
        (
            "post",
            "/api/v1/webhooks/{id}/retry",
            post(api::ops::retry_webhook),
        ),
        ("get", "/healthz", get(api::healthz)),
        ("get", "/readyz", get(api::readyz)),
        ("get", "/metrics", get(api::metrics)),
        ("get", "/openapi.json", get(api::openapi)),
    ]
}

/// Every route as `(method, path)`, with paths written as in the OpenAPI document
/// (`{path}` for the file-path wildcard).
pub fn api_routes() -> Vec<(&'static str, String)> {
    routes()
        .into_iter()
        .map(|(m, p, _)| (m, p.replace("{*path}", "{path}")))
        .collect()
}

pub fn router(state: AppState) -> Router {
    // An upload's window holds one part of its segment writer: 1 MiB on local disk, 5 MiB
    // (S3's smallest part) with the quarantine on S3.
    let limiter = Arc::new(limits::Limiter::with_window(
        &state.settings.uploads,
        state.metrics.upload_refusals(),
        limits::window_for(state.volumes.upload_part_size()),
    ));
    // Methods of one path are merged into one method router, in table order.
    let mut by_path: Vec<(&'static str, MethodRouter<AppState>)> = Vec::new();
    for (_, path, handler) in routes() {
        match by_path.iter_mut().find(|(p, _)| *p == path) {
            Some((_, existing)) => {
                let merged = std::mem::take(existing).merge(handler);
                *existing = merged;
            }
            None => by_path.push((path, handler)),
        }
    }
    by_path
        .into_iter()
        .fold(Router::new(), |r, (path, handler)| r.route(path, handler))
        .merge(crate::ui::routes())
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn(limits::idle_bodies))
        .layer(axum::middleware::from_fn(api::trace_requests))
        // Around every route (and the fallback): axum has set the matched route template by
        // the time a route's layers run, so requests are timed by template, never by path.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            timing::time_requests,
        ))
        .layer(axum::Extension(limiter))
        // Outermost: everything inside sees the client behind a trusted proxy.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            proxy::real_client,
        ))
        .with_state(state)
}

/// Serves on `listener` until `shutdown` resolves, then stops accepting, lets in-flight
/// requests finish (up to the configured grace period) and stops the background worker.
pub async fn run(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Members of archives a crash cut off mid-expansion: unreferenced bytes, removed now.
    match crate::workflow::archive_upload::sweep(&app).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            members = n,
            "removed members of unfinished archive expansions"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot sweep unfinished archive expansions"),
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(crate::workflow::release::worker(
        app.clone(),
        stop_rx.clone(),
    ));
    let notifier = tokio::spawn(crate::notify::worker(app.clone(), stop_rx.clone()));
    let mailer = tokio::spawn(crate::notify::email::worker(app.clone(), stop_rx.clone()));
    let scanner = tokio::spawn(crate::workflow::scanning::worker(
        app.clone(),
        stop_rx.clone(),
    ));
    let fixity = tokio::spawn(crate::integrity::scheduler::worker(
        app.clone(),
        stop_rx.clone(),
    ));
    let summaries = tokio::spawn(crate::workflow::refusals::worker(
        app.clone(),
        stop_rx.clone(),
    ));
    let anchors = tokio::spawn(crate::notify::anchor::worker(app.clone(), stop_rx.clone()));
    let grace = app.settings.server.shutdown_grace;
    let service = router(AppState(app.clone())).into_make_service_with_connect_info::<SocketAddr>();
    let mut stop_for_server = stop_rx.clone();
    let server = axum::serve(listener, service).with_graceful_shutdown(async move {
        let _ = stop_for_server.changed().await;
    });
    let signal = tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop_tx.send(true);
    });
    let mut stop_wait = stop_rx;
    let result = tokio::select! {
        r = server => r,
        _ = async {
            let _ = stop_wait.changed().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("grace period over; dropping unfinished requests");
            Ok(())
        }
    };
    signal.abort();
    let _ = worker.await;
    let _ = notifier.await;
    let _ = mailer.await;
    let _ = scanner.await;
    let _ = fixity.await;
    let _ = summaries.await;
    let _ = anchors.await;
    // The workers have stopped, some in the middle of a leased job: give the leases up, so
    // another replica (or this one restarted) takes the jobs at once instead of after
    // `lease_ttl`.
    if let Err(e) = app.store.unlease_all(&app.replica).await {
        tracing::warn!(error = %e, "cannot give this replica's job leases up");
    }
    // Last, so the anchor covers every event written before the process ends.
    crate::notify::anchor::at_shutdown(&app).await;
    result
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
