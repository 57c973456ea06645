//! Anchors: the chain's head (seq, hash, time) signed with ed25519 and kept outside the
//! database, so that deleting the newest events, or putting back an older copy of the
//! database, no longer reaches a head that was vouched for.
//!
//! The signing key is a 32-byte seed in `keys/anchor.key` (mode 0600); its public key is
//! written beside it as hex in `keys/anchor.pub`, for webhook receivers and auditors who check
//! anchors on their own. Each anchor is one JSON line appended (and synced) to the anchor file
//! (`[audit] anchor_file`), and sent to the webhooks as `audit.anchor` (see `notify::anchor`).
//!
//! The signed message is `airlock-audit-anchor-v1\n<seq>\n<hash>\n<at>\n`.

use super::key::create_or_read;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The seed's file name in the keys directory.
pub const KEY_FILE: &str = "anchor.key";
/// The public key's file name (hex), for receivers.
pub const PUBLIC_FILE: &str = "anchor.pub";

#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is damaged: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "anchor file {path}, line {line}: {message}: the anchor file was edited or is not ours"
    )]
    BadAnchor {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// One signed head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The sequence number of the newest event at the time (0 for an empty chain).
    pub seq: i64,
    /// That event's hash (`audit::GENESIS` for an empty chain).
    pub hash: String,
    /// When the anchor was made, RFC 3339.
    pub at: String,
    /// The signer's public key, hex.
    pub key: String,
    /// ed25519 over [`Anchor::message`], hex.
    pub signature: String,
}

impl Anchor {
    /// The bytes that are signed.
    pub fn message(seq: i64, hash: &str, at: &str) -> Vec<u8> {
        format!("airlock-audit-anchor-v1\n{seq}\n{hash}\n{at}\n").into_bytes()
    }

    /// Whether the signature is `public`'s over this anchor's seq, hash and time.
    pub fn verify(&self, public: &[u8]) -> bool {
        let Ok(sig) = hex::decode(&self.signature) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, public)
            .verify(&Self::message(self.seq, &self.hash, &self.at), &sig)
            .is_ok()
    }
}

/// The anchor signing key.
pub struct AnchorKey {
    pair: Ed25519KeyPair,
}

impl AnchorKey {
    /// Reads `dir/anchor.key`, creating a random seed (mode 0600) the first time; (re)writes
    /// `dir/anchor.pub` when it is missing. The public key is derived from the seed in memory:
    /// a keys directory that cannot be written (a Kubernetes Secret mounted read-only) holding
    /// `anchor.key` alone starts all the same, with a warning that gives the public key.
    pub fn load_or_create(dir: &Path) -> Result<Self, AnchorError> {
        let path = dir.join(KEY_FILE);
        let io = |p: &Path| {
            let path = p.to_owned();
            move |source| AnchorError::Io { path, source }
        };
        let seed: [u8; 32] = match std::fs::read(&path) {
            Ok(b) => b.try_into().map_err(|b: Vec<u8>| AnchorError::Corrupt {
                path: path.clone(),
                message: format!("{} bytes, expected a 32-byte seed", b.len()),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use rand::RngCore;
                std::fs::create_dir_all(dir).map_err(io(dir))?;
                let mut s = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut s);
                let won = create_or_read(&path, &s).map_err(io(&path))?;
                won.try_into().map_err(|b: Vec<u8>| AnchorError::Corrupt {
                    path: path.clone(),
                    message: format!("{} bytes, expected a 32-byte seed", b.len()),
                })?
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let pair =
            Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|e| AnchorError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let key = Self { pair };
        let public = dir.join(PUBLIC_FILE);
        if !public.exists() {
            if let Err(e) = std::fs::write(&public, format!("{}\n", key.public_hex())) {
                tracing::warn!(
                    path = %public.display(),
                    public_key = %key.public_hex(),
                    cause = %e,
                    "cannot write the anchor public key beside the seed; give auditors this \
                     public key (or add anchor.pub to the keys directory)"
                );
            }
        }
        Ok(key)
    }

    /// The public key's bytes.
    pub fn public(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    pub fn public_hex(&self) -> String {
        hex::encode(self.public())
    }

    /// Signs the head `seq`/`hash` as of now.
    pub fn sign(&self, seq: i64, hash: &str) -> Anchor {
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let sig = self.pair.sign(&Anchor::message(seq, hash, &at));
        Anchor {
            seq,
            hash: hash.to_owned(),
            at,
            key: self.public_hex(),
            signature: hex::encode(sig.as_ref()),
        }
    }
}

/// Appends `anchor` as one line to `path` (created mode 0600 with its directory) and syncs
/// it, so an anchor that was announced is also on disk.
pub fn append(path: &Path, anchor: &Anchor) -> Result<(), AnchorError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| AnchorError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.append(true).create(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path).map_err(io)?;
    let mut line = serde_json::to_string(anchor).expect("an anchor serialises");
    line.push('\n');
    f.write_all(line.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Every anchor in `path`, each signature checked against `public`. A missing file is no
/// anchors; a line that does not parse or verify is an error naming it.
pub fn read(path: &Path, public: &[u8]) -> Result<Vec<Anchor>, AnchorError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(AnchorError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    let bad = |line: usize, message: &str| AnchorError::BadAnchor {
        path: path.to_owned(),
        line,
        message: message.to_owned(),
    };
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let a: Anchor = serde_json::from_str(l).map_err(|_| bad(i + 1, "not an anchor"))?;
        if a.key != hex::encode(public) {
            return Err(bad(i + 1, "signed by another key than keys/anchor.pub"));
        }
        if !a.verify(public) {
            return Err(bad(i + 1, "its signature does not verify"));
        }
        out.push(a);
    }
    Ok(out)
}

/// The last anchor in `path`, unchecked, or `None` (no file, or a last line that does not
/// parse). Only for deciding whether the head moved: `read` is what verifies.
pub fn last(path: &Path) -> Option<Anchor> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    serde_json::from_str(line).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_round_trip_and_an_edited_one_is_named() {
        let d = tempfile::tempdir().unwrap();
        let k = AnchorKey::load_or_create(&d.path().join("keys")).unwrap();
        let again = AnchorKey::load_or_create(&d.path().join("keys")).unwrap();
        assert_eq!(k.public(), again.public());
        let file = d.path().join("anchors.jsonl");
        append(&file, &k.sign(3, "aa")).unwrap();
        append(&file, &k.sign(9, "bb")).unwrap();
        let all = read(&file, k.public()).unwrap();
        assert_eq!(all.iter().map(|a| a.seq).collect::<Vec<_>>(), [3, 9]);
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replace("\"seq\":9", "\"seq\":5");
        std::fs::write(&file, text).unwrap();
        let err = read(&file, k.public()).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(read(&d.path().join("none"), k.public()).unwrap().is_empty());
    }

    /// A keys directory where `anchor.pub` cannot be written (read-only in production; here a
    /// link into a folder that does not exist, since the tests run as root) still gives the
    /// key: the public half comes from the seed.
    #[test]
    fn a_seed_whose_public_file_cannot_be_written_still_loads() {
        let d = tempfile::tempdir().unwrap();
        let keys = d.path().join("keys");
        let k = AnchorKey::load_or_create(&keys).unwrap();
        std::fs::remove_file(keys.join(PUBLIC_FILE)).unwrap();
        std::os::unix::fs::symlink(d.path().join("nowhere/anchor.pub"), keys.join(PUBLIC_FILE))
            .unwrap();
        let again = AnchorKey::load_or_create(&keys).unwrap();
        assert_eq!(again.public(), k.public());
        assert!(!d.path().join("nowhere").exists());
    }
}
