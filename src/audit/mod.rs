//! The append-only, hash-chained audit log. Each record carries the hash of the record before
//! it, so editing, deleting, inserting or reordering a row breaks the chain at that row.
//!
//! Records are written by `workflow/` inside the same database transaction as the change they
//! describe (see `store::Tx::audit`).
//!
//! A plain hash chain only shows that the rows agree with each other: anyone who can write to
//! the database can delete or edit rows and recompute every hash after them. Two things make
//! such a rewrite evident without trusting the database:
//! - [`key`]: each record also carries an HMAC of its hash under a key kept in the keys
//!   directory, not in the database, so a recomputed record has no valid `mac`;
//! - [`anchor`]: the head (seq, hash, time) is signed with ed25519 on a schedule and at
//!   shutdown, appended to an anchor file outside the database and sent to the webhooks, so
//!   a truncated or rolled-back chain no longer reaches an anchored head.
//!
//! [`verify`] checks all three (chain, keys, anchors) and names the first bad event.

pub mod anchor;
pub mod key;

pub use anchor::{Anchor, AnchorKey};
pub use key::ChainKey;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Something worth recording, before it is placed in the chain.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// Who did it: `user:NAME`, `upload-token:JTI` or `system`.
    pub actor: String,
    /// What happened, dotted: `transfer.sealed`, `token.used`, `file.uploaded`…
    pub action: String,
    pub transfer_id: Option<String>,
    pub detail: serde_json::Value,
}

impl AuditEvent {
    pub fn new(actor: impl Into<String>, action: impl Into<String>) -> Self {
        Self {
            actor: actor.into(),
            action: action.into(),
            transfer_id: None,
            detail: serde_json::Value::Null,
        }
    }

    pub fn transfer(mut self, id: impl ToString) -> Self {
        self.transfer_id = Some(id.to_string());
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

/// One stored record of the chain.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub transfer_id: Option<String>,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
    /// HMAC-SHA256 of `hash` under the [`ChainKey`]; `None` only for records written before
    /// the chain was keyed (see [`key`]).
    pub mac: Option<String>,
}

impl Record {
    /// Places `event` after the record whose hash is `prev_hash`.
    pub fn seal(seq: i64, at: String, event: AuditEvent, prev_hash: String) -> Self {
        let mut r = Record {
            seq,
            at,
            actor: event.actor,
            action: event.action,
            transfer_id: event.transfer_id,
            detail: event.detail.to_string(),
            prev_hash,
            hash: String::new(),
            mac: None,
        };
        r.hash = r.compute_hash();
        r
    }

    /// Seals `event` like [`Record::seal`] and keys it.
    pub fn seal_keyed(
        seq: i64,
        at: String,
        event: AuditEvent,
        prev_hash: String,
        key: &ChainKey,
    ) -> Self {
        let mut r = Self::seal(seq, at, event, prev_hash);
        r.mac = Some(key.mac(&r.hash));
        r
    }

    /// SHA-256 over every field but `hash`, length-prefixed so fields cannot run together.
    pub fn compute_hash(&self) -> String {
        let mut h = Sha256::new();
        let seq = self.seq.to_string();
        let fields: [&str; 7] = [
            &seq,
            &self.at,
            &self.actor,
            &self.action,
            self.transfer_id.as_deref().unwrap_or(""),
            &self.detail,
            &self.prev_hash,
        ];
        for f in fields {
            h.update((f.len() as u64).to_be_bytes());
            h.update(f.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

/// Checks a whole chain in order; returns the sequence number of the first bad record.
pub fn verify_chain(records: &[Record]) -> Result<(), (i64, String)> {
    let mut prev = GENESIS;
    for (i, r) in records.iter().enumerate() {
        r.follows(i, prev).map_err(|why| (r.seq, why))?;
        prev = &r.hash;
    }
    Ok(())
}

impl Record {
    /// Whether this record sits at index `i` after a record hashed `prev`, and its content
    /// matches its hash.
    fn follows(&self, i: usize, prev: &str) -> Result<(), String> {
        if self.seq != i as i64 + 1 {
            return Err(format!("expected sequence number {}", i + 1));
        }
        if self.prev_hash != prev {
            return Err("does not follow the record before it".into());
        }
        if self.compute_hash() != self.hash {
            return Err("its content does not match its hash".into());
        }
        Ok(())
    }
}

/// Why a chain fails [`verify`]: the first bad event (or anchor) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    #[error("audit chain broken at event {0}: {1}")]
    Chain(i64, String),
    #[error("audit chain broken at event {0}: {1}")]
    Key(i64, String),
    #[error("{0}")]
    Anchor(String),
}

/// What [`verify`] found in a sound chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub events: usize,
    /// Events from before the chain was keyed, checked by hash linkage only.
    pub legacy: usize,
    /// Anchors the chain was checked against.
    pub anchors: usize,
    /// The newest anchor checked.
    pub latest_anchor: Option<Anchor>,
}

/// Checks the hash chain, the key on every record after the first `legacy` ones, and that
/// every anchor (already signature-checked by the caller, see [`anchor::read`]) still names
/// an event of the chain with the anchored hash.
pub fn verify(records: &[Record], key: &ChainKey, anchors: &[Anchor]) -> Result<Verified, Broken> {
    let mut v = ChainVerifier::new(key, anchors);
    for r in records {
        v.push(r)?;
    }
    v.finish()
}

/// [`verify`] one record at a time, for a chain read from the store in pages: it holds the
/// previous hash, counts and the anchors, never the chain, so checking a log of millions of
/// events takes the memory of one page. Errors are the same, in the same order: the first bad
/// event of the chain, and only once the whole chain is sound, the first anchor (in file
/// order) it does not reach.
pub struct ChainVerifier<'a> {
    key: &'a ChainKey,
    anchors: &'a [Anchor],
    /// Anchor indexes by the seq they vouch for.
    by_seq: std::collections::HashMap<i64, Vec<usize>>,
    /// The first anchor (by index) whose event has another hash.
    mismatch: Option<usize>,
    prev: String,
    events: usize,
    legacy: usize,
}

impl<'a> ChainVerifier<'a> {
    pub fn new(key: &'a ChainKey, anchors: &'a [Anchor]) -> Self {
        let mut by_seq: std::collections::HashMap<i64, Vec<usize>> = Default::default();
        for (i, a) in anchors.iter().enumerate() {
            by_seq.entry(a.seq).or_default().push(i);
        }
        Self {
            key,
            anchors,
            by_seq,
            mismatch: None,
            prev: GENESIS.to_owned(),
            events: 0,
            legacy: 0,
        }
    }

    /// Checks the next record of the chain.
    pub fn push(&mut self, r: &Record) -> Result<(), Broken> {
        if let Err(why) = r.follows(self.events, &self.prev) {
            return Err(Broken::Chain(r.seq, why));
        }
        let legacy = self.key.legacy_events();
        match &r.mac {
            Some(mac) if self.key.check(&r.hash, mac) => {}
            Some(_) => {
                return Err(Broken::Key(
                    r.seq,
                    "its key (mac) does not match: the event was rewritten without the \
                     audit key"
                        .into(),
                ))
            }
            None if (r.seq as u64) <= legacy => {}
            None => {
                return Err(Broken::Key(
                    r.seq,
                    format!(
                        "it carries no key (mac), but only the first {legacy} event(s) \
                         predate the audit key"
                    ),
                ))
            }
        }
        if r.mac.is_none() {
            self.legacy += 1;
        }
        if let Some(ids) = self.by_seq.get(&r.seq) {
            for &i in ids {
                if self.anchors[i].hash != r.hash && self.mismatch.is_none_or(|m| i < m) {
                    self.mismatch = Some(i);
                }
            }
        }
        self.prev.clone_from(&r.hash);
        self.events += 1;
        Ok(())
    }

    /// How many records were pushed.
    pub fn events(&self) -> usize {
        self.events
    }

    /// Checks the anchors against the chain pushed so far.
    pub fn finish(self) -> Result<Verified, Broken> {
        for (i, a) in self.anchors.iter().enumerate() {
            if a.seq == 0 {
                continue;
            }
            if self.mismatch == Some(i) {
                return Err(Broken::Anchor(format!(
                    "audit chain broken at event {}: it does not match the head anchored at {} \
                     (events were rewritten)",
                    a.seq, a.at
                )));
            }
            if a.seq < 0 || a.seq as u64 > self.events as u64 {
                return Err(Broken::Anchor(format!(
                    "audit chain has {} events, but an anchor of {} vouches for event {}: \
                     events were deleted",
                    self.events, a.at, a.seq
                )));
            }
        }
        Ok(Verified {
            events: self.events,
            legacy: self.legacy,
            anchors: self.anchors.len(),
            latest_anchor: self.anchors.iter().max_by_key(|a| a.seq).cloned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<Record> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let r = Record::seal(
                    seq,
                    format!("t{seq}"),
                    AuditEvent::new("system", "x").detail(serde_json::json!({ "n": seq })),
                    prev.clone(),
                );
                prev = r.hash.clone();
                r
            })
            .collect()
    }

    #[test]
    fn an_untouched_chain_verifies_and_an_edit_is_named() {
        let mut c = chain(5);
        assert!(verify_chain(&c).is_ok());
        c[2].detail = "{\"n\":99}".into();
        assert_eq!(verify_chain(&c).unwrap_err().0, 3);
        let mut c = chain(5);
        c.remove(1);
        assert!(verify_chain(&c).is_err());
        let mut c = chain(5);
        c.swap(1, 2);
        assert!(verify_chain(&c).is_err());
    }

    fn keyed(n: i64, key: &ChainKey) -> Vec<Record> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let r = Record::seal_keyed(
                    seq,
                    format!("t{seq}"),
                    AuditEvent::new("system", "x"),
                    prev.clone(),
                    key,
                );
                prev = r.hash.clone();
                r
            })
            .collect()
    }

    #[test]
    fn a_recomputed_chain_fails_the_key_and_a_truncated_one_the_anchor() {
        let key = ChainKey::from_secret([7; 32], 0);
        let c = keyed(6, &key);
        let anchors = AnchorKey::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        let a = anchors.sign(6, &c[5].hash);
        assert!(verify(&c, &key, std::slice::from_ref(&a)).is_ok());
        // Recomputed without the key: consistent, but unkeyed.
        let plain = chain(6);
        assert!(verify_chain(&plain).is_ok());
        assert!(matches!(verify(&plain, &key, &[]), Err(Broken::Key(1, _))));
        // ... unless those events predate the key.
        let legacy = ChainKey::from_secret([7; 32], 6);
        assert_eq!(verify(&plain, &legacy, &[]).unwrap().legacy, 6);
        let other = ChainKey::from_secret([8; 32], 0);
        assert!(matches!(verify(&c, &other, &[]), Err(Broken::Key(1, _))));
        // Truncated: every record fine, the anchor not met.
        let err = verify(&c[..4], &key, std::slice::from_ref(&a))
            .unwrap_err()
            .to_string();
        assert!(err.contains("deleted"), "{err}");
        let mut edited = a;
        edited.hash = c[4].hash.clone();
        let err = verify(&c, &key, &[edited]).unwrap_err().to_string();
        assert!(err.contains("event 6"), "{err}");
    }
}
