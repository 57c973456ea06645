//! The transfer state machine of DESIGN.md. One enum for every kind; a transition consumes the
//! current state and returns the next one or says why it is not allowed.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a transfer stands; each variant's comment says what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(
    description = "`open`: token live, uploads accepted. `sealed`: token dead, manifest \
    fixed. `scanning`: scanners running. `scan_error`: a scanner could not answer (retried). \
    `in_review`: waiting for approvals. `approved`: release under way. `released`: files \
    published to the read-only volume. `rejected`: refused (final). `returned`: sent back to \
    the requester for changes; a new upload token reopens it (`open`), or it is cancelled. \
    `blocked`: malware, integrity or hash-confirmation failure. `cancelled`: cancelled before \
    seal, after a return, or in `scan_error`. `expired`: the upload token ran out before seal. \
    `revoked`: access cut off after release."
)]
pub enum TransferState {
    /// Token live, uploads accepted.
    Open,
    /// Token dead, manifest fixed.
    Sealed,
    /// Scanners running (a pass-through until the scanning pipeline exists).
    Scanning,
    /// A scanner could not answer; retried, never a pass.
    ScanError,
    /// Waiting for approvals.
    InReview,
    /// Every required approval recorded; release under way.
    Approved,
    /// Files published to the read-only volume.
    Released,
    /// Refused by a reviewer (final).
    Rejected,
    /// Sent back to the requester for changes.
    Returned,
    /// Malware, integrity or hash-confirmation failure.
    Blocked,
    /// Cancelled before seal, after a return, or while its scan could not complete.
    Cancelled,
    /// The upload token ran out before seal.
    Expired,
    /// Access cut off after release.
    Revoked,
}

impl TransferState {
    pub const ALL: [TransferState; 13] = [
        Self::Open,
        Self::Sealed,
        Self::Scanning,
        Self::ScanError,
        Self::InReview,
        Self::Approved,
        Self::Released,
        Self::Rejected,
        Self::Returned,
        Self::Blocked,
        Self::Cancelled,
        Self::Expired,
        Self::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Sealed => "sealed",
            Self::Scanning => "scanning",
            Self::ScanError => "scan_error",
            Self::InReview => "in_review",
            Self::Approved => "approved",
            Self::Released => "released",
            Self::Rejected => "rejected",
            Self::Returned => "returned",
            Self::Blocked => "blocked",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }

    /// Whether uploads (and upload tokens) are accepted.
    pub fn accepts_uploads(self) -> bool {
        self == Self::Open
    }

    /// The next state for `event`, or why the event is not allowed now.
    pub fn on(self, event: Event) -> Result<TransferState, TransitionError> {
        use Event as E;
        use TransferState as S;
        let next = match (self, event) {
            (S::Open, E::Seal) => S::Sealed,
            (S::Open, E::Cancel) => S::Cancelled,
            (S::Open, E::Expire) => S::Expired,
            (S::Sealed, E::StartScan) => S::Scanning,
            (S::ScanError, E::StartScan) => S::Scanning,
            // A scan that cannot complete (a scanner that always fails) must not hold the
            // transfer forever: its Project Manager may cancel it.
            (S::ScanError, E::Cancel) => S::Cancelled,
            (S::Scanning, E::ScanClean) => S::InReview,
            (S::Scanning, E::ScanFailed) => S::ScanError,
            (S::Sealed | S::Scanning | S::ScanError | S::InReview, E::Block) => S::Blocked,
            (S::InReview, E::Approve) => S::Approved,
            (S::InReview, E::Reject) => S::Rejected,
            (S::InReview, E::Return) => S::Returned,
            (S::Returned, E::Reopen) => S::Open,
            (S::Returned, E::Cancel) => S::Cancelled,
            (S::Approved, E::Release) => S::Released,
            (S::Approved, E::Block) => S::Blocked,
            (S::Approved, E::Recheck) => S::InReview,
            (S::Released, E::Revoke) => S::Revoked,
            // The requester of an egress request takes it back before the outcome.
            (
                S::Open | S::Sealed | S::Scanning | S::ScanError | S::InReview | S::Returned,
                E::Withdraw,
            ) => S::Cancelled,
            (from, event) => return Err(TransitionError { from, event }),
        };
        Ok(next)
    }
}

/// Something that happens to a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Seal,
    Cancel,
    Expire,
    StartScan,
    ScanClean,
    ScanFailed,
    Block,
    Approve,
    Reject,
    /// Back to the requester for changes.
    Return,
    /// A returned transfer takes a new upload token.
    Reopen,
    /// Approved, but the approvals no longer satisfy the policy: back to review.
    Recheck,
    Release,
    Revoke,
    /// The requester withdraws an egress request before its outcome.
    Withdraw,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a transfer in state `{from}` cannot take `{event:?}`")]
pub struct TransitionError {
    pub from: TransferState,
    pub event: Event,
}

impl fmt::Display for TransferState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TransferState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown transfer state `{s}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn happy_path_reaches_released() {
        let s = TransferState::Open;
        let s = s.on(Event::Seal).unwrap();
        let s = s.on(Event::StartScan).unwrap();
        let s = s.on(Event::ScanClean).unwrap();
        let s = s.on(Event::Approve).unwrap();
        assert_eq!(s.on(Event::Release).unwrap(), TransferState::Released);
    }

    #[test]
    fn nothing_leaves_a_final_state_except_revocation_of_a_release() {
        for end in [
            TransferState::Rejected,
            TransferState::Cancelled,
            TransferState::Expired,
            TransferState::Revoked,
        ] {
            for ev in [
                Event::Seal,
                Event::Approve,
                Event::Release,
                Event::StartScan,
            ] {
                assert!(end.on(ev).is_err());
            }
        }
        assert!(TransferState::Open.on(Event::Approve).is_err());
        assert!(TransferState::Sealed.on(Event::Seal).is_err());
    }

    #[test]
    fn names_round_trip() {
        for s in TransferState::ALL {
            assert_eq!(s.as_str().parse::<TransferState>().unwrap(), s);
        }
    }
}
