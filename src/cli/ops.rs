//! `airlock verify | incidents | audit | bag | webhooks`: through the API when `AIRLOCK_TOKEN`
//! is set (to `--server`/`AIRLOCK_SERVER`), on the data directory otherwise (the System
//! Manager on the server, recorded as `admin-cli`). Both ways end in the same printers, fed
//! the same JSON, so they print the same thing.

use super::client::{api, encode_path, send, staff_token};
use super::{settings, AuditCommand, Cli, WebhookCommand};
use crate::app::App;
use crate::workflow::ops;
use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use reqwest::Client;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// The actor of what the CLI does on the data directory.
const ADMIN: &str = "admin-cli";

/// How a command reaches airlock.
enum Via {
    Api {
        http: Client,
        server: String,
        token: String,
    },
    DataDir(Arc<App>),
}

impl Via {
    async fn pick(cli: &Cli) -> anyhow::Result<Via> {
        if std::env::var("AIRLOCK_TOKEN").is_ok_and(|t| !t.trim().is_empty()) {
            return Ok(Via::Api {
                http: Client::new(),
                server: cli.server.clone(),
                token: staff_token()?,
            });
        }
        Ok(Via::DataDir(App::open(settings(cli)?).await?))
    }
}

impl Via {
    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        match self {
            Via::Api {
                http,
                server,
                token,
            } => http.get(api(server, path)).bearer_auth(token),
            Via::DataDir(_) => unreachable!("only called through the API"),
        }
    }
    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        match self {
            Via::Api {
                http,
                server,
                token,
            } => http.post(api(server, path)).bearer_auth(token),
            Via::DataDir(_) => unreachable!("only called through the API"),
        }
    }
}

/// Every item of a paged list route (`after` = the last item's `id`).
async fn all_pages(via: &Via, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Vec<Value>> {
    let mut out: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut q: Vec<(&str, &str)> = query.to_vec();
        let limit = ops::MAX_PAGE.to_string();
        q.push(("limit", &limit));
        if let Some(a) = &after {
            q.push(("after", a));
        }
        let page: Vec<Value> = send(via.get(path).query(&q)).await?.json().await?;
        let full = page.len() as u32 >= ops::MAX_PAGE;
        after = page
            .last()
            .and_then(|v| v["id"].as_str())
            .map(str::to_owned);
        out.extend(page);
        if !full || after.is_none() {
            return Ok(out);
        }
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(v)?)
}

/// A response body as a stream of chunks.
fn body_stream(resp: reqwest::Response) -> BoxStream<'static, std::io::Result<Bytes>> {
    resp.bytes_stream().map_err(std::io::Error::other).boxed()
}

/// `airlock verify TRANSFER | PROJECT/WORKSPACE`.
pub async fn verify(
    cli: &Cli,
    target: &str,
    json: bool,
    released_only: bool,
) -> anyhow::Result<()> {
    let via = Via::pick(cli).await?;
    let id = target.parse::<crate::domain::TransferId>().ok();
    let (query, scope) = if released_only {
        ("?released_only=true", crate::integrity::Scope::Released)
    } else {
        ("", crate::integrity::Scope::All)
    };
    let reports: Vec<Value> = match (&via, id) {
        (Via::Api { .. }, Some(id)) => {
            send(via.post(&format!("/transfers/{id}/verify{query}")))
                .await?
                .json()
                .await?
        }
        (Via::Api { .. }, None) => {
            let (p, w) = split_workspace(target)?;
            let path = format!(
                "/workspaces/{}/{}/verify{query}",
                encode_path(p),
                encode_path(w)
            );
            send(via.post(&path)).await?.json().await?
        }
        (Via::DataDir(app), id) => {
            let transfers = match id {
                Some(id) => vec![app
                    .store
                    .transfer(id)
                    .await?
                    .ok_or_else(|| anyhow!("no transfer {id}"))?],
                None => {
                    let (p, w) = split_workspace(target)?;
                    let ws = app
                        .store
                        .workspace_by_name(p, w)
                        .await?
                        .ok_or_else(|| anyhow!("no workspace {target}"))?;
                    ops::released_in(app, &ws).await?
                }
            };
            let reports = ops::verify_as(app, ADMIN, transfers, scope).await?;
            reports
                .iter()
                .map(to_value)
                .collect::<anyhow::Result<_>>()?
        }
    };
    print_reports(&reports, json)
}

fn split_workspace(target: &str) -> anyhow::Result<(&str, &str)> {
    target
        .split_once('/')
        .ok_or_else(|| anyhow!("`{target}` is neither a transfer id nor PROJECT/WORKSPACE"))
}

fn print_reports(reports: &[Value], json: bool) -> anyhow::Result<()> {
    let mut problems = 0;
    for r in reports {
        let named = r["problems"].as_array().map_or(&[][..], Vec::as_slice);
        let more = r["more_problems"].as_u64().unwrap_or(0);
        let n = named.len() as u64 + more;
        problems += n;
        if json {
            continue;
        }
        println!(
            "transfer {} ({}): {} copies verified, {} bytes, {n} problem(s)",
            r["transfer"].as_str().unwrap_or("?"),
            r["state"].as_str().unwrap_or("?"),
            r["ok"].as_u64().unwrap_or(0),
            r["bytes"].as_u64().unwrap_or(0),
        );
        for c in named {
            println!(
                "  {:<10} {}",
                c["result"].as_str().unwrap_or("?"),
                c["detail"].as_str().unwrap_or("")
            );
        }
        if more > 0 {
            println!(
                "  and {more} more (counted by kind in `--json`; each is in the fixity records)"
            );
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(reports)?);
    }
    if problems > 0 {
        bail!("{problems} problem(s) found");
    }
    Ok(())
}

/// `airlock incidents [--transfer ID] [--json] | --resolve ID --comment TEXT`.
pub async fn incidents(
    cli: &Cli,
    transfer: Option<&str>,
    json: bool,
    resolve: Option<&str>,
    comment: Option<&str>,
) -> anyhow::Result<()> {
    let via = Via::pick(cli).await?;
    if let Some(id) = resolve {
        let comment = comment.unwrap_or_default().trim();
        if comment.is_empty() {
            bail!("say how it was handled: --comment TEXT");
        }
        match &via {
            Via::Api { .. } => {
                send(
                    via.post(&format!("/incidents/{}/resolve", encode_path(id)))
                        .json(&serde_json::json!({ "comment": comment })),
                )
                .await?;
            }
            Via::DataDir(app) => match ops::resolve_as(app, ADMIN, id, comment).await {
                Err(crate::workflow::Error::Conflict(_)) => {
                    bail!("no open incident {id} (see `airlock incidents`)")
                }
                r => r?,
            },
        }
        println!("incident {id} resolved");
        return Ok(());
    }
    let list: Vec<Value> = match &via {
        Via::Api { .. } => {
            let q: Vec<(&str, &str)> = transfer.map(|t| ("transfer", t)).into_iter().collect();
            all_pages(&via, "/incidents", &q).await?
        }
        Via::DataDir(app) => {
            let t = match transfer {
                Some(t) => Some(t.parse().map_err(|e| anyhow!("{e}"))?),
                None => None,
            };
            app.store
                .incidents(t)
                .await?
                .iter()
                .map(|i| to_value(&ops::IncidentView::from(i)))
                .collect::<anyhow::Result<_>>()?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    for i in &list {
        println!(
            "{}  {}  {:<8} {:<18} {}  {}",
            s(&i["id"]),
            s(&i["created_at"]),
            s(&i["state"]),
            s(&i["kind"]),
            s(&i["transfer"]),
            s(&i["detail"]),
        );
    }
    if list.is_empty() {
        println!("no incidents");
    }
    Ok(())
}

/// `airlock audit verify | export | show`.
pub async fn audit(cli: &Cli, cmd: &AuditCommand) -> anyhow::Result<()> {
    let via = Via::pick(cli).await?;
    match cmd {
        AuditCommand::Verify { head } => {
            let v = match &via {
                Via::Api { .. } => {
                    let q: Vec<(&str, &str)> =
                        head.as_deref().map(|h| ("head", h)).into_iter().collect();
                    send(via.get("/audit/verify").query(&q))
                        .await?
                        .json()
                        .await?
                }
                Via::DataDir(app) => to_value(&ops::verify_audit(app, head.as_deref()).await?)?,
            };
            print_audit_verification(&v)
        }
        AuditCommand::Export { output } => {
            use std::io::Write;
            let mut body = match &via {
                Via::Api { .. } => body_stream(send(via.get("/audit/export")).await?),
                Via::DataDir(app) => ops::audit_lines(app.clone(), None),
            };
            let mut out: Box<dyn Write> = match output {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("cannot create {}", p.display()))?,
                )),
                None => Box::new(std::io::stdout().lock()),
            };
            while let Some(chunk) = body.next().await {
                out.write_all(&chunk?)?;
            }
            out.flush()?;
            Ok(())
        }
        AuditCommand::Show { transfer, json } => {
            let mut body = match &via {
                Via::Api { .. } => body_stream(
                    send(via.get(&format!("/transfers/{}/audit", encode_path(transfer)))).await?,
                ),
                Via::DataDir(app) => ops::audit_lines(app.clone(), Some(transfer.clone())),
            };
            let mut buf: Vec<u8> = Vec::new();
            while let Some(chunk) = body.next().await {
                buf.extend_from_slice(&chunk?);
                while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=end).collect();
                    print_event(&line[..line.len() - 1], *json)?;
                }
            }
            if !buf.is_empty() {
                print_event(&buf, *json)?;
            }
            Ok(())
        }
    }
}

fn print_event(line: &[u8], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", String::from_utf8_lossy(line));
        return Ok(());
    }
    let r: Value = serde_json::from_slice(line).context("an audit event that is not JSON")?;
    println!(
        "{:>6}  {}  {:<24} {:<40} {}",
        r["seq"].as_i64().unwrap_or(0),
        r["at"].as_str().unwrap_or(""),
        r["action"].as_str().unwrap_or(""),
        r["actor"].as_str().unwrap_or(""),
        r["detail"].as_str().unwrap_or("")
    );
    Ok(())
}

fn print_audit_verification(v: &Value) -> anyhow::Result<()> {
    if let Some(e) = v["error"].as_str() {
        bail!("{e}");
    }
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let file = v["anchor_file"].as_str().unwrap_or("?");
    if n("legacy") > 0 {
        println!(
            "{} event(s) from before the audit key checked by linkage only; {} keyed",
            n("legacy"),
            n("events") - n("legacy")
        );
    }
    match v["latest_anchor"].as_object() {
        Some(a) => println!(
            "anchors: {} in {file} agree with the chain; the latest vouches for event {} ({})",
            n("anchors"),
            a["seq"].as_i64().unwrap_or(0),
            a["at"].as_str().unwrap_or("?")
        ),
        None => println!(
            "anchors: none yet in {file} (the server anchors on a schedule and at shutdown): \
             a deleted tail would not be noticed"
        ),
    }
    if let Some(p) = v["pinned"].as_object() {
        let hash = p["hash"].as_str().unwrap_or("");
        match p["seq"].as_i64() {
            None => bail!("the pinned head {hash} is not in the chain: events were rewritten"),
            Some(seq) => println!(
                "pinned head found at event {seq}; {} event(s) after it",
                p["after"].as_u64().unwrap_or(0)
            ),
        }
    }
    println!(
        "ok: {} events, head {}",
        n("events"),
        v["head"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// `airlock bag ID --output DIR`.
pub async fn bag(cli: &Cli, id: &str, output: &Path) -> anyhow::Result<()> {
    let via = Via::pick(cli).await?;
    let (bytes, n) = match &via {
        Via::DataDir(app) => {
            let id = id.parse().map_err(|e| anyhow!("{e}"))?;
            crate::integrity::bag::export(app, id, output).await?
        }
        Via::Api { .. } => {
            if output.exists()
                && std::fs::read_dir(output)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(true)
            {
                bail!("{} exists and is not an empty folder", output.display());
            }
            let resp = send(via.get(&format!("/transfers/{}/bag", encode_path(id)))).await?;
            let reader = tokio_util::io::StreamReader::new(body_stream(resp));
            let out = output.to_owned();
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                let sync = tokio_util::io::SyncIoBridge::new_with_handle(reader, handle);
                unpack_bag(sync, &out)
            })
            .await??
        }
    };
    println!(
        "bag written to {}: {n} files, {bytes} bytes",
        output.display()
    );
    Ok(())
}

/// Unpacks the server's bag tar (everything under one top folder) into `out`, refusing any
/// entry that is not a plain relative path of regular files. Returns the payload's bytes and
/// file count.
fn unpack_bag(r: impl std::io::Read, out: &Path) -> anyhow::Result<(u64, usize)> {
    use std::path::Component;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut a = tar::Archive::new(r);
    let (mut bytes, mut files) = (0u64, 0usize);
    for e in a.entries()? {
        let mut e = e?;
        if e.header().entry_type() != tar::EntryType::Regular {
            bail!("the bag holds an entry that is not a file");
        }
        let path = e.path()?.into_owned();
        let mut parts = path.components();
        parts.next(); // the bag's top folder
        let rel: std::path::PathBuf = parts.collect();
        if rel.as_os_str().is_empty()
            || rel.components().any(|c| !matches!(c, Component::Normal(_)))
        {
            bail!("the bag holds a refused path {}", path.display());
        }
        if rel.starts_with("data") {
            bytes += e.size();
            files += 1;
        }
        let dest = out.join(&rel);
        if let Some(p) = dest.parent() {
            std::fs::create_dir_all(p)?;
        }
        let mut f = std::fs::File::create(&dest)
            .with_context(|| format!("cannot create {}", dest.display()))?;
        std::io::copy(&mut e, &mut f)?;
        f.sync_all()?;
    }
    if files == 0 && !out.join("bagit.txt").exists() {
        bail!("the server sent no bag");
    }
    Ok((bytes, files))
}

/// `airlock webhooks list | retry`.
pub async fn webhooks(cli: &Cli, cmd: &WebhookCommand) -> anyhow::Result<()> {
    let via = Via::pick(cli).await?;
    match cmd {
        WebhookCommand::List { state, json } => {
            if let Some(s) = state {
                if !["pending", "delivered", "failed"].contains(&s.as_str()) {
                    bail!("--state must be pending, delivered or failed, not `{s}`");
                }
            }
            let ds: Vec<Value> = match &via {
                Via::Api { .. } => {
                    let q: Vec<(&str, &str)> =
                        state.as_deref().map(|s| ("state", s)).into_iter().collect();
                    all_pages(&via, "/webhooks", &q).await?
                }
                Via::DataDir(app) => app
                    .store
                    .deliveries(state.as_deref())
                    .await?
                    .iter()
                    .map(to_value)
                    .collect::<anyhow::Result<_>>()?,
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&ds)?);
            } else {
                let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                for d in ds {
                    println!(
                        "{}  {:<9} {:>2} attempt(s)  seq {:<6} {:<28} {}  {}",
                        s(&d["id"]),
                        s(&d["state"]),
                        d["attempts"].as_i64().unwrap_or(0),
                        d["audit_seq"].as_i64().unwrap_or(0),
                        s(&d["event"]),
                        s(&d["url"]),
                        s(&d["last_error"])
                    );
                }
            }
        }
        WebhookCommand::Retry { id } => {
            match &via {
                Via::Api { .. } => {
                    send(via.post(&format!("/webhooks/{}/retry", encode_path(id)))).await?;
                }
                Via::DataDir(app) => ops::retry_as(app, ADMIN, id).await?,
            }
            println!("{id}: queued again");
        }
    }
    Ok(())
}
