//! The tus 1.0.0 resumable-upload protocol (https://tus.io/protocols/resumable-upload) with the
//! creation, creation-with-upload, expiration, checksum and termination extensions. Only the
//! protocol lives here: headers in, headers out; the work is `workflow::upload`'s.
//!
//! Upload metadata keys understood: `relativePath` (or `path`, or `filename`) names the file
//! inside the transfer; `sha256` (hex) is the provider's digest, compared at seal (a client
//! that hashes while it sends gives it instead with a PATCH, in the header
//! `Airlock-Expected-Sha256`, recorded with that PATCH's bytes). Instead of a
//! file name, `archive` (`tar`) makes the upload a tar stream that the server expands into the
//! transfer when its last byte arrives (`workflow::archive_upload`), under `prefix` if given.

use crate::api::doc::{
    InsufficientStorage, InternalTus, Octets, Throttled, TransferPath, TusResumable, TusUploadPath,
    TusVersionMismatch, UnauthenticatedTus, UploadBusy, UploadCapped, UploadIdle,
};
use crate::api::{transfer_id, Caller};
use crate::domain::{FileId, HexDigest};
use crate::hashing::ChunkChecksum;
use crate::server::error::ApiError;
use crate::server::error::ErrorBody;
use crate::server::AppState;
use crate::store::FileRow;
use crate::workflow::access::Principal;
use crate::workflow::archive_upload::{self, Appended, Origin};
use crate::workflow::{upload, Error};
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::TryStreamExt;
use sha2::Digest;
use std::net::SocketAddr;

pub const VERSION: &str = "1.0.0";
pub const EXTENSIONS: &str = "creation,creation-with-upload,expiration,checksum,termination";
pub const CHECKSUM_ALGORITHMS: &str = "sha1,sha256";
const OFFSET_TYPE: &str = "application/offset+octet-stream";

/// A tus response: every one, errors included, carries `Tus-Resumable`.
pub struct TusResponse(Response);

impl IntoResponse for TusResponse {
    fn into_response(self) -> Response {
        let mut r = self.0;
        r.headers_mut()
            .insert("tus-resumable", HeaderValue::from_static(VERSION));
        r.headers_mut()
            .insert("cache-control", HeaderValue::from_static("no-store"));
        r
    }
}

impl From<ApiError> for TusResponse {
    fn from(e: ApiError) -> Self {
        TusResponse(e.into_response())
    }
}

impl From<Error> for TusResponse {
    fn from(e: Error) -> Self {
        TusResponse(ApiError(e).into_response())
    }
}

pub type TusResult = Result<TusResponse, TusResponse>;

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// 412 unless the client speaks our version.
fn check_version(h: &HeaderMap) -> Result<(), TusResponse> {
    match header(h, "tus-resumable") {
        Some(VERSION) => Ok(()),
        _ => {
            let mut r = (
                StatusCode::PRECONDITION_FAILED,
                axum::Json(serde_json::json!({ "error": "Tus-Resumable must be 1.0.0" })),
            )
                .into_response();
            r.headers_mut()
                .insert("tus-version", HeaderValue::from_static(VERSION));
            Err(TusResponse(r))
        }
    }
}

fn parse_u64(h: &HeaderMap, name: &str) -> Result<Option<u64>, TusResponse> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                Error::BadRequest(format!("{name} must be a non-negative integer")).into()
            }),
    }
}

/// `key base64,key2 base64,flag` → pairs.
pub fn parse_metadata(raw: &str) -> Result<Vec<(String, String)>, Error> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let mut parts = item.splitn(2, ' ');
        let key = parts.next().unwrap_or_default().to_owned();
        let value = match parts.next() {
            Some(v) => {
                let bytes = b64.decode(v.trim()).map_err(|_| {
                    Error::BadRequest(format!("Upload-Metadata `{key}` is not base64"))
                })?;
                String::from_utf8(bytes).map_err(|_| {
                    Error::BadRequest(format!("Upload-Metadata `{key}` is not UTF-8"))
                })?
            }
            None => String::new(),
        };
        out.push((key, value));
    }
    Ok(out)
}

fn parse_checksum(h: &HeaderMap) -> Result<Option<ChunkChecksum>, Error> {
    let Some(raw) = header(h, "upload-checksum") else {
        return Ok(None);
    };
    let (algo, b64) = raw
        .trim()
        .split_once(' ')
        .ok_or_else(|| Error::BadRequest("Upload-Checksum must be `ALGORITHM BASE64`".into()))?;
    let want = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| Error::BadRequest("Upload-Checksum digest is not base64".into()))?;
    match algo {
        "sha1" => Ok(Some(ChunkChecksum::Sha1(sha1::Sha1::new(), want))),
        "sha256" => Ok(Some(ChunkChecksum::Sha256(sha2::Sha256::new(), want))),
        other => Err(Error::BadRequest(format!(
            "checksum algorithm `{other}` is not supported; use one of {CHECKSUM_ALGORITHMS}"
        ))),
    }
}

fn upload_url(transfer: &str, file: FileId) -> String {
    format!("/api/v1/transfers/{transfer}/tus/{file}")
}

async fn expires_header(app: &AppState, who: &Principal) -> Option<HeaderValue> {
    let Principal::Upload { token, .. } = who else {
        return None;
    };
    let row = app.store.upload_token(*token).await.ok()??;
    let at = chrono::DateTime::from_timestamp(row.expires_at, 0)?;
    HeaderValue::from_str(&at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()).ok()
}

/// Offsets, and once the file is complete its SHA-256 as the server computed it, in
/// `Repr-Digest` (RFC 9530): the upload page shows it beside the browser's own.
fn with_offset(r: Response, f: &FileRow) -> Response {
    let mut r = with_offsets(r, f.received, f.length);
    if let (true, Some(hex)) = (f.complete, f.sha256.as_deref()) {
        if let Some(v) = crate::api::egress::repr_digest(hex) {
            r.headers_mut().insert("repr-digest", v);
        }
    }
    r
}

fn with_offsets(mut r: Response, received: u64, length: Option<u64>) -> Response {
    r.headers_mut().insert("upload-offset", received.into());
    if let Some(len) = length {
        r.headers_mut().insert("upload-length", len.into());
    }
    r
}

fn origin(addr: SocketAddr, method: &str, path: String) -> Origin {
    Origin {
        client: addr.ip().to_canonical(),
        route: format!("{method} {path}"),
    }
}

/// Creation of an archive upload (metadata `archive tar`), with its first bytes if they came.
#[allow(clippy::too_many_arguments)]
async fn create_archive(
    app: &AppState,
    who: &Principal,
    id: &str,
    length: u64,
    kind: &str,
    prefix: Option<String>,
    headers: &HeaderMap,
    body: Body,
    addr: SocketAddr,
) -> TusResult {
    let tid = transfer_id(id)?;
    if kind != "tar" {
        return Err(Error::BadRequest(format!(
            "Upload-Metadata `archive` must be `tar`, not `{kind}`"
        ))
        .into());
    }
    let has_body = header(headers, "content-type") == Some(OFFSET_TYPE)
        && parse_u64(headers, "content-length")?.unwrap_or(1) > 0;
    let checksum = if has_body {
        parse_checksum(headers)?
    } else {
        None
    };
    let a = archive_upload::create_upload(app, who, tid, length, prefix).await?;
    let location =
        HeaderValue::from_str(&upload_url(id, a.id)).map_err(|e| Error::Internal(e.to_string()))?;
    let mut extra = None;
    let received = if has_body {
        let stream = body.into_data_stream().map_err(|e| e.to_string());
        let (app2, who2, aid) = (app.clone(), who.clone(), a.id);
        let origin = origin(addr, "POST", format!("/api/v1/transfers/{id}/tus"));
        let appended = crate::api::detached(async move {
            archive_upload::append(&app2, &who2, &origin, tid, aid, 0, checksum, stream).await
        })
        .await;
        match appended {
            Ok(Appended::Stored(now)) => now.received,
            Ok(Appended::Accepted { length, accepted }) => {
                extra = Some(accepted.files);
                length
            }
            Err(Error::Interrupted(_)) => archive_upload::upload_status(app, who, tid, a.id)
                .await?
                .map_or(0, |a| a.received),
            Err(e @ Error::ChecksumMismatch(_)) => {
                let mut r = crate::server::error::ApiError(e).into_response();
                r.headers_mut().insert("location", location);
                r.headers_mut().insert("upload-offset", 0.into());
                return Err(TusResponse(r));
            }
            Err(e) => {
                archive_upload::terminate(app, who, tid, a.id).await.ok();
                return Err(e.into());
            }
        }
    } else {
        0
    };
    let mut r = with_offsets(StatusCode::CREATED.into_response(), received, Some(length));
    r.headers_mut().insert("location", location);
    if let Some(n) = extra {
        r.headers_mut().insert(ARCHIVE_FILES, n.into());
    }
    if let Some(exp) = expires_header(app, who).await {
        r.headers_mut()
            .insert(HeaderName::from_static("upload-expires"), exp);
    }
    Ok(TusResponse(r))
}

/// On the response to the PATCH that completed an archive upload: how many files it added.
pub const ARCHIVE_FILES: &str = "airlock-archive-files";

/// OPTIONS: what this server supports. No token needed.
#[utoipa::path(
    options,
    path = "/api/v1/transfers/{id}/tus",
    operation_id = "tusOptions",
    tags = ["tus"],
    summary = "tus: discover the server's capabilities",
    description = "tus 1.0.0 OPTIONS. No token needed; the transfer id is not checked.",
    params(
        TransferPath,
    ),
    responses(
        (status = 204, description = "The protocol version, extensions, checksum \
            algorithms and largest file size.", headers(
            ("Tus-Version" = String, description = "Supported protocol versions: `1.0.0`."),
            ("Tus-Extension" = String, description = "Supported extensions: \
                `creation,creation-with-upload,expiration,checksum,termination`."),
            ("Tus-Checksum-Algorithm" = String, description = "Algorithms accepted in \
                `Upload-Checksum`: `sha1,sha256`."),
            ("Tus-Max-Size" = u64, description = "The configured file-size limit in bytes."),
        )),
    ),
)]
pub async fn options(State(app): State<AppState>) -> TusResponse {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert("tus-version", HeaderValue::from_static(VERSION));
    h.insert("tus-extension", HeaderValue::from_static(EXTENSIONS));
    h.insert(
        "tus-checksum-algorithm",
        HeaderValue::from_static(CHECKSUM_ALGORITHMS),
    );
    h.insert("tus-max-size", app.settings.limits.max_file_size.into());
    TusResponse(r)
}

/// POST: creation (and creation-with-upload when a body comes along).
#[utoipa::path(
    post,
    path = "/api/v1/transfers/{id}/tus",
    operation_id = "tusCreate",
    tags = ["tus"],
    summary = "tus: create an upload (optionally with its first bytes)",
    description = "tus 1.0.0 creation and creation-with-upload, with the transfer's \
        upload token. `Upload-Length` is required (`Upload-Defer-Length` is refused). \
        `Upload-Metadata` must name the file with `relativePath` (or `path`, or `filename`); an \
        optional `sha256` (hex) key is the provider's digest, compared at seal. A zero-length \
        upload is complete at once. If the request carries a body with `Content-Type: \
        application/offset+octet-stream`, it is appended from offset 0; if those bytes are \
        interrupted or fail their `Upload-Checksum`, the upload still exists and the response's \
        `Upload-Offset` says where to resume. With `archive` (base64 `dGFy`, \"tar\") instead of \
        a file name, and an optional `prefix`, the upload is a tar stream: stored and resumable \
        like any tus upload, never a file of the manifest itself, and expanded into files (as \
        `PUT /api/v1/transfers/{id}/archive` does) as its pieces arrive: each PATCH answers once \
        its bytes are expanded, and a bad member refuses the PATCH that brings it (the upload \
        is then gone, and nothing of it kept). The PATCH with the last byte accepts the archive \
        whole: it answers with the refusal if the archive is refused, or 204 with \
        `Airlock-Archive-Files` giving the number of files added. Seal refuses while an archive \
        upload is unfinished.",
    params(
        TransferPath,
        TusResumable,
        ("Upload-Length" = u64, Header, description = "The file's \
            total size in bytes."),
        ("Upload-Metadata" = String, Header, description = "Comma-separated \
            `key base64(value)` pairs. Must name the file with `relativePath`, `path` or \
            `filename` (a `/`-separated relative path); `sha256` (64 hex digits) is optional. \
            Keys without a value are allowed. Or `archive` (value `tar`) with an optional \
            `prefix`, for a tar stream the server expands.", example = "relativePath ZGF0YS9hLmNzdg==,sha256 ..."),
        ("Upload-Checksum" = Option<String>, Header, description = "For \
            creation-with-upload: `ALGORITHM BASE64-DIGEST` of this request's body, ALGORITHM \
            being `sha1` or `sha256`."),
    ),
    request_body(content = Option<Octets>, content_type = "application/offset+octet-stream", description = "Optional \
            first bytes of the file (creation-with-upload), sent with `Content-Type: \
            application/offset+octet-stream`; with any other content type the body is ignored."),
    responses(
        (status = 201, description = "The upload exists at `Location`.", headers(
            ("Location" = String, description = "The upload URL, \
                `/api/v1/transfers/{id}/tus/{upload}`."),
            ("Upload-Offset" = u64, description = "Bytes stored so far."),
            ("Upload-Length" = u64, description = "The upload's total size in bytes."),
            ("Upload-Expires" = String, description = "When the upload token (and with it the \
                chance to finish) expires, as an HTTP date."),
        )),
        (status = 400, description = "`Upload-Length` missing or not a non-negative \
            integer, `Upload-Defer-Length` sent, `Upload-Metadata` not base64/UTF-8 or not \
            naming the file, a metadata `sha256` that is not 64 hex digits, a refused path, a \
            malformed or unsupported `Upload-Checksum`, or a body running past `Upload-Length`.", body = ErrorBody),
        (status = 401, response = UnauthenticatedTus),
        (status = 403, description = "A staff token, or an upload token of another \
            transfer.", body = ErrorBody),
        (status = 404, description = "No such transfer.", body = ErrorBody),
        (status = 409, description = "The transfer is not `open`, or the path collides \
            with a file already in the transfer.", body = ErrorBody),
        (status = 412, response = TusVersionMismatch),
        (status = 413, description = "`Upload-Length` is over the file-size limit, or \
            the transfer already holds the most files allowed.", body = ErrorBody),
        (status = 500, response = InternalTus),
        (status = 408, response = UploadIdle),
        (status = 429, response = UploadCapped),
        (status = 503, response = UploadBusy),
        (status = 507, response = InsufficientStorage),
    ),
    security(("uploadToken" = [])),
)]
pub async fn create(
    State(app): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Caller(who): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> TusResult {
    check_version(&headers)?;
    let tid = transfer_id(&id)?;
    if headers.contains_key("upload-defer-length") {
        return Err(Error::BadRequest(
            "Upload-Defer-Length is not supported: send Upload-Length".into(),
        )
        .into());
    }
    let length = parse_u64(&headers, "upload-length")?
        .ok_or_else(|| TusResponse::from(Error::BadRequest("Upload-Length is required".into())))?;
    let meta = parse_metadata(header(&headers, "upload-metadata").unwrap_or(""))?;
    let get = |k: &str| {
        meta.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    if let Some(kind) = get("archive") {
        let prefix = get("prefix");
        return create_archive(&app, &who, &id, length, &kind, prefix, &headers, body, addr).await;
    }
    let path = get("relativePath")
        .or_else(|| get("path"))
        .or_else(|| get("filename"))
        .ok_or_else(|| {
            TusResponse::from(Error::BadRequest(
                "Upload-Metadata must name the file: relativePath, path or filename".into(),
            ))
        })?;
    let expected_sha256 = get("sha256")
        .map(|s| HexDigest::parse(&s))
        .transpose()
        .map_err(|e| TusResponse::from(Error::BadRequest(format!("metadata sha256: {e}"))))?;
    // Every header is checked before anything is reserved, so a bad request leaves nothing.
    let has_body = header(&headers, "content-type") == Some(OFFSET_TYPE)
        && parse_u64(&headers, "content-length")?.unwrap_or(1) > 0;
    let checksum = if has_body {
        parse_checksum(&headers)?
    } else {
        None
    };
    let file = upload::create_upload(
        &app,
        &who,
        tid,
        upload::NewUpload {
            path,
            length,
            expected_sha256,
        },
    )
    .await?;
    let location = HeaderValue::from_str(&upload_url(&id, file.id))
        .map_err(|e| Error::Internal(e.to_string()))?;
    let file = if has_body && !file.complete {
        let stream = body.into_data_stream().map_err(|e| e.to_string());
        let (app2, who2, fid) = (app.clone(), who.clone(), file.id);
        let appended = crate::api::detached(async move {
            upload::append(&app2, &who2, tid, fid, 0, checksum, None, stream).await
        })
        .await;
        match appended {
            Ok(f) => f,
            // The upload exists even if its first bytes were cut off; the client resumes with
            // HEAD at the Location.
            Err(Error::Interrupted(_)) => upload::upload_status(&app, &who, tid, file.id).await?,
            // 460, with the Location, so the client can send the chunk again.
            Err(e @ Error::ChecksumMismatch(_)) => {
                let mut r = crate::server::error::ApiError(e).into_response();
                r.headers_mut().insert("location", location);
                r.headers_mut().insert("upload-offset", 0.into());
                return Err(TusResponse(r));
            }
            // Anything else (a body longer than Upload-Length, say): the reservation goes too.
            Err(e) => {
                upload::terminate(&app, &who, tid, file.id).await.ok();
                return Err(e.into());
            }
        }
    } else {
        file
    };
    let mut r = with_offset(StatusCode::CREATED.into_response(), &file);
    r.headers_mut().insert("location", location);
    if let Some(exp) = expires_header(&app, &who).await {
        r.headers_mut()
            .insert(HeaderName::from_static("upload-expires"), exp);
    }
    Ok(TusResponse(r))
}

fn file_id(raw: &str) -> Result<FileId, TusResponse> {
    raw.parse()
        .map_err(|_| Error::NotFound(format!("no upload {raw}")).into())
}

/// HEAD: how much is stored. Offsets only, never content.
#[utoipa::path(
    head,
    path = "/api/v1/transfers/{id}/tus/{upload}",
    operation_id = "tusHead",
    tags = ["tus"],
    summary = "tus: how much of an upload is stored",
    description = "tus 1.0.0 HEAD with the transfer's upload token: the offset to resume \
        from. Offsets only, never content.",
    params(
        TusUploadPath,
        TusResumable,
    ),
    responses(
        (status = 200, description = "The stored offset.", headers(
            ("Upload-Offset" = u64, description = "Bytes stored so far."),
            ("Upload-Length" = u64, description = "The upload's total size in bytes."),
            ("Upload-Expires" = String, description = "When the upload token (and with it the \
                chance to finish) expires, as an HTTP date."),
        )),
        (status = 401, description = "Missing, invalid, expired or revoked token (also \
            sent with `WWW-Authenticate: Bearer`). HEAD responses carry no body."),
        (status = 403, description = "A staff token, or an upload token of another \
            transfer. HEAD responses carry no body."),
        (status = 404, description = "No such transfer, or no such upload in it. HEAD \
            responses carry no body."),
        (status = 412, description = "`Tus-Resumable` is not `1.0.0` (the response \
            names `Tus-Version: 1.0.0`). HEAD responses carry no body."),
        (status = 500, description = "Internal error. HEAD responses carry no body."),
        (status = 429, response = Throttled),
    ),
    security(("uploadToken" = [])),
)]
pub async fn head(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path((id, upload_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> TusResult {
    check_version(&headers)?;
    let (tid, fid) = (transfer_id(&id)?, file_id(&upload_id)?);
    let mut r = match archive_upload::upload_status(&app, &who, tid, fid).await? {
        Some(a) => with_offsets(StatusCode::OK.into_response(), a.received, Some(a.length)),
        None => {
            let f = upload::upload_status(&app, &who, tid, fid).await?;
            with_offset(StatusCode::OK.into_response(), &f)
        }
    };
    if let Some(exp) = expires_header(&app, &who).await {
        r.headers_mut()
            .insert(HeaderName::from_static("upload-expires"), exp);
    }
    Ok(TusResponse(r))
}

/// PATCH: append at `Upload-Offset`.
#[utoipa::path(
    patch,
    path = "/api/v1/transfers/{id}/tus/{upload}",
    operation_id = "tusPatch",
    tags = ["tus"],
    summary = "tus: append bytes at Upload-Offset",
    description = "tus 1.0.0 PATCH with the transfer's upload token. `Upload-Offset` must \
        equal the stored offset (ask with HEAD). Without `Upload-Checksum`, bytes that arrived \
        before an interruption are kept; with it, a chunk that does not match is discarded \
        (460). The upload completes when the offset reaches `Upload-Length`.",
    params(
        TusUploadPath,
        TusResumable,
        ("Upload-Offset" = u64, Header, description = "Where this \
            chunk starts: the stored offset."),
        ("Upload-Checksum" = Option<String>, Header, description = "`ALGORITHM \
            BASE64-DIGEST` of this chunk, ALGORITHM being `sha1` or `sha256`."),
        ("airlock-expected-sha256" = Option<HexDigest>, Header, description = "The provider's \
            SHA-256 of the whole file (64 hex digits), for a client that hashes while it sends: \
            recorded with this PATCH's bytes and compared at seal, as the creation's `sha256` \
            metadata is. 400 if it is not a digest, if the creation named a different one, or on \
            an archive upload (members carry `AIRLOCK.sha256` records)."),
    ),
    request_body(content = Octets, content_type = "application/offset+octet-stream", description = "The \
            chunk's bytes. `Content-Type` must be `application/offset+octet-stream` (else 415)."),
    responses(
        (status = 204, description = "Appended; the new offset.", headers(
            ("Airlock-Archive-Files" = u64, description = "On the PATCH that completed an \
                archive upload (metadata `archive tar`): how many files it added."),
            ("Upload-Offset" = u64, description = "Bytes stored so far."),
            ("Upload-Length" = u64, description = "The upload's total size in bytes."),
            ("Upload-Expires" = String, description = "When the upload token (and with it the \
                chance to finish) expires, as an HTTP date."),
        )),
        (status = 400, description = "`Upload-Offset` missing or malformed, a \
            malformed or unsupported `Upload-Checksum`, a body running past `Upload-Length` \
            (discarded), or an interrupted chunk.", body = ErrorBody),
        (status = 401, response = UnauthenticatedTus),
        (status = 403, description = "A staff token, or an upload token of another \
            transfer.", body = ErrorBody),
        (status = 404, description = "No such transfer, or no such upload in it.", body = ErrorBody),
        (status = 409, description = "`Upload-Offset` does not match the stored \
            offset, the upload is already complete, another request is still writing it, or the \
            transfer is not `open`.", body = ErrorBody),
        (status = 412, response = TusVersionMismatch),
        (status = 415, description = "`Content-Type` is not \
            `application/offset+octet-stream`.", body = ErrorBody),
        (status = 460, description = "The chunk does not match its `Upload-Checksum`; \
            it was discarded and the offset is unchanged.", body = ErrorBody),
        (status = 500, response = InternalTus),
        (status = 408, response = UploadIdle),
        (status = 429, response = UploadCapped),
        (status = 503, response = UploadBusy),
        (status = 507, response = InsufficientStorage),
    ),
    security(("uploadToken" = [])),
)]
pub async fn patch(
    State(app): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Caller(who): Caller,
    Path((id, upload_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> TusResult {
    check_version(&headers)?;
    if header(&headers, "content-type") != Some(OFFSET_TYPE) {
        return Err(TusResponse(
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                axum::Json(serde_json::json!({
                    "error": format!("PATCH needs Content-Type: {OFFSET_TYPE}")
                })),
            )
                .into_response(),
        ));
    }
    let offset = parse_u64(&headers, "upload-offset")?
        .ok_or_else(|| TusResponse::from(Error::BadRequest("Upload-Offset is required".into())))?;
    let checksum = parse_checksum(&headers)?;
    let expected = crate::api::expected_sha256(&headers)?;
    let stream = body.into_data_stream().map_err(|e| e.to_string());
    let (tid, fid) = (transfer_id(&id)?, file_id(&upload_id)?);
    let (app2, who2) = (app.clone(), who.clone());
    let mut r = if archive_upload::upload_status(&app, &who, tid, fid)
        .await?
        .is_some()
    {
        if expected.is_some() {
            return Err(Error::BadRequest(format!(
                "{} is for one file; an archive's members carry theirs as AIRLOCK.sha256 records",
                crate::api::EXPECTED_SHA256_HEADER
            ))
            .into());
        }
        let origin = origin(
            addr,
            "PATCH",
            format!("/api/v1/transfers/{id}/tus/{upload_id}"),
        );
        let appended = crate::api::detached(async move {
            archive_upload::append(&app2, &who2, &origin, tid, fid, offset, checksum, stream).await
        })
        .await?;
        match appended {
            Appended::Stored(a) => with_offsets(
                StatusCode::NO_CONTENT.into_response(),
                a.received,
                Some(a.length),
            ),
            Appended::Accepted { length, accepted } => {
                let mut r =
                    with_offsets(StatusCode::NO_CONTENT.into_response(), length, Some(length));
                r.headers_mut().insert(ARCHIVE_FILES, accepted.files.into());
                r
            }
        }
    } else {
        let f = crate::api::detached(async move {
            upload::append(&app2, &who2, tid, fid, offset, checksum, expected, stream).await
        })
        .await?;
        with_offset(StatusCode::NO_CONTENT.into_response(), &f)
    };
    if let Some(exp) = expires_header(&app, &who).await {
        r.headers_mut()
            .insert(HeaderName::from_static("upload-expires"), exp);
    }
    Ok(TusResponse(r))
}

/// DELETE: termination.
#[utoipa::path(
    delete,
    path = "/api/v1/transfers/{id}/tus/{upload}",
    operation_id = "tusTerminate",
    tags = ["tus"],
    summary = "tus: terminate an upload",
    description = "tus 1.0.0 termination with the transfer's upload token: drops the \
        upload (finished or not) from the open transfer, as `DELETE .../files/{path}` does.",
    params(
        TusUploadPath,
        TusResumable,
    ),
    responses(
        (status = 204, description = "Terminated."),
        (status = 401, response = UnauthenticatedTus),
        (status = 403, description = "A staff token, or an upload token of another \
            transfer.", body = ErrorBody),
        (status = 404, description = "No such transfer, or no such upload in it.", body = ErrorBody),
        (status = 409, description = "The transfer is not `open`, or the upload is \
            still being written (retry).", body = ErrorBody),
        (status = 412, response = TusVersionMismatch),
        (status = 500, response = InternalTus),
        (status = 429, response = Throttled),
    ),
    security(("uploadToken" = [])),
)]
pub async fn terminate(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path((id, upload_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> TusResult {
    check_version(&headers)?;
    let (tid, fid) = (transfer_id(&id)?, file_id(&upload_id)?);
    if archive_upload::upload_status(&app, &who, tid, fid)
        .await?
        .is_some()
    {
        archive_upload::terminate(&app, &who, tid, fid).await?;
    } else {
        upload::terminate(&app, &who, tid, fid).await?;
    }
    Ok(TusResponse(StatusCode::NO_CONTENT.into_response()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_decoded() {
        let m = parse_metadata("filename ZGF0YS9hLmNzdg==,is_confidential").unwrap();
        assert_eq!(m[0], ("filename".into(), "data/a.csv".into()));
        assert_eq!(m[1], ("is_confidential".into(), String::new()));
        assert!(parse_metadata("filename !!!").is_err());
    }
}
