//! `airlock egress …` (a researcher's requests and the output checkers' votes, with a staff
//! token) and `airlock collect` (a recipient's download, with a collection token).

use super::client::{api, encode_path, send, staff_token};
use crate::domain::Role;
use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use reqwest::{Client, RequestBuilder};
use serde_json::Value;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum EgressCommand {
    /// Make a draft request of files and folders of the workspace's output volume (paths
    /// relative to it); prints its id. The positional paths are outputs, to be released.
    Create {
        #[arg(long)]
        workspace: String,
        /// What the outputs are, and why they are safe to release.
        #[arg(long)]
        context: String,
        /// The analysis script(s) that made the outputs (at least one).
        #[arg(long = "code", required = true)]
        code: Vec<String>,
        /// Files for the checkers only (the underlying counts, say): never released.
        #[arg(long = "supporting")]
        supporting: Vec<String>,
        /// User names of who may collect the outputs.
        #[arg(long = "recipient")]
        recipients: Vec<String>,
        /// A derived workspace (PROJECT/WORKSPACE) the outputs go to instead of recipients.
        #[arg(long)]
        target_workspace: Option<String>,
        /// `egress`, or `return-to-provider` (data back to its providers: the recipients must
        /// be Dataset Provider Representatives; collected with an IP-bound token).
        #[arg(long, default_value = "egress")]
        kind: String,
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Pin the request's files (copied and hashed) and send it to output checking.
    Submit { id: String },
    /// Take the request back before its outcome.
    Withdraw {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Vote on one output file, as an output checker.
    Vote {
        id: String,
        path: String,
        #[arg(long = "as")]
        role: Role,
        #[arg(
            long,
            conflicts_with = "request_changes",
            required_unless_present = "request_changes"
        )]
        approve: bool,
        #[arg(long)]
        request_changes: bool,
        #[arg(long, default_value = "")]
        comment: String,
        /// Who sees the comment: shared (with the researcher) or checkers.
        #[arg(long, default_value = "shared")]
        visibility: String,
    },
    /// Submit my review, once every output file has my vote.
    Review {
        id: String,
        #[arg(long = "as")]
        role: Role,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Acknowledge a disclosure finding, on the record.
    Acknowledge {
        id: String,
        #[arg(long = "as")]
        role: Role,
        #[arg(long)]
        finding: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Issue a recipient's collection token for a released request; prints it (shown once).
    Token {
        id: String,
        #[arg(long)]
        recipient: String,
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long = "cidr")]
        cidrs: Vec<String>,
        #[arg(long)]
        max_downloads: Option<u32>,
    },
    /// Revoke collection tokens of a request (all, or --token-id).
    RevokeTokens {
        id: String,
        #[arg(long)]
        token_id: Option<String>,
    },
    /// The disclosure checks' ACRO-compatible results.json.
    Results { id: String },
}

/// `airlock collect`: a recipient downloads a released package.
#[derive(Args, Debug)]
pub struct CollectArgs {
    #[arg(long, env = "AIRLOCK_COLLECT_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Folder to write the files into (resumes what is there); default `.`.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Write the whole package as one zip file instead.
    #[arg(long, conflicts_with = "output")]
    pub zip: Option<PathBuf>,
}

pub async fn egress(server: &str, cmd: &EgressCommand) -> anyhow::Result<()> {
    let http = Client::new();
    let token = staff_token()?;
    let auth = |r: RequestBuilder| r.bearer_auth(&token);
    let post = |path: String, body: Value| auth(http.post(api(server, &path))).json(&body);
    match cmd {
        EgressCommand::Create {
            workspace,
            context,
            code,
            supporting,
            recipients,
            target_workspace,
            kind,
            paths,
        } => {
            let mut files: Vec<Value> = Vec::new();
            for (list, role) in [
                (paths, "output"),
                (supporting, "supporting"),
                (code, "code"),
            ] {
                for p in list {
                    // A folder named as a shell completes it (`tables/`) is the folder.
                    let p = match p.trim_end_matches('/') {
                        "" => p.as_str(),
                        trimmed => trimmed,
                    };
                    files.push(serde_json::json!({ "path": p, "role": role }));
                }
            }
            let v: Value = send(post(
                "/egress".into(),
                serde_json::json!({
                    "workspace": workspace, "context": context, "files": files,
                    "recipients": recipients, "target_workspace": target_workspace,
                    "kind": kind,
                }),
            ))
            .await?
            .json()
            .await?;
            println!("{}", v["id"].as_str().unwrap_or_default());
        }
        EgressCommand::Submit { id } => {
            let v: Value = send(post(format!("/egress/{id}/submit"), Value::Null))
                .await?
                .json()
                .await?;
            println!(
                "{}: {} ({})",
                id,
                v["state"].as_str().unwrap_or("?"),
                v["root_digest"].as_str().unwrap_or("-")
            );
        }
        EgressCommand::Withdraw { id, reason } => {
            let v: Value = send(post(
                format!("/egress/{id}/withdraw"),
                serde_json::json!({ "reason": reason }),
            ))
            .await?
            .json()
            .await?;
            println!("{}: {}", id, v["state"].as_str().unwrap_or("?"));
        }
        EgressCommand::Vote {
            id,
            path,
            role,
            approve,
            request_changes,
            comment,
            visibility,
        } => {
            let vote = match (approve, request_changes) {
                (true, false) => "approve",
                (false, true) => "request-changes",
                _ => bail!("say --approve or --request-changes"),
            };
            send(post(
                format!("/egress/{id}/votes"),
                serde_json::json!({
                    "path": path, "as": role, "vote": vote, "comment": comment,
                    "visibility": visibility,
                }),
            ))
            .await?;
            println!("{path}: {vote}");
        }
        EgressCommand::Review { id, role, comment } => {
            let v: Value = send(post(
                format!("/egress/{id}/review"),
                serde_json::json!({ "as": role, "comment": comment }),
            ))
            .await?
            .json()
            .await?;
            println!(
                "{}: {} ({})",
                id,
                v["state"].as_str().unwrap_or("?"),
                v["state_reason"].as_str().unwrap_or("")
            );
        }
        EgressCommand::Acknowledge {
            id,
            role,
            finding,
            comment,
        } => {
            send(post(
                format!("/egress/{id}/acknowledge"),
                serde_json::json!({ "as": role, "finding": finding, "comment": comment }),
            ))
            .await?;
            println!("{finding}: acknowledged");
        }
        EgressCommand::Token {
            id,
            recipient,
            ttl,
            cidrs,
            max_downloads,
        } => {
            let v: Value = send(post(
                format!("/egress/{id}/collection-tokens"),
                serde_json::json!({
                    "recipient": recipient, "ttl": ttl, "cidrs": cidrs,
                    "max_downloads": max_downloads,
                }),
            ))
            .await?
            .json()
            .await?;
            eprintln!(
                "collection token {} for {recipient}, valid until {} (unix time); it is shown \
                 only this once",
                v["token_id"].as_str().unwrap_or("?"),
                v["expires_at"]
            );
            println!("{}", v["token"].as_str().unwrap_or_default());
        }
        EgressCommand::RevokeTokens { id, token_id } => {
            let v: Value = send(post(
                format!("/egress/{id}/collection-tokens/revoke"),
                serde_json::json!({ "token_id": token_id }),
            ))
            .await?
            .json()
            .await?;
            println!("revoked {} token(s)", v["revoked"]);
        }
        EgressCommand::Results { id } => {
            let v: Value = send(auth(
                http.get(api(server, &format!("/egress/{id}/results.json"))),
            ))
            .await?
            .json()
            .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    Ok(())
}

/// Downloads every file of the package (resuming any partial file with `Range`), checks
/// each one's SHA-256 against the package list and the `Repr-Digest`, and fails (exit 1)
/// on any mismatch.
pub async fn collect(server: &str, args: &CollectArgs) -> anyhow::Result<()> {
    use futures::StreamExt;
    use std::io::Write;
    let http = Client::new();
    let auth = |r: RequestBuilder| r.bearer_auth(&args.token);
    let pkg: Value = send(auth(http.get(api(server, "/collect"))))
        .await?
        .json()
        .await?;
    if let Some(zip) = &args.zip {
        let mut resp = send(auth(http.get(api(server, "/collect/package.zip")))).await?;
        let tmp = zip.with_extension("zip.part");
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        while let Some(chunk) = resp.chunk().await? {
            f.write_all(&chunk)?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, zip)?;
        eprintln!("package {} written to {}", pkg["id"], zip.display());
        return Ok(());
    }
    let out = args.output.clone().unwrap_or_else(|| PathBuf::from("."));
    let files = pkg["files"]
        .as_array()
        .ok_or_else(|| anyhow!("the server's package list has no files"))?;
    let mut bad = Vec::new();
    for f in files {
        let path = f["path"].as_str().unwrap_or_default();
        let want = f["sha256"].as_str().unwrap_or_default();
        let size = f["size"].as_u64().unwrap_or(0);
        let rel = crate::domain::RelPath::parse(path)
            .map_err(|e| anyhow!("the server named a bad path {path}: {e}"))?;
        let dest = out.join(rel.as_str());
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let part = dest.with_file_name(format!(
            "{}.part",
            dest.file_name().and_then(|n| n.to_str()).unwrap_or("file")
        ));
        // Already here and right: nothing to fetch.
        if dest.exists() && sha256_of(&dest)? == want {
            println!("{want}  {path}");
            continue;
        }
        let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let mut req = auth(http.get(api(
            server,
            &format!("/collect/files/{}", encode_path(path)),
        )));
        if have > 0 && have < size {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let resp = send(req).await?;
        let resumed = resp.status() == reqwest::StatusCode::PARTIAL_CONTENT;
        let digest_header = resp
            .headers()
            .get("repr-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(&part)
            .with_context(|| format!("cannot write {}", part.display()))?;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            file.write_all(&chunk?)?;
        }
        file.sync_all()?;
        drop(file);
        let got = sha256_of(&part)?;
        let header_ok = digest_header.as_deref().is_none_or(|h| {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD
                .encode(hex::decode(&got).unwrap_or_default());
            h == format!("sha-256=:{b64}:")
        });
        if got != want || !header_ok {
            bad.push(format!("{path}: sha256 {got}, the package says {want}"));
            continue;
        }
        std::fs::rename(&part, &dest)?;
        println!("{want}  {path}");
    }
    if !bad.is_empty() {
        for b in &bad {
            eprintln!("MISMATCH {b}");
        }
        bail!("{} file(s) did not match their digests", bad.len());
    }
    Ok(())
}

fn sha256_of(p: &std::path::Path) -> anyhow::Result<String> {
    let f = std::fs::File::open(p).with_context(|| format!("cannot read {}", p.display()))?;
    Ok(crate::hashing::hash_reader(f)?.sha256.to_string())
}
