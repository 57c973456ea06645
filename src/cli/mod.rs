//! The `airlock` command line: `serve`, `admin` (works on the data directory directly) and the
//! client commands that talk to a running server (`transfer`, `upload`, `seal`).

mod client;
mod egress;
mod ops;
pub use egress::{CollectArgs, EgressCommand};
pub mod upload;

use crate::app::App;
use crate::config::Settings;
use crate::domain::Role;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "airlock",
    version,
    about = "The door of a Trusted Research Environment"
)]
pub struct Cli {
    /// TOML config file (then AIRLOCK__SECTION__KEY variables override it).
    #[arg(long, global = true, env = "AIRLOCK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (database, keys, volumes). Default ./airlock-data.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Server URL for client commands.
    #[arg(
        long,
        global = true,
        env = "AIRLOCK_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the service.
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Open the browser UI signed in: with AIRLOCK_TOKEN, mints a one-time sign-in link for
    /// you and opens it (or prints it with --print, or when no desktop browser is there).
    Ui {
        #[arg(long)]
        print: bool,
    },
    /// Bootstrap users, projects, workspaces and staff tokens (no server needed).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// The hash-chained audit log: through the server with AIRLOCK_TOKEN (a System Manager's,
    /// or a project manager's for `show`), else read from the data directory.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Webhook deliveries: through the server with AIRLOCK_TOKEN (a System Manager's), else
    /// read from the data directory.
    #[command(subcommand)]
    Webhooks(WebhookCommand),
    /// Scan local files with the configured scanners (scanners/, or `[scanning] dir`), as the
    /// pipeline would: to check a clamd setup, or a file before sending it. Exits 1 if any
    /// verdict is not clean. No server or data directory needed.
    Scan {
        /// Scanners to run (default: every configured one but the archive inspector).
        #[arg(long = "scanner")]
        scanners: Vec<String>,
        /// Files scanned at once (default: clamav.toml's concurrency).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Print only a summary line (files, bytes, seconds, MiB/s).
        #[arg(long)]
        quiet: bool,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run the egress disclosure checks on local files, as `egress submit` will (scanners/
    /// disclosure.toml, or `[scanning] dir`): each finding with its rule and location, never
    /// the value. Exits 1 if any finding fails. No server or data directory needed.
    Disclosure {
        /// One JSON report per file (the per-file part of results.json).
        #[arg(long)]
        json: bool,
        /// Print only a summary line (files, bytes, seconds, MB/s, findings).
        #[arg(long)]
        quiet: bool,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Re-hash files at rest now against the sealed manifest: a transfer (by id: its quarantine
    /// copy and, once released, its read-only copy), or every transfer released into a
    /// workspace (PROJECT/WORKSPACE). Records the results and raises incidents as the
    /// scheduler does. Exits 1 on any problem. Through the server with AIRLOCK_TOKEN (a
    /// manager of the project), else on the data directory.
    Verify {
        target: String,
        #[arg(long)]
        json: bool,
        /// Only the released (read-only) copies, not the quarantine copies: half the reading
        /// for a release, and what a workspace actually reads.
        #[arg(long)]
        released_only: bool,
    },
    /// Export a released transfer as a BagIt bag (RFC 8493) into OUTPUT: its files under
    /// data/, with manifest-sha256.txt (also `sha256sum -c`-able), bag-info.txt
    /// (Payload-Oxum) and tagmanifest-sha256.txt. Through the server with AIRLOCK_TOKEN (a
    /// manager of the project; the bag comes as a tar stream), else on the data directory.
    Bag {
        id: String,
        #[arg(long)]
        output: PathBuf,
    },
    /// Hash local files and folders with airlock's engine (files in parallel on all cores):
    /// prints `SHA256  BLAKE3  SIZE  PATH` per file, or with --digest sha256 a `sha256sum -c`
    /// file, or with --digest blake3 a `b3sum -c` file. A provider can make their SHA256SUMS
    /// with it before sending.
    Hash {
        #[arg(long, default_value = "both", value_parser = ["both", "sha256", "blake3"])]
        digest: String,
        /// Print only a summary line.
        #[arg(long)]
        quiet: bool,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Incidents (integrity, scan, hash confirmation) with their state: through the server
    /// with AIRLOCK_TOKEN (a manager's: their projects' incidents), else from the data directory.
    /// `--resolve ID --comment TEXT` marks one handled (audited); if the problem is still
    /// there, the next check raises it again.
    Incidents {
        #[arg(long)]
        transfer: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(long, requires = "comment")]
        resolve: Option<String>,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Work with transfers (needs AIRLOCK_TOKEN, a staff token).
    #[command(subcommand)]
    Transfer(TransferCommand),
    /// Egress requests: a researcher's outputs, checked by output checkers, collected by
    /// named recipients (needs AIRLOCK_TOKEN, a staff token).
    #[command(subcommand)]
    Egress(EgressCommand),
    /// Download a released egress package with a recipient's collection token: resumable
    /// (run it again after an interruption); every file's digest is checked; exit 1 on a
    /// mismatch.
    Collect(CollectArgs),
    /// Referees of a transfer (needs AIRLOCK_TOKEN).
    #[command(subcommand)]
    Referee(RefereeCommand),
    /// Members of a project (needs AIRLOCK_TOKEN).
    #[command(subcommand)]
    Member(MemberCommand),
    /// Users of the system, through the server (needs AIRLOCK_TOKEN of a Programme Manager).
    #[command(subcommand)]
    User(UserApiCommand),
    /// Projects, through the server (needs AIRLOCK_TOKEN of a Programme Manager).
    #[command(subcommand)]
    Project(ProjectApiCommand),
    /// Staff tokens, through the server (needs AIRLOCK_TOKEN).
    #[command(subcommand)]
    Token(TokenApiCommand),
    /// Upload files and folders with an upload token: resumable (run the same command again
    /// after an interruption), parallel, small files packed into tar batches. Relative paths
    /// are kept; an absolute path or one climbing out with `..` lands under its last
    /// component. Prints `SHA256  PATH` for every file on the server (sha256sum format).
    Upload(UploadArgs),
    /// Seal the transfer of an upload token: nothing more can be added, the token dies.
    Seal {
        #[arg(long, env = "AIRLOCK_UPLOAD_TOKEN")]
        token: String,
        #[command(flatten)]
        confirm: Confirm,
    },
}

/// `airlock upload`: see [`upload`] for the mechanism.
#[derive(Args, Debug, Clone)]
pub struct UploadArgs {
    #[arg(long, env = "AIRLOCK_UPLOAD_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Files or folders to send (`.` sends the current folder's contents).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Uploads at once (files or tar batches).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Place everything under this folder of the transfer.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Skip paths matching this glob (matched against the path in the transfer and against
    /// the file or folder name); repeatable.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Write a `sha256sum -c` file of every file confirmed on the server, with the paths the
    /// files have in the transfer.
    #[arg(long)]
    pub receipt: Option<PathBuf>,
    /// Cap the total send rate, in bytes per second (`500k`, `10M`, `1G`; powers of 1024).
    #[arg(long)]
    pub limit_rate: Option<String>,
    /// One JSON event per line on stdout instead of sha256sum lines.
    #[arg(long)]
    pub json: bool,
    /// List what would be sent; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Send what symbolic links point to instead of refusing them.
    #[arg(long)]
    pub follow_links: bool,
    /// Files of at least this many bytes go by tus, resumable; smaller ones in tar batches.
    #[arg(long, default_value_t = 8 << 20, hide = true)]
    pub tus_threshold: u64,
    /// Bytes per tus PATCH (read from the file as they are sent; a PATCH cut off keeps what
    /// arrived, so a bigger chunk costs nothing on resume and saves commits).
    #[arg(long, default_value_t = 32 << 20, hide = true)]
    pub chunk_size: u64,
    /// Most files in one tar batch (4,000 of 4 KiB fill the 16 MiB cap: fewer, larger batches
    /// cost less per file, benches/many.sh).
    #[arg(long, default_value_t = 4000, hide = true)]
    pub batch_files: usize,
    /// Most bytes of content in one tar batch.
    #[arg(long, default_value_t = 16 << 20, hide = true)]
    pub batch_bytes: u64,
}

#[derive(Args, Debug, Default)]
pub struct Confirm {
    /// A sha256sum-format file listing every file; airlock compares it with what arrived.
    #[arg(long)]
    pub sha256sums: Option<PathBuf>,
    /// The root digest you expect; airlock compares it with its own.
    #[arg(long)]
    pub root_digest: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the whole chain, the audit key on every event and the signed anchors in the
    /// anchor file; names the first bad event. With --head, also check that the chain
    /// contains a head exported earlier and kept elsewhere.
    Verify {
        #[arg(long)]
        head: Option<String>,
    },
    /// Write every event as JSON lines (to stdout, or --output FILE).
    Export {
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Print one transfer's history.
    Show {
        #[arg(long)]
        transfer: String,
        /// One JSON event per line, as `export` writes them.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum WebhookCommand {
    /// List deliveries, newest first, with attempts and the last error.
    List {
        /// pending, delivered or failed.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Send a failed delivery again.
    Retry { id: String },
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Users.
    #[command(subcommand)]
    User(UserCommand),
    /// Projects and their members.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Workspaces.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Export one file of a transfer, in any state (a blocked transfer's malware included),
    /// for forensics: audited as `content.forensic_export` with the reason. Written to --out
    /// (created, never overwritten), mode 0600.
    ForensicExport {
        transfer: String,
        path: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        reason: String,
    },
    /// Print a one-time sign-in link to the browser UI for USER:
    /// `http://HOST:PORT/ui/login#SECRET` (`[ui] public_url`), valid 10 minutes, once.
    LoginLink { user: String },
    /// Print a staff token for USER.
    Token {
        user: String,
        /// Lifetime, e.g. 8h. Default from the settings (24h).
        #[arg(long)]
        ttl: Option<humantime::Duration>,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user with one or more roles.
    Add {
        name: String,
        #[arg(long = "role", required = true)]
        roles: Vec<Role>,
    },
    /// Disable a user, a System Manager included: every token of theirs stops working.
    Disable {
        name: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProjectCommand {
    Create {
        name: String,
    },
    AddMember {
        project: String,
        user: String,
        #[arg(long)]
        role: Role,
    },
}

#[derive(Subcommand, Debug)]
pub enum WorkspaceCommand {
    Create {
        project: String,
        name: String,
        #[arg(long)]
        tier: i64,
        /// A policy file overriding the tier's default (checked now and at every start).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// The folder the analysis environment writes outputs to (airlock only reads it).
        /// Default: <data_dir>/volumes/PROJECT/WORKSPACE/output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// A workspace: tier, policy and volumes (output, data, software).
    Show {
        /// PROJECT/WORKSPACE.
        workspace: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TransferCommand {
    /// Open a transfer; prints its id.
    Create {
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        kind: String,
        #[arg(long)]
        uploader: String,
    },
    /// Issue the upload token of a transfer; prints it (shown once).
    Token {
        id: String,
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long = "cidr")]
        cidrs: Vec<String>,
    },
    /// Revoke the transfer's upload token without issuing a new one.
    RevokeToken { id: String },
    /// Show a transfer.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// List a workspace's transfers.
    List {
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        json: bool,
    },
    /// Seal as the Project Manager.
    Seal {
        id: String,
        #[command(flatten)]
        confirm: Confirm,
        /// Wait until the scans are done, then print the state they led to.
        #[arg(long)]
        wait: bool,
    },
    /// Confirm, as the uploader, the root digest of a sealed transfer.
    Confirm {
        id: String,
        #[arg(long)]
        root_digest: String,
    },
    /// Approve a transfer in review, in one of your roles.
    Approve(Decide),
    /// Reject a transfer (final); say why in --comment.
    Reject(Decide),
    /// Return a transfer to its requester for changes; say what in --comment. Every approval
    /// given so far is void; a new upload token reopens it.
    Return(Decide),
    /// Cancel a transfer that is not sealed, was returned, or is stuck in scan_error.
    Cancel { id: String },
    /// Withdraw a released transfer from the workspace's read-only volume.
    Revoke {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Args, Debug)]
pub struct Decide {
    pub id: String,
    /// The role you decide in (investigator, referee, programme-manager, provider, ...).
    #[arg(long = "as")]
    pub role: Role,
    #[arg(long, default_value = "")]
    pub comment: String,
    /// The manifest root digest you reviewed. Default: the one `transfer show` gives now
    /// (with its policy version); either changing before the decision lands gives 409.
    #[arg(long)]
    pub root_digest: Option<String>,
    /// As a Referee approving a transfer with files no scanner could scan (too large for
    /// clamd, encrypted): acknowledge them, on the record.
    #[arg(long)]
    pub acknowledge_unscannable: bool,
}

#[derive(Subcommand, Debug)]
pub enum RefereeCommand {
    /// Assign a Referee from the referee college (or a Programme Manager) to a transfer.
    Assign { id: String, user: String },
    /// Counter-approve an assigned Referee, as the Dataset Provider Representative (tier 3+).
    Approve { id: String, user: String },
}

#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// Add an existing user to a project (Project Manager). A Researcher joining a project
    /// with a tier 3+ workspace waits for the Dataset Provider Representative.
    Add {
        project: String,
        user: String,
        #[arg(long)]
        role: Role,
    },
    /// Counter-approve a pending member, as the project's Dataset Provider Representative.
    Approve {
        project: String,
        user: String,
        #[arg(long)]
        role: Role,
    },
    /// List a project's members.
    List {
        project: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a member from a project: one role, or every role (Project Manager; a
    /// provider needs a Programme Manager). Their approvals not yet released are void.
    Remove {
        project: String,
        user: String,
        #[arg(long)]
        role: Option<Role>,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenApiCommand {
    /// Revoke staff tokens: one by its id, or every token of `--user` (your own, or anyone's
    /// as a Programme Manager).
    Revoke {
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        id: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserApiCommand {
    /// Add a user to the system (Programme Manager).
    Add {
        name: String,
        #[arg(long = "role")]
        roles: Vec<Role>,
    },
    /// Disable a user (Programme Manager): every token of theirs stops working at once.
    Disable {
        name: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProjectApiCommand {
    /// Create a project (Programme Manager).
    Create { name: String },
}

fn settings(cli: &Cli) -> anyhow::Result<Settings> {
    let mut s = Settings::load(cli.config.as_deref(), std::env::vars())?;
    if let Some(d) = &cli.data_dir {
        s.storage.data_dir = d.clone();
    }
    Ok(s)
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Serve { listen } => {
            let mut s = settings(&cli)?;
            if let Some(l) = listen {
                s.server.listen = *l;
            }
            crate::telemetry::init(&s.log);
            let addr = s.server.listen;
            let app = App::open(s).await?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let local = listener.local_addr()?;
            tracing::info!(address = %local, data_dir = %app.settings.storage.data_dir.display(), "airlock listening");
            // Scripts and tests read the bound address from this line.
            println!("listening on http://{local}");
            crate::server::run(app, listener, crate::server::shutdown_signal()).await?;
            Ok(())
        }
        Command::Admin(cmd) => {
            let s = settings(&cli)?;
            let app = App::open(s).await?;
            admin(&app, cmd).await
        }
        Command::Audit(cmd) => ops::audit(&cli, cmd).await,
        Command::Webhooks(cmd) => ops::webhooks(&cli, cmd).await,
        Command::Scan {
            scanners,
            concurrency,
            quiet,
            files,
        } => {
            let s = settings(&cli)?;
            scan_files(&s, scanners, *concurrency, *quiet, files).await
        }
        Command::Disclosure { json, quiet, files } => {
            let s = settings(&cli)?;
            disclosure_files(&s, *json, *quiet, files)
        }
        Command::Verify {
            target,
            json,
            released_only,
        } => ops::verify(&cli, target, *json, *released_only).await,
        Command::Bag { id, output } => ops::bag(&cli, id, output).await,
        Command::Hash {
            digest,
            quiet,
            paths,
        } => hash(digest, *quiet, paths).await,
        Command::Incidents {
            transfer,
            json,
            resolve,
            comment,
        } => {
            ops::incidents(
                &cli,
                transfer.as_deref(),
                *json,
                resolve.as_deref(),
                comment.as_deref(),
            )
            .await
        }
        Command::Transfer(cmd) => client::transfer(&cli.server, cmd).await,
        Command::Egress(cmd) => egress::egress(&cli.server, cmd).await,
        Command::Collect(args) => egress::collect(&cli.server, args).await,
        Command::Referee(cmd) => client::referee(&cli.server, cmd).await,
        Command::Member(cmd) => client::member(&cli.server, cmd).await,
        Command::User(cmd) => client::user(&cli.server, cmd).await,
        Command::Project(cmd) => client::project(&cli.server, cmd).await,
        Command::Token(cmd) => client::token(&cli.server, cmd).await,
        Command::Ui { print } => client::ui(&cli.server, *print).await,
        Command::Upload(args) => upload::run(&cli.server, args).await,
        Command::Seal { token, confirm } => {
            client::seal_with_token(&cli.server, token, confirm).await
        }
    }
}

async fn admin(app: &App, cmd: &AdminCommand) -> anyhow::Result<()> {
    use crate::workflow::admin as a;
    match cmd {
        AdminCommand::User(UserCommand::Disable { name, reason }) => {
            a::disable_user(app, name, reason).await?;
            println!("{name} disabled");
        }
        AdminCommand::User(UserCommand::Add { name, roles }) => {
            let id = a::add_user(app, name, roles).await?;
            println!("{id}");
        }
        AdminCommand::Project(ProjectCommand::Create { name }) => {
            let id = a::create_project(app, name).await?;
            println!("{id}");
        }
        AdminCommand::Project(ProjectCommand::AddMember {
            project,
            user,
            role,
        }) => {
            a::add_member(app, project, user, *role).await?;
        }
        AdminCommand::Workspace(WorkspaceCommand::Create {
            project,
            name,
            tier,
            policy,
            output,
        }) => {
            let id = a::create_workspace(app, project, name, *tier, policy.as_deref()).await?;
            if let Some(dir) = output {
                a::set_output_volume(app, project, name, dir).await?;
            }
            println!("{id}");
        }
        AdminCommand::Workspace(WorkspaceCommand::Show { workspace, json }) => {
            let v = a::show_workspace(app, workspace).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("workspace {workspace} (tier {})", v["tier"]);
                println!(
                    "  policy   {} ({})",
                    v["policy"]["file"].as_str().unwrap_or("-"),
                    v["policy"]["version"].as_str().unwrap_or("-")
                );
                for k in ["output", "data", "software", "egress"] {
                    println!("  {k:<8} {}", v["volumes"][k].as_str().unwrap_or("-"));
                }
            }
        }
        AdminCommand::LoginLink { user } => {
            let link = crate::workflow::sessions::admin_login_link(app, user).await?;
            println!("{}", link.url);
        }
        AdminCommand::Token { user, ttl } => {
            let t = a::staff_token(app, user, ttl.map(Into::into)).await?;
            println!("{t}");
        }
        AdminCommand::ForensicExport {
            transfer,
            path,
            out,
            reason,
        } => {
            use futures::StreamExt;
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let id = transfer
                .parse()
                .map_err(|_| anyhow::anyhow!("no transfer {transfer}"))?;
            let (file, mut stream) =
                crate::workflow::transfers::forensic_export(app, id, path, reason).await?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            while let Some(chunk) = stream.next().await {
                f.write_all(&chunk?)?;
            }
            f.sync_all()?;
            println!(
                "{} ({} bytes, sha256 {}) written to {}",
                file.path,
                file.received,
                file.sha256.as_deref().unwrap_or("-"),
                out.display()
            );
        }
    }
    Ok(())
}

/// `airlock scan`: runs scanners over local files, several at once.
/// `airlock disclosure`: the checks of `workflow::egress::disclose`, on local files.
fn disclosure_files(
    s: &Settings,
    json: bool,
    quiet: bool,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    use crate::scan::disclosure::{self, Status};
    let rules = crate::scan::Scanners::load(s.scanning.dir.as_deref(), None)?.disclosure;
    let started = std::time::Instant::now();
    let (mut bytes, mut fails, mut findings) = (0u64, 0u64, 0u64);
    for f in files {
        let file =
            std::fs::File::open(f).with_context(|| format!("cannot read {}", f.display()))?;
        bytes += file.metadata().map(|m| m.len()).unwrap_or(0);
        let name = f.display().to_string();
        let reader = std::io::BufReader::with_capacity(1 << 20, file);
        let report = disclosure::check(&name, reader, &rules)
            .with_context(|| format!("cannot check {name}"))?;
        findings += report.findings.len() as u64;
        fails += report
            .findings
            .iter()
            .filter(|x| x.status == Status::Fail)
            .count() as u64;
        if quiet {
            continue;
        }
        if json {
            println!(
                "{}",
                serde_json::to_string(&serde_json::json!({"path": name, "report": report}))?
            );
            continue;
        }
        println!(
            "{name}: {} ({:?}, {} rows)",
            serde_json::to_value(report.status)?.as_str().unwrap_or("?"),
            report.kind,
            report.rows
        );
        for x in &report.findings {
            println!(
                "  {:<6} {:<18} {:<28} {}",
                serde_json::to_value(x.status)?.as_str().unwrap_or("?"),
                x.rule,
                serde_json::to_string(&x.location)?,
                x.message
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if quiet {
        println!(
            "{} files, {bytes} bytes, {secs:.3} s, {:.1} MB/s, {findings} findings ({fails} fail)",
            files.len(),
            bytes as f64 / 1e6 / secs.max(1e-9)
        );
    }
    if fails > 0 {
        std::process::exit(1);
    }
    Ok(())
}

async fn scan_files(
    s: &Settings,
    names: &[String],
    concurrency: Option<usize>,
    quiet: bool,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    use crate::scan::{Outcome, Scanner, Target};
    use futures::StreamExt;
    let reg = crate::scan::Scanners::load(s.scanning.dir.as_deref(), s.scanning.clamd.as_deref())?;
    let names: Vec<String> = if names.is_empty() {
        reg.names()
            .into_iter()
            .filter(|n| !reg.is_archive(n))
            .collect()
    } else {
        names.to_vec()
    };
    let mut scanners: Vec<std::sync::Arc<dyn Scanner>> = Vec::new();
    for n in &names {
        scanners.push(reg.get(n).ok_or_else(|| {
            anyhow::anyhow!("no scanner `{n}` (configured: {})", reg.names().join(", "))
        })?);
    }
    let rules = crate::policy::Scanning {
        required: names.clone(),
        ..Default::default()
    };
    let n = concurrency.unwrap_or(reg.concurrency).max(1);
    let started = std::time::Instant::now();
    let rules = &rules;
    let scanners = &scanners;
    let jobs: Vec<_> = files
        .iter()
        .map(|f| async move {
            let size = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
            let mut out = Vec::new();
            for sc in scanners {
                let t = Target {
                    path: f,
                    data: None,
                    size,
                    kind: crate::domain::TransferKind::DataIngress,
                    rules,
                };
                out.push((sc.name().to_owned(), sc.scan(&t).await));
            }
            (f, size, out)
        })
        .collect();
    let results: Vec<_> = futures::stream::iter(jobs)
        .buffer_unordered(n)
        .collect()
        .await;
    let secs = started.elapsed().as_secs_f64();
    let mut bad = 0;
    let mut bytes = 0u64;
    for (f, size, out) in &results {
        bytes += size;
        for (name, r) in out {
            let line = match r {
                Ok(Outcome::Clean) => "clean".to_owned(),
                Ok(Outcome::Infected(n)) => format!("infected: {n}"),
                Ok(Outcome::Unscannable(w)) => format!("unscannable: {w}"),
                Err(e) => format!("error: {e}"),
            };
            if !matches!(r, Ok(Outcome::Clean)) {
                bad += 1;
            }
            if !quiet {
                println!("{}: {name}: {line}", f.display());
            }
        }
    }
    println!(
        "{} files, {bytes} bytes, {secs:.3} s, {:.1} MiB/s, concurrency {n}",
        results.len(),
        bytes as f64 / (1 << 20) as f64 / secs.max(1e-9)
    );
    if bad > 0 {
        anyhow::bail!("{bad} verdict(s) not clean");
    }
    Ok(())
}

/// `airlock hash`: every file under `paths`, hashed in parallel on the blocking pool.
async fn hash(digest: &str, quiet: bool, paths: &[PathBuf]) -> anyhow::Result<()> {
    use rayon::prelude::*;
    let mut files = Vec::new();
    let mut stack: Vec<PathBuf> = Vec::new();
    // Folders are walked with the entry types read_dir gives (no stat per file).
    let mut dirs = Vec::new();
    for p in paths {
        let m = std::fs::metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
        if m.is_dir() {
            dirs.push(p.clone());
        } else if m.is_file() {
            files.push(p.clone());
        }
    }
    while let Some(d) = stack.pop().or_else(|| dirs.pop()) {
        let mut entries: Vec<(PathBuf, std::fs::FileType)> = std::fs::read_dir(&d)
            .with_context(|| format!("cannot read {}", d.display()))?
            .map(|e| e.and_then(|e| Ok((e.path(), e.file_type()?))))
            .collect::<Result<_, _>>()?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (p, t) in entries {
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() {
                files.push(p);
            }
        }
    }
    files.sort();
    let digest = digest.to_owned();
    let started = std::time::Instant::now();
    let lines: Vec<anyhow::Result<(String, u64)>> = tokio::task::spawn_blocking(move || {
        files
            .par_iter()
            .map(|f| {
                let name = f.display();
                Ok(match digest.as_str() {
                    "sha256" => (
                        format!("{}  {name}", crate::hashing::sha256_file(f)?),
                        std::fs::metadata(f)?.len(),
                    ),
                    "blake3" => (
                        format!("{}  {name}", crate::hashing::blake3_file(f)?),
                        std::fs::metadata(f)?.len(),
                    ),
                    _ => {
                        let d = crate::hashing::hash_paths(std::slice::from_ref(f))?;
                        (
                            format!("{}  {}  {}  {name}", d.sha256, d.blake3, d.size),
                            d.size,
                        )
                    }
                })
            })
            .collect()
    })
    .await?;
    let secs = started.elapsed().as_secs_f64();
    let (mut n, mut bytes) = (0usize, 0u64);
    for l in lines {
        let (line, size) = l?;
        n += 1;
        bytes += size;
        if !quiet {
            println!("{line}");
        }
    }
    if quiet {
        println!(
            "{n} files, {bytes} bytes, {secs:.3} s, {:.1} MiB/s",
            bytes as f64 / (1 << 20) as f64 / secs.max(1e-9)
        );
    }
    Ok(())
}
