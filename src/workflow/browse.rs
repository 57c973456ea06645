//! What the browser's pages read, with the same access rules as the API: a transfer's
//! manifest as a folder tree a page at a time, a person's inbox, a transfer's history.

use super::access::{self, Principal};
use super::transfers::{self, TransferView};
use super::Result;
use crate::app::App;
use crate::domain::{Role, TransferId, TransferState};
use crate::store::{AuditRow, Entry};

/// Entries per page of a folder.
pub const FOLDER_PAGE: usize = 200;
/// Transfers looked at for an inbox.
const INBOX_LIMIT: i64 = 100;

/// One page of a folder of a transfer's manifest.
pub struct FolderPage {
    /// The folder (`""` at the top, else ending with `/`).
    pub dir: String,
    pub entries: Vec<Entry>,
    /// The name to pass as `after` for the next page, if there is one.
    pub next: Option<String>,
}

/// A folder of a transfer, for anyone who may list its files.
pub async fn folder(
    app: &App,
    who: &Principal,
    id: TransferId,
    dir: &str,
    after: Option<&str>,
) -> Result<FolderPage> {
    // The same check as the API's file listing (`GET .../files`).
    transfers::may_list_files(app, who, id).await?;
    let dir = match dir.trim_matches('/') {
        "" => String::new(),
        d => format!("{d}/"),
    };
    let (entries, more) = app.store.folder_page(id, &dir, after, FOLDER_PAGE).await?;
    let next = more.then(|| entries.last()).flatten().map(|e| match e {
        Entry::Folder(f) => f.clone(),
        Entry::File(f) => f.path[dir.len()..].to_owned(),
    });
    Ok(FolderPage { dir, entries, next })
}

/// Why a transfer is in someone's inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// A decision (or an output-checking review) is awaited from this person.
    Decide,
    /// Their own request came back to them.
    Returned,
    /// Under way, awaited from someone else (or from no one yet).
    Watching,
}

pub struct InboxRow {
    pub why: Why,
    pub view: TransferView,
    /// What is awaited from whom, in words.
    pub awaited: String,
}

/// What awaits `who` across their projects, most recently changed first.
pub async fn inbox(app: &App, who: &Principal) -> Result<Vec<InboxRow>> {
    let user = who.staff()?;
    let overseer = user
        .roles
        .iter()
        .any(|r| matches!(r, Role::ProgrammeManager | Role::SystemManager));
    let ids = app
        .store
        .inbox_transfers(user.id, overseer, INBOX_LIMIT)
        .await?;
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        // A transfer that changed or went out of sight since the list was read is skipped.
        let Ok(view) = transfers::show(app, who, id).await else {
            continue;
        };
        let mine = view.uploader == user.name || view.created_by == user.name;
        let from_me = view.awaiting.iter().any(|a| a.from.contains(&user.name));
        let why = match view.state {
            TransferState::InReview if from_me => Why::Decide,
            TransferState::Returned if mine => Why::Returned,
            _ => Why::Watching,
        };
        let awaited = awaited(&view);
        rows.push(InboxRow { why, view, awaited });
    }
    // Decisions first, then returned requests, then the rest; each most recent first.
    rows.sort_by_key(|r| match r.why {
        Why::Decide => 0,
        Why::Returned => 1,
        Why::Watching => 2,
    });
    Ok(rows)
}

/// "2 approvals as investigator from inv or pm; 1 as referee from (none assigned)", or what
/// the state waits on.
pub fn awaited(v: &TransferView) -> String {
    match v.state {
        TransferState::InReview if !v.awaiting.is_empty() => v
            .awaiting
            .iter()
            .map(|a| {
                let from = if a.from.is_empty() {
                    "nobody yet".to_owned()
                } else {
                    a.from.join(" or ")
                };
                let n = a.needed;
                let s = if n == 1 { "" } else { "s" };
                format!("{n} approval{s} as {} from {from}", a.role.as_str())
            })
            .collect::<Vec<_>>()
            .join("; "),
        TransferState::Open => format!("uploads and seal from {}", v.uploader),
        TransferState::Returned => format!("changes from {} (then a new upload link)", v.uploader),
        TransferState::Sealed | TransferState::Scanning => "the scanners".into(),
        TransferState::ScanError => "a scanner to answer (retried)".into(),
        TransferState::Approved => "the release (under way)".into(),
        TransferState::Blocked => "a Project Manager: the transfer is blocked".into(),
        _ => "nothing: final".into(),
    }
}

/// The stored disclosure findings of one file of an egress request's current round, as
/// `(location JSON, rule)`; `None` for a transfer that is no egress request (nothing stored:
/// a preview then runs the checks on what it shows). For a caller who may read the content.
pub async fn findings_of(
    app: &App,
    id: TransferId,
    path: &str,
) -> Result<Option<Vec<(serde_json::Value, String)>>> {
    let Some(e) = app.store.egress(id).await? else {
        return Ok(None);
    };
    let rows = app.store.findings(id, e.round).await?;
    Ok(Some(
        rows.into_iter()
            .filter(|f| f.path == path)
            .map(|f| {
                let loc = serde_json::from_str(&f.location).unwrap_or(serde_json::Value::Null);
                (loc, f.rule)
            })
            .collect(),
    ))
}

/// The roles `who` holds in a transfer's project (empty for someone with none).
pub async fn roles_on(app: &App, who: &Principal, id: TransferId) -> Result<Vec<Role>> {
    let user = who.staff()?;
    let (_, ws) = access::load_for(app, user, id).await?;
    access::roles_in(app, user, &ws).await
}

/// The latest events about transfers `who` may see.
pub async fn activity(app: &App, who: &Principal, limit: i64) -> Result<Vec<AuditRow>> {
    let user = who.staff()?;
    let overseer = user
        .roles
        .iter()
        .any(|r| matches!(r, Role::ProgrammeManager | Role::SystemManager));
    Ok(app.store.recent_activity(user.id, overseer, limit).await?)
}

/// A transfer's history from the audit log, newest first, for anyone who may see it.
pub async fn history(
    app: &App,
    who: &Principal,
    id: TransferId,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditRow>> {
    let user = who.staff()?;
    let seen = access::load_seen(app, user, id).await?;
    super::governance::require_viewer_seen(app, user, &seen).await?;
    Ok(app.store.transfer_history(id, before, limit).await?)
}
