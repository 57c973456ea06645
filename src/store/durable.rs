//! Group commit: one flush to disk serves every writer that was waiting for one (issue 11, 3b).
//!
//! A [`GroupSync`] runs a sync action (an `fsync`-like call) on behalf of many waiters. A writer
//! finishes its writes without flushing, then calls [`GroupSync::wait`]; it returns only after a
//! run of the action that *started after the writer joined* has completed, so whatever the
//! writer wrote before joining is on disk. Runs never overlap: while one runs, newcomers gather
//! and the next run (led by one of them) serves them all. N concurrent writers cost between 1
//! and about N/batch runs instead of N.
//!
//! How the store uses it, and why it is sound:
//! - **Rows.** SQLite runs in WAL mode with `synchronous=NORMAL`: a commit appends to the `-wal`
//!   file without an fsync. [`super::Tx::commit`] then waits on the store's `GroupSync`, whose
//!   action is one `fdatasync` of the `-wal` file. A commit is therefore durable before
//!   `commit` returns, as with `synchronous=FULL`, but concurrent commits share the fsync. A
//!   checkpoint copies WAL pages into the database file; with NORMAL, SQLite syncs the WAL
//!   before a checkpoint and the database file after it, so a checkpointed commit is durable
//!   whether or not our fdatasync saw it; a WAL reset (reuse from the start after a checkpoint)
//!   only overwrites frames already checkpointed and synced. The `-wal` file is opened afresh
//!   for each run, so a WAL deleted at close and recreated is never missed; if it does not
//!   exist, everything committed is in the synced database file.
//! - **Bytes before rows.** A file's bytes must be durable before the row that says it is
//!   complete can be: otherwise a crash could keep a row with a digest for bytes that never
//!   reached the disk. So an upload flushes its bytes through the quarantine volume's own
//!   `GroupSync` (one `syncfs` of that filesystem: data, new names and folders of every writer
//!   that joined) *before* it commits its row, then waits on the WAL's. A crash between the two
//!   leaves durable bytes without a row (unreferenced, like an unacknowledged upload), never
//!   the reverse; nothing is acknowledged before both have completed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What a run does (on a blocking thread): flush something to disk.
pub type SyncAction = Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>;

/// Failed runs remembered, so a slow waiter still learns its run failed.
const FAILURES_KEPT: usize = 64;

#[derive(Default)]
struct State {
    /// Runs started so far; run `n` is the `n`-th (from 1).
    started: u64,
    /// The last run that completed.
    completed: u64,
    running: bool,
    /// Runs that failed, with why.
    failed: BTreeMap<u64, String>,
}

/// A group-commit coordinator around one sync action. Cheap to clone.
#[derive(Clone)]
pub struct GroupSync {
    state: Arc<Mutex<State>>,
    done: Arc<tokio::sync::Notify>,
    action: SyncAction,
    /// Runs the action has made (for metrics and tests).
    runs: Arc<std::sync::atomic::AtomicU64>,
}

impl GroupSync {
    pub fn new(action: SyncAction) -> Self {
        Self {
            state: Arc::default(),
            done: Arc::new(tokio::sync::Notify::new()),
            action,
            runs: Arc::default(),
        }
    }

    /// How many times the action has run.
    pub fn runs(&self) -> u64 {
        self.runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns once a run that started after this call has completed; `Ok(n)` names that run.
    /// An error if that run failed: what was written before the call may not be on disk.
    pub async fn wait(&self) -> std::io::Result<u64> {
        // The run that serves us is the next one to start: one already running may have begun
        // before our writes.
        let need = self.lock().started + 1;
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            // Registered before looking, so a completion between the look and the await wakes us.
            notified.as_mut().enable();
            let lead = {
                let mut st = self.lock();
                if st.completed >= need {
                    // Runs complete one after another, so run `need` itself completed (we
                    // may have woken later). If it failed, what we wrote may be lost.
                    return match st.failed.get(&need) {
                        Some(why) => Err(std::io::Error::other(format!(
                            "flush to disk failed: {why}"
                        ))),
                        None => Ok(need),
                    };
                }
                if st.running {
                    None
                } else {
                    st.running = true;
                    st.started += 1;
                    Some(st.started)
                }
            };
            let Some(run) = lead else {
                notified.await;
                continue;
            };
            // The run goes on a task of its own, and this waiter waits for it like any other.
            // Run inline, a leader whose future is dropped (a client hanging up, a task aborted
            // at shutdown) would leave `running` set, and every later waiter would wait forever.
            tokio::spawn(self.clone().run(run));
            notified.await;
        }
    }

    /// Runs the action as run `run`, records how it went, and wakes every waiter.
    async fn run(self, run: u64) {
        let action = self.action.clone();
        let result = tokio::task::spawn_blocking(move || action())
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut st = self.lock();
            st.completed = run;
            st.running = false;
            if let Err(e) = &result {
                st.failed.insert(run, e.to_string());
                while st.failed.len() > FAILURES_KEPT {
                    st.failed.pop_first();
                }
            }
        }
        self.done.notify_waiters();
    }
}

/// The store's coordinator: one `fdatasync` of the SQLite `-wal` file at `wal`, opened afresh
/// each run; no WAL file means everything committed was checkpointed (and synced) already.
pub fn wal_sync(wal: std::path::PathBuf) -> GroupSync {
    GroupSync::new(Arc::new(move || match std::fs::File::open(&wal) {
        Ok(f) => f.sync_data(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_waiters_share_few_runs_and_none_returns_before_a_run_that_started_after_it() {
        let starts: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let s2 = starts.clone();
        let sync = GroupSync::new(Arc::new(move || {
            s2.lock().unwrap().push(Instant::now());
            std::thread::sleep(Duration::from_millis(15));
            Ok(())
        }));
        let n = 64;
        let mut tasks = Vec::new();
        for i in 0..n {
            let sync = sync.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i % 16)).await;
                let joined = Instant::now();
                let run = sync.wait().await.unwrap();
                (joined, run, Instant::now())
            }));
        }
        let mut served = Vec::new();
        for t in tasks {
            served.push(t.await.unwrap());
        }
        let starts = starts.lock().unwrap().clone();
        assert_eq!(sync.runs() as usize, starts.len());
        assert!(
            starts.len() < n as usize / 2,
            "{} runs for {n} waiters",
            starts.len()
        );
        for (joined, run, returned) in served {
            let started = starts[run as usize - 1];
            assert!(
                started >= joined,
                "served by a run that started before it joined"
            );
            assert!(returned >= started + Duration::from_millis(15));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_run_fails_its_waiters_and_the_next_run_serves_newcomers() {
        let calls = Arc::new(AtomicU64::new(0));
        let c2 = calls.clone();
        let sync = GroupSync::new(Arc::new(move || {
            if c2.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(std::io::Error::other("disk on fire"))
            } else {
                Ok(())
            }
        }));
        let err = sync.wait().await.unwrap_err();
        assert!(err.to_string().contains("disk on fire"));
        assert_eq!(sync.wait().await.unwrap(), 2);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// A leader dropped while its run is under way (a client hung up, a task was aborted at
    /// shutdown) must not leave the coordinator running forever: later waiters are served.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_dropped_mid_run_does_not_stall_later_waiters() {
        let sync = GroupSync::new(Arc::new(|| {
            std::thread::sleep(Duration::from_millis(200));
            Ok(())
        }));
        let s2 = sync.clone();
        let leader = tokio::spawn(async move { s2.wait().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        leader.abort();
        let next = tokio::time::timeout(Duration::from_secs(5), sync.wait()).await;
        assert!(
            matches!(next, Ok(Ok(_))),
            "a later waiter was not served: {next:?}"
        );
    }
}
