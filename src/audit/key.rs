//! The audit key: 32 random bytes in `keys/audit.key` (mode 0600), never in the database.
//! Every record stores `mac = HMAC-SHA256(key, hash)`, so someone who can write the database
//! but not read the keys directory cannot produce a record that verifies.
//!
//! A data directory from before the key existed has an unkeyed chain. When the key is first
//! created, the number of events already in the chain is written beside it
//! (`keys/audit.legacy`): those events are checked by hash linkage only, every later one must
//! carry a valid mac. The count lives outside the database so an attacker cannot declare the
//! whole chain "legacy" by clearing the macs.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::{Path, PathBuf};

/// The key file's name in the keys directory.
pub const KEY_FILE: &str = "audit.key";
/// How many events predate the key (absent when none do).
pub const LEGACY_FILE: &str = "audit.legacy";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is damaged: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "the audit key {path} is missing, but {keyed} event(s) of the chain were written with \
         it: restore the keys directory from backup (a new key would hide any tampering)"
    )]
    Lost { path: PathBuf, keyed: u64 },
}

/// The chain's HMAC key.
#[derive(Clone)]
pub struct ChainKey {
    secret: [u8; 32],
    legacy: u64,
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainKey")
            .field("legacy", &self.legacy)
            .finish_non_exhaustive()
    }
}

impl ChainKey {
    /// A key from its bytes (tests, and tools that keep the key elsewhere).
    pub fn from_secret(secret: [u8; 32], legacy: u64) -> Self {
        Self { secret, legacy }
    }

    /// Reads the key in `dir`, or creates it when there is none. `events` and `keyed` are the
    /// chain's length and how many of its records carry a mac: a chain with keyed records and
    /// no key is refused rather than re-keyed.
    pub fn load_or_create(dir: &Path, events: u64, keyed: u64) -> Result<Self, KeyError> {
        let path = dir.join(KEY_FILE);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| KeyError::Io { path, source }
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let secret: [u8; 32] =
                    bytes.try_into().map_err(|b: Vec<u8>| KeyError::Corrupt {
                        path: path.clone(),
                        message: format!("{} bytes, expected 32", b.len()),
                    })?;
                let lpath = dir.join(LEGACY_FILE);
                let legacy = match std::fs::read_to_string(&lpath) {
                    Ok(s) => s.trim().parse().map_err(|_| KeyError::Corrupt {
                        path: lpath.clone(),
                        message: format!("`{}` is not a count of events", s.trim()),
                    })?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                    Err(e) => return Err(io(&lpath)(e)),
                };
                Ok(Self { secret, legacy })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if keyed > 0 {
                    return Err(KeyError::Lost { path, keyed });
                }
                use rand::RngCore;
                std::fs::create_dir_all(dir).map_err(io(dir))?;
                let mut secret = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut secret);
                // The legacy count first: a crash between the two leaves no key, and the next
                // start counts again (replacing what a crashed start left).
                let _ = std::fs::remove_file(dir.join(LEGACY_FILE));
                if events > 0 {
                    // Another replica starting at the same moment writes the same count.
                    let lpath = dir.join(LEGACY_FILE);
                    match write_private(&lpath, format!("{events}\n").as_bytes()) {
                        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                            return Err(io(&lpath)(e));
                        }
                        _ => {}
                    }
                }
                match write_private(&path, &secret) {
                    // A replica starting at the same moment published its key first: use it.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        return Self::load_or_create(dir, events, keyed);
                    }
                    other => other.map_err(io(&path))?,
                }
                if events > 0 {
                    tracing::warn!(
                        events,
                        "audit chain keyed now: the {events} earlier event(s) are checked by hash \
                         linkage only"
                    );
                }
                Ok(Self {
                    secret,
                    legacy: events,
                })
            }
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Events at the start of the chain written before the key existed.
    pub fn legacy_events(&self) -> u64 {
        self.legacy
    }

    /// Hex HMAC-SHA256 of a record's hash.
    pub fn mac(&self, hash: &str) -> String {
        hex::encode(self.hmac(hash).finalize().into_bytes())
    }

    /// Whether `mac` is the key's mac of `hash` (constant time).
    pub fn check(&self, hash: &str, mac: &str) -> bool {
        match hex::decode(mac) {
            Ok(m) => self.hmac(hash).verify_slice(&m).is_ok(),
            Err(_) => false,
        }
    }

    fn hmac(&self, hash: &str) -> Hmac<Sha256> {
        let mut m =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        m.update(b"airlock-audit-v1\n");
        m.update(hash.as_bytes());
        m
    }
}

/// The keys directory's one writer of secret files (shared with the token keys).
pub(crate) use crate::auth::{create_or_read, write_private};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_once_private_and_counts_the_legacy_events() {
        let d = tempfile::tempdir().unwrap();
        let k = ChainKey::load_or_create(d.path(), 7, 0).unwrap();
        assert_eq!(k.legacy_events(), 7);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = ChainKey::load_or_create(d.path(), 100, 93).unwrap();
        assert_eq!(again.legacy_events(), 7);
        assert_eq!(k.mac("abc"), again.mac("abc"));
        assert!(k.check("abc", &k.mac("abc")));
        assert!(!k.check("abd", &k.mac("abc")));
        assert!(!k.check("abc", "zz"));
    }

    #[test]
    fn a_lost_key_is_not_silently_replaced() {
        let d = tempfile::tempdir().unwrap();
        let err = ChainKey::load_or_create(d.path(), 10, 4).unwrap_err();
        assert!(matches!(err, KeyError::Lost { keyed: 4, .. }), "{err}");
        assert!(!d.path().join(KEY_FILE).exists());
    }
}
