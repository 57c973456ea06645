//! Client commands: talk to a running server over its JSON API.

use super::{
    Confirm, Decide, MemberCommand, ProjectApiCommand, RefereeCommand, TokenApiCommand,
    TransferCommand, UserApiCommand,
};
use crate::auth::peek_claims;
use anyhow::{anyhow, bail, Context};
use reqwest::{Client, RequestBuilder, Response};
use serde_json::Value;

pub(super) fn staff_token() -> anyhow::Result<String> {
    std::env::var("AIRLOCK_TOKEN").map_err(|_| {
        anyhow!("set AIRLOCK_TOKEN to a staff token (airlock admin token USER prints one)")
    })
}

/// Sends a request and turns an error status into the server's message.
pub(super) async fn send(req: RequestBuilder) -> anyhow::Result<Response> {
    let resp = req
        .send()
        .await
        .context("cannot reach the airlock server")?;
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or(text);
    bail!("{status}: {msg}")
}

pub(super) fn api(server: &str, path: &str) -> String {
    format!("{}/api/v1{path}", server.trim_end_matches('/'))
}

/// Percent-encodes a relative path for a URL, segment by segment.
pub(super) fn encode_path(p: &str) -> String {
    p.split('/')
        .map(|seg| {
            seg.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn confirm_body(c: &Confirm) -> anyhow::Result<Value> {
    let sums = c
        .sha256sums
        .as_ref()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display())))
        .transpose()?;
    Ok(serde_json::json!({ "sha256sums": sums, "expected_root_digest": c.root_digest }))
}

pub async fn transfer(server: &str, cmd: &TransferCommand) -> anyhow::Result<()> {
    let http = Client::new();
    let token = staff_token()?;
    let auth = |r: RequestBuilder| r.bearer_auth(&token);
    match cmd {
        TransferCommand::Create {
            workspace,
            kind,
            uploader,
        } => {
            let v: Value = send(auth(http.post(api(server, "/transfers"))).json(
                &serde_json::json!({
                    "workspace": workspace, "kind": kind, "uploader": uploader,
                }),
            ))
            .await?
            .json()
            .await?;
            println!("{}", v["id"].as_str().unwrap_or_default());
        }
        TransferCommand::Token { id, ttl, cidrs } => {
            let v: Value = send(
                auth(http.post(api(server, &format!("/transfers/{id}/tokens"))))
                    .json(&serde_json::json!({ "ttl": ttl, "cidrs": cidrs })),
            )
            .await?
            .json()
            .await?;
            eprintln!(
                "upload token for transfer {id}, valid until {}; it is shown only this once",
                v["expires_at"].as_str().unwrap_or("?")
            );
            println!("{}", v["token"].as_str().unwrap_or_default());
        }
        TransferCommand::RevokeToken { id } => {
            let v: Value = send(auth(
                http.post(api(server, &format!("/transfers/{id}/tokens/revoke"))),
            ))
            .await?
            .json()
            .await?;
            println!("revoked {} token(s)", v["revoked"]);
        }
        TransferCommand::Show { id, json } => {
            let v: Value = send(auth(http.get(api(server, &format!("/transfers/{id}")))))
                .await?
                .json()
                .await?;
            let files = Pages::new(
                &http,
                server,
                &token,
                &format!("/transfers/{id}/files"),
                "files",
            );
            let verdicts = Pages::new(
                &http,
                server,
                &token,
                &format!("/transfers/{id}/verdicts"),
                "verdicts",
            );
            if *json {
                show_json(v, verdicts, files).await?;
            } else {
                print_transfer(&v, files, verdicts).await?;
            }
        }
        TransferCommand::List { workspace, json } => {
            let v: Value = send(auth(
                http.get(api(server, "/transfers"))
                    .query(&[("workspace", workspace)]),
            ))
            .await?
            .json()
            .await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for t in v.as_array().into_iter().flatten() {
                    println!(
                        "{}  {:<16} {:<11} {} files  {}",
                        t["id"].as_str().unwrap_or_default(),
                        t["kind"].as_str().unwrap_or_default(),
                        t["state"].as_str().unwrap_or_default(),
                        t["file_count"],
                        t["state_reason"].as_str().unwrap_or_default()
                    );
                }
            }
        }
        TransferCommand::Seal { id, confirm, wait } => {
            print_state(
                auth(http.post(api(server, &format!("/transfers/{id}/seal"))))
                    .json(&confirm_body(confirm)?),
            )
            .await?;
            if *wait {
                loop {
                    let v: Value = send(auth(http.get(api(server, &format!("/transfers/{id}")))))
                        .await?
                        .json()
                        .await?;
                    let state = v["state"].as_str().unwrap_or_default();
                    if !matches!(state, "sealed" | "scanning") {
                        println!(
                            "{state}: {}",
                            v["state_reason"].as_str().unwrap_or_default()
                        );
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
        TransferCommand::Approve(d) => decide(&http, &token, server, "approve", d).await?,
        TransferCommand::Reject(d) => decide(&http, &token, server, "reject", d).await?,
        TransferCommand::Return(d) => decide(&http, &token, server, "return", d).await?,
        TransferCommand::Revoke { id, reason } => {
            print_state(
                auth(http.post(api(server, &format!("/transfers/{id}/revoke"))))
                    .json(&serde_json::json!({ "reason": reason })),
            )
            .await?;
        }
        TransferCommand::Confirm { id, root_digest } => {
            print_state(
                auth(http.post(api(server, &format!("/transfers/{id}/confirm"))))
                    .json(&serde_json::json!({ "root_digest": root_digest })),
            )
            .await?;
        }
        TransferCommand::Cancel { id } => {
            let v: Value = send(auth(
                http.post(api(server, &format!("/transfers/{id}/cancel"))),
            ))
            .await?
            .json()
            .await?;
            println!("{}", v["state"].as_str().unwrap_or_default());
        }
    }
    Ok(())
}

/// A decision, bound to the root digest and policy version the reviewer saw.
async fn decide(
    http: &Client,
    token: &str,
    server: &str,
    verb: &str,
    d: &Decide,
) -> anyhow::Result<()> {
    let id = &d.id;
    let (root, version) = match &d.root_digest {
        Some(r) => (r.clone(), None),
        None => {
            let v: Value = send(
                http.get(api(server, &format!("/transfers/{id}")))
                    .bearer_auth(token),
            )
            .await?
            .json()
            .await?;
            let root = v["root_digest"].as_str().unwrap_or_default().to_owned();
            let version = v["policy"]["version"].as_str().map(str::to_owned);
            eprintln!(
                "deciding on root digest {root} under policy {}",
                version.as_deref().unwrap_or("?")
            );
            (root, version)
        }
    };
    print_state(
        http.post(api(server, &format!("/transfers/{id}/{verb}")))
            .bearer_auth(token)
            .json(&serde_json::json!({
                "as": d.role, "comment": d.comment, "root_digest": root, "policy_version": version,
                "acknowledge_unscannable": d.acknowledge_unscannable,
            })),
    )
    .await
}

pub async fn referee(server: &str, cmd: &RefereeCommand) -> anyhow::Result<()> {
    let http = Client::new();
    let token = staff_token()?;
    let (id, user, path) = match cmd {
        RefereeCommand::Assign { id, user } => (id, user, format!("/transfers/{id}/referees")),
        RefereeCommand::Approve { id, user } => {
            (id, user, format!("/transfers/{id}/referees/approve"))
        }
    };
    let v: Value = send(
        http.post(api(server, &path))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "user": user })),
    )
    .await?
    .json()
    .await?;
    for r in v.as_array().into_iter().flatten() {
        println!(
            "{id}  referee {}  {}",
            r["user"].as_str().unwrap_or_default(),
            r["state"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

pub async fn member(server: &str, cmd: &MemberCommand) -> anyhow::Result<()> {
    let http = Client::new();
    let token = staff_token()?;
    let print = |m: &Value| {
        println!(
            "{:<20} {:<18} {}",
            m["user"].as_str().unwrap_or_default(),
            m["role"].as_str().unwrap_or_default(),
            m["state"].as_str().unwrap_or_default()
        )
    };
    match cmd {
        MemberCommand::Add {
            project,
            user,
            role,
        }
        | MemberCommand::Approve {
            project,
            user,
            role,
        } => {
            let path = if matches!(cmd, MemberCommand::Add { .. }) {
                format!("/projects/{project}/members")
            } else {
                format!("/projects/{project}/members/approve")
            };
            let v: Value = send(
                http.post(api(server, &path))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({ "user": user, "role": role })),
            )
            .await?
            .json()
            .await?;
            print(&v);
        }
        MemberCommand::Remove {
            project,
            user,
            role,
            reason,
        } => {
            let v: Value = send(
                http.post(api(server, &format!("/projects/{project}/members/remove")))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({ "user": user, "role": role, "reason": reason })),
            )
            .await?
            .json()
            .await?;
            let roles: Vec<&str> = v["roles"]
                .as_array()
                .map(|a| a.iter().filter_map(|r| r.as_str()).collect())
                .unwrap_or_default();
            println!(
                "removed {} ({}) from {project}; approvals voided on {} transfer(s)",
                v["user"].as_str().unwrap_or_default(),
                roles.join(", "),
                v["voided_on"].as_array().map_or(0, |a| a.len())
            );
        }
        MemberCommand::List { project, json } => {
            let v: Value = send(
                http.get(api(server, &format!("/projects/{project}/members")))
                    .bearer_auth(&token),
            )
            .await?
            .json()
            .await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                v.as_array().into_iter().flatten().for_each(print);
            }
        }
    }
    Ok(())
}

pub async fn user(server: &str, cmd: &UserApiCommand) -> anyhow::Result<()> {
    let (name, roles) = match cmd {
        UserApiCommand::Add { name, roles } => (name, roles),
        UserApiCommand::Disable { name, reason } => {
            let v: Value = send(
                Client::new()
                    .post(api(server, &format!("/users/{name}/disable")))
                    .bearer_auth(staff_token()?)
                    .json(&serde_json::json!({ "reason": reason })),
            )
            .await?
            .json()
            .await?;
            println!(
                "{} disabled: {} staff token(s) revoked, approvals voided on {} transfer(s)",
                v["user"].as_str().unwrap_or_default(),
                v["tokens_revoked"],
                v["voided_on"].as_array().map_or(0, |a| a.len())
            );
            return Ok(());
        }
    };
    let v: Value = send(
        Client::new()
            .post(api(server, "/users"))
            .bearer_auth(staff_token()?)
            .json(&serde_json::json!({ "name": name, "roles": roles })),
    )
    .await?
    .json()
    .await?;
    println!("{}", v["name"].as_str().unwrap_or_default());
    Ok(())
}

pub async fn token(server: &str, cmd: &TokenApiCommand) -> anyhow::Result<()> {
    let TokenApiCommand::Revoke { id, user } = cmd;
    let v: Value = send(
        Client::new()
            .post(api(server, "/tokens/revoke"))
            .bearer_auth(staff_token()?)
            .json(&serde_json::json!({ "id": id, "user": user })),
    )
    .await?
    .json()
    .await?;
    let n = v["revoked"].as_array().map_or(0, |a| a.len());
    println!(
        "revoked {n} staff token(s) of {}",
        v["user"].as_str().unwrap_or_default()
    );
    Ok(())
}

pub async fn project(server: &str, cmd: &ProjectApiCommand) -> anyhow::Result<()> {
    let ProjectApiCommand::Create { name } = cmd;
    let v: Value = send(
        Client::new()
            .post(api(server, "/projects"))
            .bearer_auth(staff_token()?)
            .json(&serde_json::json!({ "name": name })),
    )
    .await?
    .json()
    .await?;
    println!("{}", v["name"].as_str().unwrap_or_default());
    Ok(())
}

/// Sends a request that answers with a transfer, and prints `state: reason`.
async fn print_state(req: RequestBuilder) -> anyhow::Result<()> {
    let v: Value = send(req).await?.json().await?;
    println!(
        "{}: {}",
        v["state"].as_str().unwrap_or_default(),
        v["state_reason"].as_str().unwrap_or_default()
    );
    Ok(())
}

/// A paginated listing (`{"files": [...], "next": PATH|null}`), fetched a page at a time.
struct Pages<'a> {
    http: &'a Client,
    url: String,
    /// The key of the page's list (`files`, `verdicts`).
    key: &'static str,
    token: &'a str,
    next: Option<String>,
    done: bool,
}

impl<'a> Pages<'a> {
    fn new(http: &'a Client, server: &str, token: &'a str, path: &str, key: &'static str) -> Self {
        Self {
            http,
            url: api(server, path),
            key,
            token,
            next: None,
            done: false,
        }
    }

    /// The next page's items, or `None` after the last.
    async fn next_page(&mut self) -> anyhow::Result<Option<Vec<Value>>> {
        if self.done {
            return Ok(None);
        }
        let mut req = self.http.get(&self.url).bearer_auth(self.token);
        if let Some(after) = &self.next {
            req = req.query(&[("after", after)]);
        }
        let mut v: Value = send(req).await?.json().await?;
        self.next = v["next"].as_str().map(str::to_owned);
        self.done = self.next.is_none();
        Ok(Some(match v[self.key].take() {
            Value::Array(items) => items,
            _ => bail!("{}: the server's page has no `{}` list", self.url, self.key),
        }))
    }
}

/// Writes a page listing's items as the elements of a JSON array (the brackets are the
/// caller's), one per line at `indent`.
async fn stream_items(
    out: &mut impl std::io::Write,
    mut pages: Pages<'_>,
    indent: &str,
) -> anyhow::Result<()> {
    let mut first = true;
    while let Some(page) = pages.next_page().await? {
        for item in page {
            write!(out, "{}\n{indent}", if first { "" } else { "," })?;
            first = false;
            serde_json::to_writer(&mut *out, &item)?;
        }
    }
    if !first {
        write!(out, "\n{}", &indent[..indent.len().saturating_sub(2)])?;
    }
    Ok(())
}

/// `transfer show --json`: the summary, with every verdict in `scans.verdicts` and every file
/// in `files`, written as the pages arrive, so a 100,000-file transfer never sits in memory
/// here either.
async fn show_json(
    mut summary: Value,
    verdicts: Pages<'_>,
    files: Pages<'_>,
) -> anyhow::Result<()> {
    use std::io::Write;
    let Some(obj) = summary.as_object_mut() else {
        bail!("the server's summary is not a JSON object");
    };
    let mut scans = obj.remove("scans").unwrap_or_else(|| serde_json::json!({}));
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // Everything but `scans` as the server sent it, then `scans` and `files` streamed.
    let head = serde_json::to_string_pretty(&summary)?;
    let head = head
        .trim_end()
        .strip_suffix('}')
        .unwrap_or(&head)
        .trim_end();
    let sep = if head.ends_with('{') { "" } else { "," };
    write!(out, "{head}{sep}\n  \"scans\": ")?;
    if let Some(s) = scans.as_object_mut() {
        s.remove("verdicts");
    }
    let scans = serde_json::to_string(&scans)?;
    let scans = scans.strip_suffix('}').unwrap_or(&scans);
    let sep = if scans.ends_with('{') { "" } else { "," };
    write!(out, "{scans}{sep}\"verdicts\": [")?;
    stream_items(&mut out, verdicts, "      ").await?;
    write!(out, "]}},\n  \"files\": [")?;
    stream_items(&mut out, files, "    ").await?;
    writeln!(out, "]\n}}")?;
    out.flush()?;
    Ok(())
}

/// An egress request's own part of `transfer show`.
fn print_egress(v: &Value) {
    let list = |k: &str| -> Vec<Value> { v[k].as_array().cloned().unwrap_or_default() };
    let s = |x: &Value| x.as_str().unwrap_or_default().to_owned();
    println!("context    {}", s(&v["context"]));
    println!("round      {}", v["round"]);
    match v["target_workspace"].as_str() {
        Some(w) => println!("target     {w} (derived workspace)"),
        None => println!(
            "recipients {}",
            list("recipients")
                .iter()
                .map(s)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
    for f in list("pinned") {
        if let Some(c) = f["changed_on_disk"].as_str() {
            println!("CHANGED    {}: {c}", s(&f["path"]));
        }
    }
    let findings = v["disclosure"]["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    println!("findings   {}", findings.len());
    for f in &findings {
        let ack: Vec<String> = f["acknowledged_by"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        println!(
            "  {:<6} {:<7} {:<18} {} {}: {}{}",
            s(&f["id"]),
            s(&f["status"]),
            s(&f["rule"]),
            s(&f["path"]),
            f["location"],
            s(&f["message"]),
            if ack.is_empty() {
                String::new()
            } else {
                format!(" [acknowledged by {}]", ack.join(", "))
            }
        );
    }
    for x in list("votes") {
        println!(
            "vote       {} ({}) {} {}{}",
            s(&x["user"]),
            s(&x["role"]),
            s(&x["vote"]),
            s(&x["path"]),
            match x["comment"].as_str() {
                Some(c) if !c.is_empty() => format!(": {c}"),
                _ => String::new(),
            }
        );
    }
    for r in list("reviews") {
        println!(
            "review     {} ({}) {}",
            s(&r["user"]),
            s(&r["role"]),
            s(&r["outcome"])
        );
    }
    for d in list("released_before") {
        println!(
            "before     {} released by {}: {}",
            s(&d["path"]),
            s(&d["released_by"]),
            if d["same_bytes"] == true {
                "same bytes".to_owned()
            } else {
                format!("{} cell(s) changed {}", d["changed_cells"], d["cells"])
            }
        );
    }
    for c in list("collections") {
        println!(
            "collected  {} from {} {} ({} bytes, {})",
            s(&c["recipient"]),
            s(&c["client"]),
            s(&c["what"]),
            c["bytes"],
            s(&c["started_at"])
        );
    }
}

async fn print_transfer(
    v: &Value,
    mut files: Pages<'_>,
    mut verdicts: Pages<'_>,
) -> anyhow::Result<()> {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
    println!("transfer   {}", s("id"));
    println!("kind       {}", s("kind"));
    println!("workspace  {} (tier {})", s("workspace"), v["tier"]);
    println!("state      {}: {}", s("state"), s("state_reason"));
    println!("uploader   {}", s("uploader"));
    println!("root       {}", s("root_digest"));
    println!(
        "policy     {} (version {})",
        v["policy"]["file"].as_str().unwrap_or("-"),
        v["policy"]["version"].as_str().unwrap_or("-")
    );
    for r in v["referees"].as_array().into_iter().flatten() {
        println!(
            "referee    {} ({})",
            r["user"].as_str().unwrap_or_default(),
            r["state"].as_str().unwrap_or_default()
        );
    }
    for a in v["awaiting"].as_array().into_iter().flatten() {
        let from: Vec<&str> = a["from"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "awaiting   {} {} from {}",
            a["needed"],
            a["role"].as_str().unwrap_or_default(),
            if from.is_empty() {
                "(nobody yet)".to_owned()
            } else {
                from.join(", ")
            }
        );
    }
    if let Some(loc) = v["release"]["location"].as_str() {
        println!("released   {loc}");
    }
    if v.get("context").is_some() {
        print_egress(v);
    }
    println!(
        "files      {} ({} bytes)",
        v["file_count"], v["total_bytes"]
    );
    while let Some(page) = files.next_page().await? {
        for f in page {
            println!(
                "  {}  {:>12}  {}{}",
                f["sha256"].as_str().unwrap_or("(incomplete)"),
                f["size"],
                f["path"].as_str().unwrap_or_default(),
                f["role"]
                    .as_str()
                    .map(|r| format!("  ({r})"))
                    .unwrap_or_default()
            );
        }
    }
    let c = &v["scans"]["counts"];
    println!(
        "scans      {} clean, {} infected, {} unscannable, {} error{}",
        c["clean"],
        c["infected"],
        c["unscannable"],
        c["error"],
        if v["scans"]["ack_required"] == true {
            " (a Referee must acknowledge the unscannable files when approving)"
        } else {
            ""
        }
    );
    while let Some(page) = verdicts.next_page().await? {
        for s in page.iter().filter(|s| s["verdict"] != "clean") {
            let member = s["member"]
                .as_str()
                .map(|m| format!("!{m}"))
                .unwrap_or_default();
            println!(
                "  {:<11} {}{member}: {} ({} {}{})",
                s["verdict"].as_str().unwrap_or_default(),
                s["path"].as_str().unwrap_or_default(),
                s["detail"].as_str().unwrap_or_default(),
                s["scanner"].as_str().unwrap_or_default(),
                s["scanner_version"].as_str().unwrap_or_default(),
                s["db_version"]
                    .as_str()
                    .map(|d| format!(", database {d}"))
                    .unwrap_or_default(),
            );
        }
    }
    for i in v["incidents"].as_array().into_iter().flatten() {
        println!(
            "incident   {} ({}): {}",
            i["kind"].as_str().unwrap_or_default(),
            i["state"].as_str().unwrap_or_default(),
            i["detail"].as_str().unwrap_or_default()
        );
    }
    for d in v["decisions"].as_array().into_iter().flatten() {
        let void = d["void_reason"]
            .as_str()
            .map(|r| format!(" [void: {r}]"))
            .unwrap_or_default();
        println!(
            "decision   {} {} as {} at {}: {}{void}",
            d["user"].as_str().unwrap_or_default(),
            d["decision"].as_str().unwrap_or_default(),
            d["role"].as_str().unwrap_or_default(),
            d["at"].as_str().unwrap_or_default(),
            d["comment"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

pub(super) fn transfer_of(token: &str) -> anyhow::Result<String> {
    peek_claims(token)
        .map(|c| c.sub)
        .ok_or_else(|| anyhow!("that does not look like an airlock upload token"))
}

pub async fn seal_with_token(server: &str, token: &str, confirm: &Confirm) -> anyhow::Result<()> {
    let tid = transfer_of(token)?;
    let v: Value = send(
        Client::new()
            .post(api(server, &format!("/transfers/{tid}/seal")))
            .bearer_auth(token)
            .json(&confirm_body(confirm)?),
    )
    .await?
    .json()
    .await?;
    println!(
        "{}: {}\nroot digest {}",
        v["state"].as_str().unwrap_or_default(),
        v["state_reason"].as_str().unwrap_or_default(),
        v["root_digest"].as_str().unwrap_or_default()
    );
    Ok(())
}

/// `airlock ui`: mints a one-time sign-in link for the token's user and opens it in the
/// desktop's browser (`xdg-open`), or prints it (`--print`, or when nothing can open it).
pub async fn ui(server: &str, print: bool) -> anyhow::Result<()> {
    let v: Value = send(
        Client::new()
            .post(api(server, "/login-links"))
            .bearer_auth(staff_token()?),
    )
    .await?
    .json()
    .await?;
    let url = v["url"]
        .as_str()
        .context("the server answered without a link")?;
    let opened = !print
        && std::env::var_os("DISPLAY")
            .or_else(|| std::env::var_os("WAYLAND_DISPLAY"))
            .is_some()
        && std::process::Command::new("xdg-open")
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if opened {
        eprintln!("opened a sign-in link in your browser (it works once, for 10 minutes)");
    } else {
        println!("{url}");
    }
    Ok(())
}
