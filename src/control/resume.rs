//! One resume per workload at a time, whoever asks. VS Code opens several connections
//! at once, and every one of them to a paused workload must wait for the same resume:
//! the first caller starts it on a task of its own (so it goes on if that client
//! leaves), later callers join it, and all of them see its progress and its end.
//! Those tasks belong to the gateway's task tracker (the registry's), and end when the
//! gateway stops.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A resume's latest word, and how it ended once it has.
#[derive(Debug, Clone, Default)]
struct State {
    note: Option<String>,
    done: Option<Result<Duration, String>>,
}

/// Where a resume reports what it is waiting for.
#[derive(Clone)]
pub struct Progress(watch::Sender<State>);

impl Progress {
    pub fn note(&self, note: impl Into<String>) {
        let note = note.into();
        self.0.send_if_modified(|s| {
            let changed = s.note.as_deref() != Some(note.as_str());
            s.note = Some(note);
            changed
        });
    }

    /// The latest note, for a message about where it got stuck.
    fn last(&self) -> Option<String> {
        self.0.borrow().note.clone()
    }

    /// Runs `work` for at most `limit`; past it, the error is `timed_out(seconds, the
    /// latest note)`, so the user reads what the wait was last about.
    pub async fn within(
        &self,
        limit: Duration,
        work: impl Future<Output = Result<(), String>>,
        timed_out: impl FnOnce(u64, Option<String>) -> String,
    ) -> Result<(), String> {
        match tokio::time::timeout(limit, work).await {
            Ok(done) => done,
            Err(_) => Err(timed_out(limit.as_secs(), self.last())),
        }
    }
}

#[derive(Default)]
pub struct Resumes {
    running: Mutex<HashMap<String, watch::Receiver<State>>>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Resumes {
    /// Resumes run on `tasks` and give up when `stop` is cancelled.
    pub fn owned(tasks: TaskTracker, stop: CancellationToken) -> Self {
        Self {
            running: Mutex::default(),
            tasks,
            stop,
        }
    }

    /// Joins the resume of `key`, starting it with `start` if none is running, and
    /// forwards its progress notes to `notes` until it ends. Returns how long the
    /// resume took, or why it failed.
    pub async fn join<F, Fut>(
        &self,
        key: &str,
        start: F,
        notes: Option<&mpsc::Sender<String>>,
    ) -> Result<Duration, String>
    where
        F: FnOnce(Progress) -> Fut,
        Fut: Future<Output = Result<Duration, String>> + Send + 'static,
    {
        let mut rx = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            match running.get(key) {
                Some(rx) if rx.borrow().done.is_none() => rx.clone(),
                _ => {
                    let (tx, rx) = watch::channel(State::default());
                    let work = start(Progress(tx.clone()));
                    let stop = self.stop.clone();
                    self.tasks.spawn(async move {
                        let started = std::time::Instant::now();
                        let result = tokio::select! {
                            r = work => r,
                            _ = stop.cancelled() => Err("the gateway is shutting down; connect again in a moment".into()),
                        };
                        crate::metrics::global().resume(&result, started.elapsed());
                        tx.send_modify(|s| s.done = Some(result));
                    });
                    running.insert(key.to_owned(), rx.clone());
                    rx
                }
            }
        };
        let mut last_note = None;
        loop {
            let state = rx.borrow_and_update().clone();
            if let (Some(note), Some(notes)) = (&state.note, notes)
                && last_note.as_ref() != Some(note)
            {
                let _ = notes.send(note.clone()).await;
                last_note = Some(note.clone());
            }
            if let Some(done) = state.done {
                let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
                if running.get(key).is_some_and(|r| r.borrow().done.is_some()) {
                    running.remove(key);
                }
                return done;
            }
            if rx.changed().await.is_err() {
                return Err("the resume was abandoned".into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn callers_together_share_one_resume_and_its_notes() {
        let resumes = Arc::new(Resumes::default());
        let started = Arc::new(AtomicUsize::new(0));
        let (gate_tx, gate_rx) = watch::channel(false);
        let mut joins = Vec::new();
        for _ in 0..5 {
            let (resumes, started, gate_rx) = (resumes.clone(), started.clone(), gate_rx.clone());
            let (notes_tx, mut notes_rx) = mpsc::channel(8);
            joins.push(tokio::spawn(async move {
                let result = resumes
                    .join(
                        "ns/set",
                        move |progress| {
                            started.fetch_add(1, Ordering::SeqCst);
                            async move {
                                progress.note("scaling up");
                                let mut gate_rx = gate_rx;
                                let _ = gate_rx.wait_for(|open| *open).await;
                                Ok(Duration::from_millis(5))
                            }
                        },
                        Some(&notes_tx),
                    )
                    .await;
                drop(notes_tx);
                let mut notes = Vec::new();
                while let Some(n) = notes_rx.recv().await {
                    notes.push(n);
                }
                (result, notes)
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        gate_tx.send(true).unwrap();
        for j in joins {
            let (result, notes) = j.await.unwrap();
            assert_eq!(result, Ok(Duration::from_millis(5)));
            assert_eq!(notes, vec!["scaling up".to_owned()]);
        }
        assert_eq!(started.load(Ordering::SeqCst), 1);
        // Once it has ended, the next caller starts a fresh one.
        let again = resumes
            .join("ns/set", |_| async { Err("no".to_owned()) }, None)
            .await;
        assert_eq!(again, Err("no".to_owned()));
    }

    #[tokio::test]
    async fn a_stopping_gateway_ends_resumes_and_its_tracker_sees_them_finish() {
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let resumes = Arc::new(Resumes::owned(tasks.clone(), stop.clone()));
        let waiter = {
            let resumes = resumes.clone();
            tokio::spawn(async move {
                resumes
                    .join("ns/never", |_| std::future::pending(), None)
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(tasks.len(), 1);
        stop.cancel();
        let result = waiter.await.unwrap();
        assert!(result.unwrap_err().contains("shutting down"));
        tasks.close();
        tokio::time::timeout(Duration::from_secs(5), tasks.wait())
            .await
            .expect("the resume task ended");
    }
}
