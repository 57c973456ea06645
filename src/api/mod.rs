//! Thin JSON API handlers: extract, call one workflow function, map the result. Each carries
//! its `#[utoipa::path]`, from which [`doc::ApiDoc`] builds the OpenAPI document.

pub mod doc;
pub mod egress;
pub mod ops;

use crate::domain::{HexDigest, Role, TransferId, TransferState, UserId};
use crate::server::error::{ApiError, ErrorBody};
use crate::server::AppState;
use crate::workflow::access::{self, Principal};
use crate::workflow::governance::{DecisionRequest, RefereeView, RevokeRequest, UserRef};
use crate::workflow::membership::{
    DisableUser, Disabled, MemberRequest, MemberView, NewProject, NewUser, RemoveMember, Removed,
    RevokeStaffTokens, TokensRevoked, UserView,
};
use crate::workflow::transfers::{
    ConfirmRequest, CreateTransfer, FilesPage, IssuedToken, SealRequest, TokenRequest,
    TransferView, VerdictsPage,
};
use crate::workflow::upload::FileReceipt;
use crate::workflow::{governance, membership, sessions, transfers, upload, Error};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use doc::{
    ArchiveAccepted, FilePathParams, InsufficientStorage, Internal, JsonContentTypeRejection,
    JsonDataRejection, ManifestView, Octets, ProjectPath, Throttled, TransferPath, Unauthenticated,
    UploadBusy, UploadCapped, UploadIdle,
};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use utoipa::{IntoParams, ToSchema};

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

#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tags = ["service"],
    summary = "Liveness",
    description = "Answers `ok` while the process serves requests. No token needed.",
    responses(
        (status = 200, description = "Alive.", body = String, content_type = "text/plain"),
    ),
)]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Prometheus metrics (no names, paths or ids: safe to scrape without a token).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tags = ["service"],
    summary = "Prometheus metrics",
    description = "Every metric in the OpenMetrics text format (`prometheus-client`): \
        files and bytes ingested, released and re-verified (`airlock_ingested_files_total`, \
        `airlock_ingested_bytes_total`, `airlock_released_files_total`, \
        `airlock_released_bytes_total`, `airlock_integrity_files_verified_total`, \
        `airlock_integrity_bytes_verified_total`), \
        `airlock_integrity_incidents_total{kind,location}`, upload and release durations \
        (histograms `airlock_upload_duration_seconds`, `airlock_release_duration_seconds`), HTTP \
        request durations `airlock_http_request_duration_seconds{route,method,status}` by route \
        template (never the path asked for; `unmatched` when no route matched) and status \
        class, `airlock_transfers{state}`, background work waiting \
        `airlock_background_waiting{queue}` (`scan`, `scan_retry`, `release`, `expiry`, \
        `webhook_delivery`, `webhook_outbox`), free and total bytes per volume, the \
        upload-buffer budget and upload refusals by reason. Counts only, no names, paths or ids; \
        no token needed. Counters restart at 0 with the process; values read from the database \
        are refreshed at most once a second.",
    responses(
        (status = 200, description = "The metrics, ending with `# EOF`.", body = String, content_type = "application/openmetrics-text"),
    ),
)]
pub async fn metrics(
    State(app): State<AppState>,
    limiter: Option<axum::Extension<std::sync::Arc<crate::server::limits::Limiter>>>,
) -> Response {
    let buffers = limiter.map(|axum::Extension(l)| l.buffers());
    let text = app.metrics.scrape(&app.store, &app.volumes, buffers).await;
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

/// The body of `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// `ok`, or `unreachable` (the cause is logged).
    pub metadata_store: String,
    /// `ok`, or `unreachable` (the cause is logged).
    pub volumes: String,
    /// The schema's version against this release's: `ok (version N)`; `newer: …` when a newer
    /// release has migrated the database since this one started (not ready: drain this
    /// replica); `behind: …` should never be seen (migrations run at start).
    pub migrations: String,
    /// The database backend: `sqlite` or `postgres`.
    pub database: String,
    /// `ok`, `unreachable` (the cause is logged), or `not configured`. Reported, but it does
    /// not make the replica unready: uploads go on, and scans wait and retry until clamd is back.
    pub clamd: String,
    /// Each volume: `ok`, or `low: …` when its free space is below `storage.min_free`.
    /// (Local volumes only: S3 reports no free space.)
    pub free_space: BTreeMap<String, String>,
    /// What each volume (`quarantine`, `released`, `egress`) is on: `local` or `s3`. Whether
    /// each answers is `volumes`.
    pub storage: BTreeMap<String, String>,
}

/// Ready when the metadata store and both volumes answer.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tags = ["service"],
    summary = "Readiness",
    description = "Ready when the metadata store and both volumes (quarantine and \
        release) answer. No token needed.",
    responses(
        (status = 200, description = "Ready.", body = Readiness),
        (status = 503, description = "Not ready; the failing dependency's field holds \
            its error.", body = Readiness),
    ),
)]
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
    let mut space = BTreeMap::new();
    let mut low = false;
    for s in app.volumes.space() {
        match s {
            Ok(s) if s.free < floor => {
                low = true;
                space.insert(
                    s.volume.into(),
                    format!("low: {} bytes free, below the floor of {floor}", s.free),
                );
            }
            Ok(s) => {
                space.insert(s.volume.into(), "ok".into());
            }
            Err(e) => tracing::error!(error = %e, "readiness: free space"),
        }
    }
    let backend = app.store.backend();
    let known = crate::store::migrate::latest(backend);
    let (schema_ok, migrations) =
        match crate::store::migrate::applied(app.store.pool(), backend).await {
            Ok(Some(v)) if v == known => (true, format!("ok (version {v})")),
            Ok(Some(v)) if v > known => (
                false,
                format!("newer: version {v}, this release knows {known}"),
            ),
            Ok(v) => (
                false,
                format!(
                    "behind: version {}, this release knows {known}",
                    v.unwrap_or(0)
                ),
            ),
            Err(e) => {
                tracing::error!(error = %e, "readiness: schema version");
                (false, "unreachable".into())
            }
        };
    let clamd = match &app.scanners.clamav {
        None => "not configured".to_string(),
        Some(c) => {
            use crate::scan::Scanner;
            match c.versions().await {
                Ok(_) => "ok".into(),
                Err(e) => {
                    tracing::error!(error = %e, "readiness: clamd");
                    "unreachable".into()
                }
            }
        }
    };
    let ok = db.is_ok() && vol.is_ok() && !low && schema_ok;
    let body = Readiness {
        ready: ok,
        metadata_store: db.err().unwrap_or_else(|| "ok".into()),
        volumes: vol.err().unwrap_or_else(|| "ok".into()),
        migrations,
        database: match backend {
            crate::store::Backend::Sqlite => "sqlite".into(),
            crate::store::Backend::Postgres => "postgres".into(),
        },
        clamd,
        free_space: space,
        storage: app
            .volumes
            .kinds()
            .into_iter()
            .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
            .collect(),
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tags = ["service"],
    summary = "This OpenAPI document",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API.", body = serde_json::Value),
    ),
)]
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], doc::json()).into_response()
}

/// The body of `GET /api/v1/me`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub id: UserId,
    pub name: String,
    /// Global roles (project roles are held per project).
    pub roles: Vec<Role>,
    /// The id of the staff token this request was made with: `airlock token revoke ID`
    /// revokes just it.
    #[schema(format = "uuid")]
    pub token_id: Option<String>,
}

/// Who the caller is, and the id of the staff token they called with (for `airlock token
/// revoke ID`). The token was verified by `Caller`, so its claims are ours.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    operation_id = "getMe",
    tags = ["people"],
    summary = "Who the staff token belongs to",
    description = "The user behind the staff token, with their global roles. Upload \
        tokens are refused with 403: they do not act as a person.",
    responses(
        (status = 200, description = "The caller.", body = Me),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "Called with an upload token.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
pub async fn me(
    State(app): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
) -> ApiResult<Json<Me>> {
    let _ = &app;
    let u = who.staff()?;
    let token_id = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(crate::auth::peek_claims)
        .map(|c| c.jti);
    Ok(Json(Me {
        id: u.id,
        name: u.name.clone(),
        roles: u.roles.clone(),
        token_id,
    }))
}

/// A one-time browser sign-in link for the caller (`airlock ui`).
#[utoipa::path(
    post,
    path = "/api/v1/login-links",
    operation_id = "createLoginLink",
    tags = ["people"],
    summary = "A one-time sign-in link to the browser UI, for the caller",
    description = "Mints a sign-in link for the staff token's own user, never anyone else:         `BASE/ui/login#SECRET`, which works once, within 10 minutes (`[ui] login_link_ttl`).         The secret is in the fragment, so it reaches no server log; the page it opens posts it         to `/ui/login` when the person presses Sign in (a mail scanner's prefetch consumes         nothing). Only its hash is stored. Audited as `ui.login_link_issued`.",
    responses(
        (status = 201, description = "The link, shown once.", body = sessions::LoginLink),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload or collection token: they do not act as a \
            person.", body = ErrorBody),
        (status = 409, description = "The caller is disabled.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
pub async fn login_link(
    State(app): State<AppState>,
    Caller(who): Caller,
) -> ApiResult<(StatusCode, Json<sessions::LoginLink>)> {
    let link = sessions::own_login_link(&app, &who).await?;
    Ok((StatusCode::CREATED, Json(link)))
}

#[utoipa::path(
    post,
    path = "/api/v1/transfers",
    operation_id = "createTransfer",
    tags = ["transfers"],
    summary = "Open a transfer into a workspace",
    description = "A Project Manager of the workspace's project opens a transfer in state \
        `open`, naming the uploader. The uploader must hold the role the kind needs: `provider` \
        for `data-ingress` (held in the project or globally), `researcher` in the project for \
        `software-ingress`. Issue the upload token next with `POST \
        /api/v1/transfers/{id}/tokens`.",
    request_body(content = CreateTransfer, description = "The \
            transfer to open. Send `Content-Type: application/json`."),
    responses(
        (status = 201, description = "Opened; the new transfer as its members see it.", body = TransferView),
        (status = 400, description = "The workspace is not written \
            `PROJECT/WORKSPACE`, no user has the uploader's name, or the uploader lacks the role \
            the kind needs. A body that is not JSON is also refused with 400 (plain-text body).", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token, or a caller who is not a \
            Project Manager of the workspace's project.", body = ErrorBody),
        (status = 404, description = "No such workspace. Someone with no role in the \
            project (and, for a transfer, not its uploader or an assigned referee) gets this \
            same 404, worded as for one that does not exist.", body = ErrorBody),
        (status = 415, response = JsonContentTypeRejection),
        (status = 422, response = JsonDataRejection),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The workspace, written `PROJECT/WORKSPACE`.
    #[param(example = "genomics/tier3")]
    workspace: String,
}

#[utoipa::path(
    get,
    path = "/api/v1/transfers",
    operation_id = "listTransfers",
    tags = ["transfers"],
    summary = "List the transfers of a workspace",
    description = "Every transfer of the workspace, for anyone with a role in its project \
        (and Programme or System Managers).",
    params(
        ListQuery,
    ),
    responses(
        (status = 200, description = "The workspace's transfers.", body = Vec<TransferView>),
        (status = 400, description = "The workspace is not written \
            `PROJECT/WORKSPACE`. A missing `workspace` query parameter is refused with 400 and a \
            plain-text body.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token, or a caller who is not a member \
            of the project.", body = ErrorBody),
        (status = 404, description = "No such workspace. Someone with no role in the \
            project (and, for a transfer, not its uploader or an assigned referee) gets this \
            same 404, worded as for one that does not exist.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
pub async fn list_transfers(
    State(app): State<AppState>,
    Caller(who): Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<transfers::TransferView>>> {
    Ok(Json(transfers::list(&app, &who, &q.workspace).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/transfers/{id}",
    operation_id = "getTransfer",
    tags = ["transfers"],
    summary = "Show a transfer",
    description = "A transfer in full: metadata, files with their digests, decisions (and \
        whether each still counts), referees, the approvals still awaited and who could give \
        them, the policy in force, incidents and release. For anyone with an active role in its \
        project, Programme and System Managers, the transfer's uploader, and its assigned \
        referees once active (counter-approved where the tier needs it). Never file content.",
    params(
        TransferPath,
    ),
    responses(
        (status = 200, description = "The transfer.", body = TransferView),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token, or a caller who is none of \
            those.", body = ErrorBody),
        (status = 404, description = "No such transfer (or the id is not a UUID). \
            Someone with no role in the project (and, for a transfer, not its uploader or an \
            assigned referee) gets this same 404, worded as for one that does not exist.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
pub async fn show_transfer(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<transfers::TransferView>> {
    Ok(Json(transfers::show(&app, &who, transfer_id(&id)?).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/transfers/{id}/tokens",
    operation_id = "issueUploadToken",
    tags = ["tokens"],
    summary = "Issue the transfer's upload token",
    description = "A Project Manager issues the write-only upload token of an `open` \
        transfer. There is one live token per transfer: issuing a new one revokes the one \
        before. The token is shown only in this response. Its lifetime defaults to the \
        configured default and is capped by the workspace tier's policy, which may also require \
        the token to be bound to IP ranges. It also reopens a `returned` transfer (`returned` → \
        `open`, recorded as `transfer.reopened`): the requester uploads again, and every \
        approval given before stays void. Whoever issues a transfer's upload token may never \
        decide on it.",
    params(
        TransferPath,
    ),
    request_body(content = Option<TokenRequest>, description = "Lifetime \
            and IP ranges of the token. The body is optional: an empty (or all-whitespace) body \
            means every field takes its default. A body that is not valid JSON is refused with \
            400."),
    responses(
        (status = 201, description = "The new token.", body = IssuedToken),
        (status = 400, description = "Invalid JSON; a `ttl` that does not parse, is \
            under 1s or over the tier's cap; a `cidrs` entry that is not an IP range; or no \
            `cidrs` where the tier requires them.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token, or a caller who is not a \
            Project Manager of the project.", body = ErrorBody),
        (status = 404, description = "No such transfer. Someone with no role in the \
            project (and, for a transfer, not its uploader or an assigned referee) gets this \
            same 404, worded as for one that does not exist.", body = ErrorBody),
        (status = 409, description = "The transfer is neither `open` nor `returned` \
            (it takes no more uploads), or it changed state meanwhile.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/transfers/{id}/tokens/revoke",
    operation_id = "revokeUploadTokens",
    tags = ["transfers"],
    summary = "Revoke the transfer's upload token without issuing a new one",
    description = "A Project Manager of the transfer's project kills every live upload \
        token of the transfer (a leaked token, say). The token is refused everywhere from then \
        on, uploads in flight included (they are refused when they commit). The transfer stays \
        as it is; a new token can be issued while it is open.",
    params(
        TransferPath,
    ),
    responses(
        (status = 200, description = "How many tokens were revoked.", body = UploadTokensRevoked),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token, or a caller who is not a \
            Project Manager of the project.", body = ErrorBody),
        (status = 404, description = "No such transfer. Someone with no role in the \
            project (and, for a transfer, not its uploader or an assigned referee) gets this \
            same 404, worded as for one that does not exist.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
pub async fn revoke_tokens(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<UploadTokensRevoked>> {
    let revoked = transfers::revoke_tokens(&app, &who, transfer_id(&id)?).await?;
    Ok(Json(UploadTokensRevoked { revoked }))
}

/// How many upload tokens were revoked.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadTokensRevoked {
    pub revoked: u64,
}

/// Every file's receipt: `{"id", "state", "files": [...]}`, written as the rows are read, so a
/// 100,000-file manifest never sits in memory.
#[utoipa::path(
    get,
    path = "/api/v1/transfers/{id}/manifest",
    operation_id = "getManifest",
    tags = ["transfers", "uploads"],
    summary = "Sizes and digests of the transfer's files",
    description = "What an uploader may see of what it wrote: each file's size, \
        completeness and digests (never content). Allowed to the transfer's own upload token \
        and, with a staff token, to whoever may see the transfer (anyone with an active role in \
        its project, Programme and System Managers, the transfer's uploader, and its assigned \
        referees once active (counter-approved where the tier needs it)). The body is written as \
        the rows are read (a 100,000-file transfer is never held in memory); for pages use \
        `/files`.",
    params(
        TransferPath,
    ),
    responses(
        (status = 200, description = "The receipts.", body = ManifestView),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token of another transfer, or a staff \
            caller who may not see the transfer.", body = ErrorBody),
        (status = 404, description = "No such transfer. Someone with no role in the \
            project (and, for a transfer, not its uploader or an assigned referee) gets this \
            same 404, worded as for one that does not exist.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = []), ("uploadToken" = [])),
)]
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

/// `?after=CURSOR&limit=N` of a paged list.
#[derive(Debug, serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The cursor, exclusive: the previous page's `next` (for files, the last path of the
    /// previous page). Left out: from the start.
    pub after: Option<String>,
    /// At most this many (default and most 1000; a larger limit is capped).
    #[param(minimum = 1, maximum = 1000)]
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
#[utoipa::path(
    get,
    path = "/api/v1/transfers/{id}/files",
    operation_id = "listFiles",
    tags = ["transfers", "uploads"],
    summary = "One page of the transfer's files",
    description = "The transfer's files in path (byte) order, `limit` at a time (default \
        and most 1000; a larger limit is capped), after the cursor `after` (a path, exclusive). \
        Walk by passing each answer's `next` as `after` until it is `null`. Allowed to the same \
        callers as the manifest.",
    params(
        TransferPath,
        PageQuery,
    ),
    responses(
        (status = 200, description = "A page.", body = FilesPage),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token of another transfer, or a staff \
            caller who may not see the transfer.", body = ErrorBody),
        (status = 404, description = "No such transfer. Someone with no role in the \
            project (and, for a transfer, not its uploader or an assigned referee) gets this \
            same 404, worded as for one that does not exist.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
        (status = 400, description = "A limit of 0 or not a number.", body = ErrorBody),
    ),
    security(("staffToken" = []), ("uploadToken" = [])),
)]
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
#[utoipa::path(
    get,
    path = "/api/v1/transfers/{id}/verdicts",
    operation_id = "listVerdicts",
    tags = ["transfers", "uploads"],
    summary = "One page of the latest scan's verdicts",
    description = "The latest scan's verdicts (one per file, archive member and scanner), \
        in the order the scan wrote them, `limit` at a time (default and most 1000), after the \
        cursor `after` (the previous page's `next`, an opaque string). Staff who may see the \
        transfer only; an upload token gets 403. The summary's `scans.counts` counts them; \
        `airlock transfer show --json` adds them all as `scans.verdicts`.",
    params(
        TransferPath,
        PageQuery,
    ),
    responses(
        (status = 200, description = "A page.", body = VerdictsPage),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token of another transfer, or a staff \
            caller who may not see the transfer.", body = ErrorBody),
        (status = 404, description = "No such transfer. Someone with no role in the \
            project (and, for a transfer, not its uploader or an assigned referee) gets this \
            same 404, worded as for one that does not exist.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
        (status = 400, description = "A limit of 0 or not a number, or a cursor that \
            is not one.", body = ErrorBody),
    ),
    security(("staffToken" = [])),
)]
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
#[utoipa::path(
    get,
    path = "/api/v1/transfers/{id}/sha256sums",
    operation_id = "getSha256sums",
    tags = ["transfers", "uploads"],
    summary = "The manifest as sha256sum text, streamed",
    description = "`HEX  PATH` for every complete file, in path (byte) order, written as \
        the rows are read: `sha256sum -c` checks a copy of the files against it. Allowed to the \
        same callers as the manifest.",
    params(
        TransferPath,
    ),
    responses(
        (status = 200, description = "sha256sum-format text.", body = String, content_type = "text/plain"),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token of another transfer, or a staff \
            caller who may not see the transfer.", body = ErrorBody),
        (status = 404, description = "No such transfer. Someone with no role in the \
            project (and, for a transfer, not its uploader or an assigned referee) gets this \
            same 404, worded as for one that does not exist.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = []), ("uploadToken" = [])),
)]
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
pub(crate) fn json_or_default<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
) -> Result<T, ApiError> {
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

#[utoipa::path(
    put,
    path = "/api/v1/transfers/{id}/files/{path}",
    operation_id = "putFile",
    tags = ["uploads"],
    summary = "Upload one whole file (streaming PUT)",
    description = "The transfer's upload token sends one file in a single request; the \
        body streams to the quarantine volume while SHA-256 and BLAKE3 are computed. All or \
        nothing: a failed or interrupted PUT leaves nothing behind. A path already present \
        (compared ignoring case and Unicode width), or one that would make a file and a folder \
        share a name, is refused with 409: delete it first to send it again.",
    params(
        FilePathParams,
        ("airlock-expected-sha256" = Option<HexDigest>, Header, description = "The SHA-256 \
            the uploader computed, as 64 hex digits. Stored and compared at seal: a mismatch \
            blocks the transfer (see `expected_sha256_matches` in the receipt)."),
        ("Content-Length" = Option<u64>, Header, description = "If sent, \
            checked against the file-size limit before any byte is read, and against the number \
            of bytes that arrive."),
    ),
    request_body(content = Octets, content_type = "application/octet-stream", description = "The \
            file's bytes."),
    responses(
        (status = 201, description = "Stored; the file's receipt.", body = FileReceipt),
        (status = 400, description = "A malformed `airlock-expected-sha256`, a refused \
            path (absolute, `.`/`..` segments, backslashes, control characters, empty segments, \
            too long or too deep, reserved names), a body shorter or longer than \
            `Content-Length`, or an interrupted upload.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "A staff token (only the transfer's upload token \
            uploads), or an upload token of another transfer.", body = ErrorBody),
        (status = 404, description = "No such transfer.", body = ErrorBody),
        (status = 409, description = "The transfer is not `open`, or the path collides \
            with a file already in the transfer.", body = ErrorBody),
        (status = 413, description = "The file is over the configured size limit, or \
            the transfer already holds the most files allowed.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 408, response = UploadIdle),
        (status = 429, response = UploadCapped),
        (status = 503, response = UploadBusy),
        (status = 507, response = InsufficientStorage),
    ),
    security(("uploadToken" = [])),
)]
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
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ArchiveQuery {
    /// A folder (a relative path, under the same rules as file paths) every member is placed
    /// under.
    pub prefix: Option<String>,
}

/// A tar stream, expanded into the transfer as it arrives: `{"files": [receipt...]}`.
#[utoipa::path(
    put,
    path = "/api/v1/transfers/{id}/archive",
    operation_id = "putArchive",
    tags = ["uploads"],
    summary = "Upload a tar stream that the server expands into files",
    description = "The transfer's upload token sends a tar stream (ustar, GNU or PAX; \
        with or without `Content-Length`, chunked too). The server expands it as it arrives: \
        each regular member becomes a file of the manifest (under `prefix` if given), written to \
        quarantine and hashed SHA-256 and BLAKE3 exactly as a PUT file is. A PAX record \
        `AIRLOCK.sha256=<hex>` on a member is that member's provider digest, compared at seal. \
        Directory members only imply folders; PAX `path` and GNU long names are honoured; a \
        leading `./` is dropped. All or nothing: a symbolic or hard link, a device, a fifo, a \
        refused name, a collision with another member or an existing file, a member over the \
        size limit, or the transfer's file-count or byte limit exceeded refuses the whole \
        archive with the member named, and nothing of it is kept. The archive itself is not a \
        file of the manifest. One `archive.uploaded` audit event records the counts, the bytes \
        and the archive's own digests. Over tus, send `Upload-Metadata` `archive dGFy` instead \
        of a file name.",
    params(
        TransferPath,
        ArchiveQuery,
        ("Content-Length" = Option<u64>, Header, description = "If sent, room \
            for it is held on the quarantine volume until the archive is in, and it is checked \
            against the bytes that arrive."),
    ),
    request_body(content = Octets, content_type = "application/x-tar", description = "The \
            tar stream."),
    responses(
        (status = 201, description = "Expanded and accepted; the receipts of its \
            files, in member order.", body = ArchiveAccepted),
        (status = 400, description = "Not a valid tar stream (a bad header checksum, \
            cut short, no end-of-archive block, data after it), a member that is a link, a \
            device, a fifo or of another refused type, a member or `prefix` name the path rules \
            refuse, a malformed `AIRLOCK.sha256`, another Content-Type than `application/x-tar`, \
            or an interrupted upload. The message names the member.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "A staff token (only the transfer's upload token \
            uploads), or an upload token of another transfer.", body = ErrorBody),
        (status = 404, description = "No such transfer.", body = ErrorBody),
        (status = 409, description = "The transfer is not `open`, or a member collides \
            with a file already in the transfer or with another member (compared ignoring case \
            and Unicode width, and file against folder). The message names the member.", body = ErrorBody),
        (status = 413, description = "A member over the file-size limit, or the \
            archive's files or bytes would take the transfer over its file-count or size limit. \
            The message names the member where one is to blame.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 408, response = UploadIdle),
        (status = 429, response = UploadCapped),
        (status = 503, response = UploadBusy),
        (status = 507, response = InsufficientStorage),
    ),
    security(("uploadToken" = [])),
)]
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

#[utoipa::path(
    delete,
    path = "/api/v1/transfers/{id}/files/{path}",
    operation_id = "deleteFile",
    tags = ["uploads"],
    summary = "Delete a file from an open transfer",
    description = "The transfer's upload token deletes a file (complete or not) so that \
        it can be sent again.",
    params(
        FilePathParams,
    ),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "A refused path.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "A staff token, or an upload token of another \
            transfer.", body = ErrorBody),
        (status = 404, description = "No such transfer, or no file at that path.", body = ErrorBody),
        (status = 409, description = "The transfer is not `open`, or the file is still \
            being written (retry).", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("uploadToken" = [])),
)]
pub async fn delete_file(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path((id, path)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    upload::delete_file(&app, &who, transfer_id(&id)?, &path).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A reviewer downloads one file's content.
#[utoipa::path(
    get,
    path = "/api/v1/transfers/{id}/files/{path}",
    operation_id = "getFile",
    tags = ["review"],
    summary = "Download one file's content (reviewers)",
    description = "A reviewer reads a complete file's bytes, while the transfer is \
        `in_review` or `approved` (never `open` and unscanned, never `blocked`: a blocked file \
        leaves only by the System Manager's audited `airlock admin forensic-export`). Reviewers \
        are the project's (active) Investigators, Project Managers and Dataset Provider \
        Representatives (`provider`), the transfer's assigned referees once active, and a \
        Programme Manager only where they hold a role in the project or the policy asks a \
        Programme Manager to approve this transfer; never upload tokens, System Managers or \
        Researchers as such. Every read is recorded in the audit log.",
    params(
        FilePathParams,
    ),
    responses(
        (status = 200, description = "The file's content.", body = Octets, content_type = "application/octet-stream", headers(
            ("Content-Length" = u64, description = "The file's size in bytes."),
            ("airlock-sha256" = String, description = "The SHA-256 airlock computed on upload, \
                as 64 lowercase hex digits."),
        )),
        (status = 400, description = "A refused path.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token, or a caller holding none of the \
            reviewing roles for this transfer (a Researcher, a System Manager, a Programme \
            Manager with no role in the project whom the policy does not ask, a referee not \
            assigned or still awaiting counter-approval).", body = ErrorBody),
        (status = 404, description = "No such transfer, or no complete file at that \
            path. Someone with no role in the project (and, for a transfer, not its uploader or \
            an assigned referee) gets this same 404, worded as for one that does not exist.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 409, description = "The transfer is in a state with nothing to \
            review (`open`, `sealed`, `scanning`, `blocked`, `released`, …); the message says \
            which.", body = ErrorBody),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/transfers/{id}/seal",
    operation_id = "sealTransfer",
    tags = ["transfers", "uploads"],
    summary = "Seal the transfer: fix the manifest and start review",
    description = "The transfer's upload token or a Project Manager seals an open \
        transfer: every upload must be complete and there must be at least one file. The \
        manifest and its root digest are fixed, the upload token dies, and the provider's \
        digests (per-file `airlock-expected-sha256` / tus `sha256` metadata, and \
        `expected_root_digest` / `sha256sums` here) are compared with airlock's. On any mismatch \
        the transfer goes to `blocked` with a `hash-confirmation` incident (still a 200); \
        otherwise it moves to `scanning` (the response's state) and every file is scanned in the \
        background by the scanners its policy requires; then `in_review`, its `state_reason` \
        naming the approvals awaited (straight on to `approved` when the tier's policy asks no \
        approval for this kind of transfer), or `blocked` (a finding), or `scan_error` (a \
        scanner did not answer; retried). The response shows only what an upload token may see.",
    params(
        TransferPath,
    ),
    request_body(content = Option<SealRequest>, description = "The \
            provider's digests to confirm. The body is optional: an empty (or all-whitespace) \
            body means every field takes its default. A body that is not valid JSON is refused \
            with 400."),
    responses(
        (status = 200, description = "Sealed; the transfer's new state.", body = SealResult),
        (status = 400, description = "Invalid JSON, an `expected_root_digest` that is \
            not 64 hex digits, or a malformed `sha256sums` line.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token of another transfer, or a staff \
            caller who is not a Project Manager of the project.", body = ErrorBody),
        (status = 404, description = "No such transfer. Someone with no role in the \
            project (and, for a transfer, not its uploader or an assigned referee) gets this \
            same 404, worded as for one that does not exist.", body = ErrorBody),
        (status = 409, description = "The transfer is not `open`, holds no files, has \
            unfinished uploads, or changed state meanwhile.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = []), ("uploadToken" = [])),
)]
pub async fn seal(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<SealResult>> {
    let req = json_or_default(&body)?;
    let id = transfer_id(&id)?;
    let t = transfers::seal(&app, &who, id, req).await?;
    // The sealer may be the upload token: show it only what it may see.
    Ok(Json(SealResult {
        id: t.id,
        state: t.state,
        state_reason: t.state_reason,
        root_digest: t.root_digest,
    }))
}

/// What sealing shows, to the upload token as to staff.
#[derive(Debug, Serialize, ToSchema)]
pub struct SealResult {
    pub id: TransferId,
    pub state: TransferState,
    pub state_reason: String,
    /// The manifest's root digest: SHA-256 over the lines `sha256 SP blake3 SP size SP path
    /// LF`, sorted by path bytes.
    pub root_digest: Option<String>,
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

#[utoipa::path(
    post,
    path = "/api/v1/transfers/{id}/approve",
    operation_id = "approveTransfer",
    tags = ["review"],
    summary = "Approve a transfer in review",
    description = "Records an approval in the caller's role (a comment is optional). When \
        every approval the policy asks for is in, the transfer moves to `approved` and is \
        released in the background (the approvals are checked again against the policy in force \
        just before any byte is released; short of them, it goes back to `in_review`). Otherwise \
        it stays `in_review`, with its `state_reason` and `awaiting` updated. Who decides: \
        whoever holds, for this transfer, one of the roles the workspace tier's policy asks for \
        this kind of transfer (the transfer's `awaiting` lists the roles still needed and who \
        could give them): `investigator`, `project-manager` or `provider` held (active) in the \
        project, the system-wide `programme-manager` role, or `referee` for a referee assigned \
        to the transfer (and counter-approved at tier 3+) who is not a member of the project. \
        Name the role with `as` when you hold several of the roles asked for. Rules that always \
        hold: the uploader and whoever issued the transfer's upload token never decide; one \
        person counts once per transfer, whatever roles they hold; a Referee is never a member \
        of the project. The decision is recorded with the root digest and the policy version in \
        force: send the `root_digest` and `policy.version` you reviewed (from `GET \
        /api/v1/transfers/{id}`) to get a 409 rather than decide on something that changed \
        since. An approval stops counting when either changes, or when the transfer is returned.",
    params(
        TransferPath,
    ),
    request_body(content = Option<DecisionRequest>, description = "The \
            role, an optional comment, and what the reviewer saw. Optional: an empty body means \
            defaults (no `as`, no comment, no staleness check)."),
    responses(
        (status = 200, description = "Decided; the transfer after the decision.", body = TransferView),
        (status = 400, description = "A body that is not JSON or not a \
            `DecisionRequest` (an unknown field or role); a blank `comment` to reject or return; \
            `as` left out while the caller holds several of the roles the policy asks for.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token; a caller with no role in the \
            project who is not an assigned referee; `as` naming a role the caller does not hold \
            for this transfer (for `referee`: not assigned, or assigned but awaiting the Dataset \
            Provider Representative's counter-approval); `as` left out while the caller holds \
            none of the roles asked for; a role the tier's policy does not ask for on this kind \
            of transfer; the transfer's uploader; anyone who issued its upload token; a referee \
            who is a member of the project.", body = ErrorBody),
        (status = 404, description = "No such transfer. Someone with no role in the \
            project (and, for a transfer, not its uploader or an assigned referee) gets this \
            same 404, worded as for one that does not exist.", body = ErrorBody),
        (status = 409, description = "The transfer is not `in_review` (or changed \
            state meanwhile); a stale `root_digest` or `policy_version` (the manifest or the \
            policy changed since); the caller already approved in another role (one person \
            counts once); the approvals the policy asks for in that role are already in.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
pub async fn approve(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<transfers::TransferView>> {
    decide(app, who, id, body, governance::Verdict::Approve).await
}

#[utoipa::path(
    post,
    path = "/api/v1/transfers/{id}/reject",
    operation_id = "rejectTransfer",
    tags = ["review"],
    summary = "Reject a transfer in review (final)",
    description = "Final: the transfer moves to `rejected`. One reviewer in a role the \
        policy asks for suffices; a non-blank `comment` for the requester is required. Who \
        decides: whoever holds, for this transfer, one of the roles the workspace tier's policy \
        asks for this kind of transfer (the transfer's `awaiting` lists the roles still needed \
        and who could give them): `investigator`, `project-manager` or `provider` held (active) \
        in the project, the system-wide `programme-manager` role, or `referee` for a referee \
        assigned to the transfer (and counter-approved at tier 3+) who is not a member of the \
        project. Name the role with `as` when you hold several of the roles asked for. Rules \
        that always hold: the uploader and whoever issued the transfer's upload token never \
        decide; one person counts once per transfer, whatever roles they hold; a Referee is \
        never a member of the project. The decision is recorded with the root digest and the \
        policy version in force: send the `root_digest` and `policy.version` you reviewed (from \
        `GET /api/v1/transfers/{id}`) to get a 409 rather than decide on something that changed \
        since. An approval stops counting when either changes, or when the transfer is returned.",
    params(
        TransferPath,
    ),
    request_body(content = DecisionRequest, description = "The \
            role, the comment (required) and what the reviewer saw."),
    responses(
        (status = 200, description = "Decided; the transfer after the decision.", body = TransferView),
        (status = 400, description = "A body that is not JSON or not a \
            `DecisionRequest` (an unknown field or role); a blank `comment` to reject or return; \
            `as` left out while the caller holds several of the roles the policy asks for. An \
            empty body (no comment) is refused with 400.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token; a caller with no role in the \
            project who is not an assigned referee; `as` naming a role the caller does not hold \
            for this transfer (for `referee`: not assigned, or assigned but awaiting the Dataset \
            Provider Representative's counter-approval); `as` left out while the caller holds \
            none of the roles asked for; a role the tier's policy does not ask for on this kind \
            of transfer; the transfer's uploader; anyone who issued its upload token; a referee \
            who is a member of the project.", body = ErrorBody),
        (status = 404, description = "No such transfer. Someone with no role in the \
            project (and, for a transfer, not its uploader or an assigned referee) gets this \
            same 404, worded as for one that does not exist.", body = ErrorBody),
        (status = 409, description = "The transfer is not `in_review` (or changed \
            state meanwhile); a stale `root_digest` or `policy_version` (the manifest or the \
            policy changed since).", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
pub async fn reject(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<transfers::TransferView>> {
    decide(app, who, id, body, governance::Verdict::Reject).await
}

#[utoipa::path(
    post,
    path = "/api/v1/transfers/{id}/return",
    operation_id = "returnTransfer",
    tags = ["review"],
    summary = "Return a transfer in review to its requester",
    description = "Sends the transfer back to its requester for changes: it moves to \
        `returned` and every approval given so far is void. A non-blank `comment` saying what to \
        change is required. A Project Manager reopens it by issuing a new upload token (`POST \
        /api/v1/transfers/{id}/tokens`), or cancels it. Who decides: whoever holds, for this \
        transfer, one of the roles the workspace tier's policy asks for this kind of transfer \
        (the transfer's `awaiting` lists the roles still needed and who could give them): \
        `investigator`, `project-manager` or `provider` held (active) in the project, the \
        system-wide `programme-manager` role, or `referee` for a referee assigned to the \
        transfer (and counter-approved at tier 3+) who is not a member of the project. Name the \
        role with `as` when you hold several of the roles asked for. Rules that always hold: the \
        uploader and whoever issued the transfer's upload token never decide; one person counts \
        once per transfer, whatever roles they hold; a Referee is never a member of the \
        project. The decision is recorded with the root digest and the policy version in force: \
        send the `root_digest` and `policy.version` you reviewed (from `GET \
        /api/v1/transfers/{id}`) to get a 409 rather than decide on something that changed \
        since. An approval stops counting when either changes, or when the transfer is returned.",
    params(
        TransferPath,
    ),
    request_body(content = DecisionRequest, description = "The \
            role, the comment (required) and what the reviewer saw."),
    responses(
        (status = 200, description = "Decided; the transfer after the decision.", body = TransferView),
        (status = 400, description = "A body that is not JSON or not a \
            `DecisionRequest` (an unknown field or role); a blank `comment` to reject or return; \
            `as` left out while the caller holds several of the roles the policy asks for. An \
            empty body (no comment) is refused with 400.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token; a caller with no role in the \
            project who is not an assigned referee; `as` naming a role the caller does not hold \
            for this transfer (for `referee`: not assigned, or assigned but awaiting the Dataset \
            Provider Representative's counter-approval); `as` left out while the caller holds \
            none of the roles asked for; a role the tier's policy does not ask for on this kind \
            of transfer; the transfer's uploader; anyone who issued its upload token; a referee \
            who is a member of the project.", body = ErrorBody),
        (status = 404, description = "No such transfer. Someone with no role in the \
            project (and, for a transfer, not its uploader or an assigned referee) gets this \
            same 404, worded as for one that does not exist.", body = ErrorBody),
        (status = 409, description = "The transfer is not `in_review` (or changed \
            state meanwhile); a stale `root_digest` or `policy_version` (the manifest or the \
            policy changed since).", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
pub async fn return_transfer(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<transfers::TransferView>> {
    decide(app, who, id, body, governance::Verdict::Return).await
}

#[utoipa::path(
    post,
    path = "/api/v1/transfers/{id}/revoke",
    operation_id = "revokeTransfer",
    tags = ["review"],
    summary = "Revoke a released transfer",
    description = "Withdraws a release: the released files leave the workspace's \
        read-only volume at once (the quarantine copy stays), and the transfer moves to \
        `revoked`, its `state_reason` naming who, in which role, and why. Allowed to the \
        project's (active) Project Managers, Investigators and Dataset Provider Representatives \
        (`provider` held in the project), and to Programme Managers.",
    params(
        TransferPath,
    ),
    request_body(content = RevokeRequest, description = "Why. \
            Required; unknown fields are refused."),
    responses(
        (status = 200, description = "Revoked; the transfer in state `revoked`.", body = TransferView),
        (status = 400, description = "A missing body, a body that is not JSON or not a \
            `RevokeRequest` (unknown field), or a blank `reason`.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token, or a caller who is none of a \
            Project Manager, Investigator or Dataset Provider Representative of the project, or \
            a Programme Manager.", body = ErrorBody),
        (status = 404, description = "No such transfer. Someone with no role in the \
            project (and, for a transfer, not its uploader or an assigned referee) gets this \
            same 404, worded as for one that does not exist.", body = ErrorBody),
        (status = 409, description = "The transfer is not `released`, or it changed \
            state meanwhile.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/transfers/{id}/referees",
    operation_id = "assignReferee",
    tags = ["governance"],
    summary = "Assign a Referee",
    description = "A Project Manager of the project (or a Programme Manager) assigns a \
        Referee to the transfer: someone from the referee college (system-wide role `referee`), \
        or a Programme Manager as fallback. Never a member of the project, the transfer's \
        uploader or anyone who issued its upload token. At tier 3+ the assignment is `pending` \
        until the project's Dataset Provider Representative counter-approves it (`POST \
        .../referees/approve`); once `active`, the referee may see the transfer, read its \
        content and decide in role `referee` where the policy asks for one. Answers with all the \
        transfer's referees.",
    params(
        TransferPath,
    ),
    request_body(content = UserRef, description = "The \
            user to assign, by name."),
    responses(
        (status = 200, description = "The transfer's referees, the new one included.", body = Vec<RefereeView>),
        (status = 400, description = "A missing body, or a body that is not JSON or \
            not `{\"user\": ...}` (unknown field).", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token, or a caller who is neither a \
            Project Manager of the project nor a Programme Manager.", body = ErrorBody),
        (status = 404, description = "No such transfer, or no such user. Someone with \
            no role in the project (and, for a transfer, not its uploader or an assigned \
            referee) gets this same 404, worded as for one that does not exist.", body = ErrorBody),
        (status = 409, description = "The user is not in the referee college nor a \
            Programme Manager; is a member of the project; uploaded the transfer or issued its \
            token; is already a referee of it; or the transfer's review is over (`approved`, \
            `released`, `rejected`, `blocked`, `cancelled`, `expired`, `revoked`).", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/transfers/{id}/referees/approve",
    operation_id = "approveReferee",
    tags = ["governance"],
    summary = "Counter-approve a Referee",
    description = "The project's Dataset Provider Representative (`provider` held, \
        active, in the project) counter-approves a `pending` referee assignment (tier 3+); the \
        referee becomes `active`. Answers with all the transfer's referees.",
    params(
        TransferPath,
    ),
    request_body(content = UserRef, description = "The \
            pending referee, by name."),
    responses(
        (status = 200, description = "The transfer's referees.", body = Vec<RefereeView>),
        (status = 400, description = "A missing body, or a body that is not JSON or \
            not `{\"user\": ...}` (unknown field).", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token, or a caller who does not hold \
            the `provider` role in the project.", body = ErrorBody),
        (status = 404, description = "No such transfer or user, or that user is not a \
            referee of the transfer awaiting counter-approval. Someone with no role in the \
            project (and, for a transfer, not its uploader or an assigned referee) gets this \
            same 404, worded as for one that does not exist.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/users",
    operation_id = "addUser",
    tags = ["governance"],
    summary = "Add a user to the system",
    description = "Only a Programme Manager (system-wide role) adds users to the system \
        (paper section 8), with their system-wide roles: `referee` puts them in the referee \
        college, `provider` makes them a Dataset Provider Representative who may be named as an \
        uploader, `programme-manager`. Project roles are given with `POST \
        /api/v1/projects/{project}/members`. System Managers are added with `airlock admin user \
        add` on the server.",
    request_body(content = NewUser, description = "The \
            new user's name (1-64 ASCII letters, digits, `-`, `_` or `.`, not starting with \
            `.`) and system-wide roles."),
    responses(
        (status = 201, description = "Added: the user and their roles.", body = UserView),
        (status = 400, description = "A missing body, a body that is not JSON or not a \
            `NewUser` (unknown field or role); an invalid name; the `system-manager` role.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token, or a caller who is not a \
            Programme Manager.", body = ErrorBody),
        (status = 409, description = "A user of that name exists.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
pub async fn add_user(
    State(app): State<AppState>,
    Caller(who): Caller,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<membership::UserView>)> {
    let u = membership::add_user(&app, &who, json_body(&body)?).await?;
    Ok((StatusCode::CREATED, Json(u)))
}

#[utoipa::path(
    post,
    path = "/api/v1/projects",
    operation_id = "createProject",
    tags = ["governance"],
    summary = "Create a project",
    description = "Only a Programme Manager (system-wide role) creates projects. \
        Workspaces are added on the server (`airlock admin`).",
    request_body(content = NewProject, description = "The \
            project's name (1-64 ASCII letters, digits, `-`, `_` or `.`, not starting with \
            `.`)."),
    responses(
        (status = 201, description = "Created: the project's name.", body = ProjectCreated),
        (status = 400, description = "A missing body, a body that is not JSON or not a \
            `NewProject` (unknown field), or an invalid name.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token, or a caller who is not a \
            Programme Manager.", body = ErrorBody),
        (status = 409, description = "A project of that name exists.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
pub async fn create_project(
    State(app): State<AppState>,
    Caller(who): Caller,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<ProjectCreated>)> {
    let name = membership::create_project(&app, &who, json_body(&body)?).await?;
    Ok((StatusCode::CREATED, Json(ProjectCreated { name })))
}

/// A project just created.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectCreated {
    pub name: String,
}

#[utoipa::path(
    get,
    path = "/api/v1/projects/{project}/members",
    operation_id = "listMembers",
    tags = ["governance"],
    summary = "List a project's members",
    description = "Everyone holding a role in the project, one entry per (user, role), \
        pending ones included (`state: pending`). For the project's active members, and \
        Programme and System Managers.",
    params(
        ProjectPath,
    ),
    responses(
        (status = 200, description = "The members.", body = Vec<MemberView>),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token, or a caller with no active role \
            in the project who is not a Programme or System Manager.", body = ErrorBody),
        (status = 404, description = "No such project. Someone with no role in the \
            project (and, for a transfer, not its uploader or an assigned referee) gets this \
            same 404, worded as for one that does not exist.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
pub async fn members(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(project): Path<String>,
) -> ApiResult<Json<Vec<membership::MemberView>>> {
    Ok(Json(membership::members(&app, &who, &project).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/projects/{project}/members",
    operation_id = "addMember",
    tags = ["governance"],
    summary = "Add a member",
    description = "A Project Manager of the project (or a Programme Manager) gives an \
        existing user a project role: `project-manager`, `investigator`, `researcher` or \
        `provider` (Dataset Provider Representative). A Researcher joining a project that has a \
        tier 3+ workspace is `pending`, with no rights in the project, until its Dataset \
        Provider Representative counter-approves (`POST .../members/approve`; paper 11.6). A \
        Referee is never a member: referees are assigned to transfers instead.",
    params(
        ProjectPath,
    ),
    request_body(content = MemberRequest, description = "The \
            user (by name) and the project role."),
    responses(
        (status = 201, description = "Added: `active`, or `pending` counter-approval.", body = MemberView),
        (status = 400, description = "A missing body, a body that is not JSON or not a \
            `MemberRequest` (unknown field or role); `referee` (never a member); a system-wide \
            role (`system-manager`, `programme-manager`).", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token, or a caller who is neither a \
            Project Manager of the project nor a Programme Manager.", body = ErrorBody),
        (status = 404, description = "No such project, or no such user (a Programme \
            Manager adds users to the system first). Someone with no role in the project (and, \
            for a transfer, not its uploader or an assigned referee) gets this same 404, worded \
            as for one that does not exist.", body = ErrorBody),
        (status = 409, description = "The user already holds or awaits that role in \
            the project, or referees a transfer of the project that is still under way.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
pub async fn add_member(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(project): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<membership::MemberView>)> {
    let m = membership::add_member(&app, &who, &project, json_body(&body)?).await?;
    Ok((StatusCode::CREATED, Json(m)))
}

#[utoipa::path(
    post,
    path = "/api/v1/projects/{project}/members/approve",
    operation_id = "approveMember",
    tags = ["governance"],
    summary = "Counter-approve a member",
    description = "The project's Dataset Provider Representative (`provider` held, \
        active, in the project) counter-approves a `pending` member (a Researcher joining a \
        project with a tier 3+ workspace), who becomes `active`.",
    params(
        ProjectPath,
    ),
    request_body(content = MemberRequest, description = "The \
            pending member (by name) and the role they await."),
    responses(
        (status = 200, description = "Now active (`added_by` is not filled in this \
            response; `approved_by` is the caller).", body = MemberView),
        (status = 400, description = "A missing body, or a body that is not JSON or \
            not a `MemberRequest` (unknown field or role).", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token, or a caller who does not hold \
            the `provider` role in the project.", body = ErrorBody),
        (status = 404, description = "No such project or user, or that user awaits no \
            counter-approval in that role. Someone with no role in the project (and, for a \
            transfer, not its uploader or an assigned referee) gets this same 404, worded as for \
            one that does not exist.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/projects/{project}/members/remove",
    operation_id = "removeMember",
    tags = ["governance"],
    summary = "Remove a member",
    description = "A Project Manager of the project (or a Programme Manager) removes one \
        role of a member, or every role. Removing the Dataset Provider Representative needs a \
        Programme Manager, as granting it does. The member's approvals on transfers of the \
        project that are not yet released are void at once (a transfer already `approved` goes \
        back to review before any byte is released). Audited as `member.removed` and sent as a \
        webhook.",
    params(
        ProjectPath,
    ),
    request_body(content = RemoveMember, description = "The \
            member and, optionally, the one role to remove."),
    responses(
        (status = 200, description = "Removed.", body = Removed),
        (status = 400, description = "A body that is not JSON or not a `RemoveMember`.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token; a member who is not a Project \
            Manager; a Project Manager removing a provider.", body = ErrorBody),
        (status = 404, description = "No such project (or one the caller has no role \
            in: the same answer), no such user, or no such role held. Someone with no role in \
            the project (and, for a transfer, not its uploader or an assigned referee) gets this \
            same 404, worded as for one that does not exist.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/users/{user}/disable",
    operation_id = "disableUser",
    tags = ["governance"],
    summary = "Disable a user",
    description = "A Programme Manager disables a user (not themselves, not a System \
        Manager: those are disabled with `airlock admin user disable`). Every token of theirs, \
        staff tokens and the upload tokens of transfers they upload, is refused from the next \
        request (401); their staff tokens are revoked; their approvals on transfers not yet \
        released are void. Audited as `user.disabled` and sent as a webhook.",
    params(
        ("user" = String, Path, description = "The user's \
            name."),
    ),
    request_body(content = Option<DisableUser>, description = "Optional: \
            why."),
    responses(
        (status = 200, description = "Disabled.", body = Disabled),
        (status = 400, description = "A body that is not JSON or not a `DisableUser`; \
            disabling oneself.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token; a caller who is not a Programme \
            Manager; a System Manager as the target.", body = ErrorBody),
        (status = 404, description = "No such user.", body = ErrorBody),
        (status = 409, description = "Already disabled.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/tokens/revoke",
    operation_id = "revokeStaffTokens",
    tags = ["governance"],
    summary = "Revoke staff tokens",
    description = "Revokes every staff token of a user, or one by id. Anyone revokes \
        their own; a Programme Manager revokes anyone's. A revoked token is refused from its \
        next request (401). Audited as `user.tokens_revoked` and sent as a webhook.",
    request_body(content = RevokeStaffTokens, description = "`user` \
            or `id`."),
    responses(
        (status = 200, description = "Revoked.", body = TokensRevoked),
        (status = 400, description = "A body that is not JSON, or names both or \
            neither of `user` and `id`.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token; someone else's tokens by user \
            name, for a caller who is not a Programme Manager.", body = ErrorBody),
        (status = 404, description = "No such user; no such token id, or one that is \
            not the caller's (the same answer).", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
pub async fn revoke_staff_tokens(
    State(app): State<AppState>,
    Caller(who): Caller,
    body: Bytes,
) -> ApiResult<Json<membership::TokensRevoked>> {
    Ok(Json(
        membership::revoke_staff_tokens(&app, &who, json_body(&body)?).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/transfers/{id}/cancel",
    operation_id = "cancelTransfer",
    tags = ["transfers"],
    summary = "Cancel an open or returned transfer",
    description = "A Project Manager cancels a transfer before it is sealed, one that was \
        returned to its requester, or one in `scan_error` (a scan that cannot complete); its \
        upload token is revoked. No request body.",
    params(
        TransferPath,
    ),
    responses(
        (status = 200, description = "Cancelled; the transfer in state `cancelled`.", body = TransferView),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token, or a caller who is not a \
            Project Manager of the project.", body = ErrorBody),
        (status = 404, description = "No such transfer. Someone with no role in the \
            project (and, for a transfer, not its uploader or an assigned referee) gets this \
            same 404, worded as for one that does not exist.", body = ErrorBody),
        (status = 409, description = "The transfer is neither `open` nor `returned`, \
            or it changed state meanwhile.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
pub async fn cancel(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<transfers::TransferView>> {
    let id = transfer_id(&id)?;
    transfers::cancel(&app, &who, id).await?;
    Ok(Json(transfers::show(&app, &who, id).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/transfers/{id}/confirm",
    operation_id = "confirmRootDigest",
    tags = ["transfers"],
    summary = "Confirm the sealed root digest (the uploader, after seal)",
    description = "Hash confirmation by the provider (paper 4.3.2). The transfer's \
        uploader, with their own staff token, sends the root digest they computed. A match is \
        recorded in the audit log; a mismatch moves the transfer to `blocked` with the reason \
        and records a `hash-confirmation` incident. Allowed between seal and decision (`sealed`, \
        `scanning`, `scan_error`, `in_review`).",
    params(
        TransferPath,
    ),
    request_body(content = ConfirmRequest),
    responses(
        (status = 200, description = "The transfer after confirmation: unchanged on a \
            match, `blocked` on a mismatch.", body = TransferView),
        (status = 400, description = "The root digest is not 64 hex digits.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload token, or a caller who is not the \
            transfer's uploader.", body = ErrorBody),
        (status = 404, description = "No such transfer. Someone with no role in the \
            project (and, for a transfer, not its uploader or an assigned referee) gets this \
            same 404, worded as for one that does not exist.", body = ErrorBody),
        (status = 409, description = "The transfer is not between seal and decision.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json` (axum's \
            plain-text rejection)."),
        (status = 422, description = "The JSON does not match `ConfirmRequest` (axum's \
            plain-text rejection)."),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
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
