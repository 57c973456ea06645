//! Egress and collection handlers: extract, call one workflow function, map the result.

use super::doc::{Internal, Octets, Throttled, TransferPath, Unauthenticated};
use super::{json_body, json_or_default, transfer_id, ApiResult, Caller};
use crate::server::error::ErrorBody;
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
#[utoipa::path(
    post,
    path = "/api/v1/egress",
    operation_id = "createEgress",
    tags = ["egress"],
    summary = "Make a draft egress request",
    description = "A Researcher who is a member of the workspace's project names files and folders of its output volume, each `output`, `supporting` or `code` (at least one output and one code file), a context, and recipients or a target workspace. Links, devices and paths outside the output volume are refused, naming the path.",
    request_body = crate::workflow::egress::Draft,
    responses(
        (status = 201, description = "The draft (state `open`).", body = crate::workflow::transfers::TransferView),
        (status = 400, description = "Malformed input, named in the message.", body = ErrorBody),
        (status = 403, description = "A valid token that may not do this.", body = ErrorBody),
        (status = 404, description = "No such request, or not one the caller may see.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 429, response = Throttled),
        (status = 500, response = Internal),
    ),
    security(("staffToken" = [])),
)]
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
#[utoipa::path(
    put,
    path = "/api/v1/egress/{id}",
    operation_id = "editEgress",
    tags = ["egress"],
    summary = "Rewrite a draft or returned request",
    description = "The requester replaces the context, files and recipients (the body of create, without `workspace`).",
    params(TransferPath),
    request_body = crate::workflow::egress::Draft,
    responses(
        (status = 200, description = "The request.", body = crate::workflow::transfers::TransferView),
        (status = 400, description = "Malformed input, named in the message.", body = ErrorBody),
        (status = 403, description = "A valid token that may not do this.", body = ErrorBody),
        (status = 404, description = "No such request, or not one the caller may see.", body = ErrorBody),
        (status = 409, description = "Not now: the request is in another state.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 429, response = Throttled),
        (status = 500, response = Internal),
    ),
    security(("staffToken" = [])),
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/egress/{id}/submit",
    operation_id = "submitEgress",
    tags = ["egress"],
    summary = "Pin the files and send the request to output checking",
    description = "Every file is copied from the output volume into quarantine and hashed (SHA-256 and BLAKE3) as it is copied; the manifest and root digest are fixed as at an ingress seal, and the scanners and the disclosure checks run. A returned request is submitted again the same way: a new snapshot, every earlier vote void.",
    params(TransferPath),
    responses(
        (status = 200, description = "The sealed request.", body = crate::workflow::transfers::TransferView),
        (status = 400, description = "Malformed input, named in the message.", body = ErrorBody),
        (status = 403, description = "A valid token that may not do this.", body = ErrorBody),
        (status = 404, description = "No such request, or not one the caller may see.", body = ErrorBody),
        (status = 409, description = "Not now: the request is in another state.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 429, response = Throttled),
        (status = 500, response = Internal),
    ),
    security(("staffToken" = [])),
)]
pub async fn submit(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<transfers::TransferView>> {
    let id = transfer_id(&id)?;
    egress::submit(&app, &who, id).await?;
    Ok(Json(transfers::show(&app, &who, id).await?))
}

/// Why the requester withdraws the request.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawRequest {
    pub reason: String,
}

/// `{path}`: an output file of the package.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // a description, never built
pub struct CollectPath {
    /// The file's path in the package, each segment URL-encoded on its own.
    #[param(example = "tables/counts.csv")]
    path: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/egress/{id}/withdraw",
    operation_id = "withdrawEgress",
    tags = ["egress"],
    summary = "Withdraw a request before its outcome",
    description = "The requester takes the request back, with a reason: it becomes `cancelled`.",
    params(TransferPath),
    request_body = WithdrawRequest,
    responses(
        (status = 200, description = "The cancelled request.", body = crate::workflow::transfers::TransferView),
        (status = 400, description = "Malformed input, named in the message.", body = ErrorBody),
        (status = 403, description = "A valid token that may not do this.", body = ErrorBody),
        (status = 404, description = "No such request, or not one the caller may see.", body = ErrorBody),
        (status = 409, description = "Not now: the request is in another state.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 429, response = Throttled),
        (status = 500, response = Internal),
    ),
    security(("staffToken" = [])),
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/egress/{id}/votes",
    operation_id = "voteEgress",
    tags = ["egress"],
    summary = "Vote on one output file",
    description = "An output checker (a role the tier's `[approvals.egress]` asks for, never the requester) votes `approve` or `request-changes` (with a comment) on one output file. Votes stay hidden from the other checkers until their own review is submitted (blinded review, on by default at tier 2+).",
    params(TransferPath),
    request_body = crate::workflow::egress::VoteRequest,
    responses(
        (status = 200, description = "The request as the checker sees it.", body = crate::workflow::transfers::TransferView),
        (status = 400, description = "Malformed input, named in the message.", body = ErrorBody),
        (status = 403, description = "A valid token that may not do this.", body = ErrorBody),
        (status = 404, description = "No such request, or not one the caller may see.", body = ErrorBody),
        (status = 409, description = "Not now: the request is in another state.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 429, response = Throttled),
        (status = 500, response = Internal),
    ),
    security(("staffToken" = [])),
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/egress/{id}/review",
    operation_id = "reviewEgress",
    tags = ["egress"],
    summary = "Submit my review",
    description = "Once every output file has the checker's vote and every disclosure finding their acknowledgment: all approvals count as the checker's approval (the request is approved, then released, once the policy's checkers have all approved); any request-changes returns the request to the researcher with the comments.",
    params(TransferPath),
    request_body = crate::workflow::egress::ReviewRequest,
    responses(
        (status = 200, description = "The request after the review.", body = crate::workflow::transfers::TransferView),
        (status = 400, description = "Malformed input, named in the message.", body = ErrorBody),
        (status = 403, description = "A valid token that may not do this.", body = ErrorBody),
        (status = 404, description = "No such request, or not one the caller may see.", body = ErrorBody),
        (status = 409, description = "Not now: the request is in another state.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 429, response = Throttled),
        (status = 500, response = Internal),
    ),
    security(("staffToken" = [])),
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/egress/{id}/acknowledge",
    operation_id = "acknowledgeFinding",
    tags = ["egress"],
    summary = "Acknowledge a disclosure finding",
    description = "A checker acknowledges one finding of the current round, on the record. Findings are advice: they never approve anything.",
    params(TransferPath),
    request_body = crate::workflow::egress::AckRequest,
    responses(
        (status = 200, description = "The request.", body = crate::workflow::transfers::TransferView),
        (status = 400, description = "Malformed input, named in the message.", body = ErrorBody),
        (status = 403, description = "A valid token that may not do this.", body = ErrorBody),
        (status = 404, description = "No such request, or not one the caller may see.", body = ErrorBody),
        (status = 409, description = "Not now: the request is in another state.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 429, response = Throttled),
        (status = 500, response = Internal),
    ),
    security(("staffToken" = [])),
)]
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
#[utoipa::path(
    get,
    path = "/api/v1/egress/{id}/results.json",
    operation_id = "egressResults",
    tags = ["egress"],
    summary = "The disclosure checks as ACRO results.json",
    description = "Per file: status `pass`/`fail`/`review`, `sdc.summary` and `sdc.cells` ([row, col], 0-based) per check. Never a flagged value.",
    params(TransferPath),
    responses(
        (status = 200, description = "ACRO-compatible results.", body = Object),
        (status = 403, description = "A valid token that may not do this.", body = ErrorBody),
        (status = 404, description = "No such request, or not one the caller may see.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 429, response = Throttled),
        (status = 500, response = Internal),
    ),
    security(("staffToken" = [])),
)]
pub async fn results(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(egress::results(&app, &who, transfer_id(&id)?).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/egress/{id}/collection-tokens",
    operation_id = "issueCollectionToken",
    tags = ["collection"],
    summary = "Issue a recipient's collection token",
    description = "A Project Manager issues a read-only token for one named recipient of a released request: bound to its manifest, expiring (capped by the policy's `collection_max_ttl`), optionally bound to IP ranges and limited to N downloads. Shown once.",
    params(TransferPath),
    request_body = crate::workflow::collect::TokenRequest,
    responses(
        (status = 201, description = "The token, shown once.", body = crate::workflow::collect::IssuedToken),
        (status = 400, description = "Malformed input, named in the message.", body = ErrorBody),
        (status = 403, description = "A valid token that may not do this.", body = ErrorBody),
        (status = 404, description = "No such request, or not one the caller may see.", body = ErrorBody),
        (status = 409, description = "Not now: the request is in another state.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 429, response = Throttled),
        (status = 500, response = Internal),
    ),
    security(("staffToken" = [])),
)]
pub async fn issue_collection_token(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<collect::IssuedToken>)> {
    let t = collect::issue_token(&app, &who, transfer_id(&id)?, json_body(&body)?).await?;
    Ok((StatusCode::CREATED, Json(t)))
}

#[utoipa::path(
    post,
    path = "/api/v1/egress/{id}/collection-tokens/revoke",
    operation_id = "revokeCollectionTokens",
    tags = ["collection"],
    summary = "Revoke collection tokens",
    description = "Every live collection token of the request, or one (`token_id`): refused from the next request on.",
    params(TransferPath),
    request_body = crate::workflow::collect::RevokeRequest,
    responses(
        (status = 200, description = "How many were revoked: `{\"revoked\": N}`.", body = Object),
        (status = 400, description = "Malformed input, named in the message.", body = ErrorBody),
        (status = 403, description = "A valid token that may not do this.", body = ErrorBody),
        (status = 404, description = "No such request, or not one the caller may see.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 429, response = Throttled),
        (status = 500, response = Internal),
    ),
    security(("staffToken" = [])),
)]
pub async fn revoke_collection_tokens(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let n = collect::revoke_tokens(&app, &who, transfer_id(&id)?, json_or_default(&body)?).await?;
    Ok(Json(serde_json::json!({ "revoked": n })))
}

/// What the caller's collection token may collect.
#[utoipa::path(
    get,
    path = "/api/v1/collect",
    operation_id = "getPackage",
    tags = ["collection"],
    summary = "What the collection token may collect",
    description = "The released output files with their sizes and digests, the record files that go with them, the token's expiry and downloads left.",
    responses(
        (status = 200, description = "The package.", body = crate::workflow::collect::Package),
        (status = 403, description = "A valid token that may not do this.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 429, response = Throttled),
        (status = 500, response = Internal),
    ),
    security(("collectionToken" = [])),
)]
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
#[utoipa::path(
    get,
    path = "/api/v1/collect/files/{path}",
    operation_id = "collectFile",
    tags = ["collection"],
    summary = "Download one output file (Range supported)",
    description = "Whole, or from a `Range: bytes=START-[END]` (206), so a download resumes. The file's SHA-256 is in `Repr-Digest` (RFC 9530). A download from the first byte counts against `max_downloads`; every start and finish is audited with the recipient, the address and the bytes.",
    params(CollectPath),
    responses(
        (status = 200, description = "The file (206 for a range).", body = Octets, content_type = "application/octet-stream", headers(("Repr-Digest" = String, description = "`sha-256=:BASE64:`"), ("Accept-Ranges" = String, description = "`bytes`"))),
        (status = 206, description = "Part of the file, with `Content-Range`.", body = Octets, content_type = "application/octet-stream"),
        (status = 403, description = "A valid token that may not do this.", body = ErrorBody),
        (status = 404, description = "Not an output file of this package.", body = ErrorBody),
        (status = 416, description = "The range lies outside the file.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 429, response = Throttled),
        (status = 500, response = Internal),
    ),
    security(("collectionToken" = [])),
)]
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
    if let Some(v) = repr_digest(&d.file.sha256) {
        h.insert("repr-digest", v);
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
#[utoipa::path(
    get,
    path = "/api/v1/collect/package.zip",
    operation_id = "collectZip",
    tags = ["collection"],
    summary = "The whole package as a zip stream",
    description = "Built while it is sent (never written to disk first): the output files, stored, with `manifest-sha256.txt` and `disclosure-record.json`. Counts as one download.",
    responses(
        (status = 200, description = "A zip stream.", body = Octets, content_type = "application/zip"),
        (status = 403, description = "A valid token that may not do this.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 429, response = Throttled),
        (status = 500, response = Internal),
    ),
    security(("collectionToken" = [])),
)]
pub async fn package_zip(
    State(app): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Caller(who): Caller,
) -> ApiResult<Response> {
    whole(app, addr, who, collect::Format::Zip).await
}

/// The whole package as a tar stream, built while it is sent.
#[utoipa::path(
    get,
    path = "/api/v1/collect/package.tar",
    operation_id = "collectTar",
    tags = ["collection"],
    summary = "The whole package as a tar stream",
    description = "As the zip, as a tar stream. Counts as one download.",
    responses(
        (status = 200, description = "A tar stream.", body = Octets, content_type = "application/x-tar"),
        (status = 403, description = "A valid token that may not do this.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 429, response = Throttled),
        (status = 500, response = Internal),
    ),
    security(("collectionToken" = [])),
)]
pub async fn package_tar(
    State(app): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Caller(who): Caller,
) -> ApiResult<Response> {
    whole(app, addr, who, collect::Format::Tar).await
}

/// A hex SHA-256 as an RFC 9530 `Repr-Digest` value: `sha-256=:BASE64:`.
pub fn repr_digest(sha256_hex: &str) -> Option<HeaderValue> {
    let raw = hex::decode(sha256_hex).ok()?;
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw);
    HeaderValue::from_str(&format!("sha-256=:{b64}:")).ok()
}
