//! The HTTP server: state, every route in one place, the error → status table, and a `run`
//! that serves until a shutdown signal and then lets in-flight requests finish.

pub mod error;

use crate::api;
use crate::app::App;
use crate::tus;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
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

/// Every JSON API route, as `(method, path)`, in the order of the router below. The OpenAPI
/// document must describe exactly these (a test checks it).
pub const API_ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/me"),
    ("post", "/api/v1/transfers"),
    ("get", "/api/v1/transfers"),
    ("get", "/api/v1/transfers/{id}"),
    ("post", "/api/v1/transfers/{id}/tokens"),
    ("get", "/api/v1/transfers/{id}/manifest"),
    ("put", "/api/v1/transfers/{id}/files/{path}"),
    ("get", "/api/v1/transfers/{id}/files/{path}"),
    ("delete", "/api/v1/transfers/{id}/files/{path}"),
    ("post", "/api/v1/transfers/{id}/seal"),
    ("post", "/api/v1/transfers/{id}/confirm"),
    ("post", "/api/v1/transfers/{id}/approve"),
    ("post", "/api/v1/transfers/{id}/reject"),
    ("post", "/api/v1/transfers/{id}/cancel"),
    ("options", "/api/v1/transfers/{id}/tus"),
    ("post", "/api/v1/transfers/{id}/tus"),
    ("head", "/api/v1/transfers/{id}/tus/{upload}"),
    ("patch", "/api/v1/transfers/{id}/tus/{upload}"),
    ("delete", "/api/v1/transfers/{id}/tus/{upload}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/openapi.json"),
];

pub fn router(state: AppState) -> Router {
    let uploads = Router::new()
        .route(
            "/api/v1/transfers/{id}/files/{*path}",
            put(api::put_file)
                .get(api::get_file)
                .delete(api::delete_file),
        )
        .route(
            "/api/v1/transfers/{id}/tus",
            post(tus::create).options(tus::options),
        )
        .route(
            "/api/v1/transfers/{id}/tus/{upload}",
            axum::routing::head(tus::head)
                .patch(tus::patch)
                .delete(tus::terminate),
        )
        // Uploads stream to disk; the only size limit is the configured file-size limit.
        .layer(DefaultBodyLimit::disable())
        // tus: every response, errors from authentication included, names the protocol version.
        .layer(axum::middleware::map_response(
            |mut r: axum::response::Response| async move {
                r.headers_mut().insert(
                    "tus-resumable",
                    axum::http::HeaderValue::from_static(tus::VERSION),
                );
                r
            },
        ));
    Router::new()
        .route("/api/v1/me", get(api::me))
        .route(
            "/api/v1/transfers",
            post(api::create_transfer).get(api::list_transfers),
        )
        .route("/api/v1/transfers/{id}", get(api::show_transfer))
        .route("/api/v1/transfers/{id}/tokens", post(api::issue_token))
        .route("/api/v1/transfers/{id}/manifest", get(api::manifest))
        .route("/api/v1/transfers/{id}/seal", post(api::seal))
        .route("/api/v1/transfers/{id}/confirm", post(api::confirm))
        .route("/api/v1/transfers/{id}/approve", post(api::approve))
        .route("/api/v1/transfers/{id}/reject", post(api::reject))
        .route("/api/v1/transfers/{id}/cancel", post(api::cancel))
        .merge(uploads)
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/openapi.json", get(api::openapi))
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn(api::trace_requests))
        .with_state(state)
}

/// Serves on `listener` until `shutdown` resolves, then stops accepting, lets in-flight
/// requests finish (up to the configured grace period) and stops the background worker.
pub async fn run(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(crate::workflow::release::worker(
        app.clone(),
        stop_rx.clone(),
    ));
    let grace = app.settings.server.shutdown_grace;
    let service = router(AppState(app)).into_make_service_with_connect_info::<SocketAddr>();
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
