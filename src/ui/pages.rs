//! The page handlers: extract, call one workflow function (the one the API route calls),
//! render. A form that changes something answers with a redirect back to the page it came
//! from (post/redirect/get), so a reload never posts twice.

use super::{
    assets, page_error, preview, render, session_cookie, LoginPage, PageError, Viewer, CSP_PREVIEW,
    CSP_UPLOAD,
};
use crate::domain::{Role, TransferId, TransferState};
use crate::server::AppState;
use crate::store::{AuditRow, Entry};
use crate::workflow::browse::{self, InboxRow, Why};
use crate::workflow::transfers::{self, TransferView};
use crate::workflow::{collect, egress, governance, sessions, Error};
use askama::Template;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use futures::StreamExt;
use serde::Deserialize;
use std::collections::HashMap;

type PageResult = Result<Response, PageError>;

/// What every signed-in page shows: who is signed in, the stylesheet, the sign-out form.
pub struct Chrome {
    pub user: String,
    pub csrf: String,
    pub css: &'static str,
    pub htmx: &'static str,
}

impl Chrome {
    fn of(v: &Viewer) -> Self {
        Chrome {
            user: v.0.user.name.clone(),
            csrf: v.0.csrf.clone(),
            css: assets::url("airlock.css"),
            htmx: assets::url("htmx.min.js"),
        }
    }
}

fn id_of(raw: &str) -> Result<TransferId, PageError> {
    raw.parse()
        .map_err(|_| PageError(Error::NotFound(format!("no transfer {raw}"))))
}

fn back_to(id: TransferId, note: &str) -> Response {
    let q: String = url_escape(note);
    Redirect::to(&format!("/ui/transfers/{id}?note={q}")).into_response()
}

/// Percent-encodes everything but unreserved characters (for a query value).
fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes a relative path segment by segment (slashes kept).
fn path_escape(p: &str) -> String {
    p.split('/').map(url_escape).collect::<Vec<_>>().join("/")
}

// ---- sign-in ----

pub async fn login_page() -> Response {
    render(StatusCode::OK, &LoginPage::new(None))
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
}

pub async fn login(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Form(f): Form<LoginForm>,
) -> Response {
    match sessions::sign_in(&app, &f.token, peer.ip().to_canonical()).await {
        Ok(s) => {
            let mut r = Redirect::to("/ui/").into_response();
            *r.status_mut() = StatusCode::SEE_OTHER;
            if let Ok(v) = HeaderValue::from_str(&session_cookie(&s.id, s.max_age)) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e @ Error::Unauthenticated(_)) => render(
            StatusCode::UNAUTHORIZED,
            &LoginPage::new(Some(e.to_string())),
        ),
        Err(e) => page_error(e),
    }
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(State(app): State<AppState>, v: Viewer, Form(f): Form<CsrfOnly>) -> PageResult {
    v.check(&f.csrf)?;
    sessions::sign_out(&app, &v.0).await?;
    let mut r = Redirect::to("/ui/login").into_response();
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(c) = HeaderValue::from_str(&super::cleared_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    Ok(r)
}

// ---- inbox ----

pub struct Row {
    pub id: String,
    pub kind: String,
    pub workspace: String,
    pub state: String,
    pub reason: String,
    pub awaited: String,
    pub updated: String,
}

impl Row {
    fn of(r: &InboxRow) -> Self {
        let v = &r.view;
        Row {
            id: v.id.to_string(),
            kind: v.kind.to_string(),
            workspace: v.workspace.clone(),
            state: v.state.to_string(),
            reason: v.state_reason.clone(),
            awaited: r.awaited.clone(),
            updated: v.updated_at.clone(),
        }
    }
}

pub struct Event {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub transfer: String,
}

impl Event {
    fn of(a: &AuditRow) -> Self {
        Event {
            at: a.at.clone(),
            actor: a.actor.clone(),
            action: a.action.clone(),
            transfer: a.transfer_id.clone().unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "inbox.html")]
struct Inbox {
    c: Chrome,
    decide: Vec<Row>,
    returned: Vec<Row>,
    watching: Vec<Row>,
    activity: Vec<Event>,
    is_pm: bool,
}

pub async fn inbox(State(app): State<AppState>, v: Viewer) -> PageResult {
    let who = v.0.principal();
    let rows = browse::inbox(&app, &who).await?;
    let pick = |w: Why| rows.iter().filter(|r| r.why == w).map(Row::of).collect();
    let activity = browse::activity(&app, &who, 20).await?;
    let page = Inbox {
        decide: pick(Why::Decide),
        returned: pick(Why::Returned),
        watching: pick(Why::Watching),
        activity: activity.iter().map(Event::of).collect(),
        is_pm: v.0.user.roles.contains(&Role::ProjectManager),
        c: Chrome::of(&v),
    };
    Ok(render(StatusCode::OK, &page))
}

#[derive(Deserialize)]
pub struct OpenForm {
    #[serde(default)]
    csrf: String,
    workspace: String,
    kind: String,
    uploader: String,
}

pub async fn open_transfer(
    State(app): State<AppState>,
    v: Viewer,
    Form(f): Form<OpenForm>,
) -> PageResult {
    v.check(&f.csrf)?;
    let kind = f
        .kind
        .parse()
        .map_err(|e: String| PageError(Error::BadRequest(e)))?;
    let req = transfers::CreateTransfer {
        workspace: f.workspace.trim().to_owned(),
        kind,
        uploader: f.uploader.trim().to_owned(),
    };
    let t = transfers::create(&app, &v.0.principal(), req).await?;
    Ok(back_to(
        t.id,
        "Transfer opened. Issue its upload link below.",
    ))
}

// ---- transfer page ----

pub struct TreeEntry {
    pub name: String,
    pub folder: bool,
    /// Link to open the folder, or to preview the file.
    pub href: String,
    pub download: String,
    pub size: String,
    pub sha256: String,
    pub role: String,
}

pub struct Decision {
    pub user: String,
    pub role: String,
    pub decision: String,
    pub comment: String,
    pub at: String,
    pub counts: bool,
}

pub struct Finding {
    pub id: String,
    pub path: String,
    pub rule: String,
    pub location: String,
    pub status: String,
    pub message: String,
    pub acknowledged_by: String,
}

pub struct Vote {
    pub user: String,
    pub path: String,
    pub vote: String,
    pub comment: String,
    pub visibility: String,
}

pub struct Output {
    pub path: String,
    pub role: String,
    pub size: u64,
    pub sha256: String,
    pub changed: String,
    pub preview: String,
    /// The viewer's own vote on it, if any.
    pub my_vote: String,
}

#[derive(Template)]
#[template(path = "transfer.html")]
struct TransferPage {
    c: Chrome,
    note: String,
    id: String,
    kind: String,
    egress: bool,
    workspace: String,
    tier: u8,
    state: String,
    reason: String,
    uploader: String,
    created_by: String,
    root_digest: String,
    policy_version: String,
    file_count: u64,
    total_bytes: u64,
    awaited: String,
    scan_counts: Vec<(String, u64)>,
    ack_required: bool,
    decisions: Vec<Decision>,
    /// Whether the decision forms are live, and why not when they are not.
    can_decide: bool,
    why_not: String,
    roles_asked: Vec<String>,
    is_pm: bool,
    can_issue_link: bool,
    recipients: Vec<String>,
    context: String,
    outputs: Vec<Output>,
    findings: Vec<Finding>,
    votes: Vec<Vote>,
    reviews: Vec<Decision>,
    dir: String,
    parent: Option<String>,
    entries: Vec<TreeEntry>,
    next_page: Option<String>,
    preview: Option<String>,
    preview_name: String,
    history: Vec<Event>,
    incidents: Vec<String>,
    release: String,
}

#[derive(Deserialize, Default)]
pub struct TransferQuery {
    #[serde(default)]
    dir: String,
    after: Option<String>,
    preview: Option<String>,
    #[serde(default)]
    note: String,
}

fn size(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// `{"cell": {"row": 3, "col": 2}}` or the like as "row 3, column 2".
fn location_words(l: &serde_json::Value) -> String {
    let (row, col, line) = cell_of(l);
    match (row, col, line) {
        (Some(r), Some(c), _) => format!("row {r}, column {c}"),
        (Some(r), None, _) => format!("row {r}"),
        (None, Some(c), _) => format!("column {c}"),
        (_, _, Some(n)) => format!("line {n}"),
        _ => "the whole file".into(),
    }
}

fn cell_of(l: &serde_json::Value) -> (Option<u64>, Option<u64>, Option<u64>) {
    match l {
        serde_json::Value::Object(m) => {
            let get = |k: &str| m.get(k).and_then(|v| v.as_u64());
            if get("row").is_some() || get("col").is_some() || get("line").is_some() {
                return (get("row"), get("col"), get("line"));
            }
            m.values()
                .map(cell_of)
                .find(|t| *t != (None, None, None))
                .unwrap_or((None, None, None))
        }
        _ => (None, None, None),
    }
}

/// Why the viewer cannot decide now, or `None` when they can.
fn why_not_decide(v: &TransferView, me: &str) -> Option<String> {
    match v.state {
        TransferState::InReview => {}
        TransferState::Open | TransferState::Sealed | TransferState::Scanning => {
            return Some(format!(
                "waiting for {}: decisions open once the transfer is in review",
                if v.state == TransferState::Open {
                    "the upload and seal"
                } else {
                    "the scans"
                }
            ))
        }
        s => return Some(format!("the transfer is {s}: nothing to decide")),
    }
    if v.uploader == me {
        return Some("you uploaded it: the uploader never decides".into());
    }
    if v.awaiting.iter().any(|a| a.from.iter().any(|n| n == me)) {
        return None;
    }
    if v.decisions.iter().any(|d| d.user == me && d.counts) {
        return Some("you already decided".into());
    }
    Some("not your role: the approvals still awaited are from others".into())
}

pub async fn transfer(
    State(app): State<AppState>,
    v: Viewer,
    Path(raw): Path<String>,
    Query(q): Query<TransferQuery>,
) -> PageResult {
    let id = id_of(&raw)?;
    let who = v.0.principal();
    let me = v.0.user.name.clone();
    let view = transfers::show(&app, &who, id).await?;
    let folder = browse::folder(&app, &who, id, &q.dir, q.after.as_deref()).await;
    let (dir, entries, next) = match folder {
        Ok(f) => (f.dir, f.entries, f.next),
        // A transfer whose files this viewer may not list still has its page.
        Err(_) => (String::new(), Vec::new(), None),
    };
    let roles: HashMap<String, String> = view
        .egress
        .as_ref()
        .map(|e| {
            e.pinned
                .iter()
                .map(|f| (f.path.clone(), f.role.clone()))
                .collect()
        })
        .unwrap_or_default();
    let base = format!("/ui/transfers/{id}");
    let entries = entries
        .into_iter()
        .map(|e| match e {
            Entry::Folder(name) => TreeEntry {
                href: format!("{base}?dir={}", url_escape(&format!("{dir}{name}"))),
                name,
                folder: true,
                download: String::new(),
                size: String::new(),
                sha256: String::new(),
                role: String::new(),
            },
            Entry::File(f) => TreeEntry {
                name: f.path[dir.len()..].to_owned(),
                folder: false,
                href: format!(
                    "{base}?dir={}&preview={}#preview",
                    url_escape(&dir),
                    url_escape(&f.path)
                ),
                download: format!("{base}/download/{}", path_escape(&f.path)),
                size: size(f.received),
                sha256: f.sha256.clone().unwrap_or_default(),
                role: roles.get(&f.path).cloned().unwrap_or_default(),
            },
        })
        .collect();
    let parent = (!dir.is_empty()).then(|| {
        let trimmed = dir.trim_end_matches('/');
        match trimmed.rfind('/') {
            Some(i) => trimmed[..=i].to_owned(),
            None => String::new(),
        }
    });
    let hide = view.egress.as_ref().is_some_and(|e| e.hide_decisions);
    let history = browse::history(&app, &who, id, None, 100)
        .await?
        .iter()
        .filter(|a| {
            // Blind review: others' votes and reviews stay out of sight, as in `transfer show`.
            !(hide
                && matches!(a.action.as_str(), "egress.voted" | "egress.reviewed")
                && a.actor != format!("user:{me}"))
        })
        .map(Event::of)
        .collect();
    let why_not = why_not_decide(&view, &me);
    let is_pm = browse::roles_on(&app, &who, id)
        .await?
        .contains(&Role::ProjectManager);
    let (recipients, context, outputs, findings, votes, reviews) = match &view.egress {
        Some(e) => {
            let my_votes: HashMap<&str, &str> = e
                .votes
                .iter()
                .filter(|x| x.user == me)
                .map(|x| (x.path.as_str(), x.vote.as_str()))
                .collect();
            (
                e.recipients.clone(),
                e.context.clone(),
                e.pinned
                    .iter()
                    .map(|f| Output {
                        path: f.path.clone(),
                        role: f.role.clone(),
                        size: f.size,
                        sha256: f.sha256.clone().unwrap_or_default(),
                        changed: f.changed_on_disk.clone().unwrap_or_default(),
                        preview: format!("{base}?preview={}#preview", url_escape(&f.path)),
                        my_vote: my_votes
                            .get(f.path.as_str())
                            .map(|s| s.to_string())
                            .unwrap_or_default(),
                    })
                    .collect(),
                e.disclosure
                    .findings
                    .iter()
                    .map(|f| Finding {
                        id: f.id.clone(),
                        path: f.path.clone(),
                        rule: f.rule.clone(),
                        location: location_words(&f.location),
                        status: f.status.clone(),
                        message: f.message.clone(),
                        acknowledged_by: f.acknowledged_by.join(", "),
                    })
                    .collect(),
                e.votes
                    .iter()
                    .map(|x| Vote {
                        user: x.user.clone(),
                        path: x.path.clone(),
                        vote: x.vote.clone(),
                        comment: x.comment.clone(),
                        visibility: x.visibility.clone(),
                    })
                    .collect(),
                e.reviews
                    .iter()
                    .map(|r| Decision {
                        user: r.user.clone(),
                        role: r.role.clone(),
                        decision: r.outcome.clone(),
                        comment: r.comment.clone(),
                        at: r.at.clone(),
                        counts: true,
                    })
                    .collect(),
            )
        }
        None => Default::default(),
    };
    let page = TransferPage {
        note: q.note,
        id: id.to_string(),
        kind: view.kind.to_string(),
        egress: view.kind.is_egress(),
        workspace: view.workspace.clone(),
        tier: view.tier,
        state: view.state.to_string(),
        reason: view.state_reason.clone(),
        uploader: view.uploader.clone(),
        created_by: view.created_by.clone(),
        root_digest: view.root_digest.clone().unwrap_or_default(),
        policy_version: view.policy.version.clone(),
        file_count: view.file_count,
        total_bytes: view.total_bytes,
        awaited: browse::awaited(&view),
        scan_counts: view
            .scans
            .counts
            .iter()
            .map(|(k, n)| (k.clone(), *n))
            .collect(),
        ack_required: view.scans.ack_required,
        decisions: view
            .decisions
            .iter()
            .map(|d| Decision {
                user: d.user.clone(),
                role: d.role.clone(),
                decision: d.decision.clone(),
                comment: d.comment.clone(),
                at: d.at.clone(),
                counts: d.counts,
            })
            .collect(),
        can_decide: why_not.is_none(),
        why_not: why_not.unwrap_or_default(),
        roles_asked: view
            .awaiting
            .iter()
            .filter(|a| a.from.contains(&me))
            .map(|a| a.role.as_str().to_owned())
            .collect(),
        is_pm,
        can_issue_link: is_pm
            && !view.kind.is_egress()
            && matches!(view.state, TransferState::Open | TransferState::Returned),
        recipients,
        context,
        outputs,
        findings,
        votes,
        reviews,
        dir,
        parent,
        entries,
        next_page: next
            .map(|n| format!("{base}?dir={}&after={}", url_escape(&q.dir), url_escape(&n))),
        preview_name: q.preview.clone().unwrap_or_default(),
        preview: q
            .preview
            .as_deref()
            .map(|p| format!("{base}/preview/{}", path_escape(p))),
        history,
        incidents: view
            .incidents
            .iter()
            .map(|i| format!("{}: {} ({})", i.kind, i.detail, i.state))
            .collect(),
        release: view
            .release
            .as_ref()
            .map(|r| serde_json::to_string(r).unwrap_or_default())
            .unwrap_or_default(),
        c: Chrome::of(&v),
    };
    Ok(render(StatusCode::OK, &page))
}

// ---- decisions ----

#[derive(Deserialize)]
pub struct DecideForm {
    #[serde(default)]
    csrf: String,
    action: String,
    #[serde(default, rename = "as")]
    role: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    root_digest: String,
    #[serde(default)]
    policy_version: String,
    #[serde(default)]
    acknowledge_unscannable: Option<String>,
}

fn role_of(s: &str) -> Result<Option<Role>, PageError> {
    match s.trim() {
        "" => Ok(None),
        r => r
            .parse()
            .map(Some)
            .map_err(|e: String| PageError(Error::BadRequest(e))),
    }
}

/// A stale page: the workflow answers 409 for a changed root digest or policy; the page says
/// so in words a reviewer acts on.
fn stale(e: Error) -> PageError {
    match e {
        Error::Conflict(m) => PageError(Error::Conflict(format!(
            "this transfer changed since your page was shown: reload it and look again before \
             deciding. ({m})"
        ))),
        other => PageError(other),
    }
}

pub async fn decide(
    State(app): State<AppState>,
    v: Viewer,
    Path(raw): Path<String>,
    Form(f): Form<DecideForm>,
) -> PageResult {
    v.check(&f.csrf)?;
    let id = id_of(&raw)?;
    let verdict = match f.action.as_str() {
        "approve" => governance::Verdict::Approve,
        "reject" => governance::Verdict::Reject,
        "return" => governance::Verdict::Return,
        other => {
            return Err(PageError(Error::BadRequest(format!(
                "unknown decision `{other}`: approve, reject or return"
            ))))
        }
    };
    // A page always says what it showed: an empty digest is a page that showed none.
    let req = governance::DecisionRequest {
        role: role_of(&f.role)?,
        comment: f.comment,
        root_digest: Some(f.root_digest),
        policy_version: Some(f.policy_version),
        acknowledge_unscannable: f.acknowledge_unscannable.is_some(),
    };
    governance::decide(&app, &v.0.principal(), id, verdict, req)
        .await
        .map_err(stale)?;
    Ok(back_to(id, &format!("Recorded: {}.", f.action)))
}

/// What every output-checking form checks first: its synchronizer token, and that the
/// request's files are still those the page showed.
async fn output_checking(
    app: &AppState,
    v: &Viewer,
    raw: &str,
    csrf: &str,
    root_digest: &str,
) -> Result<(TransferId, crate::workflow::access::Principal), PageError> {
    v.check(csrf)?;
    let id = id_of(raw)?;
    let who = v.0.principal();
    egress::still_as_shown(app, &who, id, root_digest)
        .await
        .map_err(stale)?;
    Ok((id, who))
}

#[derive(Deserialize)]
pub struct VoteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    root_digest: String,
    path: String,
    vote: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    visibility: String,
    #[serde(default, rename = "as")]
    role: String,
}

pub async fn vote(
    State(app): State<AppState>,
    v: Viewer,
    Path(raw): Path<String>,
    Form(f): Form<VoteForm>,
) -> PageResult {
    let (id, who) = output_checking(&app, &v, &raw, &f.csrf, &f.root_digest).await?;
    let req = egress::VoteRequest {
        path: f.path.clone(),
        role: role_of(&f.role)?,
        vote: f.vote,
        comment: f.comment,
        visibility: (!f.visibility.is_empty()).then_some(f.visibility),
    };
    egress::vote(&app, &who, id, req).await?;
    Ok(back_to(id, &format!("Vote recorded on {}.", f.path)))
}

#[derive(Deserialize)]
pub struct ReviewForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    root_digest: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    visibility: String,
    #[serde(default, rename = "as")]
    role: String,
}

pub async fn review(
    State(app): State<AppState>,
    v: Viewer,
    Path(raw): Path<String>,
    Form(f): Form<ReviewForm>,
) -> PageResult {
    let (id, who) = output_checking(&app, &v, &raw, &f.csrf, &f.root_digest).await?;
    let req = egress::ReviewRequest {
        role: role_of(&f.role)?,
        comment: f.comment,
        visibility: (!f.visibility.is_empty()).then_some(f.visibility),
    };
    let t = egress::review(&app, &who, id, req).await?;
    Ok(back_to(
        id,
        &format!("Review submitted: the request is {}.", t.state),
    ))
}

#[derive(Deserialize)]
pub struct AckForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    root_digest: String,
    finding: String,
    #[serde(default)]
    comment: String,
    #[serde(default, rename = "as")]
    role: String,
}

pub async fn acknowledge(
    State(app): State<AppState>,
    v: Viewer,
    Path(raw): Path<String>,
    Form(f): Form<AckForm>,
) -> PageResult {
    let (id, who) = output_checking(&app, &v, &raw, &f.csrf, &f.root_digest).await?;
    let req = egress::AckRequest {
        finding: f.finding,
        role: role_of(&f.role)?,
        comment: f.comment,
    };
    egress::acknowledge(&app, &who, id, req).await?;
    Ok(back_to(id, "Finding acknowledged."))
}

// ---- links shown once ----

#[derive(Template)]
#[template(path = "link.html")]
struct LinkPage {
    c: Chrome,
    id: String,
    what: String,
    url: String,
    expires: String,
}

#[derive(Deserialize)]
pub struct LinkForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    ttl: String,
}

pub async fn upload_link(
    State(app): State<AppState>,
    v: Viewer,
    Path(raw): Path<String>,
    Form(f): Form<LinkForm>,
) -> PageResult {
    v.check(&f.csrf)?;
    let id = id_of(&raw)?;
    let req = transfers::TokenRequest {
        ttl: (!f.ttl.trim().is_empty()).then(|| f.ttl.trim().to_owned()),
        cidrs: Vec::new(),
    };
    let t = transfers::issue_token(&app, &v.0.principal(), id, req).await?;
    let base = app.settings.ui.base_url(app.settings.server.listen);
    let page = LinkPage {
        id: id.to_string(),
        what: "upload link".into(),
        url: format!("{base}/upload#{}", t.token),
        expires: t.expires_at,
        c: Chrome::of(&v),
    };
    Ok(render(StatusCode::OK, &page))
}

#[derive(Deserialize)]
pub struct CollectionForm {
    #[serde(default)]
    csrf: String,
    recipient: String,
    #[serde(default)]
    ttl: String,
    #[serde(default)]
    max_downloads: String,
}

pub async fn collection_link(
    State(app): State<AppState>,
    v: Viewer,
    Path(raw): Path<String>,
    Form(f): Form<CollectionForm>,
) -> PageResult {
    v.check(&f.csrf)?;
    let id = id_of(&raw)?;
    let max_downloads = match f.max_downloads.trim() {
        "" => None,
        n => Some(n.parse::<u32>().map_err(|_| {
            PageError(Error::BadRequest(format!(
                "downloads allowed must be a whole number, not `{n}`"
            )))
        })?),
    };
    let req = collect::TokenRequest {
        recipient: f.recipient.trim().to_owned(),
        ttl: (!f.ttl.trim().is_empty()).then(|| f.ttl.trim().to_owned()),
        cidrs: Vec::new(),
        max_downloads,
    };
    let t = collect::issue_token(&app, &v.0.principal(), id, req).await?;
    let base = app.settings.ui.base_url(app.settings.server.listen);
    let page = LinkPage {
        id: id.to_string(),
        what: format!("collection link for {}", t.recipient),
        url: format!("{base}/collect#{}", t.token),
        expires: chrono::DateTime::from_timestamp(t.expires_at, 0)
            .map(|d| d.to_rfc3339())
            .unwrap_or_default(),
        c: Chrome::of(&v),
    };
    Ok(render(StatusCode::OK, &page))
}

#[derive(Deserialize)]
pub struct RefereeForm {
    #[serde(default)]
    csrf: String,
    user: String,
}

pub async fn assign_referee(
    State(app): State<AppState>,
    v: Viewer,
    Path(raw): Path<String>,
    Form(f): Form<RefereeForm>,
) -> PageResult {
    v.check(&f.csrf)?;
    let id = id_of(&raw)?;
    let req = governance::UserRef {
        user: f.user.trim().to_owned(),
    };
    governance::assign_referee(&app, &v.0.principal(), id, req).await?;
    Ok(back_to(
        id,
        &format!("{} assigned as referee.", f.user.trim()),
    ))
}

// ---- previews and downloads ----

#[derive(Template)]
#[template(path = "preview_table.html")]
struct TablePreview {
    css: &'static str,
    name: String,
    t: preview::Table,
    findings: usize,
}

#[derive(Template)]
#[template(path = "preview_text.html")]
struct TextPreview {
    css: &'static str,
    name: String,
    note: String,
    text: String,
}

/// Reads at most `cap` bytes of a stream.
async fn read_capped(
    mut s: futures::stream::BoxStream<'static, crate::volumes::Result<bytes::Bytes>>,
    cap: usize,
) -> Result<Vec<u8>, PageError> {
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| PageError(Error::Internal(e.to_string())))?;
        let room = cap - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() == cap {
            break;
        }
    }
    Ok(out)
}

/// Largest image shown inline.
const IMAGE_CAP: usize = 20 << 20;

pub async fn preview(
    State(app): State<AppState>,
    v: Viewer,
    Path((raw, path)): Path<(String, String)>,
) -> PageResult {
    let id = id_of(&raw)?;
    let who = v.0.principal();
    let (file, stream) = transfers::read_content(&app, &who, id, &path).await?;
    let caps = preview::Caps::default();
    let head = read_capped(stream, IMAGE_CAP.max(caps.max_bytes + 1)).await?;
    let kind = preview::sniff(&file.path, &head[..head.len().min(64 << 10)]);
    let css = assets::url("airlock.css");
    let mut resp = match kind {
        preview::Kind::Image { mime } => {
            if (file.received as usize) > IMAGE_CAP {
                let page = TextPreview {
                    css,
                    name: file.path.clone(),
                    note: format!(
                        "This image is {} : too large to show here. Download it instead.",
                        size(file.received)
                    ),
                    text: String::new(),
                };
                render(StatusCode::OK, &page)
            } else {
                let mut r = Body::from(head).into_response();
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
                r
            }
        }
        preview::Kind::Table { delimiter } => {
            let bytes = &head[..head.len().min(caps.max_bytes + 1)];
            let flags = flags_for(&app, id, &file.path, bytes).await?;
            let findings = flags.len();
            let t = preview::table(bytes, delimiter, &caps, &flags);
            render(
                StatusCode::OK,
                &TablePreview {
                    css,
                    name: file.path.clone(),
                    t,
                    findings,
                },
            )
        }
        preview::Kind::Text => {
            let bytes = &head[..head.len().min(caps.max_bytes + 1)];
            let t = preview::text(bytes, &caps);
            render(
                StatusCode::OK,
                &TextPreview {
                    css,
                    name: file.path.clone(),
                    note: t.truncated.unwrap_or_default(),
                    text: t.text,
                },
            )
        }
        preview::Kind::Binary => render(
            StatusCode::OK,
            &TextPreview {
                css,
                name: file.path.clone(),
                note: "A binary file: no preview. Download it to inspect it.".into(),
                text: String::new(),
            },
        ),
    };
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP_PREVIEW),
    );
    Ok(resp)
}

/// The disclosure findings to highlight in a table: an egress request's own (stored with the
/// request, never the value), or, for anything else, the same checks run on the bytes shown.
/// Called after `read_content`, which checked that the caller may read the file.
async fn flags_for(
    app: &AppState,
    id: TransferId,
    path: &str,
    bytes: &[u8],
) -> Result<HashMap<(u64, u64), String>, PageError> {
    if let Some(stored) = browse::findings_of(app, id, path).await? {
        let mut out: HashMap<(u64, u64), String> = HashMap::new();
        for (location, rule) in stored {
            if let (Some(r), Some(c), _) = cell_of(&location) {
                out.entry((r, c))
                    .and_modify(|s| {
                        s.push_str(", ");
                        s.push_str(&rule)
                    })
                    .or_insert(rule);
            }
        }
        return Ok(out);
    }
    let rules = crate::scan::disclosure::Rules::default();
    Ok(crate::scan::disclosure::check(path, bytes, &rules)
        .map(|report| preview::cell_flags(&report.findings))
        .unwrap_or_default())
}

pub async fn download(
    State(app): State<AppState>,
    v: Viewer,
    Path((raw, path)): Path<(String, String)>,
) -> PageResult {
    let id = id_of(&raw)?;
    let (file, stream) = transfers::read_content(&app, &v.0.principal(), id, &path).await?;
    let name: String = file
        .path
        .rsplit('/')
        .next()
        .unwrap_or("file")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut r = Body::from_stream(stream.map(|c| c.map_err(|e| e.to_string()))).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, file.received.into());
    if let Ok(d) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, d);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP_PREVIEW),
    );
    Ok(r)
}

// ---- researcher egress ----

#[derive(Template)]
#[template(path = "egress.html")]
struct EgressPage {
    c: Chrome,
    workspace: String,
    entries: Vec<egress::OutputEntry>,
    id: String,
}

#[derive(Deserialize, Default)]
pub struct EgressQuery {
    #[serde(default)]
    workspace: String,
    #[serde(default)]
    id: String,
}

pub async fn egress_page(
    State(app): State<AppState>,
    v: Viewer,
    Query(q): Query<EgressQuery>,
) -> PageResult {
    let entries = if q.workspace.is_empty() {
        Vec::new()
    } else {
        egress::output_entries(&app, &v.0.principal(), &q.workspace).await?
    };
    let page = EgressPage {
        workspace: q.workspace,
        entries,
        id: q.id,
        c: Chrome::of(&v),
    };
    Ok(render(StatusCode::OK, &page))
}

pub async fn egress_submit(
    State(app): State<AppState>,
    v: Viewer,
    Form(f): Form<Vec<(String, String)>>,
) -> PageResult {
    let get = |k: &str| {
        f.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    v.check(&get("csrf"))?;
    let who = v.0.principal();
    let mut files = Vec::new();
    for (k, val) in &f {
        if let Some(path) = k.strip_prefix("role:") {
            if val.is_empty() {
                continue;
            }
            let role = val
                .parse()
                .map_err(|e: String| PageError(Error::BadRequest(e)))?;
            files.push(egress::Item {
                path: path.to_owned(),
                role,
            });
        }
    }
    let recipients = get("recipients")
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let existing = get("id").trim().to_owned();
    let draft = egress::Draft {
        // Only a new request names its workspace; an edit keeps it.
        workspace: existing.is_empty().then(|| get("workspace")),
        kind: None,
        context: get("context"),
        files,
        recipients,
        target_workspace: None,
    };
    let id = match existing.as_str() {
        "" => egress::create(&app, &who, draft).await?.id,
        raw => {
            let id = id_of(raw)?;
            egress::edit(&app, &who, id, draft).await?;
            id
        }
    };
    let t = egress::submit(&app, &who, id).await?;
    Ok(back_to(
        id,
        &format!("Submitted: the request is {}.", t.state),
    ))
}

// ---- token pages: the token stays in the fragment ----

#[derive(Template)]
#[template(path = "upload.html")]
struct UploadPage {
    css: &'static str,
    hashwasm: &'static str,
    tus: &'static str,
    script: &'static str,
}

pub async fn upload_page() -> Response {
    let page = UploadPage {
        css: assets::url("airlock.css"),
        hashwasm: assets::url("sha256.umd.min.js"),
        tus: assets::url("tus.min.js"),
        script: assets::url("upload.js"),
    };
    let mut r = render(StatusCode::OK, &page);
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP_UPLOAD),
    );
    r
}

#[derive(Template)]
#[template(path = "collect.html")]
struct CollectPage {
    css: &'static str,
    script: &'static str,
}

pub async fn collect_page() -> Response {
    let page = CollectPage {
        css: assets::url("airlock.css"),
        script: assets::url("collect.js"),
    };
    // The strict page CSP: downloads are checked with WebCrypto, no WebAssembly here.
    render(StatusCode::OK, &page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_and_paths_are_escaped() {
        assert_eq!(url_escape("a b/c&d"), "a%20b%2Fc%26d");
        assert_eq!(path_escape("dir x/é.csv"), "dir%20x/%C3%A9.csv");
    }

    #[test]
    fn finding_locations_read_as_words() {
        let l = serde_json::json!({"cell": {"row": 3, "col": 2}});
        assert_eq!(location_words(&l), "row 3, column 2");
        assert_eq!(cell_of(&l), (Some(3), Some(2), None));
        let l = serde_json::json!({"line": {"line": 7, "column": 1}});
        assert_eq!(location_words(&l), "line 7");
        assert_eq!(location_words(&serde_json::json!("file")), "the whole file");
    }
}
