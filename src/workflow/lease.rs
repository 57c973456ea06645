//! Leased background jobs: with several replicas on one database, each job (a transfer's scan
//! or release, a re-verification pass, the webhook and email senders, expiry) runs on one
//! replica at a time.
//!
//! A replica takes the job's lease in the database (`Store::lease`) before doing it, renews it
//! every third of `[server] lease_ttl` while the work goes on, and gives it up when done. A
//! replica that dies (SIGKILL, a lost machine) stops renewing: once its lease has run out,
//! another replica's next sweep takes the job and starts it again from its beginning, which
//! every job here is written to do (a release clears its staging first, a scan starts over).
//! A replica that finds it has lost a lease (it could not renew in time) abandons the work:
//! the replica that took over does it.

use crate::app::App;
use std::future::Future;

/// Runs `work` under the lease `name` if this replica can take it; `None` if another replica
/// holds it or the lease was lost before `work` ended (the work was dropped).
pub async fn run<T>(app: &App, name: &str, work: impl Future<Output = T>) -> Option<T> {
    let ttl = app.settings.server.lease_ttl;
    let me = app.replica.as_str();
    match app.store.lease(name, me, ttl).await {
        Ok(true) => {}
        Ok(false) => return None,
        Err(e) => {
            tracing::warn!(job = name, error = %e, "cannot take the job's lease; skipping it");
            return None;
        }
    }
    let renew = async {
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(ttl / 3).await;
            match app.store.lease(name, me, ttl).await {
                Ok(true) => last = tokio::time::Instant::now(),
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(job = name, error = %e, "cannot renew the job's lease");
                    // Past the lease's end another replica may have the job.
                    if last.elapsed() >= ttl {
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        out = work => {
            if let Err(e) = app.store.unlease(name, me).await {
                tracing::warn!(job = name, error = %e, "cannot give the job's lease up");
            }
            Some(out)
        }
        () = renew => {
            tracing::error!(job = name, "lost the job's lease to another replica; abandoning it");
            None
        }
    }
}
