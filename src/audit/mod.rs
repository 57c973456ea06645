//! The append-only, hash-chained audit log. Each record carries the hash of the record before
//! it, so editing, deleting, inserting or reordering a row breaks the chain at that row.
//!
//! Records are written by `workflow/` inside the same database transaction as the change they
//! describe (see `store::Tx::audit`).

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
        };
        r.hash = r.compute_hash();
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
    let mut prev = GENESIS.to_string();
    for (i, r) in records.iter().enumerate() {
        if r.seq != i as i64 + 1 {
            return Err((r.seq, format!("expected sequence number {}", i + 1)));
        }
        if r.prev_hash != prev {
            return Err((r.seq, "does not follow the record before it".into()));
        }
        if r.compute_hash() != r.hash {
            return Err((r.seq, "its content does not match its hash".into()));
        }
        prev = r.hash.clone();
    }
    Ok(())
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
}
