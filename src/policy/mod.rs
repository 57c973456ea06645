//! Per-tier policies: `policies/tierN.toml`, one file per tier, holding DESIGN.md's governance
//! defaults. Per transfer kind a policy says which roles must approve and how many of each; it
//! also caps upload tokens, limits sizes and file counts, names the scanners every file must
//! pass and how often files at rest are re-verified.
//!
//! The defaults are compiled in from the repository's `policies/` folder, so a bare binary has
//! them; `policy.dir` in the settings points at a folder of operator-edited tier files instead,
//! and a workspace may point at its own file. Every file is checked when the service starts:
//! an unknown key or an impossible rule stops it with an error naming the file and the key.
//!
//! A policy's version is the SHA-256 of its file's bytes. It is recorded on a transfer when it
//! is sealed, and every decision is bound to the version it saw.

use crate::domain::{HexDigest, Role, Tier, TransferKind};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// One tier's rules, as written in its file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    pub tier: i64,
    pub upload_token: UploadTokenRules,
    pub limits: Limits,
    pub scanning: Scanning,
    pub integrity: Integrity,
    pub approvals: Approvals,
    /// Output checking; left out, the defaults of [`EgressRules`].
    #[serde(default)]
    pub egress: EgressRules,
}

/// How egress requests are checked and collected (the `[egress]` table of a policy).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressRules {
    /// Checkers see each other's votes and comments only once their own review is submitted.
    /// Default: on at tier 2 and above.
    pub blinded: Option<bool>,
    /// What a disclosure finding does: `acknowledge` (default: every required checker must
    /// acknowledge it before submitting their review) or `block` (a `fail` finding blocks the
    /// request; `review` findings still need acknowledging).
    pub findings: FindingRule,
    /// Longest lifetime a recipient's collection token may be given (default 7 days).
    #[serde(deserialize_with = "duration")]
    pub collection_max_ttl: Duration,
    /// Overrides of `scanners/disclosure.toml` for this tier (`threshold = 7`, ...).
    pub disclosure: toml::Table,
}

impl Default for EgressRules {
    fn default() -> Self {
        EgressRules {
            blinded: None,
            findings: FindingRule::Acknowledge,
            collection_max_ttl: Duration::from_secs(7 * 24 * 3600),
            disclosure: toml::Table::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingRule {
    #[default]
    Acknowledge,
    Block,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadTokenRules {
    /// Longest lifetime an upload token may be given.
    #[serde(deserialize_with = "duration")]
    pub max_ttl: Duration,
    /// Whether an upload token must be bound to at least one IP range.
    pub require_cidr: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(deserialize_with = "size")]
    pub max_file_size: u64,
    pub max_files: u64,
    #[serde(deserialize_with = "size")]
    pub max_transfer_size: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scanning {
    /// Scanners every file must pass before review (file names in scanners/).
    pub required: Vec<String>,
    /// What a file no scanner could scan (over clamd's StreamMaxLength, an encrypted archive)
    /// does: `block` the transfer (the default when left out), or `acknowledge`: review goes
    /// on, and a Referee must acknowledge the unscannable files, on the record, when approving.
    #[serde(default)]
    pub unscannable: Unscannable,
    /// File types denied or allowed, per transfer kind (`data-ingress`, …): MIME types or
    /// groups from scanners/filetype.toml. Checked by the `filetype` scanner.
    #[serde(default)]
    pub filetype: BTreeMap<String, TypeLists>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unscannable {
    #[default]
    Block,
    Acknowledge,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeLists {
    #[serde(default)]
    pub deny: Vec<String>,
    /// Empty: everything not denied is allowed.
    #[serde(default)]
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Integrity {
    #[serde(deserialize_with = "duration")]
    pub reverify_interval: Duration,
}

/// Who must approve, per transfer kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Approvals {
    pub data_ingress: BTreeMap<String, u32>,
    pub software_ingress: BTreeMap<String, u32>,
    pub egress: BTreeMap<String, u32>,
    pub return_to_provider: BTreeMap<String, u32>,
}

/// Roles that may be asked to approve. A System Manager runs the service and never decides;
/// a Researcher requests and never approves (paper, section 2).
pub const APPROVER_ROLES: [Role; 5] = [
    Role::Investigator,
    Role::Referee,
    Role::ProgrammeManager,
    Role::ProjectManager,
    Role::Provider,
];

/// A checked policy with where it came from and its version.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The file it was read from (`policies/tierN.toml` for a compiled-in default).
    pub file: String,
    /// SHA-256 of the file's bytes.
    pub version: HexDigest,
    pub rules: Rules,
    /// Approvals per kind, parsed: `(role, how many)`, in a stable order.
    approvals: HashMap<TransferKind, Vec<(Role, u32)>>,
}

impl Policy {
    /// Parses and checks one policy file. `expect_tier` is the tier it must declare.
    pub fn parse(file: &str, text: &str, expect_tier: Option<Tier>) -> Result<Policy, PolicyError> {
        let err = |key: &str, message: String| PolicyError {
            file: file.to_owned(),
            key: key.to_owned(),
            message,
        };
        let rules: Rules = parse_toml(text).map_err(|(key, msg)| err(&key, msg))?;
        let tier = Tier::try_from(rules.tier).map_err(|m| err("tier", m))?;
        if let Some(want) = expect_tier {
            if tier != want {
                return Err(err(
                    "tier",
                    format!(
                        "is {} but this policy is for tier {}",
                        tier.get(),
                        want.get()
                    ),
                ));
            }
        }
        if rules.upload_token.max_ttl < Duration::from_secs(60) {
            return Err(err(
                "upload_token.max_ttl",
                "must be at least 1m: no upload could finish".into(),
            ));
        }
        for (key, v) in [
            ("limits.max_file_size", rules.limits.max_file_size),
            ("limits.max_files", rules.limits.max_files),
            ("limits.max_transfer_size", rules.limits.max_transfer_size),
        ] {
            if v == 0 {
                return Err(err(
                    key,
                    "must be more than 0: nothing could be uploaded".into(),
                ));
            }
        }
        if rules.limits.max_transfer_size < rules.limits.max_file_size {
            return Err(err(
                "limits.max_transfer_size",
                "is smaller than limits.max_file_size".into(),
            ));
        }
        // Whether each scanner is configured is checked against scanners/ (Policies::load).
        for (i, s) in rules.scanning.required.iter().enumerate() {
            if rules.scanning.required[..i].contains(s) {
                return Err(err("scanning.required", format!("`{s}` is listed twice")));
            }
        }
        for kind in rules.scanning.filetype.keys() {
            if ![
                "data-ingress",
                "software-ingress",
                "egress",
                "return-to-provider",
            ]
            .contains(&kind.as_str())
            {
                return Err(err(
                    "scanning.filetype",
                    format!("`{kind}` is not a transfer kind"),
                ));
            }
        }
        if rules.integrity.reverify_interval < Duration::from_secs(1) {
            return Err(err(
                "integrity.reverify_interval",
                "must be at least 1s".into(),
            ));
        }
        let mut approvals = HashMap::new();
        for (kind, table) in [
            ("data-ingress", &rules.approvals.data_ingress),
            ("software-ingress", &rules.approvals.software_ingress),
            ("egress", &rules.approvals.egress),
            ("return-to-provider", &rules.approvals.return_to_provider),
        ] {
            let mut list = Vec::new();
            for (role, n) in table {
                let key = format!("approvals.{kind}.{role}");
                let r: Role = role.parse().map_err(|m| err(&key, m))?;
                if !APPROVER_ROLES.contains(&r) {
                    return Err(err(
                        &key,
                        format!(
                            "a {r} never approves; approvers are {}",
                            APPROVER_ROLES.map(|r| r.as_str()).join(", ")
                        ),
                    ));
                }
                if *n == 0 {
                    return Err(err(
                        &key,
                        "must be at least 1 (leave the role out instead)".into(),
                    ));
                }
                if *n > 10 {
                    return Err(err(
                        &key,
                        format!("{n} approvals in one role is not a rule anyone can meet"),
                    ));
                }
                list.push((r, *n));
            }
            if let Ok(k) = kind.parse::<TransferKind>() {
                approvals.insert(k, list);
            }
        }
        use sha2::Digest;
        let version = HexDigest::from_bytes(&sha2::Sha256::digest(text.as_bytes()).into());
        Ok(Policy {
            file: file.to_owned(),
            version,
            rules,
            approvals,
        })
    }

    /// Reads and checks a policy file from disk.
    pub fn load(path: &Path, expect_tier: Option<Tier>) -> Result<Policy, PolicyError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            file: file.clone(),
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Policy::parse(&file, &text, expect_tier)
    }

    /// Whether output checkers review blind (see [`EgressRules::blinded`]).
    pub fn blinded(&self) -> bool {
        self.rules.egress.blinded.unwrap_or(self.rules.tier >= 2)
    }

    pub fn tier(&self) -> Tier {
        Tier::try_from(self.rules.tier).expect("checked when parsed")
    }

    /// The approvals a transfer of `kind` needs: `(role, how many distinct people)`.
    pub fn approvals(&self, kind: TransferKind) -> &[(Role, u32)] {
        self.approvals.get(&kind).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Parses a TOML file into `T`; on failure, the key the error points at and toml's message
/// (which names unknown and missing keys).
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
) -> Result<T, (String, String)> {
    toml::from_str(text).map_err(|e| {
        let key = e
            .span()
            .and_then(|s| text.get(s))
            .map(|s| s.trim_matches(|c| c == '[' || c == ']').to_owned())
            .unwrap_or_default();
        (key, e.message().to_owned())
    })
}

/// Reads a humantime duration ("24h") from TOML.
pub(crate) fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(serde::de::Error::custom)
}

/// Reads a human size ("100 MiB") or a number from TOML.
pub(crate) fn size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }
    match Raw::deserialize(d)? {
        Raw::N(n) => Ok(n),
        Raw::S(s) => parse_size(&s).map_err(serde::de::Error::custom),
    }
}

/// `"100 GiB"`, `"1TiB"`, `"512 MB"`, `"4096"`: a byte count.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size such as \"100 GiB\""))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "MB" => 1000u64.pow(2),
        "GB" => 1000u64.pow(3),
        "TB" => 1000u64.pow(4),
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{s}`: use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

const DEFAULTS: [(&str, &str); 5] = [
    (
        "policies/tier0.toml",
        include_str!("../../policies/tier0.toml"),
    ),
    (
        "policies/tier1.toml",
        include_str!("../../policies/tier1.toml"),
    ),
    (
        "policies/tier2.toml",
        include_str!("../../policies/tier2.toml"),
    ),
    (
        "policies/tier3.toml",
        include_str!("../../policies/tier3.toml"),
    ),
    (
        "policies/tier4.toml",
        include_str!("../../policies/tier4.toml"),
    ),
];

#[derive(Debug, Clone, thiserror::Error)]
#[error("policy {file}{}: {message}", if key.is_empty() { String::new() } else { format!(", key `{key}`") })]
pub struct PolicyError {
    pub file: String,
    pub key: String,
    pub message: String,
}

/// Every tier's policy, plus the override files workspaces point to.
#[derive(Debug)]
pub struct Policies {
    by_tier: Vec<Arc<Policy>>,
    /// The configured scanners, which every policy's `[scanning]` is checked against.
    scanners: Arc<crate::scan::Scanners>,
    overrides: RwLock<HashMap<PathBuf, Arc<Policy>>>,
}

impl Policies {
    /// The compiled-in defaults, or the tier files in `dir` when given.
    pub fn load(
        dir: Option<&Path>,
        scanners: Arc<crate::scan::Scanners>,
    ) -> Result<Self, PolicyError> {
        let mut by_tier = Vec::new();
        for (i, (file, text)) in DEFAULTS.iter().enumerate() {
            let tier = Tier::try_from(i as i64).expect("0..=4");
            let p = match dir {
                Some(d) => Policy::load(&d.join(format!("tier{i}.toml")), Some(tier))?,
                None => Policy::parse(file, text, Some(tier))?,
            };
            scanners.check_policy(&p)?;
            by_tier.push(Arc::new(p));
        }
        Ok(Self {
            by_tier,
            scanners,
            overrides: RwLock::new(HashMap::new()),
        })
    }

    pub fn defaults() -> Result<Self, PolicyError> {
        let scanners = crate::scan::Scanners::load(None, None).expect("compiled-in scanners");
        Self::load(None, Arc::new(scanners))
    }

    pub fn for_tier(&self, tier: Tier) -> &Arc<Policy> {
        &self.by_tier[tier.get() as usize]
    }

    /// The policy of a workspace: its own file if it has one (read and checked once per
    /// process, then kept), else its tier's.
    pub fn for_workspace(
        &self,
        tier: Tier,
        file: Option<&str>,
    ) -> Result<Arc<Policy>, PolicyError> {
        let Some(file) = file else {
            return Ok(self.for_tier(tier).clone());
        };
        let path = PathBuf::from(file);
        if let Some(p) = self.overrides.read().expect("poisoned").get(&path) {
            return Ok(p.clone());
        }
        let p = Arc::new(Policy::load(&path, Some(tier))?);
        self.scanners.check_policy(&p)?;
        self.overrides
            .write()
            .expect("poisoned")
            .insert(path, p.clone());
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: i64) -> Tier {
        Tier::try_from(n).unwrap()
    }

    #[test]
    fn defaults_hold_the_governance_table() {
        let p = Policies::defaults().unwrap();
        use Role::*;
        use TransferKind::*;
        let roles = |tier, kind| -> Vec<Role> {
            let mut v: Vec<Role> = p
                .for_tier(t(tier))
                .approvals(kind)
                .iter()
                .map(|r| r.0)
                .collect();
            v.sort_by_key(|r| r.as_str());
            v
        };
        assert_eq!(roles(0, DataIngress), vec![Investigator]);
        assert_eq!(roles(1, SoftwareIngress), vec![]);
        assert_eq!(roles(2, DataIngress), vec![Investigator, Referee]);
        assert_eq!(roles(2, SoftwareIngress), vec![Investigator]);
        assert_eq!(roles(3, SoftwareIngress), vec![Investigator, Referee]);
        assert_eq!(
            roles(4, DataIngress),
            vec![Investigator, ProgrammeManager, Referee]
        );
        assert!(!p.for_tier(t(2)).rules.upload_token.require_cidr);
        assert!(p.for_tier(t(3)).rules.upload_token.require_cidr);
        assert_eq!(
            p.for_tier(t(2)).rules.integrity.reverify_interval,
            Duration::from_secs(86400)
        );
        // Each file's version is its own digest.
        assert_ne!(p.for_tier(t(2)).version, p.for_tier(t(3)).version);
    }

    fn with(replace: &str, by: &str) -> Result<Policy, PolicyError> {
        let text = DEFAULTS[2].1;
        assert!(text.contains(replace), "{replace}");
        Policy::parse("x.toml", &text.replace(replace, by), Some(t(2)))
    }

    #[test]
    fn bad_files_name_the_file_and_the_key() {
        let e = with("max_files = 1000000", "max_files = 1000000\nbogus = 1").unwrap_err();
        assert_eq!(e.file, "x.toml");
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = with("referee = 1", "referee = 0").unwrap_err();
        assert_eq!(e.key, "approvals.data-ingress.referee", "{e}");
        let e = with("referee = 1", "system-manager = 1").unwrap_err();
        assert_eq!(e.key, "approvals.data-ingress.system-manager", "{e}");
        let e = with("referee = 1", "wizard = 1").unwrap_err();
        assert!(e.to_string().contains("unknown role `wizard`"), "{e}");
        let e = with("\"archive\"", "\"clamav\"").unwrap_err();
        assert_eq!(e.key, "scanning.required", "{e}");
        // A scanner nobody configured is refused against scanners/.
        let scanners = crate::scan::Scanners::load(None, None).unwrap();
        let p = with("\"archive\"", "\"magic\"").unwrap();
        let e = scanners.check_policy(&p).unwrap_err();
        assert!(e.to_string().contains("no scanner `magic`"), "{e}");
        let p = with(
            "[approvals.egress]",
            "[scanning.filetype.egress]\ndeny = [\"programs\"]\n[approvals.egress]",
        )
        .unwrap();
        let e = scanners.check_policy(&p).unwrap_err();
        assert_eq!(e.key, "scanning.filetype.egress.deny", "{e}");
        let e = with("tier = 2", "tier = 3").unwrap_err();
        assert_eq!(e.key, "tier", "{e}");
        let e = with("max_ttl = \"24h\"", "max_ttl = \"0s\"").unwrap_err();
        assert_eq!(e.key, "upload_token.max_ttl", "{e}");
        let e = with("max_file_size = \"1 TiB\"", "max_file_size = \"1 XB\"").unwrap_err();
        assert!(e.to_string().contains("unknown size unit"), "{e}");
        let e = with("[approvals.egress]", "[approvals.egres]").unwrap_err();
        assert!(e.to_string().contains("egres"), "{e}");
        // The disclosure checks' per-tier overrides are checked at start, naming the key.
        let p = with("tier = 2", "tier = 2\n[egress.disclosure]\nthreshhold = 7").unwrap();
        let e = scanners.check_policy(&p).unwrap_err();
        assert_eq!(e.key, "egress.disclosure", "{e}");
        assert!(e.to_string().contains("threshhold"), "{e}");
        let p = with(
            "tier = 2",
            "tier = 2\n[egress]\nblinded = false\n[egress.disclosure]\nthreshold = 7",
        )
        .unwrap();
        scanners.check_policy(&p).unwrap();
        assert!(!p.blinded());
        let e = with("tier = 2", "tier = 2\n[egress]\nfindings = \"ignore\"").unwrap_err();
        assert!(e.to_string().contains("ignore"), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("100 GiB").unwrap(), 100 << 30);
        assert_eq!(parse_size("2MB").unwrap(), 2_000_000);
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("99999999999 TiB").is_err());
    }
}
