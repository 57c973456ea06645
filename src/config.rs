//! Settings: defaults, then a TOML file, then `AIRLOCK__SECTION__KEY` environment variables,
//! then command-line flags. Unknown keys are errors, so a typo never silently does nothing.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub storage: StorageSettings,
    pub tokens: TokenSettings,
    pub limits: LimitSettings,
    pub policy: PolicySettings,
    pub webhooks: WebhookSettings,
    pub scanning: ScanSettings,
    pub integrity: IntegritySettings,
    pub log: LogSettings,
    pub audit: AuditSettings,
    pub uploads: UploadSettings,
    pub ui: UiSettings,
    pub mail: MailSettings,
    pub auth: AuthSettings,
}

/// Staff tokens issued by the institution's OIDC provider (Keycloak, Entra ID), accepted
/// beside the locally minted HS256 ones when `jwks_url`, `issuer` and `audience` are all set
/// (`auth::oidc`). Roles stay airlock's own: the token only names the person.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// The provider's JSON Web Key Set, such as
    /// `https://idp.example.ac.uk/realms/tre/protocol/openid-connect/certs`. `https://` only,
    /// except `http://` to a loopback address. Default: none (no provider tokens accepted).
    pub jwks_url: Option<String>,
    /// The exact `iss` the provider writes, such as `https://idp.example.ac.uk/realms/tre`.
    /// Default: none.
    pub issuer: Option<String>,
    /// The `aud` airlock's tokens carry (the client id). Default: none.
    pub audience: Option<String>,
    /// The claim naming the airlock user: `preferred_username` (default) or `email`.
    pub username_claim: UsernameClaim,
    /// When set, the claim must read `NAME@DOMAIN` with exactly this domain (any case), and
    /// `NAME` is the airlock user; any other domain is refused. Required with `email`, and
    /// for Entra ID, whose `preferred_username` is `name@tenant-domain`. Default: none (the
    /// claim is the user name as it is).
    pub username_domain: Option<String>,
    /// Least time between two fetches of the key set: a token with an unknown `kid` fetches
    /// it again only this long after the last fetch, so a flood of made-up `kid`s costs the
    /// provider one request per interval. Default `30s`.
    #[serde(with = "humantime_serde_compat")]
    pub jwks_min_refresh: Duration,
}

/// Which claim of a provider token names the airlock user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsernameClaim {
    PreferredUsername,
    Email,
}

impl UsernameClaim {
    pub fn as_str(self) -> &'static str {
        match self {
            UsernameClaim::PreferredUsername => "preferred_username",
            UsernameClaim::Email => "email",
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwks_url: None,
            issuer: None,
            audience: None,
            username_claim: UsernameClaim::PreferredUsername,
            username_domain: None,
            jwks_min_refresh: Duration::from_secs(30),
        }
    }
}

impl AuthSettings {
    /// True when provider tokens are accepted (all three of `jwks_url`, `issuer`, `audience`).
    pub fn enabled(&self) -> bool {
        self.jwks_url.is_some() && self.issuer.is_some() && self.audience.is_some()
    }

    /// Refuses half a configuration: all three keys or none, a JWKS over TLS (or loopback),
    /// a domain for `email`.
    fn check(&self) -> Result<(), String> {
        let keys = [
            ("auth.jwks_url", &self.jwks_url),
            ("auth.issuer", &self.issuer),
            ("auth.audience", &self.audience),
        ];
        let missing: Vec<&str> = keys
            .iter()
            .filter(|(_, v)| v.as_deref().is_none_or(|v| v.trim().is_empty()))
            .map(|(k, _)| *k)
            .collect();
        if missing.len() == keys.len() {
            return Ok(());
        }
        if !missing.is_empty() {
            return Err(format!(
                "`auth.jwks_url`, `auth.issuer` and `auth.audience` go together; missing: {}",
                missing.join(", ")
            ));
        }
        let url = self.jwks_url.as_deref().unwrap_or_default();
        let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
            .iter()
            .any(|p| {
                url.strip_prefix(p)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
            });
        if !url.starts_with("https://") && !loopback {
            return Err(format!(
                "`auth.jwks_url` `{url}` must be an https:// URL (plain http only to a loopback \
                 address): whoever can change the keys can sign in as anyone"
            ));
        }
        if self.username_claim == UsernameClaim::Email && self.username_domain.is_none() {
            return Err(
                "`auth.username_claim = \"email\"` needs `auth.username_domain`: an airlock user \
                 name has no `@`, so only the part before `@<domain>` can name one"
                    .into(),
            );
        }
        if let Some(d) = &self.username_domain {
            if d.is_empty() || d.contains('@') {
                return Err(format!(
                    "`auth.username_domain` `{d}` must be a domain such as example.ac.uk"
                ));
            }
        }
        if self.jwks_min_refresh.is_zero() {
            return Err("`auth.jwks_min_refresh` must be longer than 0".into());
        }
        Ok(())
    }
}

/// The metadata database (`store`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DB` for several replicas sharing one database
    /// (`AIRLOCK__DATABASE__URL`, so the password need not sit in the file), or
    /// `sqlite://PATH`. Default: SQLite at `<data_dir>/airlock.db`.
    pub url: Option<String>,
}

/// The browser UI: sign-in links, sessions, and the address pages and emails link to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiSettings {
    /// The address people reach airlock at, such as `https://airlock.example.ac.uk`: login
    /// links and emails link to pages under it. Default: `http://` and the listen address.
    pub public_url: Option<String>,
    /// How long a login link may wait to be used (once). Default `10m`.
    #[serde(with = "humantime_serde_compat")]
    pub login_link_ttl: Duration,
    /// A session ends after this long without a request. Default `30m`.
    #[serde(with = "humantime_serde_compat")]
    pub session_idle: Duration,
    /// A session ends this long after sign-in, however busy. Default `12h`.
    #[serde(with = "humantime_serde_compat")]
    pub session_max: Duration,
}

impl Default for UiSettings {
    fn default() -> Self {
        Self {
            public_url: None,
            login_link_ttl: Duration::from_secs(600),
            session_idle: Duration::from_secs(30 * 60),
            session_max: Duration::from_secs(12 * 3600),
        }
    }
}

impl UiSettings {
    /// `public_url` without a trailing slash, or `http://LISTEN`.
    pub fn base_url(&self, listen: SocketAddr) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{listen}"),
        }
    }
}

/// How the SMTP relay is reached (`[mail] tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailTls {
    /// Plain SMTP, nothing encrypted: only for a relay on a trusted network (or loopback).
    None,
    /// Plain connection upgraded with STARTTLS, which must succeed (never a silent fallback
    /// to plain text). Usually port 587.
    Starttls,
    /// TLS from the first byte ("implicit TLS", SMTPS). Usually port 465.
    Tls,
}

/// Email: the transport, and who people are as addresses. One email goes for every transition
/// that awaits someone or tells a requester the outcome (`notify::email`), and integrity
/// alerts go through the same transport (`[integrity] mail_to`).
///
/// Compatibility: the older `[integrity] smtp`, `mail_from` and `mail_domain` keys still work
/// for integrity alerts. When `[mail] smtp` is unset, alerts go to `[integrity] smtp` over
/// plain SMTP as before (and no transition is mailed); when both are set, `[mail]` wins.
/// `[integrity] mail_from` and `mail_domain`, where set, still name the alert's sender and
/// the managers' domain; otherwise `[mail] from` and `domain` do.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailSettings {
    /// The SMTP relay, `host:port` (such as `smtp.example.ac.uk:587`). Default: none, and then
    /// no email is queued or sent.
    pub smtp: Option<String>,
    /// `none`, `starttls` or `tls` (see [`MailTls`]). Default `starttls`; `none` only for a
    /// relay on a trusted network.
    pub tls: MailTls,
    /// The user name for SMTP AUTH (PLAIN or LOGIN). Default: none (no AUTH); set it with
    /// `password`.
    #[serde(deserialize_with = "opt_text")]
    pub username: Option<String>,
    /// The SMTP AUTH password. Best set as `AIRLOCK__MAIL__PASSWORD` rather than in the file.
    /// Never logged or shown. Default: none.
    #[serde(deserialize_with = "opt_text")]
    pub password: Option<String>,
    /// The sender of every email. Default `airlock@localhost.localdomain`.
    pub from: String,
    /// A PEM file of extra root certificates trusted for the relay's TLS certificate (a
    /// private relay's own CA), besides the built-in web PKI roots. Default: none.
    pub ca_file: Option<PathBuf>,
    /// People are mailed as `USER@domain` (airlock keeps no address per user). Required with
    /// `smtp`.
    pub domain: Option<String>,
    /// How long one connection and message may take. Default `30s`.
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Attempts per message before it is marked failed (logged and audited as `mail.failed`).
    /// Default 8.
    pub max_attempts: u32,
    /// Wait after the first failure, doubled after each (with jitter). Default `30s`.
    #[serde(with = "humantime_serde_compat")]
    pub backoff_initial: Duration,
    /// Longest wait between attempts. Default `30m`.
    #[serde(with = "humantime_serde_compat")]
    pub backoff_max: Duration,
    /// How often the email outbox is looked at. Default `1s`.
    #[serde(with = "humantime_serde_compat")]
    pub poll_interval: Duration,
}

impl Default for MailSettings {
    fn default() -> Self {
        Self {
            smtp: None,
            tls: MailTls::Starttls,
            username: None,
            password: None,
            from: "airlock@localhost.localdomain".into(),
            ca_file: None,
            domain: None,
            timeout: Duration::from_secs(30),
            max_attempts: 8,
            backoff_initial: Duration::from_secs(30),
            backoff_max: Duration::from_secs(30 * 60),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// Without the password: settings are debug-printed in places, and it must never be logged.
impl std::fmt::Debug for MailSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailSettings")
            .field("smtp", &self.smtp)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("from", &self.from)
            .field("ca_file", &self.ca_file)
            .field("domain", &self.domain)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

/// `host:port` split, the port a number.
pub fn smtp_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then_some(())?;
    Some((host, port.parse().ok()?))
}

/// A string, or a number or boolean taken as its text: an environment variable such as
/// `AIRLOCK__MAIL__PASSWORD=123456` arrives typed as a number.
fn opt_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match toml::Value::deserialize(d)? {
        toml::Value::String(s) => Some(s),
        toml::Value::Integer(n) => Some(n.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        other => {
            return Err(serde::de::Error::custom(format!(
                "expected a string, found {}",
                other.type_str()
            )))
        }
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Where signed heads of the audit chain are appended, one JSON line each. Put it on
    /// another machine or an append-only mount where you can. Default
    /// `<data_dir>/audit-anchors.jsonl`.
    pub anchor_file: Option<PathBuf>,
    /// How often the head is anchored (also at every shutdown; skipped when nothing was
    /// written since the last anchor). Default `1h`.
    #[serde(with = "humantime_serde_compat")]
    pub anchor_interval: Duration,
    /// Upload-token uses and refusals repeated within this window are summarised as one
    /// audit event with a count, written at the window's end. Default `60s`.
    #[serde(with = "humantime_serde_compat")]
    pub summary_window: Duration,
    /// Most upload-token uses and refusals written at once (not summarised) per window,
    /// across all tokens and clients. Default 100.
    pub max_immediate_events: u32,
    /// Refused authentications from one client address per window before every further
    /// request from it gets 429 with Retry-After, until the window ends. Default 60.
    pub refusals_per_client: u32,
    /// Refusals of one credential per window before it gets 429 from anywhere. Default 20.
    pub refusals_per_token: u32,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            anchor_file: None,
            anchor_interval: Duration::from_secs(3600),
            summary_window: Duration::from_secs(60),
            max_immediate_events: 100,
            refusals_per_client: 60,
            refusals_per_token: 20,
        }
    }
}

impl MailSettings {
    /// Refuses settings that could only fail later, when a message is sent.
    fn check(&self, integrity: &IntegritySettings) -> Result<(), String> {
        for (key, relay) in [
            ("mail.smtp", &self.smtp),
            ("integrity.smtp", &integrity.smtp),
        ] {
            if let Some(r) = relay {
                if smtp_host_port(r).is_none() {
                    return Err(format!("`{key}`: `{r}` is not host:port"));
                }
            }
        }
        if self.username.is_some() != self.password.is_some() {
            return Err("`mail.username` and `mail.password` go together".into());
        }
        if self.username.is_some() && self.smtp.is_none() {
            return Err("`mail.username` is set but `mail.smtp` is not".into());
        }
        for (key, from) in [
            ("mail.from", Some(&self.from)),
            ("integrity.mail_from", integrity.mail_from.as_ref()),
        ] {
            if let Some(f) = from {
                if f.parse::<lettre::message::Mailbox>().is_err() {
                    return Err(format!("`{key}`: `{f}` is not an email address"));
                }
            }
        }
        for (key, domain) in [
            ("mail.domain", &self.domain),
            ("integrity.mail_domain", &integrity.mail_domain),
        ] {
            if let Some(d) = domain {
                if format!("user@{d}").parse::<lettre::Address>().is_err() {
                    return Err(format!("`{key}`: `{d}` is not a mail domain"));
                }
            }
        }
        for a in &integrity.mail_to {
            if a.parse::<lettre::Address>().is_err() {
                return Err(format!(
                    "`integrity.mail_to`: `{a}` is not an email address"
                ));
            }
        }
        if self.smtp.is_some() && self.domain.is_none() {
            return Err(
                "`mail.domain` must be set with `mail.smtp`: people are mailed as USER@domain"
                    .into(),
            );
        }
        if let Some(f) = &self.ca_file {
            std::fs::metadata(f).map_err(|e| format!("`mail.ca_file` {}: {e}", f.display()))?;
        }
        if self.max_attempts == 0 {
            return Err("`mail.max_attempts` must be at least 1".into());
        }
        if self.timeout.is_zero() {
            return Err("`mail.timeout` must be above zero".into());
        }
        Ok(())
    }
}

impl AuditSettings {
    /// The anchor file, with its default under `data_dir`.
    pub fn anchor_file(&self, data_dir: &Path) -> PathBuf {
        self.anchor_file
            .clone()
            .unwrap_or_else(|| data_dir.join("audit-anchors.jsonl"))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadSettings {
    /// How long any request body may send nothing before the request is cut off with 408
    /// (what an upload had not yet acknowledged is discarded). Default `60s`.
    #[serde(with = "humantime_serde_compat")]
    pub idle_timeout: Duration,
    /// Most uploads (PUT, tus POST and PATCH) in progress at once with one credential;
    /// more get 429 with Retry-After. Default 32.
    pub per_token: usize,
    /// Most uploads in progress at once from one client address (a proxy in front counts as
    /// one address: raise it there). Default 64.
    pub per_address: usize,
    /// Most memory every upload together holds in buffers (received, not yet written),
    /// whatever the number of connections; uploads beyond it wait, reading nothing.
    /// Default `64 MiB`.
    #[serde(deserialize_with = "crate::policy::size")]
    pub buffer_total: u64,
    /// How long an upload waits for buffer memory before 503 with Retry-After. Default `30s`.
    #[serde(with = "humantime_serde_compat")]
    pub buffer_wait: Duration,
}

impl Default for UploadSettings {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(60),
            per_token: 32,
            per_address: 64,
            buffer_total: 64 << 20,
            buffer_wait: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntegritySettings {
    /// Whether files at rest are re-verified on schedule. Default true.
    pub enabled: bool,
    /// Most bytes re-hashed per second by the scheduler; 0 means no limit. Default 0.
    pub bytes_per_second: u64,
    /// How often the scheduler looks for files due. Default `10s`.
    #[serde(with = "humantime_serde_compat")]
    pub poll_interval: Duration,
    /// Deprecated: set `[mail] smtp` instead. A relay (`host:port`) integrity alerts are
    /// emailed through over plain SMTP when `[mail] smtp` is unset. Default: none.
    pub smtp: Option<String>,
    /// The alert's sender address. Default: `[mail] from`.
    pub mail_from: Option<String>,
    /// Addresses every alert goes to (a managers' list, say). Default: none.
    #[serde(deserialize_with = "string_list")]
    pub mail_to: Vec<String>,
    /// The project's Programme and Project Managers are also alerted as `USER@mail_domain`.
    /// Default: `[mail] domain` (none: only `mail_to` is alerted).
    pub mail_domain: Option<String>,
}

impl Default for IntegritySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            bytes_per_second: 0,
            poll_interval: Duration::from_secs(10),
            smtp: None,
            mail_from: None,
            mail_to: Vec::new(),
            mail_domain: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScanSettings {
    /// A folder of scanner files to use instead of the compiled-in scanners/ (every `*.toml`
    /// in it is loaded). Default: none.
    pub dir: Option<PathBuf>,
    /// clamd's address (`host:port` or a socket path), overriding scanners/clamav.toml.
    pub clamd: Option<String>,
    /// Wait before a transfer in `scan_error` is scanned again, doubled after each failure.
    /// Default `2s`.
    #[serde(with = "humantime_serde_compat")]
    pub retry_initial: Duration,
    /// Longest wait between scan attempts. Default `5m`.
    #[serde(with = "humantime_serde_compat")]
    pub retry_max: Duration,
}

impl Default for ScanSettings {
    fn default() -> Self {
        Self {
            dir: None,
            clamd: None,
            retry_initial: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// Where every transition is POSTed. Empty (the default) turns notifications off. In an
    /// environment variable, a comma-separated list.
    #[serde(deserialize_with = "string_list")]
    pub urls: Vec<String>,
    /// The HMAC-SHA256 key bodies are signed with; required when `urls` is set.
    pub secret: String,
    /// How long one delivery may take. Default `10s`.
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Deliveries tried before one is marked failed. Default 8.
    pub max_attempts: u32,
    /// Wait after the first failure, doubled after each (with jitter). Default `1s`.
    #[serde(with = "humantime_serde_compat")]
    pub backoff_initial: Duration,
    /// Longest wait between attempts. Default `10m`.
    #[serde(with = "humantime_serde_compat")]
    pub backoff_max: Duration,
    /// How often the outbox is looked at. Default `500ms`.
    #[serde(with = "humantime_serde_compat")]
    pub poll_interval: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            secret: String::new(),
            timeout: Duration::from_secs(10),
            max_attempts: 8,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            poll_interval: Duration::from_millis(500),
        }
    }
}

fn string_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Raw::Many(v) => v,
    })
}

/// A list of CIDRs: a TOML array, or (in an environment variable) a comma-separated string.
fn cidr_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    string_list(d)?
        .iter()
        .map(|s| {
            s.parse().map_err(|_| {
                serde::de::Error::custom(format!("`{s}` is not an IP range such as 10.0.0.0/8"))
            })
        })
        .collect()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySettings {
    /// A folder holding `tier0.toml` … `tier4.toml` to use instead of the compiled-in
    /// defaults (a copy of the repository's `policies/`, edited). Default: none.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// How long a graceful shutdown waits for in-flight requests. Default `60s`.
    #[serde(with = "humantime_serde_compat")]
    pub shutdown_grace: Duration,
    /// How often open transfers are checked for expired tokens. Default `5s`.
    #[serde(with = "humantime_serde_compat")]
    pub sweep_interval: Duration,
    /// How long a background job (a scan, a release, re-verification, the webhook and email
    /// senders, expiry) stays leased to the replica running it without a renewal; renewed
    /// every third of it while the work goes on. A replica that dies loses its jobs to another
    /// after this long. Default `30s`.
    #[serde(with = "humantime_serde_compat")]
    pub lease_ttl: Duration,
    /// Reverse proxies (CIDRs, such as `["10.0.0.0/8"]`) whose `Forwarded` or
    /// `X-Forwarded-For` header names the client. Only a request from one of them is read
    /// that way, and the client is the right-most address in the header that is not itself a
    /// trusted proxy: for token IP ranges, per-address limits and the audit log. Default:
    /// none (the peer's address is the client's, and those headers are ignored). In an
    /// environment variable, a comma-separated list.
    #[serde(deserialize_with = "cidr_list")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// Where the SQLite database, keys, quarantine and released volumes live.
    /// Default `./airlock-data`.
    pub data_dir: PathBuf,
    /// Free space each volume keeps: below it `/readyz` reports the volume, and an upload
    /// whose declared length would go below it is refused with 507. Default `1 GiB`.
    #[serde(deserialize_with = "crate::policy::size")]
    pub min_free: u64,
    /// Concurrent uploads share their durable commits (`store::durable`): one `syncfs` of the
    /// quarantine volume and one fdatasync of the database's WAL serve every request waiting,
    /// and none is answered before both. `false`: each upload fsyncs its own file, folder and
    /// commit. Default `true`.
    pub group_commit: bool,
    /// Where the keys live: `jwt.key` (signs upload and staff tokens), `audit.key` (keys the
    /// audit chain) and `anchor.key`/`anchor.pub` (signs its head). Replicas must all read
    /// the same keys, or a token minted on one is refused by another and the chain checks
    /// fail: point every replica at one directory (a mounted secret, say), made by the first
    /// start or by hand (32 random bytes each, mode 0600). Default `<data_dir>/keys`.
    pub keys_dir: Option<PathBuf>,
    /// Where the volumes (quarantine, released, output, egress) keep their bytes: `local`
    /// (under `data_dir`, the default) or `s3` (`[storage.s3]`, every volume under one
    /// bucket, by prefix). `[storage.volumes.NAME]` overrides it for one volume.
    pub backend: StorageBackend,
    /// The S3 store (AWS S3, MinIO, Ceph RGW, Garage) of volumes on `s3`.
    pub s3: S3Settings,
    /// Per-volume overrides, by volume name (`quarantine`, `released`, `output`, `egress`):
    /// a mixed setup such as quarantine on local disk and released volumes on S3.
    pub volumes: std::collections::BTreeMap<String, VolumeSettings>,
}

/// The kinds of storage a volume can be on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    #[default]
    Local,
    S3,
}

/// `[storage.s3]`. Credentials are the two keys here (the secret best as
/// `AIRLOCK__STORAGE__S3__SECRET_ACCESS_KEY`), or, when neither is set, what the AWS SDKs
/// find: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, a web identity, or the instance role.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Settings {
    /// The S3 API's address, e.g. `http://127.0.0.1:3900` for Garage. Default: AWS's
    /// endpoint for `region`.
    pub endpoint: Option<String>,
    /// The region; Garage's is whatever its `s3_region` says (often `garage`). Default
    /// `us-east-1`.
    pub region: String,
    /// The bucket every volume lives under. Required for a volume on `s3`.
    pub bucket: Option<String>,
    /// A prefix inside the bucket, before each volume's own (`PREFIX/quarantine/…`).
    /// Default: none.
    pub prefix: String,
    #[serde(deserialize_with = "opt_text")]
    pub access_key_id: Option<String>,
    /// Never logged or shown.
    #[serde(deserialize_with = "opt_text")]
    pub secret_access_key: Option<String>,
    /// Path-style addressing (`ENDPOINT/BUCKET/KEY`), as Garage and MinIO want. Default
    /// `false` (virtual-hosted style, as AWS wants).
    pub path_style: bool,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: "us-east-1".into(),
            bucket: None,
            prefix: String::new(),
            access_key_id: None,
            secret_access_key: None,
            path_style: false,
        }
    }
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("path_style", &self.path_style)
            .finish()
    }
}

/// `[storage.volumes.NAME]`: one volume's storage, each key falling back to `[storage]`'s
/// `backend` and `[storage.s3]`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VolumeSettings {
    pub backend: Option<StorageBackend>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub access_key_id: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub secret_access_key: Option<String>,
    pub path_style: Option<bool>,
    /// The released volume on S3 only: every released object and manifest is kept under S3
    /// Object Lock for this many days (1 or more) after its release (`volumes::lock`). The
    /// bucket must have Object Lock enabled, or airlock refuses to start. Default: none.
    pub retention_days: Option<u32>,
    /// `compliance` (the default: nobody can shorten it, not even the root account) or
    /// `governance` (an account allowed to bypass governance retention can).
    pub retention_mode: Option<RetentionMode>,
}

impl std::fmt::Debug for VolumeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeSettings")
            .field("backend", &self.backend)
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("retention_days", &self.retention_days)
            .field("retention_mode", &self.retention_mode)
            .finish_non_exhaustive()
    }
}

/// The volumes airlock keeps, by the names `[storage.volumes.NAME]` uses.
pub const VOLUME_NAMES: [&str; 4] = ["quarantine", "released", "output", "egress"];

/// Where one volume is: on local disk under the data directory, or in S3 under
/// `s3://bucket/prefix/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeLocation {
    Local,
    S3(S3Volume),
}

/// A volume on S3, with everything needed to reach it.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Volume {
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// The volume's prefix in the bucket: `[storage.s3] prefix`, then the volume's own
    /// (`prefix` of its override, or its name), without a trailing `/`.
    pub prefix: String,
    /// Both keys, or none (the environment or the instance role).
    pub credentials: Option<(String, String)>,
    pub path_style: bool,
    /// S3 Object Lock retention of what is published there (the released volume only).
    pub retention: Option<Retention>,
}

/// The S3 Object Lock mode of a retention (`retention_mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetentionMode {
    /// Nobody can shorten the retention or delete a locked version before it ends.
    #[default]
    Compliance,
    /// Accounts with `s3:BypassGovernanceRetention` can.
    Governance,
}

/// How long, and how strictly, released objects are kept under S3 Object Lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub mode: RetentionMode,
    pub days: u32,
}

/// The longest retention accepted (about 100 years), well inside every date type involved.
pub const MAX_RETENTION_DAYS: u32 = 36_500;

impl std::fmt::Debug for S3Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}/", self.bucket, self.prefix)
    }
}

/// The retention `[storage.volumes.NAME]` asks for, or what is wrong with it: only the
/// released volume has one, of 1 to [`MAX_RETENTION_DAYS`] days.
fn retention_of(name: &str, o: &VolumeSettings) -> Result<Option<Retention>, String> {
    let key = |k: &str| format!("[storage.volumes.{name}] {k}");
    match (o.retention_days, o.retention_mode) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(format!(
            "{} is set without retention_days: set retention_days too, or remove it",
            key("retention_mode")
        )),
        (Some(_), _) if name != "released" => Err(format!(
            "{}: retention is only for the released volume ([storage.volumes.released] \
             retention_days)",
            key("retention_days")
        )),
        (Some(0), _) => Err(format!(
            "{} must be at least 1 (or unset for no retention)",
            key("retention_days")
        )),
        (Some(d), _) if d > MAX_RETENTION_DAYS => Err(format!(
            "{} = {d} is more than {MAX_RETENTION_DAYS} days",
            key("retention_days")
        )),
        (Some(days), mode) => Ok(Some(Retention {
            mode: mode.unwrap_or_default(),
            days,
        })),
    }
}

impl StorageSettings {
    /// Where the volume `name` (one of [`VOLUME_NAMES`]) is, or what is wrong with its
    /// settings.
    pub fn volume(&self, name: &str) -> Result<VolumeLocation, String> {
        let o = self.volumes.get(name).cloned().unwrap_or_default();
        let retention = retention_of(name, &o)?;
        if o.backend.unwrap_or(self.backend) == StorageBackend::Local {
            if retention.is_some() {
                return Err(format!(
                    "[storage.volumes.{name}] retention_days is set but the {name} volume is on \
                     local disk: retention is S3 Object Lock, so put the volume on S3 (backend \
                     = \"s3\") or remove retention_days"
                ));
            }
            return Ok(VolumeLocation::Local);
        }
        let s3 = &self.s3;
        let bucket = o
            .bucket
            .or_else(|| s3.bucket.clone())
            .filter(|b| !b.is_empty())
            .ok_or_else(|| {
                format!(
                    "the {name} volume is on S3 but no bucket is set: set [storage.s3] bucket \
                     (AIRLOCK__STORAGE__S3__BUCKET) or [storage.volumes.{name}] bucket"
                )
            })?;
        let own = o.prefix.unwrap_or_else(|| name.to_owned());
        let prefix = [s3.prefix.as_str(), own.as_str()]
            .iter()
            .map(|p| p.trim_matches('/'))
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        let key = o.access_key_id.or_else(|| s3.access_key_id.clone());
        let secret = o.secret_access_key.or_else(|| s3.secret_access_key.clone());
        let credentials = match (key, secret) {
            (Some(k), Some(s)) => Some((k, s)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(format!(
                    "the {name} volume has an S3 access_key_id but no secret_access_key (set \
                     AIRLOCK__STORAGE__S3__SECRET_ACCESS_KEY)"
                ))
            }
            (None, Some(_)) => {
                return Err(format!(
                    "the {name} volume has an S3 secret_access_key but no access_key_id"
                ))
            }
        };
        let endpoint = o.endpoint.or_else(|| s3.endpoint.clone());
        if let Some(e) = &endpoint {
            let ok = url::Url::parse(e)
                .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .unwrap_or(false);
            if !ok {
                return Err(format!(
                    "the {name} volume's S3 endpoint `{e}` is not an http(s) URL"
                ));
            }
        }
        Ok(VolumeLocation::S3(S3Volume {
            endpoint,
            region: o.region.unwrap_or_else(|| s3.region.clone()),
            bucket,
            prefix,
            credentials,
            path_style: o.path_style.unwrap_or(s3.path_style),
            retention,
        }))
    }

    /// Checks every volume's settings, and that only known volumes are named.
    pub fn check_volumes(&self) -> Result<(), String> {
        for name in self.volumes.keys() {
            if !VOLUME_NAMES.contains(&name.as_str()) {
                return Err(format!(
                    "[storage.volumes.{name}]: no such volume (the volumes are {})",
                    VOLUME_NAMES.join(", ")
                ));
            }
        }
        for name in VOLUME_NAMES {
            self.volume(name)?;
        }
        Ok(())
    }

    /// `keys_dir`, or `<data_dir>/keys`.
    pub fn keys_dir(&self) -> PathBuf {
        self.keys_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys"))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSettings {
    /// Lifetime of an upload token when none is asked for. Default `24h`; the workspace's
    /// policy caps it.
    #[serde(with = "humantime_serde_compat")]
    pub upload_default_ttl: Duration,
    /// Lifetime of a staff token minted by `airlock admin token`. Default `24h`.
    #[serde(with = "humantime_serde_compat")]
    pub staff_default_ttl: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Largest single file accepted, in bytes. Default 1 TiB.
    pub max_file_size: u64,
    /// Most files in one transfer. Default 1,000,000.
    pub max_files: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` or `json`. Default `text`.
    pub format: String,
    /// A tracing filter such as `info` or `airlock=debug`. Default `info`; `RUST_LOG` wins.
    pub level: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            shutdown_grace: Duration::from_secs(60),
            sweep_interval: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(30),
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./airlock-data"),
            min_free: 1 << 30,
            group_commit: true,
            keys_dir: None,
            backend: StorageBackend::Local,
            s3: S3Settings::default(),
            volumes: Default::default(),
        }
    }
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            upload_default_ttl: Duration::from_secs(24 * 3600),
            staff_default_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_file_size: 1 << 40,
            max_files: 1_000_000,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config{}: {message}", .path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Invalid {
        path: Option<PathBuf>,
        message: String,
    },
}

impl Settings {
    /// Loads defaults, then `file` if given, then the `AIRLOCK__*` variables of `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Invalid {
                        path: Some(p.to_owned()),
                        message: e.to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        for (k, v) in env {
            let Some(rest) = k.strip_prefix("AIRLOCK__") else {
                continue;
            };
            let parts: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
                return Err(ConfigError::Invalid {
                    path: None,
                    message: format!(
                        "environment variable {k} must look like AIRLOCK__SECTION__KEY (or \
                         AIRLOCK__SECTION__TABLE__KEY for a nested table such as [storage.s3])"
                    ),
                });
            }
            // Numbers and booleans keep their type; anything else is a string.
            let value = match v.parse::<i64>() {
                Ok(n) => toml::Value::Integer(n),
                Err(_) => match v.as_str() {
                    "true" => toml::Value::Boolean(true),
                    "false" => toml::Value::Boolean(false),
                    _ => toml::Value::String(v.clone()),
                },
            };
            // Nested as the file nests: AIRLOCK__STORAGE__S3__ENDPOINT is [storage.s3] endpoint.
            let (key, tables) = parts.split_last().expect("two parts or more");
            let mut at = &mut table;
            for (i, name) in tables.iter().enumerate() {
                let entry = at
                    .entry(name.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                at = match entry {
                    toml::Value::Table(t) => t,
                    _ => {
                        return Err(ConfigError::Invalid {
                            path: None,
                            message: format!(
                                "{k}: `{}` is a value, not a section",
                                tables[..=i].join(".")
                            ),
                        })
                    }
                };
            }
            at.insert(key.clone(), value);
        }
        let s: Settings = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid {
                path: file.map(Path::to_owned),
                message: e.to_string(),
            })?;
        let bad = |message: String| ConfigError::Invalid {
            path: file.map(Path::to_owned),
            message,
        };
        if let Some(u) = &s.database.url {
            let known = ["sqlite://", "postgres://", "postgresql://"];
            if !known.iter().any(|p| u.starts_with(p)) {
                return Err(bad(format!(
                    "`database.url` must start with sqlite://, postgres:// or postgresql://, \
                     not `{}`",
                    crate::store::redact_url(u)
                )));
            }
        }
        if !s.webhooks.urls.is_empty() && s.webhooks.secret.len() < 16 {
            return Err(bad(
                "`webhooks.secret` must be set (16 characters or more) when `webhooks.urls` is"
                    .into(),
            ));
        }
        for u in &s.webhooks.urls {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(bad(format!("`webhooks.urls`: `{u}` is not an http(s) URL")));
            }
        }
        if s.audit.summary_window.is_zero() || s.audit.anchor_interval.is_zero() {
            return Err(bad(
                "`audit.summary_window` and `audit.anchor_interval` must be longer than 0".into(),
            ));
        }
        if s.uploads.per_token == 0 || s.uploads.per_address == 0 {
            return Err(bad(
                "`uploads.per_token` and `uploads.per_address` must be at least 1".into(),
            ));
        }
        if s.uploads.idle_timeout.is_zero() {
            return Err(bad("`uploads.idle_timeout` must be above zero".into()));
        }
        if s.webhooks.max_attempts == 0 {
            return Err(bad("`webhooks.max_attempts` must be at least 1".into()));
        }
        s.mail.check(&s.integrity).map_err(bad)?;
        s.auth.check().map_err(bad)?;
        s.storage.check_volumes().map_err(bad)?;
        Ok(s)
    }
}

/// `"24h"`-style durations in the config file, read with humantime.
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("airlock.toml");
        std::fs::write(
            &f,
            "[server]\nlisten = \"127.0.0.1:9000\"\n[tokens]\nupload_default_ttl = \"2h\"\n",
        )
        .unwrap();
        let s = Settings::load(
            Some(&f),
            [(
                "AIRLOCK__SERVER__LISTEN".to_string(),
                "0.0.0.0:9999".to_string(),
            )],
        )
        .unwrap();
        assert_eq!(s.server.listen.port(), 9999);
        assert_eq!(s.tokens.upload_default_ttl, Duration::from_secs(7200));

        std::fs::write(&f, "[server]\nlisen = \"x\"\n").unwrap();
        let err = Settings::load(Some(&f), []).unwrap_err().to_string();
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn environment_overrides_nest_as_the_file_does() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("airlock.toml");
        std::fs::write(
            &f,
            "[storage]\nbackend = \"s3\"\n[storage.s3]\nendpoint = \"http://127.0.0.1:3900\"\n\
             region = \"garage\"\nbucket = \"airlock\"\naccess_key_id = \"GKfile\"\n\
             path_style = true\n[storage.volumes.quarantine]\nbackend = \"local\"\n",
        )
        .unwrap();
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let s = Settings::load(
            Some(&f),
            env(&[
                ("AIRLOCK__STORAGE__S3__SECRET_ACCESS_KEY", "s3cret"),
                ("AIRLOCK__STORAGE__S3__ENDPOINT", "http://127.0.0.1:3999"),
                ("AIRLOCK__STORAGE__VOLUMES__EGRESS__BUCKET", "outbound"),
                ("AIRLOCK__STORAGE__S3__PREFIX", "tre1/"),
            ]),
        )
        .unwrap();
        assert_eq!(
            s.storage.volume("quarantine").unwrap(),
            VolumeLocation::Local
        );
        let VolumeLocation::S3(r) = s.storage.volume("released").unwrap() else {
            panic!("released is not on S3");
        };
        assert_eq!(r.endpoint.as_deref(), Some("http://127.0.0.1:3999"));
        assert_eq!(
            (r.bucket.as_str(), r.prefix.as_str()),
            ("airlock", "tre1/released")
        );
        assert_eq!(r.region, "garage");
        assert!(r.path_style);
        assert_eq!(
            r.credentials,
            Some(("GKfile".to_string(), "s3cret".to_string()))
        );
        let VolumeLocation::S3(e) = s.storage.volume("egress").unwrap() else {
            panic!("egress is not on S3");
        };
        assert_eq!(
            (e.bucket.as_str(), e.prefix.as_str()),
            ("outbound", "tre1/egress")
        );
        // The secret is never shown.
        assert!(!format!("{s:?}").contains("s3cret"));
        assert!(!format!("{r:?}").contains("s3cret"));

        // A value where a section is nested, a missing bucket, half the credentials, an
        // unknown volume and a bad endpoint are refused, each named.
        for (pairs, want) in [
            (
                vec![("AIRLOCK__SERVER__LISTEN__PORT", "1")],
                "server.listen",
            ),
            (
                vec![("AIRLOCK__STORAGE__BACKEND", "s3")],
                "no bucket is set",
            ),
            (
                vec![
                    ("AIRLOCK__STORAGE__BACKEND", "s3"),
                    ("AIRLOCK__STORAGE__S3__BUCKET", "b"),
                    ("AIRLOCK__STORAGE__S3__ACCESS_KEY_ID", "GK1"),
                ],
                "no secret_access_key",
            ),
            (
                vec![("AIRLOCK__STORAGE__VOLUMES__SCRATCH__BACKEND", "s3")],
                "[storage.volumes.scratch]: no such volume",
            ),
            (
                vec![
                    ("AIRLOCK__STORAGE__BACKEND", "s3"),
                    ("AIRLOCK__STORAGE__S3__BUCKET", "b"),
                    ("AIRLOCK__STORAGE__S3__ENDPOINT", "127.0.0.1:3900"),
                ],
                "not an http(s) URL",
            ),
            (
                vec![("AIRLOCK__STORAGE__BACKEND", "ftp")],
                "unknown variant",
            ),
        ] {
            let err = Settings::load(None, env(&pairs)).unwrap_err().to_string();
            assert!(err.contains(want), "{pairs:?}: {err}");
        }
        // Under a value the file set, a nested variable is refused by name.
        let err = Settings::load(
            Some(&f),
            env(&[("AIRLOCK__STORAGE__S3__REGION__NAME", "x")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`storage.s3.region` is a value"), "{err}");
        // The default: every volume local, nothing else needed.
        let d = Settings::load(None, env(&[])).unwrap();
        for v in VOLUME_NAMES {
            assert_eq!(d.storage.volume(v).unwrap(), VolumeLocation::Local);
        }
    }

    #[test]
    fn retention_is_for_the_released_volume_on_s3_only_and_at_least_a_day() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            [
                ("AIRLOCK__STORAGE__BACKEND", "s3"),
                ("AIRLOCK__STORAGE__S3__BUCKET", "b"),
            ]
            .iter()
            .chain(pairs)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
        };
        let released = |pairs: &[(&str, &str)]| {
            let s = Settings::load(None, env(pairs)).unwrap();
            match s.storage.volume("released").unwrap() {
                VolumeLocation::S3(v) => v.retention,
                VolumeLocation::Local => panic!("released is not on S3"),
            }
        };
        // None by default; compliance unless governance is asked for.
        assert_eq!(released(&[]), None);
        assert_eq!(
            released(&[("AIRLOCK__STORAGE__VOLUMES__RELEASED__RETENTION_DAYS", "30")]),
            Some(Retention {
                mode: RetentionMode::Compliance,
                days: 30
            })
        );
        assert_eq!(
            released(&[
                ("AIRLOCK__STORAGE__VOLUMES__RELEASED__RETENTION_DAYS", "7"),
                (
                    "AIRLOCK__STORAGE__VOLUMES__RELEASED__RETENTION_MODE",
                    "governance"
                ),
            ]),
            Some(Retention {
                mode: RetentionMode::Governance,
                days: 7
            })
        );
        // The same from a file.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("airlock.toml");
        std::fs::write(
            &f,
            "[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"b\"\n\
             [storage.volumes.released]\nretention_days = 2\nretention_mode = \"compliance\"\n",
        )
        .unwrap();
        let s = Settings::load(Some(&f), []).unwrap();
        let VolumeLocation::S3(v) = s.storage.volume("released").unwrap() else {
            panic!("released is not on S3")
        };
        assert_eq!(v.retention.map(|r| r.days), Some(2));
        // Other volumes have none.
        let VolumeLocation::S3(q) = s.storage.volume("quarantine").unwrap() else {
            panic!("quarantine is not on S3")
        };
        assert_eq!(q.retention, None);

        // Refused at load, each naming the key.
        for (pairs, want) in [
            (
                vec![("AIRLOCK__STORAGE__VOLUMES__QUARANTINE__RETENTION_DAYS", "1")],
                "[storage.volumes.quarantine] retention_days: retention is only for the \
                 released volume",
            ),
            (
                vec![("AIRLOCK__STORAGE__VOLUMES__EGRESS__RETENTION_DAYS", "1")],
                "[storage.volumes.egress] retention_days: retention is only for the released",
            ),
            (
                vec![("AIRLOCK__STORAGE__VOLUMES__RELEASED__RETENTION_DAYS", "0")],
                "[storage.volumes.released] retention_days must be at least 1",
            ),
            (
                vec![("AIRLOCK__STORAGE__VOLUMES__RELEASED__RETENTION_DAYS", "-3")],
                "retention_days",
            ),
            (
                vec![(
                    "AIRLOCK__STORAGE__VOLUMES__RELEASED__RETENTION_DAYS",
                    "40000",
                )],
                "[storage.volumes.released] retention_days = 40000 is more than 36500 days",
            ),
            (
                vec![
                    ("AIRLOCK__STORAGE__VOLUMES__RELEASED__RETENTION_DAYS", "1"),
                    ("AIRLOCK__STORAGE__VOLUMES__RELEASED__BACKEND", "local"),
                ],
                "[storage.volumes.released] retention_days is set but the released volume is \
                 on local disk",
            ),
            (
                vec![(
                    "AIRLOCK__STORAGE__VOLUMES__RELEASED__RETENTION_MODE",
                    "governance",
                )],
                "[storage.volumes.released] retention_mode is set without retention_days",
            ),
            (
                vec![
                    ("AIRLOCK__STORAGE__VOLUMES__RELEASED__RETENTION_DAYS", "1"),
                    (
                        "AIRLOCK__STORAGE__VOLUMES__RELEASED__RETENTION_MODE",
                        "legal",
                    ),
                ],
                "unknown variant `legal`",
            ),
        ] {
            let err = Settings::load(None, env(&pairs)).unwrap_err().to_string();
            assert!(err.contains(want), "{pairs:?}: {err}");
        }
        // A local released volume with retention is refused even when the default backend
        // is local.
        let err = Settings::load(
            None,
            [(
                "AIRLOCK__STORAGE__VOLUMES__RELEASED__RETENTION_DAYS".to_string(),
                "1".to_string(),
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("is on local disk"), "{err}");
    }

    #[test]
    fn auth_needs_all_three_keys_or_none_and_a_safe_jwks_url() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let s = Settings::load(None, []).unwrap();
        assert!(!s.auth.enabled(), "local tokens only by default");
        let full = [
            ("AIRLOCK__AUTH__JWKS_URL", "https://idp.example.org/certs"),
            (
                "AIRLOCK__AUTH__ISSUER",
                "https://idp.example.org/realms/tre",
            ),
            ("AIRLOCK__AUTH__AUDIENCE", "airlock"),
        ];
        let s = Settings::load(None, env(&full)).unwrap();
        assert!(s.auth.enabled());
        assert_eq!(s.auth.username_claim, UsernameClaim::PreferredUsername);
        assert_eq!(s.auth.jwks_min_refresh, Duration::from_secs(30));

        let err = Settings::load(None, env(&full[..1]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("auth.issuer") && err.contains("auth.audience"),
            "{err}"
        );
        for (extra, why) in [
            (
                ("AIRLOCK__AUTH__JWKS_URL", "http://idp.example.org/certs"),
                "https://",
            ),
            (
                ("AIRLOCK__AUTH__USERNAME_CLAIM", "email"),
                "username_domain",
            ),
            (("AIRLOCK__AUTH__USERNAME_CLAIM", "sub"), "sub"),
            (
                ("AIRLOCK__AUTH__JWKS_MIN_REFRESH", "0s"),
                "jwks_min_refresh",
            ),
        ] {
            let mut pairs = full.to_vec();
            pairs.push(extra);
            let err = Settings::load(None, env(&pairs)).unwrap_err().to_string();
            assert!(err.contains(why), "{extra:?}: {err}");
        }
        let mut pairs = full.to_vec();
        pairs.push(("AIRLOCK__AUTH__JWKS_URL", "http://127.0.0.1:8081/certs"));
        pairs.push(("AIRLOCK__AUTH__USERNAME_CLAIM", "email"));
        pairs.push(("AIRLOCK__AUTH__USERNAME_DOMAIN", "example.org"));
        let s = Settings::load(None, env(&pairs)).unwrap();
        assert_eq!(s.auth.username_claim, UsernameClaim::Email);
    }

    #[test]
    fn mail_settings_are_checked_and_the_password_comes_from_the_environment_unlogged() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let s = Settings::load(
            None,
            env(&[
                ("AIRLOCK__MAIL__SMTP", "smtp.example.org:587"),
                ("AIRLOCK__MAIL__DOMAIN", "example.org"),
                ("AIRLOCK__MAIL__USERNAME", "airlock"),
                // Typed as a number by the environment reader; still a password.
                ("AIRLOCK__MAIL__PASSWORD", "12345678"),
            ]),
        )
        .unwrap();
        assert_eq!(
            s.mail.tls,
            MailTls::Starttls,
            "STARTTLS unless said otherwise"
        );
        assert_eq!(s.mail.password.as_deref(), Some("12345678"));
        let shown = format!("{s:?}");
        assert!(!shown.contains("12345678"), "{shown}");
        assert!(shown.contains("<hidden>"));

        for (bad, why) in [
            (
                vec![("AIRLOCK__MAIL__SMTP", "smtp.example.org:587")],
                "mail.domain",
            ),
            (
                vec![
                    ("AIRLOCK__MAIL__SMTP", "smtp.example.org"),
                    ("AIRLOCK__MAIL__DOMAIN", "example.org"),
                ],
                "host:port",
            ),
            (
                vec![
                    ("AIRLOCK__MAIL__SMTP", "smtp.example.org:25"),
                    ("AIRLOCK__MAIL__DOMAIN", "example.org"),
                    ("AIRLOCK__MAIL__USERNAME", "airlock"),
                ],
                "go together",
            ),
            (
                vec![
                    ("AIRLOCK__MAIL__SMTP", "smtp.example.org:25"),
                    ("AIRLOCK__MAIL__DOMAIN", "example.org"),
                    ("AIRLOCK__MAIL__TLS", "ssl"),
                ],
                "ssl",
            ),
            (vec![("AIRLOCK__MAIL__FROM", "not an address")], "mail.from"),
            (
                vec![("AIRLOCK__INTEGRITY__SMTP", "nohost")],
                "integrity.smtp",
            ),
        ] {
            let err = Settings::load(None, env(&bad)).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        // The older alert keys still load.
        let s = Settings::load(
            None,
            env(&[
                ("AIRLOCK__INTEGRITY__SMTP", "127.0.0.1:25"),
                ("AIRLOCK__INTEGRITY__MAIL_FROM", "alerts@example.org"),
                ("AIRLOCK__INTEGRITY__MAIL_DOMAIN", "example.org"),
                (
                    "AIRLOCK__INTEGRITY__MAIL_TO",
                    "a@example.org, b@example.org",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(s.integrity.mail_to.len(), 2);
        assert!(s.mail.smtp.is_none());
    }
}
