//! Fixity: every file at rest, in quarantine and in the released volumes, is re-hashed against
//! the sealed manifest (paper 4.3.2: "regularly automatically re-verify the integrity of the
//! dataset, and alert Programme and Project Managers").
//!
//! Hashing is the one engine of `crate::hashing`'s digests, run here on the blocking pool:
//! files are hashed in parallel across cores (rayon), and within a large file SHA-256 (one
//! thread, the CPU's SHA extensions through `sha2`) runs beside BLAKE3 (all cores, memory-mapped,
//! `update_mmap_rayon`). A changed, missing or unexpected file is an incident: audited (and so
//! sent to the webhooks), counted in `/metrics`, a pending transfer is blocked and a released
//! one flagged.

pub mod bag;
pub mod scheduler;

use crate::app::App;
use crate::audit::AuditEvent;
use crate::domain::*;
use crate::store::{FixityRow, Transfer};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// Where a copy lies.
pub const QUARANTINE: &str = "quarantine";
pub const RELEASED: &str = "released";

/// One file's check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub location: &'static str,
    pub path: String,
    /// `ok`, `changed`, `missing` or `unexpected`.
    pub result: &'static str,
    pub detail: String,
    pub bytes: u64,
}

/// What a verification found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub transfer: TransferId,
    pub state: TransferState,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn problems(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.result != "ok")
    }

    /// The files this verification re-hashed and their bytes (a missing or unexpected file
    /// was not hashed), for `/metrics`.
    pub fn hashed(&self) -> (u64, u64) {
        self.checks
            .iter()
            .filter(|c| c.result != "unexpected" && c.result != "missing")
            .fold((0, 0), |(n, b), c| (n + 1, b + c.bytes))
    }
}

/// One file to check: where its bytes are and what the manifest says.
struct Job {
    location: &'static str,
    path: String,
    parts: Vec<PathBuf>,
    want: ManifestEntry,
}

fn check(job: &Job) -> Check {
    let c = |result: &'static str, detail: String, bytes: u64| Check {
        location: job.location,
        path: job.path.clone(),
        result,
        detail,
        bytes,
    };
    if let Some(p) = job.parts.iter().find(|p| !p.exists()) {
        return c(
            "missing",
            format!("{} {} is missing ({})", job.location, job.path, p.display()),
            0,
        );
    }
    match crate::hashing::hash_paths(&job.parts) {
        Err(e) => c(
            "missing",
            format!("{} {} cannot be read: {e}", job.location, job.path),
            0,
        ),
        Ok(d)
            if d.size == job.want.size
                && d.sha256 == job.want.sha256
                && d.blake3 == job.want.blake3 =>
        {
            c("ok", String::new(), d.size)
        }
        Ok(d) => c(
            "changed",
            format!(
                "{} {} changed: sha256 {} ({} bytes), the manifest says {} ({} bytes)",
                job.location, job.path, d.sha256, d.size, job.want.sha256, job.want.size
            ),
            d.size,
        ),
    }
}

/// Every regular file under `root`, as paths relative to it.
fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(_) => {
                    if let Ok(rel) = p.strip_prefix(root) {
                        out.push(rel.to_string_lossy().into_owned());
                    }
                }
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}

/// Re-hashes a transfer's files at rest. `only`: the (location, path) pairs to hash (the
/// scheduler's due files); `None`: everything. Unexpected files are always looked for.
pub async fn verify(
    app: &App,
    t: &Transfer,
    only: Option<HashSet<(String, String)>>,
) -> crate::workflow::Result<Report> {
    let files = app.store.files(t.id).await?;
    let manifest = crate::workflow::transfers::manifest(&files)?;
    let mut jobs = Vec::new();
    let mut known_ids = HashSet::new();
    let mut segments = BTreeMap::new();
    for (f, want) in files.iter().zip(&manifest) {
        known_ids.insert(f.id.to_string());
        let n = app.store.segments(f.id).await?.len() as u64;
        segments.insert(f.id.to_string(), n);
        let parts = (0..n)
            .map(|s| app.volumes.segment_path(t.id, f.id, s))
            .collect();
        jobs.push(Job {
            location: QUARANTINE,
            path: f.path.clone(),
            parts,
            want: want.clone(),
        });
    }
    let released = match (&t.state, &t.release_location) {
        (TransferState::Released, Some(loc)) => Some(PathBuf::from(loc)),
        _ => None,
    };
    if let Some(root) = &released {
        for want in &manifest {
            jobs.push(Job {
                location: RELEASED,
                path: want.path.clone(),
                parts: vec![root.join(&want.path)],
                want: want.clone(),
            });
        }
    }
    if let Some(only) = &only {
        jobs.retain(|j| only.contains(&(j.location.to_owned(), j.path.clone())));
    }
    let qdir = app.volumes.transfer_dir(t.id);
    let listed: HashSet<String> = manifest.iter().map(|m| m.path.clone()).collect();
    let checks = tokio::task::spawn_blocking(move || {
        let mut checks: Vec<Check> = jobs.par_iter().map(check).collect();
        // Anything in the transfer's quarantine folder that is not one of its segments.
        for rel in walk(&qdir) {
            let mut it = rel.splitn(2, '/');
            let (id, seg) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            let expected = known_ids.contains(id)
                && seg
                    .parse::<u64>()
                    .is_ok_and(|s| s < segments.get(id).copied().unwrap_or(0));
            if !expected {
                checks.push(Check {
                    location: QUARANTINE,
                    path: rel.clone(),
                    result: "unexpected",
                    detail: format!("quarantine holds an unexpected file {rel}"),
                    bytes: 0,
                });
            }
        }
        if let Some(root) = released {
            for rel in walk(&root) {
                if !listed.contains(&rel) {
                    checks.push(Check {
                        location: RELEASED,
                        path: rel.clone(),
                        result: "unexpected",
                        detail: format!("released {rel} is not in the manifest"),
                        bytes: 0,
                    });
                }
            }
        }
        checks
    })
    .await
    .map_err(|e| crate::workflow::Error::Internal(e.to_string()))?;
    Ok(Report {
        transfer: t.id,
        state: t.state,
        checks,
    })
}

/// Records a verification: each file's last-verified time and result, and an incident for each
/// problem not already open (audited as `incident.integrity`, which the webhooks send, naming
/// the project's Programme and Project Managers). A pending transfer with a problem in
/// quarantine is blocked; a released one with a problem is flagged in its state reason.
pub async fn record(app: &App, t: &Transfer, report: &Report) -> crate::workflow::Result<()> {
    let now = chrono::Utc::now().timestamp_millis();
    let (files, bytes) = report.hashed();
    app.metrics.verified(files, bytes);
    let mut fresh = Vec::new();
    for c in report.problems() {
        if !app.store.open_incident(t.id, &c.detail).await? {
            fresh.push(c);
        }
    }
    let notify = if fresh.is_empty() {
        Vec::new()
    } else {
        alert_list(app, t).await?
    };
    let mut tx = app.store.begin().await?;
    for c in &report.checks {
        tx.record_fixity(
            t.id,
            &FixityRow {
                location: c.location.to_owned(),
                path: c.path.clone(),
                verified_at: now,
                result: c.result.to_owned(),
                detail: c.detail.clone(),
            },
        )
        .await?;
    }
    for c in &fresh {
        tx.insert_incident(Some(t.id), "integrity", &c.detail)
            .await?;
        tx.audit(
            AuditEvent::new("system", "incident.integrity")
                .transfer(t.id)
                .detail(serde_json::json!({
                    "location": c.location, "path": c.path, "problem": c.result,
                    "detail": c.detail, "notify": notify,
                })),
        )
        .await?;
        app.metrics.incident(c.result, c.location);
    }
    if !fresh.is_empty() {
        let why = fresh
            .iter()
            .map(|c| c.detail.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let state = tx.transfer_state(t.id).await?;
        match state {
            Some(
                s @ (TransferState::Sealed
                | TransferState::Scanning
                | TransferState::ScanError
                | TransferState::InReview
                | TransferState::Approved),
            ) => {
                crate::workflow::transfers::mark_blocked(&mut tx, t.id, s, "integrity", &why)
                    .await?;
            }
            Some(TransferState::Released) => {
                let reason = format!("released; INTEGRITY INCIDENT: {why}");
                tx.set_state(
                    t.id,
                    TransferState::Released,
                    TransferState::Released,
                    &reason,
                )
                .await?;
            }
            _ => {}
        }
        tracing::warn!(transfer = %t.id, "integrity incident: {why}");
    }
    tx.commit().await?;
    if !fresh.is_empty() {
        mail(app, t, &fresh, &notify).await;
    }
    Ok(())
}

/// Emails an alert when `[integrity] smtp` is set. A failure is logged; the incident stands
/// (and went to the webhooks) either way.
async fn mail(app: &App, t: &Transfer, fresh: &[&Check], notify: &[String]) {
    let s = &app.settings.integrity;
    let Some(server) = &s.smtp else {
        return;
    };
    let mut to = s.mail_to.clone();
    if let Some(domain) = &s.mail_domain {
        to.extend(notify.iter().map(|u| format!("{u}@{domain}")));
    }
    let ws = app
        .store
        .workspace(t.workspace_id)
        .await
        .ok()
        .flatten()
        .map(|w| format!("{}/{}", w.project_name, w.name))
        .unwrap_or_default();
    let mut body = format!(
        "airlock found {} integrity problem(s) in transfer {} (workspace {ws}).\n\n",
        fresh.len(),
        t.id
    );
    for c in fresh {
        body.push_str(&format!("- {}\n", c.detail));
    }
    body.push_str(&format!(
        "\nFor: {}\nCheck now with `airlock verify {}`; list with `airlock incidents`.\n",
        notify.join(", "),
        t.id
    ));
    let subject = format!("[airlock] integrity incident in {ws}, transfer {}", t.id);
    if let Err(e) = crate::notify::mail::send(server, &s.mail_from, &to, &subject, &body).await {
        tracing::warn!(transfer = %t.id, error = %e, "integrity alert email failed");
    }
}

/// The project's Programme and Project Managers, whom an integrity alert is for.
async fn alert_list(app: &App, t: &Transfer) -> crate::workflow::Result<Vec<String>> {
    let mut out: Vec<String> = app
        .store
        .users_with_role(Role::ProgrammeManager)
        .await?
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    if let Some(ws) = app.store.workspace(t.workspace_id).await? {
        for m in app.store.members(ws.project_id).await? {
            if m.role == Role::ProjectManager && m.state == "active" && !out.contains(&m.user) {
                out.push(m.user);
            }
        }
    }
    Ok(out)
}
