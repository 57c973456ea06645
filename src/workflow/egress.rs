//! Egress (DESIGN.md, "Egress in detail"; the Turing paper, 4.1.4, 4.1.5 and 10): a
//! Researcher asks for files of the workspace's output volume to go out, each typed `output`
//! (released), `supporting` (for the checkers only, never released) or `code` (the analysis
//! that made the outputs; at least one). Submit pins every file into quarantine, hashed as it
//! is copied, and seals the request exactly as an ingress transfer is sealed; the scanners run,
//! with the `disclosure` checks; output checkers vote per file, blind until their own review is
//! in; the outcome follows from the reviews through the same decisions as ingress. Approved,
//! the output files alone are released into the workspace's egress area with the
//! output-checking record, and named recipients collect them with read-only tokens
//! ([`super::collect`]).
//!
//! An egress request is a transfer of kind `egress`: every list and `transfer show` treat it
//! like the others. A draft is `open`; submit seals it; withdrawal is `cancelled` with its
//! reason; approval leads to `released` once the package is ready.

use super::access::{self, Principal};
use super::governance::{self, DecisionRequest, Verdict};
use super::{Error, Result};
use crate::app::App;
use crate::audit::AuditEvent;
use crate::domain::state::Event;
use crate::domain::*;
use crate::store::{FindingRow, PinnedRow, Transfer, User, Workspace};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What a file of an egress request is for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum FileRole {
    /// Released to the recipients once approved.
    Output,
    /// For the checkers only (the underlying counts, say); never released.
    Supporting,
    /// The analysis that made the outputs (paper 4.1.4); never released.
    Code,
}

impl FileRole {
    pub fn as_str(self) -> &'static str {
        match self {
            FileRole::Output => "output",
            FileRole::Supporting => "supporting",
            FileRole::Code => "code",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [FileRole::Output, FileRole::Supporting, FileRole::Code]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// Names the package's record takes at the top of the release: no output may use them.
pub const RECORD_FILES: [&str; 2] = ["manifest-sha256.txt", "disclosure-record.json"];

/// One file or folder of the output volume, with its role.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// Relative to the output volume.
    pub path: String,
    pub role: FileRole,
}

/// A draft: `POST /api/v1/egress` (with `workspace`) or `PUT /api/v1/egress/{id}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Draft {
    /// `PROJECT/WORKSPACE`; only when creating.
    #[serde(default)]
    pub workspace: Option<String>,
    /// `egress` (the default) or `return-to-provider` (data back to its providers, who are
    /// then the recipients); only when creating.
    #[serde(default)]
    pub kind: Option<TransferKind>,
    /// What the outputs are, and why they are safe to release.
    pub context: String,
    pub files: Vec<Item>,
    /// User names of the recipients.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// `PROJECT/WORKSPACE` of a derived workspace the outputs go to instead of recipients.
    #[serde(default)]
    pub target_workspace: Option<String>,
}

impl std::str::FromStr for FileRole {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        FileRole::parse(s)
            .ok_or_else(|| format!("`{s}` is not a file role: output, supporting or code"))
    }
}

/// A file of a workspace's output volume, as a researcher picks from it.
#[derive(Debug, Clone)]
pub struct OutputEntry {
    pub path: String,
    pub size: u64,
}

/// Most files listed from an output volume for picking (more: pick their folder by path).
pub const OUTPUT_LISTING: usize = 5000;

/// The regular files of a workspace's output volume, for a Researcher of its project to
/// choose from, in path order. Links are neither followed nor listed.
pub async fn output_entries(
    app: &App,
    who: &Principal,
    workspace: &str,
) -> Result<Vec<OutputEntry>> {
    let user = who.staff()?;
    let ws = super::transfers::workspace_by_path(app, workspace).await?;
    access::require_role(app, user, &ws, &[Role::Researcher]).await?;
    let root = match output_dir(app, &ws).await? {
        Outputs::Dir(root) => root,
        Outputs::S3 => {
            // Key order is path order; a name that is not a path airlock accepts is left out.
            use futures::TryStreamExt;
            let mut listing = app.volumes.list_output(&ws.project_name, &ws.name, None)?;
            let mut out = Vec::new();
            while let Some(o) = listing.try_next().await? {
                if RelPath::parse(&o.rel).is_ok() {
                    out.push(OutputEntry {
                        path: o.rel,
                        size: o.size,
                    });
                }
                if out.len() >= OUTPUT_LISTING {
                    break;
                }
            }
            return Ok(out);
        }
    };
    // A directory walk is blocking file-system work: off the async threads.
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let mut stack = vec![(root.clone(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let Ok(name) = e.file_name().into_string() else {
                    continue;
                };
                let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                    continue;
                };
                let path = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                if meta.is_dir() {
                    stack.push((e.path(), path));
                } else if meta.is_file() {
                    out.push(OutputEntry {
                        path,
                        size: meta.len(),
                    });
                }
                if out.len() >= OUTPUT_LISTING {
                    break;
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    })
    .await
    .map_err(|e| Error::Internal(format!("listing the output volume failed: {e}")))
}

/// Refuses (409) when a request's files are no longer those a page showed: forms of output
/// checking carry the root digest they were rendered with.
pub async fn still_as_shown(
    app: &App,
    who: &Principal,
    id: TransferId,
    root_digest: &str,
) -> Result<()> {
    let user = who.staff()?;
    let (t, _) = access::load_for(app, user, id).await?;
    let now = t.root_digest.as_deref().unwrap_or("");
    if now != root_digest {
        return Err(Error::Conflict(format!(
            "the request's pinned files changed: root digest {} now, {} on the page",
            if now.is_empty() { "none" } else { now },
            if root_digest.is_empty() {
                "none"
            } else {
                root_digest
            }
        )));
    }
    Ok(())
}

/// Where a workspace's outputs are: a local folder, or the workspace's prefix of the output
/// volume on S3 (`volumes::output`).
#[derive(Debug, Clone)]
pub enum Outputs {
    Dir(PathBuf),
    S3,
}

impl Outputs {
    /// The folder's path, or `s3://BUCKET/PREFIX/output/<project>/<ws>/`.
    pub fn shown(&self, app: &App, ws: &Workspace) -> String {
        match self {
            Outputs::Dir(d) => d.display().to_string(),
            Outputs::S3 => app
                .volumes
                .output_location(&ws.project_name, &ws.name)
                .unwrap_or_default(),
        }
    }
}

/// The workspace's output volume: the analysis environment writes there, airlock only reads.
/// A folder named for the workspace (`airlock admin workspace output`) comes first; then the
/// workspace's prefix of the output volume when that is on S3, else its default folder.
pub async fn output_dir(app: &App, ws: &Workspace) -> Result<Outputs> {
    Ok(match app.store.workspace_output(ws.id).await? {
        Some(dir) => Outputs::Dir(PathBuf::from(dir)),
        None if app.volumes.output_on_s3() => Outputs::S3,
        None => Outputs::Dir(default_output_dir(app, ws)),
    })
}

/// The chosen items of a draft, resolved to files in the workspace's output volume.
async fn resolve_in(app: &App, ws: &Workspace, items: Vec<Item>) -> Result<Vec<Found>> {
    match output_dir(app, ws).await? {
        Outputs::Dir(root) => tokio::task::spawn_blocking(move || resolve(&root, &items))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?,
        Outputs::S3 => resolve_s3(app, ws, &items).await,
    }
}

/// `<data_dir>/volumes/<project>/<workspace>/output`.
pub fn default_output_dir(app: &App, ws: &Workspace) -> PathBuf {
    app.settings
        .storage
        .data_dir
        .join("volumes")
        .join(&ws.project_name)
        .join(&ws.name)
        .join("output")
}

/// A file of the output volume: found by walking from its root without following links, or
/// listed from its S3 prefix.
struct Found {
    rel: RelPath,
    role: FileRole,
    at: At,
}

enum At {
    Disk {
        abs: PathBuf,
        meta: std::fs::Metadata,
    },
    S3(crate::volumes::output::OutputObject),
}

/// A chosen item's path, which must be a path inside the output volume.
fn item_path(item: &Item) -> Result<RelPath> {
    RelPath::parse(&item.path).map_err(|e| {
        Error::BadRequest(format!(
            "{}: not a path inside the output volume: {e}",
            item.path
        ))
    })
}

/// The chosen items on S3: a key is a file; otherwise every key under `item/` (a folder).
/// There are no links to follow on S3: what must hold is that each name is a path airlock
/// accepts, and that what is pinned is the object listed (`pin`).
async fn resolve_s3(app: &App, ws: &Workspace, items: &[Item]) -> Result<Vec<Found>> {
    use futures::TryStreamExt;
    let (project, name) = (&ws.project_name, &ws.name);
    let mut out: BTreeMap<String, Found> = BTreeMap::new();
    for item in items {
        let rel = item_path(item)?;
        if let Some(o) = app.volumes.head_output(project, name, &rel).await? {
            add_found(&mut out, rel, item.role, At::S3(o))?;
            continue;
        }
        let mut listing = app.volumes.list_output(project, name, Some(&rel))?;
        let mut any = false;
        while let Some(o) = listing.try_next().await? {
            any = true;
            let child =
                RelPath::parse(&o.rel).map_err(|e| Error::BadRequest(format!("{}: {e}", o.rel)))?;
            add_found(&mut out, child, item.role, At::S3(o))?;
        }
        if !any {
            return Err(Error::BadRequest(format!(
                "{}: not in the output volume (no such object, nor objects under it)",
                item.path
            )));
        }
    }
    Ok(out.into_values().collect())
}

/// Resolves the chosen items to files: folders are walked, and a link, a device, a socket or
/// a path outside the volume is refused with the path named. Refused, nothing is pinned.
fn resolve(root: &Path, items: &[Item]) -> Result<Vec<Found>> {
    let root = std::fs::canonicalize(root).map_err(|e| {
        Error::Conflict(format!(
            "the workspace's output volume {} cannot be read: {e}",
            root.display()
        ))
    })?;
    let mut out: BTreeMap<String, Found> = BTreeMap::new();
    for item in items {
        let rel = item_path(item)?;
        // Every component from the root is looked at, not followed: a link anywhere on the
        // way would lead out of the volume.
        let mut at = root.clone();
        let parts: Vec<&str> = rel.as_str().split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            at.push(part);
            let meta = std::fs::symlink_metadata(&at).map_err(|e| {
                Error::BadRequest(format!("{}: not in the output volume: {e}", item.path))
            })?;
            let last = i + 1 == parts.len();
            if meta.file_type().is_symlink() {
                return Err(Error::BadRequest(format!(
                    "{}: is a link (at {}); links are never followed out of the output volume",
                    item.path,
                    parts[..=i].join("/")
                )));
            }
            if !last && !meta.is_dir() {
                return Err(Error::BadRequest(format!(
                    "{}: {} is not a folder",
                    item.path,
                    parts[..=i].join("/")
                )));
            }
        }
        walk(&at, rel, item.role, &mut out)?;
    }
    Ok(out.into_values().collect())
}

fn walk(at: &Path, rel: RelPath, role: FileRole, out: &mut BTreeMap<String, Found>) -> Result<()> {
    let meta = std::fs::symlink_metadata(at)
        .map_err(|e| Error::BadRequest(format!("{rel}: cannot be read: {e}")))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        return Err(Error::BadRequest(format!(
            "{rel}: is a link; links are never followed out of the output volume"
        )));
    }
    if ft.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(at)
            .map_err(|e| Error::BadRequest(format!("{rel}: cannot be listed: {e}")))?
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::BadRequest(format!("{rel}: cannot be listed: {e}")))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            let name = name.to_str().ok_or_else(|| {
                Error::BadRequest(format!("{rel}: holds a name that is not UTF-8"))
            })?;
            let child = RelPath::parse(&format!("{rel}/{name}"))
                .map_err(|e| Error::BadRequest(format!("{rel}/{name}: {e}")))?;
            walk(&e.path(), child, role, out)?;
        }
        return Ok(());
    }
    if !ft.is_file() {
        return Err(Error::BadRequest(format!(
            "{rel}: is not a regular file (a device, socket or pipe); only files leave"
        )));
    }
    let abs = at.to_owned();
    add_found(out, rel, role, At::Disk { abs, meta })
}

/// Adds one file to the resolved set: a record file's name is refused at the top, and a file
/// chosen twice must be chosen with one role.
fn add_found(
    out: &mut BTreeMap<String, Found>,
    rel: RelPath,
    role: FileRole,
    at: At,
) -> Result<()> {
    if !rel.as_str().contains('/') && RECORD_FILES.contains(&rel.as_str()) {
        return Err(Error::BadRequest(format!(
            "{rel}: the name is taken by the package's own record; rename the file"
        )));
    }
    if let Some(prev) = out.get(rel.as_str()) {
        if prev.role != role {
            return Err(Error::BadRequest(format!(
                "{rel}: chosen twice, as {} and as {}",
                prev.role.as_str(),
                role.as_str()
            )));
        }
        return Ok(());
    }
    out.insert(rel.as_str().to_owned(), Found { rel, role, at });
    Ok(())
}

/// A draft's own rules: a context, at least one output and one code file, and recipients or a
/// target workspace (not both).
async fn check_draft(
    app: &App,
    ws: &Workspace,
    d: &Draft,
) -> Result<(Vec<UserId>, Option<WorkspaceId>)> {
    if d.context.trim().is_empty() {
        return Err(Error::BadRequest(
            "a context is required: what the outputs are, and why they are safe to release".into(),
        ));
    }
    if !d.files.iter().any(|i| i.role == FileRole::Output) {
        return Err(Error::BadRequest(
            "name at least one output file (role `output`): what is to be released".into(),
        ));
    }
    if !d.files.iter().any(|i| i.role == FileRole::Code) {
        return Err(Error::BadRequest(
            "name at least one code file (role `code`): the analysis script that made the \
             outputs (paper 4.1.4)"
                .into(),
        ));
    }
    let kind = d.kind.unwrap_or(TransferKind::Egress);
    let mut recipients = Vec::new();
    for name in &d.recipients {
        let u = app
            .store
            .user_by_name(name)
            .await?
            .ok_or_else(|| Error::BadRequest(format!("recipient {name}: no such user")))?;
        if u.disabled {
            return Err(Error::BadRequest(format!(
                "recipient {name}: the user is disabled"
            )));
        }
        if kind == TransferKind::ReturnToProvider
            && !u.roles.contains(&Role::Provider)
            && !app
                .store
                .member_roles(ws.project_id, u.id)
                .await?
                .contains(&Role::Provider)
        {
            return Err(Error::BadRequest(format!(
                "recipient {name}: a return to provider goes to the data's providers, and \
                 {name} is not a Dataset Provider Representative"
            )));
        }
        if !recipients.contains(&u.id) {
            recipients.push(u.id);
        }
    }
    let target = match &d.target_workspace {
        Some(_) if kind == TransferKind::ReturnToProvider => {
            return Err(Error::BadRequest(
                "a return to provider goes to its providers, not to a target workspace".into(),
            ))
        }
        Some(path) => {
            let t = super::transfers::workspace_by_path(app, path).await?;
            if t.id == ws.id {
                return Err(Error::BadRequest(
                    "the target workspace must be another workspace".into(),
                ));
            }
            Some(t.id)
        }
        None => None,
    };
    match (recipients.is_empty(), target.is_some()) {
        (true, false) => Err(Error::BadRequest(
            "name the recipient(s) who may collect the outputs, or a target workspace".into(),
        )),
        (false, true) => Err(Error::BadRequest(
            "name recipients or a target workspace, not both".into(),
        )),
        _ => Ok((recipients, target)),
    }
}

fn items_of(d: &Draft) -> Vec<(String, String)> {
    d.files
        .iter()
        .map(|i| (i.path.clone(), i.role.as_str().to_owned()))
        .collect()
}

/// A Researcher who is a member of the workspace's project makes a draft.
pub async fn create(app: &App, who: &Principal, d: Draft) -> Result<Transfer> {
    let user = who.staff()?;
    let path = d
        .workspace
        .clone()
        .ok_or_else(|| Error::BadRequest("name the workspace: PROJECT/WORKSPACE".into()))?;
    let ws = access::visible_workspace(app, user, &path).await?;
    access::require_role(app, user, &ws, &[Role::Researcher]).await?;
    let kind = d.kind.unwrap_or(TransferKind::Egress);
    if kind.is_ingress() {
        return Err(Error::BadRequest(format!(
            "kind `{kind}`: an egress request is egress or return-to-provider"
        )));
    }
    let (recipients, target) = check_draft(app, &ws, &d).await?;
    // The paths are checked now, so a mistake shows at once; they are resolved again at submit.
    resolve_in(app, &ws, d.files.clone()).await?;
    let at = crate::store::now();
    let t = Transfer {
        id: TransferId::new(),
        workspace_id: ws.id,
        kind,
        state: TransferState::Open,
        state_reason: format!("draft by {}; submit pins it for output checking", user.name),
        uploader_id: user.id,
        created_by: user.id,
        created_at: at.clone(),
        updated_at: at,
        sealed_at: None,
        root_digest: None,
        expected_root_digest: None,
        release_location: None,
        released_at: None,
        policy_version: None,
        ack_required: false,
    };
    let mut tx = app.store.begin().await?;
    tx.insert_transfer(&t).await?;
    tx.put_egress_draft(t.id, &d.context, target, &items_of(&d), &recipients)
        .await?;
    tx.audit(
        AuditEvent::new(who.actor(), "egress.created")
            .transfer(t.id)
            .detail(serde_json::json!({
                "workspace": path, "files": d.files.len(), "recipients": d.recipients,
                "target_workspace": d.target_workspace,
            })),
    )
    .await?;
    tx.commit().await?;
    Ok(t)
}

/// The requester, on their own request: anyone else gets 403 (or 404 if they cannot see it).
async fn requester(app: &App, who: &Principal, id: TransferId) -> Result<(Transfer, Workspace)> {
    let user = who.staff()?;
    let (t, ws) = access::load_for(app, user, id).await?;
    if !t.kind.is_egress() {
        return Err(Error::Conflict(format!(
            "transfer {id} is a {} transfer, not an egress request",
            t.kind
        )));
    }
    if t.uploader_id != user.id {
        return Err(Error::Forbidden(format!(
            "only the requester may change or submit egress request {id}"
        )));
    }
    Ok((t, ws))
}

/// The requester rewrites a draft (open, or returned to them).
pub async fn edit(app: &App, who: &Principal, id: TransferId, d: Draft) -> Result<()> {
    let (t, ws) = requester(app, who, id).await?;
    if !matches!(t.state, TransferState::Open | TransferState::Returned) {
        return Err(Error::Conflict(format!(
            "a {} request cannot be edited: only a draft or a returned request",
            t.state
        )));
    }
    if d.workspace.is_some() || d.kind.is_some_and(|k| k != t.kind) {
        return Err(Error::BadRequest(
            "a request's workspace and kind cannot change; leave them out".into(),
        ));
    }
    let d = Draft {
        kind: Some(t.kind),
        ..d
    };
    let (recipients, target) = check_draft(app, &ws, &d).await?;
    resolve_in(app, &ws, d.files.clone()).await?;
    let mut tx = app.store.begin().await?;
    if tx.transfer_state(id).await? != Some(t.state) {
        return Err(Error::Conflict(
            "the request changed state meanwhile; look again".into(),
        ));
    }
    tx.put_egress_draft(id, &d.context, target, &items_of(&d), &recipients)
        .await?;
    tx.audit(
        AuditEvent::new(who.actor(), "egress.edited")
            .transfer(id)
            .detail(serde_json::json!({ "files": d.files.len(), "recipients": d.recipients })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

fn mtime_ns(m: &std::fs::Metadata) -> i64 {
    m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec()
}

/// Submit: every chosen file is copied into quarantine and hashed while it is copied, and the
/// request is sealed (manifest and root digest fixed as at an ingress seal). A returned
/// request is submitted again the same way: a new snapshot, and every earlier vote void.
pub async fn submit(app: &App, who: &Principal, id: TransferId) -> Result<Transfer> {
    let (t, ws) = requester(app, who, id).await?;
    let user = who.staff()?.clone();
    match t.state {
        TransferState::Open => {}
        TransferState::Returned => {
            let mut tx = app.store.begin().await?;
            let next = t
                .state
                .on(Event::Reopen)
                .map_err(|e| Error::Conflict(e.to_string()))?;
            if !tx
                .set_state(
                    id,
                    TransferState::Returned,
                    next,
                    &format!("resubmitted by {}; pinning the files again", user.name),
                )
                .await?
            {
                return Err(Error::Conflict(
                    "the request changed state meanwhile; look again".into(),
                ));
            }
            tx.audit(AuditEvent::new(who.actor(), "egress.reopened").transfer(id))
                .await?;
            tx.commit().await?;
        }
        s => {
            return Err(Error::Conflict(format!(
                "a {s} request cannot be submitted: only a draft or a returned request"
            )))
        }
    }
    let (t, ws) = (access::load(app, id).await?.0, ws);
    let items: Vec<Item> = app
        .store
        .egress_items(id)
        .await?
        .into_iter()
        .filter_map(|(path, role)| FileRole::parse(&role).map(|role| Item { path, role }))
        .collect();
    // The earlier snapshot goes: its rows and bytes.
    for f in app.store.files(id).await? {
        super::upload::discard(app, &f).await?;
    }
    let found = resolve_in(app, &ws, items).await?;
    let mut pinned = Vec::with_capacity(found.len());
    for f in found {
        pinned.push(pin(app, who, &t, &ws, f).await?);
    }
    let round = {
        let mut tx = app.store.begin().await?;
        tx.clear_egress_files(id).await?;
        for p in &pinned {
            tx.insert_egress_file(id, p).await?;
        }
        let round = tx.next_round(id).await?;
        tx.void_decisions(id, "the request was submitted again")
            .await?;
        tx.audit(
            AuditEvent::new(who.actor(), "egress.submitted")
                .transfer(id)
                .detail(serde_json::json!({ "round": round, "files": pinned.len() })),
        )
        .await?;
        tx.commit().await?;
        round
    };
    tracing::info!(transfer = %id, round, files = pinned.len(), "egress request pinned");
    super::transfers::seal_checked(app, who, t, ws, Default::default()).await
}

/// Copies one file of the output volume into the request, hashing it as it goes. A file on
/// disk is opened without following links and checked to be the one walked: a file swapped
/// for a link between the walk and the open is refused. An object on S3 is read only if it is
/// still the one listed (same entity tag and size).
async fn pin(
    app: &App,
    who: &Principal,
    t: &Transfer,
    ws: &Workspace,
    f: Found,
) -> Result<PinnedRow> {
    use std::os::unix::fs::OpenOptionsExt;
    let moved = || {
        Error::BadRequest(format!(
            "{}: changed while it was being pinned; submit again",
            f.rel
        ))
    };
    let (abs, walked) = match &f.at {
        At::Disk { abs, meta } => (abs, meta),
        At::S3(o) => {
            let stream = app
                .volumes
                .read_output(&ws.project_name, &ws.name, o)
                .await?
                .ok_or_else(moved)?;
            let receipt =
                super::upload::store_whole(app, who, t, ws, &f.rel, None, Some(o.size), stream)
                    .await?;
            return Ok(PinnedRow {
                path: receipt.path,
                role: f.role.as_str().to_owned(),
                size: receipt.size,
                mtime_ns: o.modified_ns,
                etag: o.e_tag.clone(),
            });
        }
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(abs)
        .map_err(|e| Error::BadRequest(format!("{}: cannot be opened: {e}", f.rel)))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::BadRequest(format!("{}: {e}", f.rel)))?;
    if !meta.is_file() || meta.ino() != walked.ino() || meta.dev() != walked.dev() {
        return Err(moved());
    }
    let size = meta.len();
    let stream =
        tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), 1 << 20);
    let receipt =
        super::upload::store_whole(app, who, t, ws, &f.rel, None, Some(size), stream).await?;
    Ok(PinnedRow {
        path: receipt.path,
        role: f.role.as_str().to_owned(),
        size: receipt.size,
        mtime_ns: mtime_ns(&meta),
        etag: None,
    })
}

/// The requester withdraws the request before its outcome, saying why.
pub async fn withdraw(
    app: &App,
    who: &Principal,
    id: TransferId,
    reason: &str,
) -> Result<Transfer> {
    let (t, _) = requester(app, who, id).await?;
    if reason.trim().is_empty() {
        return Err(Error::BadRequest("say why the request is withdrawn".into()));
    }
    let next = t.state.on(Event::Withdraw).map_err(|_| {
        Error::Conflict(format!(
            "a {} request cannot be withdrawn: its outcome is in",
            t.state
        ))
    })?;
    let mut tx = app.store.begin().await?;
    let user = who.staff()?;
    if !tx
        .set_state(
            id,
            t.state,
            next,
            &format!("withdrawn by {}: {reason}", user.name),
        )
        .await?
    {
        return Err(Error::Conflict(
            "the request changed state meanwhile; look again".into(),
        ));
    }
    tx.audit(
        AuditEvent::new(who.actor(), "egress.withdrawn")
            .transfer(id)
            .detail(serde_json::json!({ "from": t.state, "reason": reason })),
    )
    .await?;
    tx.commit().await?;
    Ok(access::load(app, id).await?.0)
}

/// A checker's vote on one output file.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoteRequest {
    pub path: String,
    #[serde(rename = "as")]
    pub role: Option<Role>,
    /// `approve` or `request-changes`.
    pub vote: String,
    #[serde(default)]
    pub comment: String,
    /// `shared` (default: the researcher sees it once the outcome is in) or `checkers`.
    #[serde(default)]
    pub visibility: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    #[serde(rename = "as")]
    pub role: Option<Role>,
    /// A comment on the whole request.
    #[serde(default)]
    pub comment: String,
    /// Who sees the comment: `shared` (default; the researcher once the outcome is in) or
    /// `checkers`.
    #[serde(default)]
    pub visibility: Option<String>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    pub finding: String,
    #[serde(rename = "as")]
    pub role: Option<Role>,
    #[serde(default)]
    pub comment: String,
}

/// An output checker of a request in review: their role, checked as a decision is.
async fn checker(
    app: &App,
    who: &Principal,
    id: TransferId,
    role: Option<Role>,
) -> Result<(User, Transfer, Workspace, Role, i64)> {
    let user = who.staff()?.clone();
    let (t, ws) = access::load_for(app, &user, id).await?;
    if !t.kind.is_egress() {
        return Err(Error::Conflict(format!(
            "transfer {id} is a {} transfer, not an egress request",
            t.kind
        )));
    }
    let policy = app.policy(&ws)?;
    let role = governance::decider_role(app, &user, &t, &ws, &policy, role).await?;
    if t.state != TransferState::InReview {
        return Err(Error::Conflict(format!(
            "request {id} is {}, not in review",
            t.state
        )));
    }
    let round = app.store.egress(id).await?.map(|e| e.round).unwrap_or(0);
    if app
        .store
        .egress_reviews(id, round)
        .await?
        .iter()
        .any(|r| r.user_id == user.id)
    {
        return Err(Error::Conflict(format!(
            "{} has already submitted their review of this round",
            user.name
        )));
    }
    Ok((user, t, ws, role, round))
}

pub async fn vote(app: &App, who: &Principal, id: TransferId, req: VoteRequest) -> Result<()> {
    let (user, _t, _ws, role, round) = checker(app, who, id, req.role).await?;
    let vote = match req.vote.as_str() {
        "approve" => "approve",
        "request-changes" => "request-changes",
        other => {
            return Err(Error::BadRequest(format!(
                "vote `{other}`: expected approve or request-changes"
            )))
        }
    };
    if vote == "request-changes" && req.comment.trim().is_empty() {
        return Err(Error::BadRequest(
            "request-changes needs a comment saying what to change".into(),
        ));
    }
    let visibility = req.visibility.as_deref().unwrap_or("shared");
    if !["shared", "checkers"].contains(&visibility) {
        return Err(Error::BadRequest(format!(
            "visibility `{visibility}`: expected shared or checkers"
        )));
    }
    let files = app.store.egress_files(id).await?;
    match files.iter().find(|f| f.path == req.path) {
        None => {
            return Err(Error::NotFound(format!(
                "{}: not a file of this request",
                req.path
            )))
        }
        Some(f) if f.role != FileRole::Output.as_str() => {
            return Err(Error::BadRequest(format!(
                "{}: is a {} file; checkers vote on output files, which alone are released",
                req.path, f.role
            )))
        }
        Some(_) => {}
    }
    let mut tx = app.store.begin().await?;
    if tx.transfer_state(id).await? != Some(TransferState::InReview) {
        return Err(Error::Conflict(
            "the request changed state meanwhile; look again".into(),
        ));
    }
    tx.put_vote(
        id,
        round,
        user.id,
        role,
        &req.path,
        vote,
        &req.comment,
        visibility,
    )
    .await?;
    // The vote itself is recorded; the audit names file and vote, not the comment, which
    // blinded checkers must not read from a shared log view before their own review.
    tx.audit(
        AuditEvent::new(who.actor(), "egress.voted")
            .transfer(id)
            .detail(serde_json::json!({
                "round": round, "role": role, "path": req.path, "vote": vote,
            })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn acknowledge(
    app: &App,
    who: &Principal,
    id: TransferId,
    req: AckRequest,
) -> Result<()> {
    let (user, _t, _ws, role, round) = checker(app, who, id, req.role).await?;
    let findings = app.store.findings(id, round).await?;
    if !findings.iter().any(|f| f.id == req.finding) {
        return Err(Error::NotFound(format!(
            "finding {}: not a finding of this request's current round",
            req.finding
        )));
    }
    let mut tx = app.store.begin().await?;
    if !tx
        .insert_ack(id, &req.finding, user.id, role, &req.comment)
        .await?
    {
        return Err(Error::Conflict(format!(
            "{} has already acknowledged finding {}",
            user.name, req.finding
        )));
    }
    tx.audit(
        AuditEvent::new(who.actor(), "egress.finding_acknowledged")
            .transfer(id)
            .detail(serde_json::json!({ "round": round, "role": role, "finding": req.finding })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A checker submits their review once every output file has their vote and they have
/// acknowledged every finding. Request-changes on any file returns the request to the
/// researcher with the shared comments; all approvals count as this checker's approval, and
/// the request is approved once the policy's required checkers have all approved.
pub async fn review(
    app: &App,
    who: &Principal,
    id: TransferId,
    req: ReviewRequest,
) -> Result<Transfer> {
    let (user, t, _ws, role, round) = checker(app, who, id, req.role).await?;
    let files = app.store.egress_files(id).await?;
    let votes: Vec<_> = app
        .store
        .egress_votes(id, round)
        .await?
        .into_iter()
        .filter(|v| v.user_id == user.id)
        .collect();
    let unvoted: Vec<&str> = files
        .iter()
        .filter(|f| f.role == FileRole::Output.as_str())
        .filter(|f| !votes.iter().any(|v| v.path == f.path))
        .map(|f| f.path.as_str())
        .collect();
    if !unvoted.is_empty() {
        return Err(Error::Conflict(format!(
            "vote on every output file first; not yet voted: {}",
            unvoted.join(", ")
        )));
    }
    let acked: BTreeSet<String> = app
        .store
        .finding_acks(id, round)
        .await?
        .into_iter()
        .filter(|a| a.user_id == user.id)
        .map(|a| a.finding_id)
        .collect();
    let open: Vec<String> = app
        .store
        .findings(id, round)
        .await?
        .into_iter()
        .filter(|f| !acked.contains(&f.id))
        .map(|f| format!("{} ({} in {})", f.id, f.rule, f.path))
        .collect();
    if !open.is_empty() {
        return Err(Error::Conflict(format!(
            "acknowledge every disclosure finding first ({} open): {}",
            open.len(),
            open.iter().take(20).cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    let visibility = req.visibility.as_deref().unwrap_or("shared");
    if !["shared", "checkers"].contains(&visibility) {
        return Err(Error::BadRequest(format!(
            "visibility `{visibility}`: expected shared or checkers"
        )));
    }
    let changes: Vec<_> = votes
        .iter()
        .filter(|v| v.vote == "request-changes")
        .collect();
    let outcome = if changes.is_empty() {
        "approve"
    } else {
        "request-changes"
    };
    {
        let mut tx = app.store.begin().await?;
        if !tx
            .insert_review(id, round, user.id, role, outcome, &req.comment, visibility)
            .await?
        {
            return Err(Error::Conflict(format!(
                "{} has already submitted their review of this round",
                user.name
            )));
        }
        tx.audit(
            AuditEvent::new(who.actor(), "egress.reviewed")
                .transfer(id)
                .detail(serde_json::json!({
                    "round": round, "role": role, "outcome": outcome,
                    "request_changes": changes.len(),
                })),
        )
        .await?;
        tx.commit().await?;
    }
    let decision = DecisionRequest {
        role: Some(role),
        // The decision (and the returned request's reason) carries only what is shared with
        // the researcher; checkers-only comments stay on the votes and the review.
        comment: {
            let mut c: Vec<String> = changes
                .iter()
                .filter(|v| v.visibility == "shared")
                .map(|v| format!("{}: {}", v.path, v.comment))
                .collect();
            if visibility == "shared" && !req.comment.trim().is_empty() {
                c.insert(0, req.comment.clone());
            }
            if !changes.is_empty() && c.is_empty() {
                c.push("changes requested; the checkers' comments are for the checkers".into());
            }
            c.join("; ")
        },
        root_digest: t.root_digest.clone(),
        policy_version: None,
        // The review is the acknowledgment of anything unscannable, on the record.
        acknowledge_unscannable: role == Role::Referee && t.ack_required,
    };
    let verdict = if changes.is_empty() {
        Verdict::Approve
    } else {
        Verdict::Return
    };
    governance::decide_as(app, who, id, verdict, decision, true).await
}

/// One file of a request as `transfer show` lists it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FileView {
    pub path: String,
    pub role: String,
    pub size: u64,
    pub sha256: Option<String>,
    pub blake3: Option<String>,
    /// The file in the output volume is no longer what was pinned (size or digest differ, or
    /// it is gone): the researcher may withdraw and submit again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_on_disk: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FindingView {
    pub id: String,
    pub path: String,
    pub rule: String,
    /// `{"kind": "cell", "row": R, "col": C}`, `row`, `column`, `line` (with `column`) or
    /// `file`; rows and columns count from 1 as a person reads the table.
    #[schema(value_type = Object)]
    pub location: serde_json::Value,
    /// `fail` or `review`.
    pub status: String,
    pub message: String,
    /// Who acknowledged it (visible as votes are).
    pub acknowledged_by: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DisclosureView {
    pub findings: Vec<FindingView>,
    /// Findings by status (`fail`, `review`).
    pub counts: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VoteView {
    pub user: String,
    pub role: String,
    pub path: String,
    pub vote: String,
    pub comment: String,
    pub visibility: String,
    pub at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReviewView {
    pub user: String,
    pub role: String,
    /// `approve` or `request-changes` (or `submitted` while it is hidden from this viewer).
    pub outcome: String,
    pub comment: String,
    pub visibility: String,
    pub at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CollectionView {
    pub recipient: String,
    pub client: String,
    pub what: String,
    pub bytes: i64,
    pub started_at: String,
    pub finished_at: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenView {
    pub id: String,
    pub recipient: String,
    pub issued_by: String,
    pub issued_at: String,
    pub expires_at: i64,
    pub cidrs: Vec<String>,
    pub max_downloads: Option<i64>,
    pub downloads: i64,
    pub revoked_at: Option<String>,
}

/// An earlier request of the same workspace, for checkers (Azure TRE #5077: differencing
/// across releases).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PastView {
    pub id: TransferId,
    pub state: TransferState,
    pub created_at: String,
    pub files: Vec<FileView>,
}

/// An output whose path an earlier request of the workspace released.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DiffView {
    pub path: String,
    /// The earlier request that released it.
    pub released_by: TransferId,
    pub same_bytes: bool,
    /// Cells that differ, `[row, col]` from 1 as the file reads (header included), at most
    /// 200; `changed_cells` counts them all.
    pub cells: Vec<[u64; 2]>,
    pub changed_cells: u64,
    pub rows_before: u64,
    pub rows_now: u64,
    /// Why no cells are compared (not a table, or too large), if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Tables up to this size are compared cell by cell with their earlier release.
const DIFF_CAP: u64 = 8 << 20;

/// The cells of a CSV/TSV, as rows of fields (no header handling: row 1 is the first line).
fn cells_of(path: &str, bytes: &[u8]) -> Option<Vec<Vec<Vec<u8>>>> {
    let delim = if path.ends_with(".tsv") || path.ends_with(".tab") {
        b'\t'
    } else {
        b','
    };
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delim)
        .from_reader(bytes);
    let mut rows = Vec::new();
    for rec in r.byte_records() {
        rows.push(rec.ok()?.iter().map(<[u8]>::to_vec).collect());
    }
    Some(rows)
}

/// Compares each output with the same path in the workspace's earlier released requests.
async fn released_before(
    app: &App,
    t: &Transfer,
    ws: &Workspace,
    outputs: &[FileView],
) -> Result<Vec<DiffView>> {
    let mut out = Vec::new();
    let earlier: Vec<Transfer> = app
        .store
        .transfers_in(ws.id)
        .await?
        .into_iter()
        .filter(|o| {
            o.id != t.id
                && o.kind.is_egress()
                && matches!(o.state, TransferState::Released | TransferState::Revoked)
        })
        .collect();
    for f in outputs
        .iter()
        .filter(|f| f.role == FileRole::Output.as_str())
    {
        for o in &earlier {
            let was_output = app
                .store
                .egress_files(o.id)
                .await?
                .into_iter()
                .any(|p| p.path == f.path && p.role == FileRole::Output.as_str());
            let (Some(before), Some(now)) = (
                app.store.file_by_path(o.id, &f.path).await?,
                app.store.file_by_path(t.id, &f.path).await?,
            ) else {
                continue;
            };
            if !was_output {
                continue;
            }
            let mut d = DiffView {
                path: f.path.clone(),
                released_by: o.id,
                same_bytes: before.sha256 == now.sha256,
                cells: Vec::new(),
                changed_cells: 0,
                rows_before: 0,
                rows_now: 0,
                note: None,
            };
            let is_table = [".csv", ".tsv", ".tab"].iter().any(|x| f.path.ends_with(x));
            if !d.same_bytes && !is_table {
                d.note = Some("not a CSV/TSV table: compare by eye".into());
            } else if !d.same_bytes && (before.received > DIFF_CAP || now.received > DIFF_CAP) {
                d.note = Some(format!("over {DIFF_CAP} bytes: not compared cell by cell"));
            } else if !d.same_bytes {
                let a = read_small(app, &before, DIFF_CAP).await?;
                let b = read_small(app, &now, DIFF_CAP).await?;
                match (cells_of(&f.path, &a), cells_of(&f.path, &b)) {
                    (Some(a), Some(b)) => {
                        d.rows_before = a.len() as u64;
                        d.rows_now = b.len() as u64;
                        let empty: Vec<Vec<u8>> = Vec::new();
                        for r in 0..a.len().max(b.len()) {
                            let (ra, rb) = (a.get(r).unwrap_or(&empty), b.get(r).unwrap_or(&empty));
                            for c in 0..ra.len().max(rb.len()) {
                                if ra.get(c) != rb.get(c) {
                                    d.changed_cells += 1;
                                    if d.cells.len() < 200 {
                                        d.cells.push([r as u64 + 1, c as u64 + 1]);
                                    }
                                }
                            }
                        }
                    }
                    _ => d.note = Some("could not be read as a table".into()),
                }
            }
            out.push(d);
        }
    }
    Ok(out)
}

/// What only an egress request shows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EgressView {
    pub context: String,
    pub round: i64,
    pub recipients: Vec<String>,
    pub target_workspace: Option<String>,
    /// The files pinned at the last submit, with roles and whether the output volume still
    /// holds the same bytes (before the first submit: the chosen items, with no digests).
    /// `files` (paged) lists them too, each with its `role`.
    pub pinned: Vec<FileView>,
    pub disclosure: DisclosureView,
    /// The votes this viewer may see: their own; everyone's once their review is in (or
    /// always when the policy does not blind review); the shared ones for the requester once
    /// the outcome is in.
    pub votes: Vec<VoteView>,
    pub reviews: Vec<ReviewView>,
    /// Whether checkers review blind.
    pub blinded: bool,
    /// This viewer reviews blind now: `transfer show` keeps only their own decisions.
    #[serde(skip)]
    pub hide_decisions: bool,
    pub collection_tokens: Vec<TokenView>,
    pub collections: Vec<CollectionView>,
    /// Earlier requests of the workspace with their paths and digests (checkers only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub past_requests: Vec<PastView>,
    /// Outputs whose path was released before by this workspace (checkers only): which cells
    /// of the table changed since, to catch differencing across releases (Azure TRE #5077).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub released_before: Vec<DiffView>,
    /// ACRO's own results (its verdict per output, its checksums against the pinned files)
    /// where the request includes an ACRO output folder, beside airlock's checks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub acro: Vec<serde_json::Value>,
}

/// Files up to this size are re-hashed when their modification time changed since submit.
const REHASH_CAP: u64 = 64 << 20;

/// Compares a pinned file with the output volume now: `None` when unchanged.
fn changed(root: &Path, p: &PinnedRow, sha256: Option<&str>) -> Option<String> {
    let abs = root.join(&p.path);
    let meta = match std::fs::symlink_metadata(&abs) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Some("changed on disk since submit: no longer a regular file".into()),
        Err(_) => return Some("changed on disk since submit: gone from the output volume".into()),
    };
    if meta.len() != p.size {
        return Some(format!(
            "changed on disk since submit: {} bytes now, {} pinned",
            meta.len(),
            p.size
        ));
    }
    if mtime_ns(&meta) == p.mtime_ns {
        return None;
    }
    // Touched: only the digest tells whether the bytes changed. A big file is not re-read on
    // every view (anyone who can touch it could make each view cost its size).
    if p.size > REHASH_CAP {
        return Some(
            "modified on disk since submit (same size; too large to re-hash on every view)".into(),
        );
    }
    let file = std::fs::File::open(&abs).ok()?;
    let now = crate::hashing::hash_reader(file).ok()?;
    (Some(now.sha256.as_str()) != sha256)
        .then(|| "changed on disk since submit: the digest differs".to_owned())
}

/// Pinned files whose objects are looked up one HEAD each up to this many; more are found
/// by one listing of the workspace's output prefix, merge-joined with them (a page of a
/// thousand keys per request).
const HEADS_AT_MOST: usize = 64;

/// The object each pinned path names now in the workspace's output prefix on S3 (`None`:
/// gone), by path; an error when the store does not answer.
async fn output_objects_now(
    app: &App,
    ws: &Workspace,
    pinned: &[PinnedRow],
) -> std::result::Result<
    BTreeMap<String, Option<crate::volumes::output::OutputObject>>,
    crate::volumes::VolumeError,
> {
    use futures::TryStreamExt;
    let (project, name) = (&ws.project_name, &ws.name);
    let mut out = BTreeMap::new();
    if pinned.len() <= HEADS_AT_MOST {
        for p in pinned {
            let now = match RelPath::parse(&p.path) {
                Ok(rel) => app.volumes.head_output(project, name, &rel).await?,
                Err(_) => None,
            };
            out.insert(p.path.clone(), now);
        }
        return Ok(out);
    }
    // Key order is byte order, as `str`'s: one pass, which stops after the last pinned path.
    let mut want: Vec<&str> = pinned.iter().map(|p| p.path.as_str()).collect();
    want.sort_unstable();
    want.dedup();
    let mut listing = app.volumes.list_output(project, name, None)?;
    let mut next = listing.try_next().await?;
    for path in want {
        while next.as_ref().is_some_and(|o| o.rel.as_str() < path) {
            next = listing.try_next().await?;
        }
        if next.as_ref().is_some_and(|o| o.rel == path) {
            out.insert(path.to_owned(), next.take());
            next = listing.try_next().await?;
        } else {
            out.insert(path.to_owned(), None);
        }
    }
    Ok(out)
}

/// Compares a pinned file with its object in the workspace's output prefix on S3 (`now`,
/// `None`: gone): `None` when unchanged. The entity tag changes with every write of the key;
/// a rewritten object of the same size is re-hashed when it is small enough, as on disk.
async fn changed_s3(
    app: &App,
    ws: &Workspace,
    p: &PinnedRow,
    sha256: Option<&str>,
    now: Option<crate::volumes::output::OutputObject>,
) -> Option<String> {
    let Some(now) = now else {
        return Some("changed since submit: gone from the output volume".into());
    };
    if now.size != p.size {
        return Some(format!(
            "changed since submit: {} bytes now, {} pinned",
            now.size, p.size
        ));
    }
    if now.e_tag.is_some() && now.e_tag == p.etag {
        return None;
    }
    if p.size > REHASH_CAP {
        return Some(
            "rewritten in the output volume since submit (same size; too large to re-hash on \
             every view)"
                .into(),
        );
    }
    let stream = app
        .volumes
        .read_output(&ws.project_name, &ws.name, &now)
        .await
        .ok()??;
    let digests = super::release::digest_stream(stream, None).await.ok()?;
    (Some(digests.sha256.as_str()) != sha256)
        .then(|| "changed since submit: the digest differs".to_owned())
}

/// The egress part of `transfer show`, as `viewer` may see it (`None`: a background reader,
/// such as webhooks, which get counts, never votes).
pub async fn view(
    app: &App,
    t: &Transfer,
    ws: &Workspace,
    viewer: Option<&User>,
) -> Result<Option<EgressView>> {
    if !t.kind.is_egress() {
        return Ok(None);
    }
    let Some(e) = app.store.egress(t.id).await? else {
        return Ok(None);
    };
    let policy = app.policy(ws)?;
    let blinded = policy.blinded();
    let target_workspace = match e.target_workspace_id {
        Some(w) => app
            .store
            .workspace(w)
            .await?
            .map(|w| format!("{}/{}", w.project_name, w.name)),
        None => None,
    };
    let files = files_view(app, t, ws, e.round).await?;
    let acks = app.store.finding_acks(t.id, e.round).await?;
    let reviews = app.store.egress_reviews(t.id, e.round).await?;
    let is_requester = viewer.is_some_and(|u| u.id == t.uploader_id);
    let reviewed = viewer.is_some_and(|u| reviews.iter().any(|r| r.user_id == u.id));
    let outcome_in = !matches!(
        t.state,
        TransferState::Open
            | TransferState::Sealed
            | TransferState::Scanning
            | TransferState::ScanError
            | TransferState::InReview
    );
    // Blinding is between checkers: someone holding a role the policy asks to check. Other
    // staff who may see the request (its Project Manager, say) see it all.
    let is_checker = match viewer {
        Some(u) if !is_requester => {
            let held = governance::held_roles(app, u, t, ws).await?;
            governance::needed(app, &policy, t)
                .await?
                .iter()
                .any(|(r, _)| held.contains(r))
        }
        _ => false,
    };
    // A checker who has not reviewed yet, blind: the others' decisions are hidden too.
    let blind_now = blinded && !outcome_in && !reviewed && is_checker;
    // Whose votes (and acknowledgments) this viewer sees.
    let sees = |voter: UserId, visibility: &str| -> bool {
        let Some(u) = viewer else { return false };
        if is_requester {
            return outcome_in && visibility == "shared";
        }
        !is_checker || voter == u.id || !blinded || reviewed || outcome_in
    };
    let mut counts = BTreeMap::new();
    let findings = app
        .store
        .findings(t.id, e.round)
        .await?
        .into_iter()
        .map(|f| {
            *counts.entry(f.status.clone()).or_insert(0) += 1;
            FindingView {
                acknowledged_by: acks
                    .iter()
                    .filter(|a| a.finding_id == f.id && sees(a.user_id, "checkers"))
                    .map(|a| format!("{} ({})", a.user, a.role))
                    .collect(),
                location: serde_json::from_str(&f.location).unwrap_or_default(),
                id: f.id,
                path: f.path,
                rule: f.rule,
                status: f.status,
                message: f.message,
            }
        })
        .collect();
    let votes = app
        .store
        .egress_votes(t.id, e.round)
        .await?
        .into_iter()
        .filter(|v| sees(v.user_id, &v.visibility))
        .map(|v| VoteView {
            user: v.user,
            role: v.role.as_str().to_owned(),
            path: v.path,
            vote: v.vote,
            comment: v.comment,
            visibility: v.visibility,
            at: v.at,
        })
        .collect();
    let checker_view = viewer.is_some() && !is_requester;
    let past_requests = if checker_view {
        past(app, t, ws).await?
    } else {
        Vec::new()
    };
    let released_before = if checker_view && e.round > 0 {
        released_before(app, t, ws, &files).await?
    } else {
        Vec::new()
    };
    Ok(Some(EgressView {
        context: e.context,
        round: e.round,
        recipients: app
            .store
            .egress_recipients(t.id)
            .await?
            .into_iter()
            .map(|(_, n)| n)
            .collect(),
        target_workspace,
        pinned: files,
        disclosure: DisclosureView { findings, counts },
        votes,
        reviews: reviews
            .into_iter()
            .map(|r| {
                let seen = (!is_requester && sees(r.user_id, &r.visibility))
                    || (is_requester && outcome_in && r.visibility == "shared");
                ReviewView {
                    user: r.user,
                    role: r.role.as_str().to_owned(),
                    outcome: if seen { r.outcome } else { "submitted".into() },
                    comment: if seen { r.comment } else { String::new() },
                    visibility: r.visibility,
                    at: r.at,
                }
            })
            .collect(),
        hide_decisions: blind_now,
        blinded,
        collection_tokens: app
            .store
            .collection_tokens(t.id)
            .await?
            .into_iter()
            .map(|c| TokenView {
                id: c.id.to_string(),
                recipient: c.recipient,
                issued_by: c.issued_by,
                issued_at: c.issued_at,
                expires_at: c.expires_at,
                cidrs: c.cidrs.iter().map(|n| n.to_string()).collect(),
                max_downloads: c.max_downloads,
                downloads: c.downloads,
                revoked_at: c.revoked_at,
            })
            .collect(),
        collections: app
            .store
            .collections(t.id)
            .await?
            .into_iter()
            .map(|c| CollectionView {
                recipient: c.recipient,
                client: c.client,
                what: c.what,
                bytes: c.bytes,
                started_at: c.started_at,
                finished_at: c.finished_at,
            })
            .collect(),
        past_requests,
        released_before,
        acro: app
            .store
            .acro_reports(t.id, e.round)
            .await?
            .into_iter()
            .map(|(path, r)| {
                let mut v: serde_json::Value = serde_json::from_str(&r).unwrap_or_default();
                v["path"] = path.into();
                v
            })
            .collect(),
    }))
}

async fn files_view(app: &App, t: &Transfer, ws: &Workspace, round: i64) -> Result<Vec<FileView>> {
    if round == 0 {
        return Ok(app
            .store
            .egress_items(t.id)
            .await?
            .into_iter()
            .map(|(path, role)| FileView {
                path,
                role,
                size: 0,
                sha256: None,
                blake3: None,
                changed_on_disk: None,
            })
            .collect());
    }
    let pinned = app.store.egress_files(t.id).await?;
    let rows: BTreeMap<String, crate::store::FileRow> = app
        .store
        .files(t.id)
        .await?
        .into_iter()
        .map(|f| (f.path.clone(), f))
        .collect();
    // Only while the request can still change course is the disk compared.
    let live = matches!(
        t.state,
        TransferState::Sealed
            | TransferState::Scanning
            | TransferState::ScanError
            | TransferState::InReview
            | TransferState::Returned
    );
    let root = output_dir(app, ws).await?;
    let mut on_s3 = match (&root, live) {
        (Outputs::S3, true) => match output_objects_now(app, ws, &pinned).await {
            Ok(now) => Some(Ok(now)),
            Err(e) => {
                tracing::warn!(transfer = %t.id, cause = %e, "the output volume's store did not answer");
                Some(Err(()))
            }
        },
        _ => None,
    };
    let mut out = Vec::with_capacity(pinned.len());
    for p in pinned {
        let row = rows.get(&p.path);
        let sha = row.and_then(|r| r.sha256.clone());
        let changed_on_disk = match &root {
            _ if !live => None,
            Outputs::Dir(root) => {
                let (root, p2, s) = (root.clone(), p.clone(), sha.clone());
                tokio::task::spawn_blocking(move || changed(&root, &p2, s.as_deref()))
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))?
            }
            Outputs::S3 => match on_s3.as_mut() {
                Some(Ok(now)) => {
                    let now = now.remove(&p.path).flatten();
                    changed_s3(app, ws, &p, sha.as_deref(), now).await
                }
                Some(Err(())) => Some(
                    "not compared with the output volume: its object store is not answering".into(),
                ),
                None => None,
            },
        };
        out.push(FileView {
            size: p.size,
            sha256: sha,
            blake3: row.and_then(|r| r.blake3.clone()),
            path: p.path,
            role: p.role,
            changed_on_disk,
        });
    }
    Ok(out)
}

/// Earlier egress requests of the workspace (approved, released, rejected, withdrawn...).
async fn past(app: &App, t: &Transfer, ws: &Workspace) -> Result<Vec<PastView>> {
    let mut out = Vec::new();
    for other in app.store.transfers_in(ws.id).await? {
        if other.id == t.id || !other.kind.is_egress() || other.sealed_at.is_none() {
            continue;
        }
        let rows: BTreeMap<String, crate::store::FileRow> = app
            .store
            .files(other.id)
            .await?
            .into_iter()
            .map(|f| (f.path.clone(), f))
            .collect();
        let files = app
            .store
            .egress_files(other.id)
            .await?
            .into_iter()
            .map(|p| FileView {
                sha256: rows.get(&p.path).and_then(|r| r.sha256.clone()),
                blake3: rows.get(&p.path).and_then(|r| r.blake3.clone()),
                size: p.size,
                path: p.path,
                role: p.role,
                changed_on_disk: None,
            })
            .collect();
        out.push(PastView {
            id: other.id,
            state: other.state,
            created_at: other.created_at,
            files,
        });
    }
    Ok(out)
}

/// Runs the disclosure checks over a sealed request's output and code files (supporting files
/// are for the checkers and never leave, so what they hold is not a finding) and stores the
/// findings and each file's report for the request's round. Returns the summary that blocks
/// the request, if the policy says findings block and one fails.
pub async fn disclose(app: &App, t: &Transfer, ws: &Workspace) -> Result<Option<String>> {
    use crate::scan::disclosure;
    let policy = app.policy(ws)?;
    let rules = app
        .scanners
        .disclosure
        .with_overrides(&policy.rules.egress.disclosure)
        .map_err(|e| Error::Internal(format!("disclosure rules: {e}")))?;
    let round = app.store.egress(t.id).await?.map(|e| e.round).unwrap_or(0);
    let roles: BTreeMap<String, String> = app
        .store
        .egress_files(t.id)
        .await?
        .into_iter()
        .map(|p| (p.path, p.role))
        .collect();
    let mut reports: Vec<(String, disclosure::Report)> = Vec::new();
    for f in app.store.files(t.id).await? {
        let role = roles.get(&f.path).map(String::as_str).unwrap_or("output");
        if role == FileRole::Supporting.as_str() {
            continue;
        }
        let stream = super::upload::stored_bytes(app, &f).await?;
        let reader = tokio_util::io::StreamReader::new(futures::TryStreamExt::map_err(
            stream,
            std::io::Error::other,
        ));
        let bridge = tokio_util::io::SyncIoBridge::new(reader);
        let (name, rules) = (f.path.clone(), rules.clone());
        // CPU-bound parsing of the whole file, off the async threads.
        let report = tokio::task::spawn_blocking(move || disclosure::check(&name, bridge, &rules))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| Error::Internal(format!("disclosure check of {}: {e}", f.path)))?;
        reports.push((f.path.clone(), report));
    }
    let acro = acro_folders(app, t).await?;
    let mut fails = 0u64;
    let mut reviews = 0u64;
    let mut by_rule: BTreeMap<String, u64> = BTreeMap::new();
    let mut tx = app.store.begin().await?;
    tx.clear_findings(t.id, round).await?;
    let mut n = 0u64;
    for (path, report, mismatches) in &acro {
        tx.insert_acro_report(t.id, round, path, &report.to_string())
            .await?;
        // A checksum of ACRO's that does not match the pinned file is a finding: the output
        // is not the one ACRO checked.
        for name in mismatches {
            n += 1;
            fails += 1;
            *by_rule.entry("acro-checksum".into()).or_insert(0) += 1;
            tx.insert_finding(
                t.id,
                round,
                &FindingRow {
                    id: format!("F{round}-{n}"),
                    path: name.clone(),
                    rule: "acro-checksum".into(),
                    status: "fail".into(),
                    location: r#"{"kind":"file"}"#.into(),
                    message: format!(
                        "{name} is not the file ACRO checked: its SHA-256 differs from {path}'s \
                         checksums/ entry"
                    ),
                },
            )
            .await?;
        }
    }
    for (path, report) in &reports {
        let json = serde_json::to_string(report).map_err(|e| Error::Internal(e.to_string()))?;
        tx.insert_report(t.id, round, path, &json).await?;
        for f in &report.findings {
            n += 1;
            match f.status {
                disclosure::Status::Fail => fails += 1,
                _ => reviews += 1,
            }
            *by_rule.entry(f.rule.clone()).or_insert(0) += 1;
            tx.insert_finding(
                t.id,
                round,
                &FindingRow {
                    id: format!("F{round}-{n}"),
                    path: path.clone(),
                    rule: f.rule.clone(),
                    status: serde_json::to_value(f.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    location: serde_json::to_string(&f.location).unwrap_or_default(),
                    message: f.message.clone(),
                },
            )
            .await?;
        }
    }
    // Counts and rules only: a finding's message never holds the value, but the audit log
    // goes to webhooks and needs none of it.
    tx.audit(
        AuditEvent::new("system", "egress.disclosure_checked")
            .transfer(t.id)
            .detail(serde_json::json!({
                "round": round, "files": reports.len(), "fail": fails, "review": reviews,
                "rules": by_rule, "checker": disclosure::VERSION, "threshold": rules.threshold,
            })),
    )
    .await?;
    tx.commit().await?;
    if fails > 0 && policy.rules.egress.findings == crate::policy::FindingRule::Block {
        let rules: Vec<String> = by_rule.keys().cloned().collect();
        return Ok(Some(format!(
            "{fails} disclosure finding(s) fail and the policy blocks them ({})",
            rules.join(", ")
        )));
    }
    Ok(None)
}

/// The ACRO output folders among the pinned files (a `results.json` with its `checksums/`):
/// for each, `(results.json path, report, outputs whose pinned SHA-256 differs from ACRO's)`.
/// The report holds ACRO's own verdict per output and each checksum's comparison.
async fn acro_folders(
    app: &App,
    t: &Transfer,
) -> Result<Vec<(String, serde_json::Value, Vec<String>)>> {
    let files = app.store.files(t.id).await?;
    let by_path: BTreeMap<&str, &crate::store::FileRow> =
        files.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut out = Vec::new();
    for f in &files {
        let (dir, name) = match f.path.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), f.path.as_str()),
        };
        if name != "results.json" {
            continue;
        }
        let text = read_small(app, f, 16 << 20).await?;
        let parsed: serde_json::Value = match serde_json::from_slice(&text) {
            Ok(v) => v,
            Err(e) => {
                out.push((
                    f.path.clone(),
                    serde_json::json!({ "error": format!("not ACRO's results.json: {e}") }),
                    Vec::new(),
                ));
                continue;
            }
        };
        let outputs: Vec<serde_json::Value> = parsed["results"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(uid, r)| {
                        serde_json::json!({
                            "uid": uid, "status": r["status"], "type": r["type"],
                            "files": r["files"].as_array().map(|fs| fs.iter().map(|x| x["name"].clone()).collect::<Vec<_>>()),
                            "exception": r["exception"],
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut checksums = Vec::new();
        let mut mismatches = Vec::new();
        let prefix = format!("{dir}checksums/");
        for c in files.iter().filter(|c| c.path.starts_with(&prefix)) {
            let Some(target) = c.path[prefix.len()..].strip_suffix(".txt") else {
                continue;
            };
            let want = String::from_utf8_lossy(&read_small(app, c, 256).await?)
                .trim()
                .to_ascii_lowercase();
            let target_path = format!("{dir}{target}");
            let got = by_path
                .get(target_path.as_str())
                .and_then(|x| x.sha256.clone());
            let ok = got.as_deref() == Some(want.as_str());
            if !ok && got.is_some() {
                mismatches.push(target_path.clone());
            }
            checksums.push(serde_json::json!({
                "file": target_path, "acro_sha256": want, "pinned_sha256": got,
                "matches": ok,
                "note": if got.is_none() { Some("not in this request") } else { None },
            }));
        }
        out.push((
            f.path.clone(),
            serde_json::json!({ "version": parsed["version"], "outputs": outputs, "checksums": checksums }),
            mismatches,
        ));
    }
    Ok(out)
}

/// A small pinned file's bytes (at most `cap`; more is an error).
async fn read_small(app: &App, f: &crate::store::FileRow, cap: u64) -> Result<Vec<u8>> {
    use futures::TryStreamExt;
    if f.received > cap {
        return Err(Error::BadRequest(format!(
            "{}: {} bytes, more than the {cap} read for it",
            f.path, f.received
        )));
    }
    let mut stream = super::upload::stored_bytes(app, f).await?;
    let mut buf = Vec::with_capacity(f.received as usize);
    while let Some(chunk) = stream.try_next().await? {
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// ACRO-compatible `results.json` of the request's current round.
pub async fn results(app: &App, who: &Principal, id: TransferId) -> Result<serde_json::Value> {
    let user = who.staff()?;
    let seen = access::load_seen(app, user, id).await?;
    governance::require_viewer_seen(app, user, &seen).await?;
    let round = app.store.egress(id).await?.map(|e| e.round).unwrap_or(0);
    let reports = app.store.disclosure_reports(id, round).await?;
    let parsed: Vec<(String, crate::scan::disclosure::Report)> = reports
        .into_iter()
        .filter_map(|(p, r)| serde_json::from_str(&r).ok().map(|r| (p, r)))
        .collect();
    Ok(crate::scan::disclosure::acro_results(
        parsed.iter().map(|(p, r)| (p.as_str(), r)),
    ))
}

/// Where an approved request's package goes, and which files are in it.
pub struct PackagePlan {
    pub dest: object_store::path::Path,
    /// The output files: the only ones released.
    pub outputs: std::collections::HashSet<String>,
    /// A derived workspace the outputs go to instead of recipients.
    pub target: Option<Workspace>,
}

/// The package of an approved request: the workspace's egress area, or the data volume of
/// its target workspace (a derived workspace, paper 4.1.4).
pub async fn package_plan(app: &App, t: &Transfer, ws: &Workspace) -> Result<PackagePlan> {
    let e =
        app.store.egress(t.id).await?.ok_or_else(|| {
            Error::Internal(format!("egress request {} has no request row", t.id))
        })?;
    let target = match e.target_workspace_id {
        Some(w) => Some(
            app.store
                .workspace(w)
                .await?
                .ok_or_else(|| Error::Internal("target workspace vanished".into()))?,
        ),
        None => None,
    };
    let dest = match &target {
        Some(tw) => crate::volumes::Volumes::release_prefix(
            &tw.project_name,
            &tw.name,
            TransferKind::DataIngress.volume(),
            t.id,
        ),
        None => super::collect::package_prefix(ws, t),
    };
    let outputs = app
        .store
        .egress_files(t.id)
        .await?
        .into_iter()
        .filter(|p| p.role == FileRole::Output.as_str())
        .map(|p| p.path)
        .collect();
    Ok(PackagePlan {
        dest,
        outputs,
        target,
    })
}

/// The output-checking record written with the package: `manifest-sha256.txt` (the output
/// files) and `disclosure-record.json` (policy version, thresholds, checker version, findings,
/// every vote, acknowledgment, review and decision with who and when, and the provenance:
/// the originating workspace, the request and its code files' digests).
pub async fn package_record(
    app: &App,
    t: &Transfer,
    ws: &Workspace,
    plan: &PackagePlan,
) -> Result<Vec<(&'static str, bytes::Bytes)>> {
    let e = app
        .store
        .egress(t.id)
        .await?
        .ok_or_else(|| Error::Internal("egress request row vanished".into()))?;
    let files = app.store.files(t.id).await?;
    let roles: BTreeMap<String, String> = app
        .store
        .egress_files(t.id)
        .await?
        .into_iter()
        .map(|p| (p.path, p.role))
        .collect();
    let mut manifest = String::new();
    let mut listed = Vec::new();
    for f in &files {
        let role = roles.get(&f.path).cloned().unwrap_or_default();
        let sha = f.sha256.clone().unwrap_or_default();
        if plan.outputs.contains(&f.path) {
            manifest.push_str(&format!("{sha}  {}\n", f.path));
        }
        listed.push(serde_json::json!({
            "path": f.path, "role": role, "size": f.length.unwrap_or(f.received),
            "sha256": sha, "blake3": f.blake3, "released": plan.outputs.contains(&f.path),
        }));
    }
    let policy = app.policy(ws)?;
    let rules = app
        .scanners
        .disclosure
        .with_overrides(&policy.rules.egress.disclosure)
        .map_err(|e| Error::Internal(format!("disclosure rules: {e}")))?;
    let names = app.store.user_names(&[t.uploader_id]).await?;
    let acks = app.store.finding_acks(t.id, e.round).await?;
    let findings: Vec<serde_json::Value> = app
        .store
        .findings(t.id, e.round)
        .await?
        .into_iter()
        .map(|f| {
            serde_json::json!({
                "id": f.id, "path": f.path, "rule": f.rule, "status": f.status,
                "location": serde_json::from_str::<serde_json::Value>(&f.location).unwrap_or_default(),
                "message": f.message,
                "acknowledged_by": acks.iter().filter(|a| a.finding_id == f.id).map(|a| serde_json::json!({
                    "user": a.user, "role": a.role, "comment": a.comment, "at": a.at,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let votes: Vec<serde_json::Value> = app
        .store
        .egress_votes(t.id, e.round)
        .await?
        .into_iter()
        .map(|v| {
            serde_json::json!({
                "user": v.user, "role": v.role, "path": v.path, "vote": v.vote,
                "comment": v.comment, "visibility": v.visibility, "at": v.at,
            })
        })
        .collect();
    let reviews: Vec<serde_json::Value> = app
        .store
        .egress_reviews(t.id, e.round)
        .await?
        .into_iter()
        .map(|r| serde_json::json!({"user": r.user, "role": r.role, "outcome": r.outcome, "at": r.at}))
        .collect();
    let decisions: Vec<serde_json::Value> = app
        .store
        .decisions(t.id)
        .await?
        .into_iter()
        .filter(|d| d.void_reason.is_none())
        .map(|d| {
            serde_json::json!({
                "user": d.user, "role": d.role, "decision": d.decision, "comment": d.comment,
                "root_digest": d.root_digest, "policy_version": d.policy_version, "at": d.at,
            })
        })
        .collect();
    let code: Vec<serde_json::Value> = files
        .iter()
        .filter(|f| roles.get(&f.path).map(String::as_str) == Some(FileRole::Code.as_str()))
        .map(|f| serde_json::json!({"path": f.path, "sha256": f.sha256, "blake3": f.blake3}))
        .collect();
    let reports = app.store.disclosure_reports(t.id, e.round).await?;
    let parsed: Vec<(String, crate::scan::disclosure::Report)> = reports
        .into_iter()
        .filter_map(|(p, r)| serde_json::from_str(&r).ok().map(|r| (p, r)))
        .collect();
    let record = serde_json::json!({
        "request": t.id,
        "kind": t.kind,
        "workspace": format!("{}/{}", ws.project_name, ws.name),
        "tier": ws.tier.get(),
        "requester": names.get(&t.uploader_id),
        "context": e.context,
        "round": e.round,
        "root_digest": t.root_digest,
        "policy": { "file": policy.file, "version": t.policy_version, "blinded": policy.blinded() },
        "disclosure": {
            "checker": crate::scan::disclosure::VERSION,
            "rules": rules,
            "findings": findings,
            "results": crate::scan::disclosure::acro_results(parsed.iter().map(|(p, r)| (p.as_str(), r))),
        },
        "files": listed,
        "votes": votes,
        "reviews": reviews,
        "decisions": decisions,
        "recipients": app.store.egress_recipients(t.id).await?.into_iter().map(|(_, n)| n).collect::<Vec<_>>(),
        "target_workspace": plan.target.as_ref().map(|w| format!("{}/{}", w.project_name, w.name)),
        "provenance": {
            "origin_workspace": format!("{}/{}", ws.project_name, ws.name),
            "request": t.id,
            "code": code,
        },
        "written_at": crate::store::now(),
    });
    let json = serde_json::to_vec_pretty(&record).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(vec![
        (RECORD_FILES[0], bytes::Bytes::from(manifest)),
        (RECORD_FILES[1], bytes::Bytes::from(json)),
    ])
}
