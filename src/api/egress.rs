//! Egress and collection handlers: extract, call one workflow function, map the result.

use super::{json_body, json_or_default, transfer_id, ApiResult, Caller};
use crate::server::AppState;
use crate::workflow::{collect, egress, transfers, Error};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::net::SocketAddr;

/// A Researcher makes a draft request: `{workspace, context, files: [{path, role}],
/// recipients, target_workspace}`.
pub async fn create(
    State(app): State<AppState>,
    Caller(who): Caller,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<transfers::TransferView>)> {
    let t = egress::create(&app, &who, json_body(&body)?).await?;
    Ok((
        StatusCode::CREATED,
        Json(transfers::show(&app, &who, t.id).await?),
    ))
}

/// The requester rewrites a draft or a returned request (the same body, without workspace).
pub async fn edit(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<transfers::TransferView>> {
    let id = transfer_id(&id)?;
    egress::edit(&app, &who, id, json_body(&body)?).await?;
    Ok(Json(transfers::show(&app, &who, id).await?))
}

pub async fn submit(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<transfers::TransferView>> {
    let id = transfer_id(&id)?;
    egress::submit(&app, &who, id).await?;
    Ok(Json(transfers::show(&app, &who, id).await?))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithdrawRequest {
    pub reason: String,
}

pub async fn withdraw(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<transfers::TransferView>> {
    let id = transfer_id(&id)?;
    let req: WithdrawRequest = json_body(&body)?;
    egress::withdraw(&app, &who, id, &req.reason).await?;
    Ok(Json(transfers::show(&app, &who, id).await?))
}

pub async fn vote(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<transfers::TransferView>> {
    let id = transfer_id(&id)?;
    egress::vote(&app, &who, id, json_body(&body)?).await?;
    Ok(Json(transfers::show(&app, &who, id).await?))
}

pub async fn review(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<transfers::TransferView>> {
    let id = transfer_id(&id)?;
    egress::review(&app, &who, id, json_or_default(&body)?).await?;
    Ok(Json(transfers::show(&app, &who, id).await?))
}

pub async fn acknowledge(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<transfers::TransferView>> {
    let id = transfer_id(&id)?;
    egress::acknowledge(&app, &who, id, json_body(&body)?).await?;
    Ok(Json(transfers::show(&app, &who, id).await?))
}

/// ACRO-compatible `results.json` of the request's disclosure checks.
pub async fn results(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(egress::results(&app, &who, transfer_id(&id)?).await?))
}

pub async fn issue_collection_token(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<collect::IssuedToken>)> {
    let t = collect::issue_token(&app, &who, transfer_id(&id)?, json_body(&body)?).await?;
    Ok((StatusCode::CREATED, Json(t)))
}

pub async fn revoke_collection_tokens(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let n =
        collect::revoke_tokens(&app, &who, transfer_id(&id)?, json_or_default(&body)?).await?;
    Ok(Json(serde_json::json!({ "revoked": n })))
}

/// What the caller's collection token may collect.
pub async fn package(
    State(app): State<AppState>,
    Caller(who): Caller,
) -> ApiResult<Json<collect::Package>> {
    Ok(Json(collect::package(&app, &who).await?))
}

/// A single `bytes=START-[END]` range; anything else is answered whole (RFC 9110 lets a
/// server ignore a Range it does not support).
fn range_of(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let v = headers.get(header::RANGE)?.to_str().ok()?;
    let spec = v.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let start = a.trim().parse().ok()?;
    let end = match b.trim() {
        "" => None,
        e => Some(e.parse().ok()?),
    };
    Some((start, end))
}

/// One output file, whole or from a `Range`, with its SHA-256 in `Repr-Digest` (RFC 9530).
pub async fn file(
    State(app): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Caller(who): Caller,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    use base64::Engine;
    let range = range_of(&headers);
    let d = collect::file(&app.0, &who, addr.ip().to_canonical(), &path, range).await?;
    let size = d.file.size;
    let partial = range.is_some();
    let len = d.range.end - d.range.start;
    let (start, end) = (d.range.start, d.range.end);
    let mut resp = Body::from_stream(d.body).into_response();
    if partial {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, len.into());
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if partial {
        let v = format!("bytes {start}-{}/{size}", end.saturating_sub(1));
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&v).map_err(|e| Error::Internal(e.to_string()))?,
        );
    }
    if let Ok(raw) = hex::decode(&d.file.sha256) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        if let Ok(v) = HeaderValue::from_str(&format!("sha-256=:{b64}:")) {
            h.insert("repr-digest", v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", d.file.sha256)) {
        h.insert(header::ETAG, v);
    }
    Ok(resp)
}

async fn whole(
    app: AppState,
    addr: SocketAddr,
    who: crate::workflow::access::Principal,
    format: collect::Format,
) -> ApiResult<Response> {
    let body = collect::whole(&app.0, &who, addr.ip().to_canonical(), format).await?;
    let (ctype, name) = match format {
        collect::Format::Zip => ("application/zip", "package.zip"),
        collect::Format::Tar => ("application/x-tar", "package.tar"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, ctype.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// The whole package as a zip stream, built while it is sent.
pub async fn package_zip(
    State(app): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Caller(who): Caller,
) -> ApiResult<Response> {
    whole(app, addr, who, collect::Format::Zip).await
}

/// The whole package as a tar stream, built while it is sent.
pub async fn package_tar(
    State(app): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Caller(who): Caller,
) -> ApiResult<Response> {
    whole(app, addr, who, collect::Format::Tar).await
}
