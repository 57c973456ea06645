//! Opening, sealing, deciding on and cancelling transfers; what each person may see of them.

use super::access::{self, Principal};
use super::{Error, Result};
use crate::app::App;
use crate::audit::AuditEvent;
use crate::domain::state::Event;
use crate::domain::*;
use crate::store::{now, unix_now, FileRow, Transfer, Workspace};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateTransfer {
    /// `PROJECT/WORKSPACE`.
    #[schema(example = "genomics/tier3")]
    pub workspace: String,
    pub kind: TransferKind,
    /// The user name of the uploader.
    pub uploader: String,
}

pub async fn workspace_by_path(app: &App, path: &str) -> Result<Workspace> {
    let (p, w) = path.split_once('/').ok_or_else(|| {
        Error::BadRequest(format!(
            "workspace `{path}` must be written PROJECT/WORKSPACE"
        ))
    })?;
    app.store
        .workspace_by_name(p, w)
        .await?
        .ok_or_else(|| access::no_workspace(path))
}

/// A Project Manager opens a transfer into a workspace.
pub async fn create(app: &App, who: &Principal, req: CreateTransfer) -> Result<Transfer> {
    let user = who.staff()?;
    if !req.kind.is_ingress() {
        return Err(Error::BadRequest(
            "an egress request is made by its researcher: POST /api/v1/egress \
             (`airlock egress create`)"
                .into(),
        ));
    }
    let ws = access::visible_workspace(app, user, &req.workspace).await?;
    access::require_role(app, user, &ws, &[Role::ProjectManager]).await?;
    let uploader = app
        .store
        .user_by_name(&req.uploader)
        .await?
        .ok_or_else(|| Error::BadRequest(format!("no user named {}", req.uploader)))?;
    let need = req.kind.uploader_role();
    let member_roles = app.store.member_roles(ws.project_id, uploader.id).await?;
    let holds = member_roles.contains(&need)
        || (need == Role::Provider && uploader.roles.contains(&Role::Provider));
    if !holds {
        return Err(Error::BadRequest(format!(
            "{} cannot upload a {} transfer: they must hold the {need} role{}",
            uploader.name,
            req.kind,
            if need == Role::Researcher {
                format!(" in project {}", ws.project_name)
            } else {
                String::new()
            }
        )));
    }
    let at = now();
    let t = Transfer {
        id: TransferId::new(),
        workspace_id: ws.id,
        kind: req.kind,
        state: TransferState::Open,
        state_reason: format!(
            "opened by {}; waiting for uploads from {}",
            user.name, uploader.name
        ),
        uploader_id: uploader.id,
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
    tx.audit(
        AuditEvent::new(who.actor(), "transfer.created")
            .transfer(t.id)
            .detail(serde_json::json!({
                "workspace": req.workspace, "kind": t.kind, "uploader": uploader.name,
            })),
    )
    .await?;
    tx.commit().await?;
    Ok(t)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct TokenRequest {
    /// Lifetime such as `24h` or `90m`; default from the settings, capped by the workspace
    /// tier's policy; at least 1s.
    #[schema(example = "24h")]
    pub ttl: Option<String>,
    /// IP ranges (such as `10.0.0.0/8`) or single addresses the token may be used from.
    /// Empty: anywhere, unless the tier requires a range.
    #[serde(default)]
    pub cidrs: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IssuedToken {
    pub transfer_id: TransferId,
    /// The upload token (a JWT), shown only once. Send it as `Authorization: Bearer <token>`.
    pub token: String,
    /// When the token expires (RFC 3339).
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// The IP ranges the token is bound to, normalised.
    pub cidrs: Vec<String>,
}

/// A Project Manager issues the upload token of an open transfer. Issuing a new one revokes
/// the one before: there is one live token per transfer. The token is shown once.
pub async fn issue_token(
    app: &App,
    who: &Principal,
    id: TransferId,
    req: TokenRequest,
) -> Result<IssuedToken> {
    let user = who.staff()?;
    let (t, ws) = access::load_for(app, user, id).await?;
    access::require_role(app, user, &ws, &[Role::ProjectManager]).await?;
    // A returned transfer is reopened by its next token: the requester uploads again.
    let reopen = t.state == TransferState::Returned;
    if !t.state.accepts_uploads() && !reopen {
        return Err(Error::Conflict(format!(
            "transfer {id} is {}: it takes no more uploads",
            t.state
        )));
    }
    let policy = app.policy(&ws)?;
    let cap = policy.rules.upload_token.max_ttl;
    let ttl = match &req.ttl {
        Some(s) => {
            let ttl = humantime::parse_duration(s)
                .map_err(|e| Error::BadRequest(format!("ttl `{s}`: {e}")))?;
            if ttl > cap {
                return Err(Error::BadRequest(format!(
                    "ttl {s} is longer than tier {}'s cap of {}",
                    ws.tier.get(),
                    humantime::format_duration(cap)
                )));
            }
            if ttl < Duration::from_secs(1) {
                return Err(Error::BadRequest("ttl must be at least 1s".into()));
            }
            ttl
        }
        None => app.settings.tokens.upload_default_ttl.min(cap),
    };
    let cidrs = req
        .cidrs
        .iter()
        .map(|c| {
            c.parse::<ipnet::IpNet>()
                .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    Error::BadRequest(format!("`{c}` is not an IP range such as 10.0.0.0/8"))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    if policy.rules.upload_token.require_cidr && cidrs.is_empty() {
        return Err(Error::BadRequest(format!(
            "tier {} requires upload tokens to be bound to an IP range: pass --cidr",
            ws.tier.get()
        )));
    }
    let (jti, token, exp) = app.keys.mint_upload(id, ttl);
    let mut tx = app.store.begin().await?;
    if reopen {
        let why = format!(
            "reopened by {} after it was returned; waiting for a new upload",
            user.name
        );
        if !tx
            .set_state(id, TransferState::Returned, TransferState::Open, &why)
            .await?
        {
            return Err(Error::Conflict(
                "the transfer changed state meanwhile; look again".into(),
            ));
        }
        tx.void_decisions(id, "the transfer was reopened for a new upload")
            .await?;
        tx.audit(AuditEvent::new(who.actor(), "transfer.reopened").transfer(id))
            .await?;
    }
    let replaced = tx
        .revoke_upload_tokens(id, "replaced by a newer token")
        .await?;
    tx.insert_upload_token(jti, id, user.id, exp, &cidrs)
        .await?;
    tx.audit(
        AuditEvent::new(who.actor(), "token.issued")
            .transfer(id)
            .detail(serde_json::json!({
                "token_id": jti, "expires_at": exp, "cidrs": cidrs, "replaced": replaced,
            })),
    )
    .await?;
    tx.commit().await?;
    Ok(IssuedToken {
        transfer_id: id,
        token,
        expires_at: chrono::DateTime::from_timestamp(exp, 0)
            .map(|d| d.to_rfc3339())
            .unwrap_or_default(),
        cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
    })
}

/// A Project Manager revokes the transfer's upload token (leaked, say) without issuing a new
/// one; the transfer stays open for a later token. Returns how many tokens were revoked.
pub async fn revoke_tokens(app: &App, who: &Principal, id: TransferId) -> Result<u64> {
    let user = who.staff()?;
    let (_, ws) = access::load_for(app, user, id).await?;
    access::require_role(app, user, &ws, &[Role::ProjectManager]).await?;
    let mut tx = app.store.begin().await?;
    // Live tokens only: a revoked token is not one that ran out, so the transfer stays open
    // (expiry looks for tokens that ran out unrevoked).
    let n = tx
        .revoke_live_upload_tokens(id, &format!("revoked by {}", user.name), unix_now())
        .await?;
    tx.audit(
        AuditEvent::new(who.actor(), "token.revoked")
            .transfer(id)
            .detail(serde_json::json!({ "revoked": n })),
    )
    .await?;
    tx.commit().await?;
    Ok(n)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct SealRequest {
    /// The root digest the provider computed (64 hex digits); compared with ours.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub expected_root_digest: Option<String>,
    /// A `sha256sum`-format manifest of every file (`HEX  PATH` or `HEX *PATH` per line, `./`
    /// prefixes ignored); compared with ours, both ways.
    pub sha256sums: Option<String>,
}

/// Parses `sha256sum` output: `HEX  PATH` or `HEX *PATH` per line.
pub fn parse_sha256sums(text: &str) -> Result<Vec<(String, HexDigest)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || Error::BadRequest(format!("sha256sums line {}: expected `HEX  PATH`", i + 1));
        let (hex, rest) = line.split_once(' ').ok_or_else(bad)?;
        let path = rest
            .strip_prefix(' ')
            .or_else(|| rest.strip_prefix('*'))
            .ok_or_else(bad)?;
        let path = path.strip_prefix("./").unwrap_or(path);
        out.push((path.to_owned(), HexDigest::parse(hex).map_err(|_| bad())?));
    }
    Ok(out)
}

/// The uploader (with the upload token) or the Project Manager seals: the manifest is fixed,
/// the token dies, the provider's digests are compared, and review begins.
pub async fn seal(
    app: &App,
    who: &Principal,
    id: TransferId,
    req: SealRequest,
) -> Result<Transfer> {
    let (t, ws) = access::load_as(app, who, id).await?;
    match who {
        Principal::Upload { .. } => {
            who.upload_for(id)?;
        }
        Principal::Staff(user) if t.kind.is_ingress() => {
            access::require_role(app, user, &ws, &[Role::ProjectManager]).await?;
        }
        Principal::Staff(_) => {
            return Err(Error::Conflict(
                "an egress request is sealed by submitting it (`airlock egress submit`)".into(),
            ))
        }
        Principal::Collect { .. } => return Err(access::collect_only()),
    }
    seal_checked(app, who, t, ws, req).await
}

/// [`seal`] once the caller may seal: also the end of an egress request's submit.
pub(super) async fn seal_checked(
    app: &App,
    who: &Principal,
    t: Transfer,
    ws: Workspace,
    req: SealRequest,
) -> Result<Transfer> {
    let id = t.id;
    t.state
        .on(Event::Seal)
        .map_err(|e| Error::Conflict(format!("cannot seal: {e}")))?;
    let expected_root = req
        .expected_root_digest
        .as_deref()
        .map(HexDigest::parse)
        .transpose()
        .map_err(Error::BadRequest)?;
    let sums = req
        .sha256sums
        .as_deref()
        .map(parse_sha256sums)
        .transpose()?;
    // Holding the write lock from here on: no upload can start or finish between reading
    // the file list and sealing it.
    let mut tx = app.store.begin().await?;
    let walk = walk_for_seal(&mut tx, id, sums.as_deref()).await?;
    if walk.root.entries() == 0 && walk.unfinished.count == 0 {
        return Err(Error::Conflict(
            "cannot seal an empty transfer: upload at least one file".into(),
        ));
    }
    if walk.unfinished.count > 0 {
        return Err(Error::Conflict(format!(
            "cannot seal: {} upload(s) are unfinished: {}; finish or delete them first",
            walk.unfinished.count,
            walk.unfinished.render()
        )));
    }
    let archives = tx.archive_uploads_waiting(id).await?;
    if archives > 0 {
        return Err(Error::Conflict(format!(
            "cannot seal: {archives} archive upload(s) are unfinished; finish or delete them first"
        )));
    }
    let files_n = walk.root.entries();
    let bytes = walk.root.bytes();
    let root = walk.root.finish();
    let mut mismatches = walk.mismatches;
    if let Some(exp) = &expected_root {
        if *exp != root {
            mismatches.push(format!(
                "root digest: provider sent {exp}, airlock computed {root}"
            ));
        }
    }
    let policy = app.policy(&ws)?;
    if !tx
        .set_state(
            id,
            TransferState::Open,
            TransferState::Sealed,
            &format!("sealed by {}", who.actor()),
        )
        .await?
    {
        return Err(Error::Conflict(
            "the transfer changed state while sealing; look again".into(),
        ));
    }
    tx.set_sealed(id, &root, expected_root.as_ref(), &policy.version)
        .await?;
    tx.revoke_upload_tokens(id, "transfer sealed").await?;
    tx.audit(
        AuditEvent::new(who.actor(), "transfer.sealed")
            .transfer(id)
            .detail(serde_json::json!({
                "root_digest": root, "files": files_n, "bytes": bytes,
                "policy_version": policy.version, "policy_file": policy.file,
            })),
    )
    .await?;
    // Sealing and what follows it commit together: a crash cannot leave a transfer sealed
    // with nobody to move it on, nor lose a digest mismatch found here.
    let mut scanning = false;
    if !mismatches.is_empty() {
        let why = mismatches.render_joined("; ");
        block_in(
            &mut tx,
            id,
            TransferState::Sealed,
            "hash-confirmation",
            &why,
        )
        .await?;
    } else {
        scanning = scan_in(&mut tx, &t).await?;
    }
    tx.commit().await?;
    if scanning {
        app.scan_jobs.notify_one();
    }
    Ok(access::load(app, id).await?.0)
}

/// At most this many items are named in one message; the rest are counted.
const NAMED: usize = 20;

/// A list that names its first `NAMED` items and counts the rest, so a message about 100,000
/// files stays short and memory stays flat.
#[derive(Default)]
struct Capped {
    named: Vec<String>,
    count: usize,
}

impl Capped {
    fn push(&mut self, item: String) {
        if self.named.len() < NAMED {
            self.named.push(item);
        }
        self.count += 1;
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn render_joined(&self, sep: &str) -> String {
        let mut s = self.named.join(sep);
        if self.count > self.named.len() {
            s.push_str(&format!("{sep}and {} more", self.count - self.named.len()));
        }
        s
    }

    fn render(&self) -> String {
        self.render_joined(", ")
    }
}

/// What sealing found in one walk over the files, in path order.
struct SealWalk {
    root: RootHasher,
    unfinished: Capped,
    mismatches: Capped,
}

/// Walks the transfer's files a page at a time (on the write transaction, so nothing changes
/// under it): the root digest, unfinished uploads, and every provider digest (per file, and
/// the provider's `sha256sum` manifest if one was sent) against ours.
async fn walk_for_seal(
    tx: &mut crate::store::Tx<'_>,
    id: TransferId,
    sums: Option<&[(String, HexDigest)]>,
) -> Result<SealWalk> {
    let mut listed: Option<std::collections::HashMap<&str, (&HexDigest, bool)>> =
        sums.map(|s| s.iter().map(|(p, d)| (p.as_str(), (d, false))).collect());
    let mut walk = SealWalk {
        root: RootHasher::default(),
        unfinished: Capped::default(),
        mismatches: Capped::default(),
    };
    let mut after: Option<String> = None;
    loop {
        let page = tx
            .files_page(id, after.as_deref(), crate::store::FILE_BATCH)
            .await?;
        for f in &page {
            if !f.complete {
                walk.unfinished.push(f.path.clone());
                continue;
            }
            let entry = manifest_entry(f)?;
            if let Some(e) = &f.expected_sha256 {
                if *e != entry.sha256.as_str() {
                    walk.mismatches.push(format!(
                        "{}: provider sent sha256 {e}, airlock computed {}",
                        f.path, entry.sha256
                    ));
                }
            }
            if let Some(listed) = listed.as_mut() {
                match listed.get_mut(f.path.as_str()) {
                    None => walk.mismatches.push(format!(
                        "{}: uploaded but not in the provider's manifest",
                        f.path
                    )),
                    Some((d, seen)) => {
                        *seen = true;
                        if **d != entry.sha256 {
                            walk.mismatches.push(format!(
                                "{}: provider's manifest says sha256 {d}, airlock computed {}",
                                f.path, entry.sha256
                            ));
                        }
                    }
                }
            }
            walk.root.push_sorted(&entry);
        }
        if (page.len() as u32) < crate::store::FILE_BATCH {
            break;
        }
        after = page.last().map(|f| f.path.clone());
    }
    if let Some(sums) = sums {
        let listed = listed.unwrap_or_default();
        for (path, _) in sums {
            if !listed.get(path.as_str()).is_some_and(|(_, seen)| *seen) {
                walk.mismatches.push(format!(
                    "{path}: in the provider's manifest but not uploaded"
                ));
            }
        }
    }
    Ok(walk)
}

/// A complete file's manifest entry.
pub fn manifest_entry(f: &FileRow) -> Result<ManifestEntry> {
    let d = |v: &Option<String>| {
        v.as_deref()
            .ok_or_else(|| Error::Internal(format!("{} has no digest", f.path)))
            .and_then(|s| HexDigest::parse(s).map_err(Error::Internal))
    };
    Ok(ManifestEntry {
        path: f.path.clone(),
        size: f.received,
        sha256: d(&f.sha256)?,
        blake3: d(&f.blake3)?,
    })
}

pub fn manifest(files: &[FileRow]) -> Result<Vec<ManifestEntry>> {
    files.iter().map(manifest_entry).collect()
}

/// Moves a transfer to `blocked`, with an incident. Returns false (changing nothing) if the
/// transfer was no longer in `from`.
pub async fn block(
    app: &App,
    id: TransferId,
    from: TransferState,
    kind: &str,
    why: &str,
) -> Result<bool> {
    let mut tx = app.store.begin().await?;
    let done = block_in(&mut tx, id, from, kind, why).await?;
    tx.commit().await?;
    Ok(done)
}

pub(super) async fn block_in(
    tx: &mut crate::store::Tx<'_>,
    id: TransferId,
    from: TransferState,
    kind: &str,
    why: &str,
) -> Result<bool> {
    if !mark_blocked(tx, id, from, kind, why).await? {
        return Ok(false);
    }
    tx.insert_incident(Some(id), kind, why).await?;
    Ok(true)
}

/// Moves a transfer from `from` to `blocked` with the reason, audited, without recording an
/// incident (for callers that record their own, one per problem). False if it was no longer
/// in `from`.
pub(crate) async fn mark_blocked(
    tx: &mut crate::store::Tx<'_>,
    id: TransferId,
    from: TransferState,
    kind: &str,
    why: &str,
) -> Result<bool> {
    let reason = format!("blocked: {kind} failure: {why}");
    if !tx
        .set_state(id, from, TransferState::Blocked, &reason)
        .await?
    {
        return Ok(false);
    }
    tx.audit(
        AuditEvent::new("system", "transfer.blocked")
            .transfer(id)
            .detail(serde_json::json!({ "kind": kind, "reason": why })),
    )
    .await?;
    Ok(true)
}

/// Scanning begins: the scan worker (`workflow::scanning`) picks the transfer up once this
/// commits. Returns false if the transfer was no longer sealed.
async fn scan_in(tx: &mut crate::store::Tx<'_>, t: &Transfer) -> Result<bool> {
    let id = t.id;
    if !tx
        .set_state(
            id,
            TransferState::Sealed,
            TransferState::Scanning,
            "scanning",
        )
        .await?
    {
        return Ok(false);
    }
    tx.audit(AuditEvent::new("system", "transfer.scanning").transfer(id))
        .await?;
    Ok(true)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ConfirmRequest {
    /// The root digest the provider computed over the files they sent (64 hex digits).
    #[schema(value_type = HexDigest)]
    pub root_digest: String,
}

/// Hash confirmation after seal (paper 4.3.2): the uploader, with their own staff token,
/// confirms the sealed root digest. A different digest blocks the transfer with an incident.
pub async fn confirm_root(
    app: &App,
    who: &Principal,
    id: TransferId,
    req: ConfirmRequest,
) -> Result<Transfer> {
    let user = who.staff()?;
    let (t, _) = access::load_for(app, user, id).await?;
    if user.id != t.uploader_id {
        return Err(Error::Forbidden(
            "only the transfer's uploader confirms its root digest".into(),
        ));
    }
    let want = HexDigest::parse(&req.root_digest).map_err(Error::BadRequest)?;
    if !matches!(
        t.state,
        TransferState::Sealed
            | TransferState::Scanning
            | TransferState::ScanError
            | TransferState::InReview
    ) {
        return Err(Error::Conflict(format!(
            "transfer {id} is {}: the root digest is confirmed between seal and decision",
            t.state
        )));
    }
    let root = t.root_digest.clone().unwrap_or_default();
    if want.as_str() != root {
        let why = format!("root digest: provider confirmed {want}, airlock sealed {root}");
        if !block(app, id, t.state, "hash-confirmation", &why).await? {
            return Err(Error::Conflict(
                "the transfer changed state meanwhile; look again".into(),
            ));
        }
    } else {
        app.store
            .audit(
                AuditEvent::new(who.actor(), "transfer.root_confirmed")
                    .transfer(id)
                    .detail(serde_json::json!({ "root_digest": root })),
            )
            .await?;
    }
    Ok(access::load(app, id).await?.0)
}

/// A Project Manager cancels a transfer before it is sealed.
pub async fn cancel(app: &App, who: &Principal, id: TransferId) -> Result<Transfer> {
    let user = who.staff()?;
    let (t, ws) = access::load_for(app, user, id).await?;
    access::require_role(app, user, &ws, &[Role::ProjectManager]).await?;
    t.state
        .on(Event::Cancel)
        .map_err(|e| Error::Conflict(format!("cannot cancel: {e}")))?;
    let mut tx = app.store.begin().await?;
    if !tx
        .set_state(
            id,
            t.state,
            TransferState::Cancelled,
            &format!("cancelled by {}", user.name),
        )
        .await?
    {
        return Err(Error::Conflict(
            "the transfer changed state meanwhile; look again".into(),
        ));
    }
    tx.revoke_upload_tokens(id, "transfer cancelled").await?;
    tx.audit(AuditEvent::new(who.actor(), "transfer.cancelled").transfer(id))
        .await?;
    tx.commit().await?;
    Ok(access::load(app, id).await?.0)
}

/// Moves open transfers whose tokens have all run out to `expired`. Run periodically.
pub async fn expire_due(app: &App) -> Result<usize> {
    let due = app
        .store
        .open_transfers_with_expired_tokens(unix_now())
        .await?;
    for id in &due {
        let mut tx = app.store.begin().await?;
        // A token may have been issued since the query: look again under the write lock.
        if tx.has_live_token(*id, unix_now()).await? {
            continue;
        }
        if tx
            .set_state(
                *id,
                TransferState::Open,
                TransferState::Expired,
                "the upload token ran out before the transfer was sealed",
            )
            .await?
        {
            tx.revoke_upload_tokens(*id, "transfer expired").await?;
            tx.audit(AuditEvent::new("system", "transfer.expired").transfer(id))
                .await?;
        }
        tx.commit().await?;
    }
    Ok(due.len())
}

/// A transfer's summary as staff see it: a constant size whatever its file count. The files
/// are listed by `GET /api/v1/transfers/{id}/files` (pages) or `/sha256sums` (streamed);
/// `airlock transfer show --json` adds every file as `files`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TransferView {
    pub id: TransferId,
    pub kind: TransferKind,
    /// `PROJECT/WORKSPACE`.
    pub workspace: String,
    /// The workspace's security tier.
    #[schema(maximum = 4)]
    pub tier: u8,
    pub state: TransferState,
    /// Why the transfer is in its state, in words.
    pub state_reason: String,
    /// The uploader's user name.
    pub uploader: String,
    /// The user name of the Project Manager who opened it.
    pub created_by: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    #[schema(format = DateTime)]
    pub sealed_at: Option<String>,
    /// The manifest's root digest, set at seal: SHA-256 over the lines
    /// `sha256 SP blake3 SP size SP path LF`, sorted by path bytes.
    pub root_digest: Option<String>,
    /// The root digest the provider sent at seal, if any.
    pub expected_root_digest: Option<String>,
    /// SHA-256 of the policy file in force when the transfer was sealed.
    pub policy_version: Option<String>,
    /// The policy in force now: its file and version (they differ from `policy_version` if
    /// an operator changed the policy since the seal; approvals bound to the old one are void).
    pub policy: PolicyView,
    /// The referees assigned to the transfer.
    pub referees: Vec<super::governance::RefereeView>,
    /// Files in the transfer (complete or not).
    pub file_count: u64,
    /// Files whose upload finished (all of them once sealed).
    pub complete_count: u64,
    /// Bytes stored, over all files.
    pub total_bytes: u64,
    /// Every decision, in order, with whether it still counts.
    pub decisions: Vec<DecisionView>,
    /// The approvals still required before release, and who could give them.
    pub awaiting: Vec<Awaiting>,
    pub incidents: Vec<IncidentView>,
    /// What the scanners said about every file (and archive member).
    pub scans: ScansView,
    /// Set once the files are published.
    pub release: Option<ReleaseView>,
    /// An egress request's own part (context, files with roles, disclosure findings, votes,
    /// collections), at the top level beside the rest.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub egress: Option<super::egress::EgressView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScansView {
    /// Verdicts of the latest scan, by kind (`clean`, `infected`, `unscannable`, `error`).
    pub counts: BTreeMap<String, u64>,
    /// Files could not be scanned and the policy lets review go on: a Referee must approve
    /// with `acknowledge_unscannable`.
    pub ack_required: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyView {
    pub file: String,
    /// SHA-256 of the policy file in force now.
    pub version: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DecisionView {
    /// The reviewer's user name.
    pub user: String,
    /// The role they decided in.
    #[schema(value_type = Role)]
    pub role: String,
    /// `approve`, `reject` or `return`.
    pub decision: String,
    pub comment: String,
    /// The manifest root digest decided on.
    pub root_digest: String,
    /// SHA-256 of the policy file the decision was taken under.
    pub policy_version: String,
    #[schema(format = DateTime)]
    pub at: String,
    /// Whether it counts towards the release now: an approval, not void, given on the current
    /// root digest and the policy in force.
    pub counts: bool,
    /// Why it no longer stands: the transfer was returned or reopened, the manifest changed,
    /// or the policy changed since. Null while it stands.
    pub void_reason: Option<String>,
    /// The unscannable files (`path: reason`) a Referee acknowledged with this approval; left
    /// out when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub acknowledged_unscannable: Vec<String>,
}

/// One role whose approval the transfer still waits for. Listed only while the transfer is
/// `sealed`, `scanning`, `scan_error` or `in_review`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Awaiting {
    pub role: Role,
    /// How many more approvals in this role are needed.
    #[schema(minimum = 1)]
    pub needed: u32,
    /// Who could give them (user names): the role's active holders in the project (or, for
    /// `referee`, the transfer's active referees; for `programme-manager`, every Programme
    /// Manager), less the uploader, token issuers and anyone whose approval already counts.
    /// Empty when nobody can yet (no referee assigned, say).
    pub from: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IncidentView {
    /// Such as `hash-confirmation`.
    pub kind: String,
    pub detail: String,
    /// Such as `open`.
    pub state: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReleaseView {
    /// Where the files were published.
    pub location: String,
    #[schema(format = DateTime)]
    pub released_at: Option<String>,
}

/// The transfer's summary: a constant number of reads whatever its file count (the files are
/// listed by `files_page`, the manifest streamed by `sha256sums`).
async fn view_of(
    app: &App,
    t: Transfer,
    ws: &Workspace,
    referees: Option<Vec<crate::store::RefereeRow>>,
    viewer: Option<&crate::store::User>,
) -> Result<TransferView> {
    view_with(app, t, ws, referees, viewer, true).await
}

/// [`view_of`]; `egress` false leaves an egress request's own part out (a list of many).
async fn view_with(
    app: &App,
    t: Transfer,
    ws: &Workspace,
    referees: Option<Vec<crate::store::RefereeRow>>,
    viewer: Option<&crate::store::User>,
    egress: bool,
) -> Result<TransferView> {
    let egress = match egress {
        true => super::egress::view(app, &t, ws, viewer).await?,
        false => None,
    };
    let (totals, scan_counts) = app.store.totals_and_scan_counts(t.id).await?;
    let policy = app.policy(ws)?;
    let decisions = app.store.decisions(t.id).await?;
    let awaiting = super::governance::awaiting(app, &t, ws, &policy, &decisions).await?;
    let referees = match referees {
        Some(rows) => super::governance::referee_views(rows),
        None => super::governance::referees(app, t.id).await?,
    };
    // Both names in one lookup: a status read is on the hot path.
    let names = app.store.user_names(&[t.uploader_id, t.created_by]).await?;
    let name = |id| Ok::<_, Error>(names.get(&id).cloned().unwrap_or_default());
    Ok(TransferView {
        id: t.id,
        kind: t.kind,
        workspace: format!("{}/{}", ws.project_name, ws.name),
        tier: ws.tier.get(),
        state: t.state,
        state_reason: t.state_reason,
        uploader: name(t.uploader_id)?,
        created_by: name(t.created_by)?,
        created_at: t.created_at,
        updated_at: t.updated_at,
        sealed_at: t.sealed_at,
        root_digest: t.root_digest.clone(),
        expected_root_digest: t.expected_root_digest,
        policy_version: t.policy_version,
        policy: PolicyView {
            file: policy.file.clone(),
            version: policy.version.to_string(),
        },
        referees,
        file_count: totals.files,
        complete_count: totals.complete,
        total_bytes: totals.received,
        decisions: decisions
            .into_iter()
            .map(|d| {
                let void = super::governance::void_reason(
                    &d,
                    t.root_digest.as_deref(),
                    policy.version.as_str(),
                );
                DecisionView {
                    counts: d.decision == "approve" && void.is_none(),
                    void_reason: void,
                    user: d.user,
                    role: d.role,
                    decision: d.decision,
                    comment: d.comment,
                    root_digest: d.root_digest,
                    policy_version: d.policy_version,
                    at: d.at,
                    acknowledged_unscannable: serde_json::from_str(&d.acknowledged)
                        .unwrap_or_default(),
                }
            })
            .collect(),
        awaiting,
        incidents: app
            .store
            .incidents(Some(t.id))
            .await?
            .into_iter()
            .map(|i| IncidentView {
                kind: i.kind,
                detail: i.detail,
                state: i.state,
                created_at: i.created_at,
            })
            .collect(),
        scans: ScansView {
            counts: scan_counts,
            ack_required: t.ack_required,
        },
        release: t.release_location.map(|location| ReleaseView {
            location,
            released_at: t.released_at,
        }),
        egress,
    })
}

/// A transfer as staff see it, with no access check: for background jobs (notifications).
pub async fn view(app: &App, id: TransferId) -> Result<TransferView> {
    let (t, ws) = access::load(app, id).await?;
    view_of(app, t, &ws, None, None).await
}

/// Members of the project, and the transfer's own uploader, see a transfer in full
/// (metadata, not content).
pub async fn show(app: &App, who: &Principal, id: TransferId) -> Result<TransferView> {
    let user = who.staff()?;
    let seen = access::load_seen(app, user, id).await?;
    super::governance::require_viewer_seen(app, user, &seen).await?;
    let access::Seen {
        t, ws, referees, ..
    } = seen;
    let mut v = view_of(app, t, &ws, Some(referees), Some(user)).await?;
    // Blinded output checking: the other checkers' approvals stay hidden too.
    if v.egress.as_ref().is_some_and(|e| e.hide_decisions) {
        v.decisions.retain(|d| d.user == user.name);
    }
    Ok(v)
}

/// Transfers of a workspace, for its members.
pub async fn list(app: &App, who: &Principal, workspace: &str) -> Result<Vec<TransferView>> {
    let user = who.staff()?;
    let ws = access::visible_workspace(app, user, workspace).await?;
    access::require_member(app, user, &ws).await?;
    let mut out = Vec::new();
    for t in app.store.transfers_in(ws.id).await? {
        // The list is a summary: each egress request's files, votes and comparisons are read
        // only when it is shown.
        out.push(view_with(app, t, &ws, None, Some(user), false).await?);
    }
    Ok(out)
}

/// What an upload token may see: sizes and digests of what it wrote.
#[derive(Debug, Serialize)]
pub struct ManifestHead {
    pub id: TransferId,
    pub state: TransferState,
}

/// The transfer's upload token, or a staff viewer, may list its files (metadata, never content).
pub(super) async fn may_list_files(app: &App, who: &Principal, id: TransferId) -> Result<Transfer> {
    match who {
        Principal::Upload { .. } => {
            let (t, _) = access::load(app, id).await?;
            who.upload_for(id)?;
            Ok(t)
        }
        Principal::Staff(user) => {
            let seen = access::load_seen(app, user, id).await?;
            super::governance::require_viewer_seen(app, user, &seen).await?;
            Ok(seen.t)
        }
        Principal::Collect { .. } => Err(access::collect_only()),
    }
}

/// Every file's receipt as a stream, read a page at a time: for the JSON manifest, whose body
/// is written as the rows arrive.
pub async fn receipts(
    app: &App,
    who: &Principal,
    id: TransferId,
) -> Result<(
    ManifestHead,
    futures::stream::BoxStream<'static, Result<super::upload::FileReceipt>>,
)> {
    use futures::{StreamExt, TryStreamExt};
    let t = may_list_files(app, who, id).await?;
    let rows = app
        .store
        .file_stream(id)
        .map_ok(|f| super::upload::FileReceipt::from(&f))
        .map_err(Error::from)
        .boxed();
    Ok((ManifestHead { id, state: t.state }, rows))
}

/// The most files one page lists; a larger `limit` is capped to it.
pub const MAX_PAGE: u32 = 1000;

/// One page of a transfer's files, in path (byte) order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FilesPage {
    pub files: Vec<super::upload::FileReceipt>,
    /// Pass as `after` for the next page; `null` after the last page.
    pub next: Option<String>,
}

/// Files after the cursor `after` (a path; exclusive), at most `limit` (capped at `MAX_PAGE`).
pub async fn files_page(
    app: &App,
    who: &Principal,
    id: TransferId,
    after: Option<&str>,
    limit: Option<u32>,
) -> Result<FilesPage> {
    let limit = match limit {
        Some(0) => return Err(Error::BadRequest("limit must be at least 1".into())),
        Some(n) => n.min(MAX_PAGE),
        None => MAX_PAGE,
    };
    let t = may_list_files(app, who, id).await?;
    // One row more than asked tells whether another page follows.
    let mut rows = app.store.files_page(id, after, limit + 1).await?;
    let next = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|f| f.path.clone())
    } else {
        None
    };
    let mut files: Vec<super::upload::FileReceipt> = rows.iter().map(Into::into).collect();
    if t.kind.is_egress() {
        let roles: BTreeMap<String, String> = app
            .store
            .egress_files(id)
            .await?
            .into_iter()
            .map(|p| (p.path, p.role))
            .collect();
        for f in &mut files {
            f.role = roles.get(&f.path).cloned();
        }
    }
    Ok(FilesPage { files, next })
}

/// One page of the latest scan's verdicts, in the order the scan wrote them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerdictsPage {
    pub verdicts: Vec<crate::store::VerdictRow>,
    /// Pass as `after` for the next page; `null` after the last page.
    pub next: Option<String>,
}

/// Verdicts after the cursor `after` (from a previous page's `next`), at most `limit` (capped
/// at `MAX_PAGE`). Staff viewers only: verdicts name files and what was found in them.
pub async fn verdicts_page(
    app: &App,
    who: &Principal,
    id: TransferId,
    after: Option<&str>,
    limit: Option<u32>,
) -> Result<VerdictsPage> {
    let limit = match limit {
        Some(0) => return Err(Error::BadRequest("limit must be at least 1".into())),
        Some(n) => n.min(MAX_PAGE),
        None => MAX_PAGE,
    };
    let after = after
        .map(|a| {
            a.parse::<i64>().map_err(|_| {
                Error::BadRequest(format!(
                    "after: `{a}` is not a cursor; pass the `next` of the previous page"
                ))
            })
        })
        .transpose()?;
    let user = who.staff()?;
    let (t, ws) = access::load_for(app, user, id).await?;
    super::governance::require_viewer(app, user, &t, &ws).await?;
    let mut rows = app.store.verdicts_page(id, after, limit + 1).await?;
    let next = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|v| v.seq.to_string())
    } else {
        None
    };
    Ok(VerdictsPage {
        verdicts: rows,
        next,
    })
}

/// The manifest as `sha256sum` text (`HEX  PATH` per complete file, in path order), streamed a
/// page at a time: `sha256sum -c` checks a copy against it.
pub async fn sha256sums(
    app: &App,
    who: &Principal,
    id: TransferId,
) -> Result<futures::stream::BoxStream<'static, Result<bytes::Bytes>>> {
    use futures::{StreamExt, TryStreamExt};
    may_list_files(app, who, id).await?;
    Ok(app
        .store
        .file_stream(id)
        .map_err(Error::from)
        .try_filter_map(|f| async move {
            Ok(match (f.complete, f.sha256) {
                (true, Some(d)) => Some(bytes::Bytes::from(format!("{d}  {}\n", f.path))),
                _ => None,
            })
        })
        .boxed())
}

/// A file's row and a stream of its bytes from the quarantine volume.
pub type Content = (
    FileRow,
    futures::stream::BoxStream<'static, crate::volumes::Result<bytes::Bytes>>,
);

/// The states in which a transfer's content is there to be reviewed: sealed and scanned clean
/// (or with unscannable files the policy lets through), and not yet released. Before that it
/// is unscanned; a blocked transfer may hold malware; after it, the workspace has the copy.
pub const REVIEWABLE: [TransferState; 2] = [TransferState::InReview, TransferState::Approved];

/// Who may read content: the project's Investigators, Project Managers and Dataset Provider
/// Representatives, the transfer's assigned (and counter-approved) referees, and a Programme
/// Manager only where they have a role in the project or the policy asks one to approve this
/// transfer. A role held system-wide gives no right to read a project's data.
pub async fn may_read_content(
    app: &App,
    user: &crate::store::User,
    t: &Transfer,
    ws: &Workspace,
) -> Result<()> {
    // `held` adds only the Programme and System Manager roles to project membership, so the
    // three project roles below come from membership alone.
    let held = super::governance::held_roles(app, user, t, ws).await?;
    let reviews = held.iter().any(|r| {
        matches!(
            r,
            Role::Investigator | Role::ProjectManager | Role::Provider
        )
    }) || held.contains(&Role::Referee)
        || (user.roles.contains(&Role::ProgrammeManager)
            && super::governance::required(&*app.policy(ws)?, t)
                .iter()
                .any(|(r, _)| *r == Role::ProgrammeManager));
    if !reviews {
        return Err(Error::Forbidden(format!(
            "{} may not read this transfer's content: reviewers are the project's \
             investigators, project managers and provider representatives, its assigned \
             referees, and a Programme Manager where the policy asks one to approve",
            user.name
        )));
    }
    if !REVIEWABLE.contains(&t.state) {
        return Err(Error::Conflict(format!(
            "the transfer is {}: content is read only while it is in review or approved{}",
            t.state,
            if t.state == TransferState::Blocked {
                "; a blocked transfer's files are exported only by the System Manager \
                 (`airlock admin forensic-export`)"
            } else {
                ""
            }
        )));
    }
    Ok(())
}

/// A reviewer reads a file's content, in a state where there is something to review.
/// Recorded in the audit log.
pub async fn read_content(
    app: &App,
    who: &Principal,
    id: TransferId,
    raw_path: &str,
) -> Result<Content> {
    let user = who.staff()?;
    let (t, ws) = access::load_for(app, user, id).await?;
    may_read_content(app, user, &t, &ws).await?;
    content_stream(app, &who.actor(), "content.read", &t, raw_path, "").await
}

/// The System Manager's explicit, audited forensic export of a file, in any state (a
/// blocked transfer's malware included), from the server (`airlock admin forensic-export`).
pub async fn forensic_export(
    app: &App,
    id: TransferId,
    raw_path: &str,
    reason: &str,
) -> Result<Content> {
    if reason.trim().is_empty() {
        return Err(Error::BadRequest(
            "say why the file is exported (`--reason`)".into(),
        ));
    }
    let (t, _) = access::load(app, id).await?;
    content_stream(
        app,
        "admin-cli",
        "content.forensic_export",
        &t,
        raw_path,
        reason.trim(),
    )
    .await
}

async fn content_stream(
    app: &App,
    actor: &str,
    action: &str,
    t: &Transfer,
    raw_path: &str,
    reason: &str,
) -> Result<Content> {
    let path = RelPath::parse(raw_path)?;
    let file = app
        .store
        .file_by_path(t.id, path.as_str())
        .await?
        .filter(|f| f.complete)
        .ok_or_else(|| Error::NotFound(format!("no complete file `{path}` in this transfer")))?;
    let stream = super::upload::stored_bytes(app, &file).await?;
    let mut detail = serde_json::json!({ "path": file.path, "state": t.state });
    if !reason.is_empty() {
        detail["reason"] = serde_json::json!(reason);
    }
    app.store
        .audit(AuditEvent::new(actor, action).transfer(t.id).detail(detail))
        .await?;
    Ok((file, stream))
}
