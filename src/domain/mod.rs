//! The vocabulary of airlock: ids, roles, transfer kinds, the transfer state machine and
//! relative paths that have been checked against every hostile-name rule.
//!
//! Nothing here does I/O; everything is parsed once at the edge ("parse, don't validate").

pub mod duties;
pub mod path;
pub mod state;
pub mod tarball;

pub use path::{PathError, RelPath};
pub use state::{TransferState, TransitionError};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        uuid_id!($(#[$doc])* $name, "A fresh random id (UUID v4).", uuid::Uuid::new_v4);
    };
    ($(#[$doc:meta])* $name:ident, $new_doc:literal, $gen:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[derive(utoipa::ToSchema)]
        #[serde(transparent)]
        #[schema(value_type = String, format = "uuid")]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            #[doc = $new_doc]
            pub fn new() -> Self {
                Self($gen())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                uuid::Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// Identifies one transfer (one dataset or one software bundle moving through the airlock).
    TransferId
);
uuid_id!(
    /// Identifies one file inside a transfer; object keys use it, never the user's path.
    FileId,
    "A fresh id that sorts after every id made before it in this process (UUID v7: a \
     millisecond timestamp, a counter, then random bits). The `files` table's key index \
     then grows at its right edge: with random (v4) ids, each of a 4,000-file batch's rows \
     landed on its own page once the index outgrew the batch, so the pages a batch wrote grew \
     with every file already stored (the many-files benchmark's last tenth ran at 0.65 of \
     its first). Access never rests on an id being unguessable: every route checks the token \
     or the staff member's rights on the transfer.",
    uuid::Uuid::now_v7
);
uuid_id!(
    /// Identifies a user.
    UserId
);
uuid_id!(
    /// Identifies a project.
    ProjectId
);
uuid_id!(
    /// Identifies a workspace (one secure environment of a project, at one tier).
    WorkspaceId
);
uuid_id!(
    /// The `jti` of a token: what the database remembers instead of the token itself.
    TokenId
);

/// The roles of the Turing paper, section 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
#[schema(
    description = "A role of the Turing paper, section 2. System-wide: `system-manager` \
    (runs the service; never decides), `programme-manager` (adds users and projects, sees every \
    project, may assign referees and decide where a policy asks), `referee` (the referee \
    college: acts only on transfers it is assigned to), and `provider` (may be named uploader \
    of data). Per project: `project-manager`, `investigator`, `researcher` (requests, never \
    approves) and `provider` (the project's Dataset Provider Representative)."
)]
pub enum Role {
    SystemManager,
    ProgrammeManager,
    ProjectManager,
    Investigator,
    Researcher,
    Referee,
    Provider,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::SystemManager,
        Role::ProgrammeManager,
        Role::ProjectManager,
        Role::Investigator,
        Role::Researcher,
        Role::Referee,
        Role::Provider,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::SystemManager => "system-manager",
            Role::ProgrammeManager => "programme-manager",
            Role::ProjectManager => "project-manager",
            Role::Investigator => "investigator",
            Role::Researcher => "researcher",
            Role::Referee => "referee",
            Role::Provider => "provider",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown role `{s}`: expected one of {}",
                    Role::ALL.map(|r| r.as_str()).join(", ")
                )
            })
    }
}

/// What a transfer carries and in which direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
#[schema(
    description = "`data-ingress`: a dataset from a Dataset Provider Representative \
    (role `provider`) into the workspace's data volume. `software-ingress`: code or packages \
    from a Researcher into its software volume. `egress`: a Researcher's outputs, checked and \
    collected by named recipients. `return-to-provider`: data back to its providers, collected \
    from their IP ranges."
)]
pub enum TransferKind {
    /// A dataset from a Dataset Provider Representative into the secure data volume.
    DataIngress,
    /// Code or packages from a Researcher into the software volume (paper 9.2).
    SoftwareIngress,
    /// Outputs a Researcher asks to take out of the workspace's output volume (paper 4.1.4,
    /// 10): pinned at submit, checked by output checkers, collected by named recipients.
    Egress,
    /// Data returned to its provider (paper 6): an egress request whose recipients are the
    /// data's providers, collected with an IP-bound token inside a time window.
    ReturnToProvider,
}

impl TransferKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::DataIngress => "data-ingress",
            TransferKind::SoftwareIngress => "software-ingress",
            TransferKind::Egress => "egress",
            TransferKind::ReturnToProvider => "return-to-provider",
        }
    }

    /// The role the uploader (for egress: the requester) must hold for this kind.
    pub fn uploader_role(self) -> Role {
        match self {
            TransferKind::DataIngress => Role::Provider,
            TransferKind::SoftwareIngress
            | TransferKind::Egress
            | TransferKind::ReturnToProvider => Role::Researcher,
        }
    }

    /// Whether files come in (ingress) rather than go out of a workspace.
    pub fn is_ingress(self) -> bool {
        matches!(
            self,
            TransferKind::DataIngress | TransferKind::SoftwareIngress
        )
    }

    /// Whether files leave the workspace (egress, or a return to the provider).
    pub fn is_egress(self) -> bool {
        !self.is_ingress()
    }

    /// The folder of the workspace's read-only volume that released files go to.
    pub fn volume(self) -> &'static str {
        match self {
            TransferKind::DataIngress => "data",
            TransferKind::SoftwareIngress => "software",
            TransferKind::Egress | TransferKind::ReturnToProvider => "egress",
        }
    }
}

impl fmt::Display for TransferKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TransferKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "data-ingress" => Ok(TransferKind::DataIngress),
            "software-ingress" => Ok(TransferKind::SoftwareIngress),
            "egress" => Ok(TransferKind::Egress),
            "return-to-provider" => Ok(TransferKind::ReturnToProvider),
            other => Err(format!(
                "unknown transfer kind `{other}`: expected data-ingress, software-ingress, \
                 egress or return-to-provider"
            )),
        }
    }
}

/// A security tier, 0 (open data) to 4 (most sensitive), as in the paper's section 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Tier(u8);

impl Tier {
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<i64> for Tier {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, Self::Error> {
        if (0..=4).contains(&v) {
            Ok(Tier(v as u8))
        } else {
            Err(format!("tier must be 0 to 4, got {v}"))
        }
    }
}

impl From<Tier> for i64 {
    fn from(t: Tier) -> i64 {
        t.0 as i64
    }
}

/// A name for a user, project or workspace: ASCII letters, digits, `-`, `_` and `.`,
/// 1 to 64 characters, not starting with `.` (it ends up in filesystem paths).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(Name(s.to_owned()))
        } else {
            Err(format!(
                "invalid name `{s}`: use 1-64 ASCII letters, digits, '-', '_' or '.', not starting with '.'"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Name::parse(&s)
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lowercase-hex digest of a fixed byte length (32 for SHA-256 and BLAKE3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(
    value_type = String,
    pattern = "^[0-9a-fA-F]{64}$",
    description = "A 32-byte digest as 64 hex digits (airlock always writes lowercase)."
)]
pub struct HexDigest(String);

impl HexDigest {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(HexDigest(t.to_ascii_lowercase()))
        } else {
            Err(format!("`{s}` is not a 64-character hex digest"))
        }
    }

    pub fn from_bytes(b: &[u8; 32]) -> Self {
        HexDigest(hex::encode(b))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HexDigest {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        HexDigest::parse(&s)
    }
}

impl From<HexDigest> for String {
    fn from(d: HexDigest) -> String {
        d.0
    }
}

impl fmt::Display for HexDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One line of a sealed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub path: String,
    pub size: u64,
    pub sha256: HexDigest,
    pub blake3: HexDigest,
}

/// The root digest of a manifest: SHA-256 over its lines `sha256 SP blake3 SP size SP path LF`,
/// sorted by the path's bytes. Anyone can recompute it from `transfer show --json`.
pub fn manifest_root(entries: &[ManifestEntry]) -> HexDigest {
    let mut sorted: Vec<&ManifestEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let mut h = RootHasher::default();
    for e in sorted {
        h.push_sorted(e);
    }
    h.finish()
}

/// `manifest_root` over entries that arrive already sorted by path (a walk of the store in
/// path order), so a 100,000-file manifest is never held in memory.
#[derive(Default)]
pub struct RootHasher {
    h: sha2::Sha256,
    entries: u64,
    bytes: u64,
}

impl RootHasher {
    /// Adds the next entry; the caller walks in path byte order (SQLite's BINARY collation).
    pub fn push_sorted(&mut self, e: &ManifestEntry) {
        use sha2::Digest;
        self.h
            .update(format!("{} {} {} {}\n", e.sha256, e.blake3, e.size, e.path).as_bytes());
        self.entries += 1;
        self.bytes += e.size;
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn finish(self) -> HexDigest {
        use sha2::Digest;
        HexDigest::from_bytes(&self.h.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_ids_sort_in_the_order_they_were_made_as_the_store_keeps_them() {
        // The store keys files by the id's text: each new one must sort after the last, or
        // the key index takes writes all over (see `FileId::new`).
        let ids: Vec<String> = (0..20_000).map(|_| FileId::new().to_string()).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1], "{} then {}", w[0], w[1]);
        }
        // Still unique and random past the timestamp and counter.
        let set: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(set.len(), ids.len());
        // Transfers and people keep random ids.
        assert_eq!(TransferId::new().0.get_version_num(), 4);
    }

    #[test]
    fn manifest_root_does_not_depend_on_input_order() {
        let a = ManifestEntry {
            path: "a".into(),
            size: 1,
            sha256: HexDigest::parse(&"1".repeat(64)).unwrap(),
            blake3: HexDigest::parse(&"2".repeat(64)).unwrap(),
        };
        let b = ManifestEntry {
            path: "b/c".into(),
            ..a.clone()
        };
        assert_eq!(
            manifest_root(&[a.clone(), b.clone()]),
            manifest_root(&[b, a.clone()])
        );
        assert_ne!(manifest_root(std::slice::from_ref(&a)), manifest_root(&[]));
    }

    #[test]
    fn names_refuse_path_tricks() {
        assert!(Name::parse("genomics-2026").is_ok());
        for bad in ["", "..", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(Name::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn tiers_are_zero_to_four() {
        assert!(Tier::try_from(4).is_ok());
        assert!(Tier::try_from(5).is_err());
        assert!(Tier::try_from(-1).is_err());
    }
}
