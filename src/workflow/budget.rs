//! The transfer's size budget for uploads whose length nobody declared (a chunked PUT): bytes
//! are granted from what the transfer has left as they stream, in the database, so uploads in
//! flight on any replica count against each other and a body can never outgrow its grant.
//!
//! Declared lengths (tus `Upload-Length`, a PUT's `Content-Length`) are counted whole when the
//! file is reserved and need none of this.

use super::access::Principal;
use super::upload::{still_open, token_still_live};
use super::{Error, Result};
use crate::app::App;
use crate::domain::{FileId, TransferId};

/// Smallest grant beyond what has arrived: a few database writes for a small file.
const STEP_MIN: u64 = 1 << 20;
/// Largest grant beyond what has arrived: a 100 GB body asks about 1,600 times, and no upload
/// holds more than this of the budget it may never use.
const STEP_MAX: u64 = 64 << 20;
/// Near the limit a grant takes at most this fraction of what is left, so one upload's slack
/// never crowds out others that still fit.
const SHARE: u64 = 16;

/// The grant of one streaming upload.
pub(super) struct Claim<'a> {
    app: &'a App,
    who: &'a Principal,
    file: FileId,
    transfer: TransferId,
    /// The transfer's `max_transfer_size`.
    limit: u64,
    /// Bytes granted so far (the row in `upload_claims`).
    granted: u64,
}

impl<'a> Claim<'a> {
    pub(super) fn new(
        app: &'a App,
        who: &'a Principal,
        file: FileId,
        transfer: TransferId,
        limit: u64,
    ) -> Self {
        Self {
            app,
            who,
            file,
            transfer,
            limit,
            granted: 0,
        }
    }

    /// Makes sure the first `upto` bytes of the body are granted, asking the budget for more
    /// (with some slack) when they are not. Refused with 413 when they do not fit; with 401 or
    /// 409 when the token was revoked or the transfer closed meanwhile.
    pub(super) async fn cover(&mut self, upto: u64) -> Result<()> {
        if upto <= self.granted {
            return Ok(());
        }
        // Under the write lock: two uploads cannot both take the last bytes.
        let mut tx = self.app.store.begin().await?;
        still_open(&mut tx, self.transfer).await?;
        token_still_live(&mut tx, self.who).await?;
        let held = tx.transfer_bytes(self.transfer).await?;
        let others = held.saturating_sub(self.granted);
        let room = self.limit.saturating_sub(others);
        if upto > room {
            return Err(Error::TooLarge(format!(
                "a transfer holds at most {} bytes; this upload would bring it to {}",
                self.limit,
                others + upto
            )));
        }
        let slack = self
            .granted
            .clamp(STEP_MIN, STEP_MAX)
            .min((room - upto) / SHARE);
        let grant = upto + slack;
        tx.set_claim(self.file, self.transfer, grant).await?;
        tx.commit().await?;
        self.granted = grant;
        Ok(())
    }
}
