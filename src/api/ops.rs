//! Operations routes: verify, incidents, the audit log, the BagIt export and webhook
//! deliveries. Thin handlers; who may call each is decided (and tabled) in
//! [`crate::workflow::ops`].

use super::doc::{Internal, Octets, ProjectPath, Throttled, TransferPath, Unauthenticated};
use super::{transfer_id, ApiResult, Caller};
use crate::integrity::Report;
use crate::server::error::ErrorBody;
use crate::server::AppState;
use crate::workflow::ops::{self, AuditVerification, DeliveryView, IncidentView};
use crate::workflow::Error;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

/// `{id}`: an incident.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // a description, never built
pub struct IncidentPath {
    /// The incident's id (`airlock incidents` lists them).
    #[param(format = "uuid")]
    id: String,
}

/// `{id}`: a webhook delivery.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // a description, never built
pub struct DeliveryPath {
    /// The delivery's id (`airlock webhooks list` lists them).
    #[param(format = "uuid")]
    id: String,
}

/// `{workspace}`: a workspace of the project.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // a description, never built
pub struct WorkspacePath {
    /// The workspace's name inside the project.
    workspace: String,
}

/// `?transfer=ID&after=ID&limit=N` of the incident list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IncidentQuery {
    /// Only this transfer's incidents.
    #[param(format = "uuid")]
    pub transfer: Option<String>,
    /// The last incident id of the previous page (exclusive). Left out: from the start.
    pub after: Option<String>,
    /// At most this many (default and most 1000; a larger limit is capped).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// `?state=failed&after=ID&limit=N` of the delivery list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// `pending`, `delivered` or `failed`.
    pub state: Option<String>,
    /// The last delivery id of the previous page (exclusive). Left out: from the newest.
    pub after: Option<String>,
    /// At most this many (default and most 1000; a larger limit is capped).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// `?head=HASH` of the audit check.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HeadQuery {
    /// A head (an event's hash) exported earlier and kept elsewhere: the chain must still
    /// contain it.
    pub head: Option<String>,
}

/// `?released_only=true` of a verification.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// Only the released copies (what the workspace reads), not the quarantine copies:
    /// refused (409) for a transfer that is not released. Default `false`.
    #[serde(default)]
    pub released_only: bool,
}

impl VerifyQuery {
    fn scope(&self) -> crate::integrity::Scope {
        if self.released_only {
            crate::integrity::Scope::Released
        } else {
            crate::integrity::Scope::All
        }
    }
}

/// The body of `POST /api/v1/incidents/{id}/resolve`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ResolveRequest {
    /// How it was handled (required, recorded in the audit log).
    pub comment: String,
}

type Q<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

fn query<T>(q: Q<T>) -> Result<T, Error> {
    q.map(|Query(q)| q)
        .map_err(|e| Error::BadRequest(format!("query: {}", e.body_text())))
}

/// A `Link: <...>; rel="next"` header when a page came back full (the values put in it are
/// ids and state names the server checked or wrote, so they need no escaping).
fn next_link(
    path: &str,
    params: &[(&str, Option<&str>)],
    last: Option<&str>,
    n: usize,
    limit: Option<u32>,
) -> HeaderMap {
    let mut h = HeaderMap::new();
    let limit = limit.unwrap_or(ops::MAX_PAGE).clamp(1, ops::MAX_PAGE);
    if let (Some(last), true) = (last, n as u32 >= limit) {
        let mut q: Vec<String> = params
            .iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
            .collect();
        q.push(format!("after={last}"));
        q.push(format!("limit={limit}"));
        if let Ok(v) = HeaderValue::from_str(&format!("<{path}?{}>; rel=\"next\"", q.join("&"))) {
            h.insert(header::LINK, v);
        }
    }
    h
}

fn json_lines(body: futures::stream::BoxStream<'static, std::io::Result<Bytes>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/api/v1/incidents",
    operation_id = "listIncidents",
    tags = ["operations"],
    summary = "List incidents (integrity, scan, hash confirmation)",
    description = "Incidents oldest first, `limit` at a time (default and most 1000) after \
        the incident `after`; a full page carries `Link: <...>; rel=\"next\"`. The System \
        Manager sees every incident, system-wide ones included; a Programme Manager every \
        transfer's; a Project Manager those of their projects' transfers. With `transfer`, \
        that transfer's incidents, for whoever manages its project. The items are those of \
        `airlock incidents --json`.",
    params(IncidentQuery),
    responses(
        (status = 200, description = "A page of incidents.", body = Vec<IncidentView>),
        (status = 400, description = "A query that does not parse.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "An upload or collection token, or a caller who \
            manages no project (or not the transfer's).", body = ErrorBody),
        (status = 404, description = "No such transfer, or one of a project the caller has \
            no role in (the same answer).", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
pub async fn incidents(
    State(app): State<AppState>,
    Caller(who): Caller,
    q: Q<IncidentQuery>,
) -> ApiResult<(HeaderMap, Json<Vec<IncidentView>>)> {
    let q = query(q)?;
    let transfer = q.transfer.as_deref().map(transfer_id).transpose()?;
    let list = ops::incidents(&app, &who, transfer, q.after.as_deref(), q.limit).await?;
    let t = transfer.map(|t| t.to_string());
    let link = next_link(
        "/api/v1/incidents",
        &[("transfer", t.as_deref())],
        list.last().map(|i| i.id.as_str()),
        list.len(),
        q.limit,
    );
    Ok((link, Json(list)))
}

#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/resolve",
    operation_id = "resolveIncident",
    tags = ["operations"],
    summary = "Mark an incident handled",
    description = "Resolves an open incident, audited as `incident.resolved` with the \
        caller and the comment, in the same transaction. If the problem is still there, the \
        next check raises it again. An incident of a transfer: its project's Project \
        Managers, Programme and System Managers; a system-wide one: the System Manager.",
    params(IncidentPath),
    request_body(content = ResolveRequest, description = "How it was handled."),
    responses(
        (status = 200, description = "The incident, resolved.", body = IncidentView),
        (status = 400, description = "No comment, or a body that is not JSON.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "A caller who does not manage the incident's project \
            (or, for a system-wide incident, is not the System Manager).", body = ErrorBody),
        (status = 404, description = "No such incident, or one of a project the caller has \
            no role in (the same answer).", body = ErrorBody),
        (status = 409, description = "The incident is resolved already.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
pub async fn resolve_incident(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<IncidentView>> {
    // Who may is checked before the body is read: a stranger learns nothing from a 400.
    let comment = serde_json::from_slice::<ResolveRequest>(&body)
        .map(|r| r.comment)
        .unwrap_or_default();
    Ok(Json(
        ops::resolve_incident(&app, &who, &id, &comment).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/transfers/{id}/verify",
    operation_id = "verifyTransfer",
    tags = ["operations"],
    summary = "Re-hash a transfer's files at rest now",
    description = "Re-hashes the transfer's quarantine copy and, once released, its \
        read-only copy against the sealed manifest, records the results and raises incidents \
        as the scheduler does (audited as `integrity.verified`). The answer is that of \
        `airlock verify ID --json`: a list with one report. With `released_only=true`, only \
        the read-only copy is read (`airlock verify ID --released-only`). For the project's \
        Project Managers, Programme and System Managers.",
    params(TransferPath, VerifyQuery),
    responses(
        (status = 200, description = "The report (problems included: a problem is a finding, \
            not an error).", body = Vec<Report>),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "A caller who sees the transfer but does not manage \
            its project.", body = ErrorBody),
        (status = 404, description = "No such transfer, or one of a project the caller has \
            no role in (the same answer).", body = ErrorBody),
        (status = 409, description = "The transfer is not sealed: nothing to verify yet.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
pub async fn verify_transfer(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    q: Q<VerifyQuery>,
) -> ApiResult<Json<Vec<Report>>> {
    let scope = query(q)?.scope();
    Ok(Json(
        ops::verify_transfer(&app, &who, transfer_id(&id)?, scope).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/workspaces/{project}/{workspace}/verify",
    operation_id = "verifyWorkspace",
    tags = ["operations"],
    summary = "Re-hash every transfer released into a workspace now",
    description = "As `POST /api/v1/transfers/{id}/verify` for each transfer released into \
        the workspace, one after the other; the answer is that of `airlock verify \
        PROJECT/WORKSPACE --json`. For the project's Project Managers, Programme and System \
        Managers.",
    params(ProjectPath, WorkspacePath, VerifyQuery),
    responses(
        (status = 200, description = "One report per released transfer.", body = Vec<Report>),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "A member of the project who does not manage it.", body = ErrorBody),
        (status = 404, description = "No such workspace, or one of a project the caller \
            has no role in (the same answer).", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
pub async fn verify_workspace(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path((project, workspace)): Path<(String, String)>,
    q: Q<VerifyQuery>,
) -> ApiResult<Json<Vec<Report>>> {
    let scope = query(q)?.scope();
    Ok(Json(
        ops::verify_workspace(&app, &who, &format!("{project}/{workspace}"), scope).await?,
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/audit/verify",
    operation_id = "verifyAudit",
    tags = ["operations"],
    summary = "Check the whole audit chain",
    description = "Checks the hash chain up to its head, the audit key on every event and \
        the signed anchors, a page of events at a time; with `head`, also that the chain still \
        contains a head exported earlier. A broken chain is a finding: `ok` is false and \
        `error` names the first bad event. System Manager only (the chain holds every \
        project's events).",
    params(HeadQuery),
    responses(
        (status = 200, description = "What the check found.", body = AuditVerification),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "Anyone but the System Manager.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
pub async fn verify_audit(
    State(app): State<AppState>,
    Caller(who): Caller,
    q: Q<HeadQuery>,
) -> ApiResult<Json<AuditVerification>> {
    let q = query(q)?;
    Ok(Json(
        ops::verify_audit_for(&app, &who, q.head.as_deref()).await?,
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/audit/export",
    operation_id = "exportAudit",
    tags = ["operations"],
    summary = "Every audit event as JSON lines, streamed",
    description = "The chain up to its head when called, one event per line (`seq`, `at`, \
        `actor`, `action`, `transfer_id`, `detail`, `prev_hash`, `hash`, `mac`), as `airlock \
        audit export` writes it, read from the store a page at a time while it is sent. System \
        Manager only.",
    responses(
        (status = 200, description = "JSON lines.", body = String, content_type = "application/x-ndjson"),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "Anyone but the System Manager.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
pub async fn export_audit(State(app): State<AppState>, Caller(who): Caller) -> ApiResult<Response> {
    Ok(json_lines(ops::export_audit(app.0.clone(), &who)?))
}

#[utoipa::path(
    get,
    path = "/api/v1/transfers/{id}/audit",
    operation_id = "getTransferAudit",
    tags = ["operations"],
    summary = "A transfer's audit events as JSON lines, streamed",
    description = "Every event of the transfer, in chain order, one per line as in the \
        export. For the project's Project Managers, Programme and System Managers.",
    params(TransferPath),
    responses(
        (status = 200, description = "JSON lines.", body = String, content_type = "application/x-ndjson"),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "A caller who sees the transfer but does not manage \
            its project.", body = ErrorBody),
        (status = 404, description = "No such transfer, or one of a project the caller has \
            no role in (the same answer).", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
pub async fn transfer_audit(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(json_lines(
        ops::transfer_audit(app.0.clone(), &who, transfer_id(&id)?).await?,
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/transfers/{id}/bag",
    operation_id = "getBag",
    tags = ["operations"],
    summary = "A released transfer as a BagIt bag, streamed as a tar",
    description = "The bag (RFC 8493) under `ID/`: `bagit.txt`, `bag-info.txt` (with \
        Payload-Oxum), `data/...`, `manifest-sha256.txt`, `manifest-blake3.txt` and \
        `tagmanifest-sha256.txt`, built while it is sent (never staged). Each file is checked \
        against the sealed manifest as it goes; a copy that differs ends the stream early \
        (run verify). Audited as `content.read`. For the project's Project Managers, \
        Programme and System Managers.",
    params(TransferPath),
    responses(
        (status = 200, description = "A tar stream.", body = Octets, content_type = "application/x-tar"),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "A caller who sees the transfer but does not manage \
            its project.", body = ErrorBody),
        (status = 404, description = "No such transfer, or one of a project the caller has \
            no role in (the same answer).", body = ErrorBody),
        (status = 409, description = "The transfer is not released.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
pub async fn bag(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = transfer_id(&id)?;
    let body = ops::bag(app.0.clone(), &who, id).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.tar\""),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    operation_id = "listWebhookDeliveries",
    tags = ["operations"],
    summary = "List webhook deliveries",
    description = "Deliveries newest first, with their attempts and last error, `limit` at \
        a time (default and most 1000) after the delivery `after`; a full page carries `Link: \
        <...>; rel=\"next\"`. The items are those of `airlock webhooks list --json`. System \
        Manager only (deliveries carry every project's events).",
    params(DeliveryQuery),
    responses(
        (status = 200, description = "A page of deliveries.", body = Vec<DeliveryView>),
        (status = 400, description = "A state other than pending, delivered or failed.", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "Anyone but the System Manager.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
pub async fn webhooks(
    State(app): State<AppState>,
    Caller(who): Caller,
    q: Q<DeliveryQuery>,
) -> ApiResult<(HeaderMap, Json<Vec<DeliveryView>>)> {
    let q = query(q)?;
    let list = ops::webhooks(&app, &who, q.state.as_deref(), q.after.as_deref(), q.limit).await?;
    let link = next_link(
        "/api/v1/webhooks",
        &[("state", q.state.as_deref())],
        list.last().map(|d| d.id.as_str()),
        list.len(),
        q.limit,
    );
    Ok((link, Json(list)))
}

#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{id}/retry",
    operation_id = "retryWebhookDelivery",
    tags = ["operations"],
    summary = "Send a failed delivery again",
    description = "Puts a failed delivery back in the queue (attempts reset), audited as \
        `webhook.retried` with the caller, in the same transaction. System Manager only.",
    params(DeliveryPath),
    responses(
        (status = 200, description = "The delivery, pending again.", body = DeliveryView),
        (status = 401, response = Unauthenticated),
        (status = 403, description = "Anyone but the System Manager.", body = ErrorBody),
        (status = 404, description = "No such delivery.", body = ErrorBody),
        (status = 409, description = "The delivery has not failed.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 429, response = Throttled),
    ),
    security(("staffToken" = [])),
)]
pub async fn retry_webhook(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<DeliveryView>> {
    Ok(Json(ops::retry_webhook(&app, &who, &id).await?))
}
