//! Thin JSON API handlers: extract, call one workflow function, map the result.

pub mod egress;

use crate::domain::TransferId;
use crate::server::error::ApiError;
use crate::server::AppState;
use crate::workflow::access::{self, Principal};
use crate::workflow::{governance, membership, transfers, upload, Error};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::TryStreamExt;
use serde::Deserialize;
use std::net::SocketAddr;

/// The authenticated caller of a request.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            // An IPv4 client of a dual-stack listener arrives as ::ffff:a.b.c.d.
            .map(|c| c.0.ip().to_canonical())
            .ok_or_else(|| Error::Internal("no client address on the connection".into()))?;
        let auth = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let route = format!("{} {}", parts.method, parts.uri.path());
        Ok(Caller(
            access::authenticate(state, auth, client, &route).await?,
        ))
    }
}

pub fn transfer_id(raw: &str) -> Result<TransferId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError(Error::NotFound(format!("no transfer {raw}"))))
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Logs every request with its status and duration.
pub async fn trace_requests(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    tracing::info!(
        %method, %path, status = resp.status().as_u16(),
        ms = started.elapsed().as_millis() as u64, "request"
    );
    resp
}

pub async fn not_found() -> ApiError {
    ApiError(Error::NotFound("no such route; see /openapi.json".into()))
}

pub async fn healthz() -> &'static str {
    "ok"
}

/// Prometheus metrics (no names, paths or ids: safe to scrape without a token).
pub async fn metrics(
    State(app): State<AppState>,
    limiter: Option<axum::Extension<std::sync::Arc<crate::server::limits::Limiter>>>,
) -> Response {
    let buffers = limiter.map(|axum::Extension(l)| l.buffers());
    let text = app.metrics.scrape(&app.store, &app.volumes, buffers).await;
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

/// Ready when the metadata store and both volumes answer.
pub async fn readyz(State(app): State<AppState>) -> Response {
    // Details go to the log; the unauthenticated answer says only what is down.
    let db = app.store.ping().await.map_err(|e| {
        tracing::error!(error = %e, "readiness: metadata store");
        "unreachable".to_string()
    });
    let vol = app.volumes.ping().await.map_err(|e| {
        tracing::error!(error = %e, "readiness: volumes");
        "unreachable".to_string()
    });
    // A volume below its free-space floor is not ready: uploads would fail on it.
    let floor = app.settings.storage.min_free;
    let mut space = serde_json::Map::new();
    let mut low = false;
    for s in app.volumes.space() {
        match s {
            Ok(s) if s.free < floor => {
                low = true;
                space.insert(
                    s.volume.into(),
                    format!("low: {} bytes free, below the floor of {floor}", s.free).into(),
                );
            }
            Ok(s) => {
                space.insert(s.volume.into(), "ok".into());
            }
            Err(e) => tracing::error!(error = %e, "readiness: free space"),
        }
    }
    let ok = db.is_ok() && vol.is_ok() && !low;
    let body = serde_json::json!({
        "ready": ok,
        "metadata_store": db.err().unwrap_or_else(|| "ok".into()),
        "volumes": vol.err().unwrap_or_else(|| "ok".into()),
        "free_space": space,
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

/// Who the caller is, and the id of the staff token they called with (for `airlock token
/// revoke ID`). The token was verified by `Caller`, so its claims are ours.
pub async fn me(
    State(app): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let _ = &app;
    let u = who.staff()?;
    let token_id = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(crate::auth::peek_claims)
        .map(|c| c.jti);
    Ok(Json(
        serde_json::json!({ "id": u.id, "name": u.name, "roles": u.roles, "token_id": token_id }),
    ))
}

pub async fn create_transfer(
    State(app): State<AppState>,
    Caller(who): Caller,
    Json(req): Json<transfers::CreateTransfer>,
) -> ApiResult<(StatusCode, Json<transfers::TransferView>)> {
    let t = transfers::create(&app, &who, req).await?;
    Ok((
        StatusCode::CREATED,
        Json(transfers::show(&app, &who, t.id).await?),
    ))
}

#[derive(Deserialize)]
pub struct ListQuery {
    workspace: String,
}

pub async fn list_transfers(
    State(app): State<AppState>,
    Caller(who): Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<transfers::TransferView>>> {
    Ok(Json(transfers::list(&app, &who, &q.workspace).await?))
}

pub async fn show_transfer(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<transfers::TransferView>> {
    Ok(Json(transfers::show(&app, &who, transfer_id(&id)?).await?))
}

pub async fn issue_token(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<transfers::IssuedToken>)> {
    let req = json_or_default(&body)?;
    let t = transfers::issue_token(&app, &who, transfer_id(&id)?, req).await?;
    Ok((StatusCode::CREATED, Json(t)))
}

pub async fn revoke_tokens(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let n = transfers::revoke_tokens(&app, &who, transfer_id(&id)?).await?;
    Ok(Json(serde_json::json!({ "revoked": n })))
}

/// Every file's receipt: `{"id", "state", "files": [...]}`, written as the rows are read, so a
/// 100,000-file manifest never sits in memory.
pub async fn manifest(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    use futures::StreamExt;
    let (head, rows) = transfers::receipts(&app, &who, transfer_id(&id)?).await?;
    let mut open = serde_json::to_vec(&head).map_err(|e| Error::Internal(e.to_string()))?;
    open.pop(); // the closing brace: the files array goes in first
    open.extend_from_slice(br#","files":["#);
    let mut first = true;
    let items = rows.map(move |r| {
        let f = r.map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut buf = if first { Vec::new() } else { vec![b','] };
        first = false;
        serde_json::to_writer(&mut buf, &f).map_err(std::io::Error::other)?;
        Ok::<_, std::io::Error>(Bytes::from(buf))
    });
    let body = futures::stream::once(async move { Ok(Bytes::from(open)) })
        .chain(items)
        .chain(futures::stream::once(async {
            Ok(Bytes::from_static(b"]}"))
        }));
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

#[derive(Debug, serde::Deserialize)]
pub struct PageQuery {
    pub after: Option<String>,
    pub limit: Option<u32>,
}

type PageQueryResult = Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>;

/// A page's query, or a 400 saying what it should be.
fn page_query(q: PageQueryResult, cursor: &str) -> Result<PageQuery, Error> {
    q.map(|Query(q)| q).map_err(|e| {
        Error::BadRequest(format!(
            "query: {}; expected after={cursor} and limit=1..{}",
            e.body_text(),
            transfers::MAX_PAGE
        ))
    })
}

/// One page of the transfer's files in path order: `{"files": [...], "next": PATH|null}`.
pub async fn list_files(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    q: PageQueryResult,
) -> ApiResult<Json<transfers::FilesPage>> {
    let q = page_query(q, "PATH")?;
    Ok(Json(
        transfers::files_page(&app, &who, transfer_id(&id)?, q.after.as_deref(), q.limit).await?,
    ))
}

/// One page of the latest scan's verdicts: `{"verdicts": [...], "next": CURSOR|null}`.
pub async fn list_verdicts(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    q: PageQueryResult,
) -> ApiResult<Json<transfers::VerdictsPage>> {
    let q = page_query(q, "CURSOR")?;
    Ok(Json(
        transfers::verdicts_page(&app, &who, transfer_id(&id)?, q.after.as_deref(), q.limit)
            .await?,
    ))
}

/// The manifest as `sha256sum` text, streamed.
pub async fn sha256sums(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    use futures::TryStreamExt;
    let rows = transfers::sha256sums(&app, &who, transfer_id(&id)?).await?;
    let body = rows.map_err(|e| std::io::Error::other(e.to_string()));
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// Runs an upload on its own task. A client that hangs up then shows as an error in the body
/// stream, which the upload handles (keeping or discarding what arrived), instead of the
/// request future being dropped between writing bytes and recording them.
pub async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    tokio::spawn(work)
        .await
        .map_err(|e| Error::Internal(format!("upload task failed: {e}")))?
}

/// Optional JSON bodies: empty means defaults.
pub(crate) fn json_or_default<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) || body.trim_ascii() == b"null" {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError(Error::BadRequest(format!("invalid JSON body: {e}"))))
}

/// A required JSON body.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError(Error::BadRequest(format!("invalid JSON body: {e}"))))
}

/// The expected SHA-256 of a PUT (or of a tus upload, on a PATCH), if the uploader sent one.
pub const EXPECTED_SHA256_HEADER: &str = "airlock-expected-sha256";

/// The [`EXPECTED_SHA256_HEADER`] of a request, if it has one; 400 if it is not a digest.
pub fn expected_sha256(headers: &HeaderMap) -> Result<Option<crate::domain::HexDigest>, Error> {
    headers
        .get(EXPECTED_SHA256_HEADER)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| crate::domain::HexDigest::parse(s).ok())
                .ok_or_else(|| {
                    Error::BadRequest(format!("{EXPECTED_SHA256_HEADER} must be 64 hex digits"))
                })
        })
        .transpose()
}

pub async fn put_file(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path((id, path)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<upload::FileReceipt>)> {
    let expected = expected_sha256(&headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let stream = body.into_data_stream().map_err(|e| e.to_string());
    let tid = transfer_id(&id)?;
    let receipt = detached(async move {
        upload::put_file(&app, &who, tid, &path, expected, declared, stream).await
    })
    .await?;
    Ok((StatusCode::CREATED, Json(receipt)))
}

/// `?prefix=DIR` of an archive upload.
#[derive(Debug, Default, Deserialize)]
pub struct ArchiveQuery {
    pub prefix: Option<String>,
}

/// A tar stream, expanded into the transfer as it arrives: `{"files": [receipt...]}`.
pub async fn put_archive(
    State(app): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Caller(who): Caller,
    Path(id): Path<String>,
    Query(q): Query<ArchiveQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if let Some(c) = ctype.filter(|c| c != "application/x-tar" && c != "application/octet-stream") {
        return Err(Error::BadRequest(format!(
            "an archive is sent as Content-Type: application/x-tar, not {c}"
        ))
        .into());
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let origin = crate::workflow::archive_upload::Origin {
        client: addr.ip().to_canonical(),
        route: format!("PUT /api/v1/transfers/{id}/archive"),
    };
    let stream = body.into_data_stream().map_err(|e| e.to_string());
    let tid = transfer_id(&id)?;
    let accepted = detached(async move {
        crate::workflow::archive_upload::put_archive(
            &app,
            &who,
            &origin,
            tid,
            q.prefix.as_deref(),
            declared,
            stream,
        )
        .await
    })
    .await?;
    // `{"files": [receipt...]}`, written by the workflow as the members were inserted.
    Ok((
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        accepted.json,
    )
        .into_response())
}

pub async fn delete_file(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path((id, path)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    upload::delete_file(&app, &who, transfer_id(&id)?, &path).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A reviewer downloads one file's content.
pub async fn get_file(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path((id, path)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (file, stream) = transfers::read_content(&app, &who, transfer_id(&id)?, &path).await?;
    let mut resp = Body::from_stream(stream.map_err(|e| e.to_string())).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        "application/octet-stream".parse().expect("static"),
    );
    h.insert(header::CONTENT_LENGTH, file.received.into());
    if let Some(sha) = file.sha256.as_deref().and_then(|s| s.parse().ok()) {
        h.insert("airlock-sha256", sha);
    }
    Ok(resp)
}

pub async fn seal(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let req = json_or_default(&body)?;
    let id = transfer_id(&id)?;
    let t = transfers::seal(&app, &who, id, req).await?;
    // The sealer may be the upload token: show it only what it may see.
    Ok(Json(serde_json::json!({
        "id": t.id, "state": t.state, "state_reason": t.state_reason, "root_digest": t.root_digest,
    })))
}

async fn decide(
    app: AppState,
    who: Principal,
    id: String,
    body: Bytes,
    verdict: governance::Verdict,
) -> ApiResult<Json<transfers::TransferView>> {
    let id = transfer_id(&id)?;
    governance::decide(&app, &who, id, verdict, json_or_default(&body)?).await?;
    Ok(Json(transfers::show(&app, &who, id).await?))
}

pub async fn approve(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<transfers::TransferView>> {
    decide(app, who, id, body, governance::Verdict::Approve).await
}

pub async fn reject(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<transfers::TransferView>> {
    decide(app, who, id, body, governance::Verdict::Reject).await
}

pub async fn return_transfer(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<transfers::TransferView>> {
    decide(app, who, id, body, governance::Verdict::Return).await
}

pub async fn revoke(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<transfers::TransferView>> {
    let id = transfer_id(&id)?;
    governance::revoke(&app, &who, id, json_body(&body)?).await?;
    Ok(Json(transfers::show(&app, &who, id).await?))
}

pub async fn assign_referee(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Vec<governance::RefereeView>>> {
    let id = transfer_id(&id)?;
    Ok(Json(
        governance::assign_referee(&app, &who, id, json_body(&body)?).await?,
    ))
}

pub async fn approve_referee(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Vec<governance::RefereeView>>> {
    let id = transfer_id(&id)?;
    Ok(Json(
        governance::approve_referee(&app, &who, id, json_body(&body)?).await?,
    ))
}

pub async fn add_user(
    State(app): State<AppState>,
    Caller(who): Caller,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<membership::UserView>)> {
    let u = membership::add_user(&app, &who, json_body(&body)?).await?;
    Ok((StatusCode::CREATED, Json(u)))
}

pub async fn create_project(
    State(app): State<AppState>,
    Caller(who): Caller,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let name = membership::create_project(&app, &who, json_body(&body)?).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "name": name })),
    ))
}

pub async fn members(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(project): Path<String>,
) -> ApiResult<Json<Vec<membership::MemberView>>> {
    Ok(Json(membership::members(&app, &who, &project).await?))
}

pub async fn add_member(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(project): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<membership::MemberView>)> {
    let m = membership::add_member(&app, &who, &project, json_body(&body)?).await?;
    Ok((StatusCode::CREATED, Json(m)))
}

pub async fn approve_member(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(project): Path<String>,
    body: Bytes,
) -> ApiResult<Json<membership::MemberView>> {
    Ok(Json(
        membership::approve_member(&app, &who, &project, json_body(&body)?).await?,
    ))
}

pub async fn remove_member(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(project): Path<String>,
    body: Bytes,
) -> ApiResult<Json<membership::Removed>> {
    Ok(Json(
        membership::remove_member(&app, &who, &project, json_body(&body)?).await?,
    ))
}

pub async fn disable_user(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(user): Path<String>,
    body: Bytes,
) -> ApiResult<Json<membership::Disabled>> {
    let req = if body.is_empty() {
        membership::DisableUser::default()
    } else {
        json_body(&body)?
    };
    Ok(Json(
        membership::disable_user(&app, &who, &user, req).await?,
    ))
}

pub async fn revoke_staff_tokens(
    State(app): State<AppState>,
    Caller(who): Caller,
    body: Bytes,
) -> ApiResult<Json<membership::TokensRevoked>> {
    Ok(Json(
        membership::revoke_staff_tokens(&app, &who, json_body(&body)?).await?,
    ))
}

pub async fn cancel(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<transfers::TransferView>> {
    let id = transfer_id(&id)?;
    transfers::cancel(&app, &who, id).await?;
    Ok(Json(transfers::show(&app, &who, id).await?))
}

pub async fn confirm(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    Json(req): Json<transfers::ConfirmRequest>,
) -> ApiResult<Json<transfers::TransferView>> {
    let id = transfer_id(&id)?;
    transfers::confirm_root(&app, &who, id, req).await?;
    Ok(Json(transfers::show(&app, &who, id).await?))
}
