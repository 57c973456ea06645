//! Times every request for `/metrics`, labelled by the route *template* that matched
//! (`/api/v1/transfers/{id}`, from axum's `MatchedPath`), never by the path asked for: the
//! path holds transfer ids and file names, and `/metrics` is read without a token.

use crate::server::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// Middleware: the time until the handler's response head, by route, method and status class.
/// A streamed body (a download, `sha256sums`) is not waited for.
pub async fn time_requests(State(app): State<AppState>, req: Request, next: Next) -> Response {
    // Copied out before the request is handed on; the template is one of the route table's.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let method = req.method().clone();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    app.metrics.request(
        route.as_deref(),
        method.as_str(),
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}
