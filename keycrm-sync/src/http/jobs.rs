//! Full-resync jobs: started in the background, one at a time, their progress counted from
//! the event stream and published on it.

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;

use super::{HttpError, Service};
use crate::engine::{RunReport, SyncEvent};
use crate::host::Host;
use crate::store::Store;

/// A background job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Running.
    Running,
    /// Ended without error.
    Succeeded,
    /// Ended with an error.
    Failed,
}

impl JobState {
    fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
        }
    }
}

/// A full-resync job (`POST /sync/full-resync`, `GET /sync/jobs/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobInfo {
    /// The job's id.
    pub id: String,
    /// What it does (`full_resync`).
    pub kind: &'static str,
    /// Its state.
    pub state: JobState,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Records applied, pushed and failed so far (from the event stream).
    pub processed: u64,
    /// The run report, once it succeeded.
    pub report: Option<RunReport>,
    /// The error, once it failed.
    pub error: Option<HttpError>,
}

/// Jobs kept for `GET /sync/jobs/{id}`.
const JOBS_KEPT: usize = 64;
/// A job's progress is published every this many records.
const PROGRESS_EVERY: u64 = 50;

#[derive(Default)]
pub(super) struct Jobs {
    /// The id of the running job.
    pub(super) running: Option<String>,
    all: BTreeMap<u64, JobInfo>,
    next: u64,
}

impl<S: Store, H: Host> Service<S, H> {
    /// Counts a record of a running job; publishes its progress every [`PROGRESS_EVERY`].
    fn job_progress(&self, id: &str, event: &SyncEvent) {
        if !matches!(
            event,
            SyncEvent::Applied { .. } | SyncEvent::Pushed { .. } | SyncEvent::Failed { .. }
        ) {
            return;
        }
        let processed = {
            let mut jobs = self.lock_jobs();
            let Some(job) = jobs.all.values_mut().find(|j| j.id == id) else {
                return;
            };
            job.processed += 1;
            job.processed
        };
        if processed % PROGRESS_EVERY == 0 {
            self.shared.engine.publish(SyncEvent::Job {
                id: id.to_string(),
                state: "running".into(),
                processed,
            });
        }
    }

    pub(super) fn lock_jobs(&self) -> std::sync::MutexGuard<'_, Jobs> {
        self.shared
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `POST /sync/full-resync`: starts a full resync in the background and returns its job
    /// (202), or 409 `job_running` while one runs. Progress is published on the event stream.
    pub fn start_full_resync(&self) -> Result<JobInfo, HttpError> {
        let job = {
            let mut jobs = self.lock_jobs();
            if let Some(running) = &jobs.running {
                return Err(HttpError::new(
                    409,
                    "job_running",
                    format!("full resync {running} is running"),
                ));
            }
            jobs.next += 1;
            let n = jobs.next;
            let job = JobInfo {
                id: format!("job-{n}"),
                kind: "full_resync",
                state: JobState::Running,
                started_at: Utc::now(),
                finished_at: None,
                processed: 0,
                report: None,
                error: None,
            };
            jobs.running = Some(job.id.clone());
            jobs.all.insert(n, job.clone());
            while jobs.all.len() > JOBS_KEPT {
                jobs.all.pop_first();
            }
            job
        };
        self.shared.engine.publish(SyncEvent::Job {
            id: job.id.clone(),
            state: "running".into(),
            processed: 0,
        });
        let this = self.clone();
        let id = job.id.clone();
        let mut events = Box::pin(self.shared.engine.subscribe());
        tokio::spawn(async move {
            let result = {
                let mut run = std::pin::pin!(this.shared.engine.full_resync());
                loop {
                    tokio::select! {
                        biased;
                        result = &mut run => break result,
                        Some(event) = events.next() => this.job_progress(&id, &event),
                    }
                }
            };
            // Events the run published before it returned are buffered: count them all.
            while let Some(Some(event)) = futures_util::FutureExt::now_or_never(events.next()) {
                this.job_progress(&id, &event);
            }
            let (state, processed) = {
                let mut jobs = this.lock_jobs();
                jobs.running = None;
                let entry = jobs.all.values_mut().find(|j| j.id == id);
                match entry {
                    Some(job) => {
                        job.finished_at = Some(Utc::now());
                        match result {
                            Ok(report) => {
                                job.state = JobState::Succeeded;
                                job.report = Some(report);
                            }
                            Err(error) => {
                                tracing::warn!(target: "keycrm_sync", %error, "full resync failed");
                                job.state = JobState::Failed;
                                job.error = Some(HttpError::from_sync(&error));
                            }
                        }
                        (job.state, job.processed)
                    }
                    None => return,
                }
            };
            this.shared.engine.publish(SyncEvent::Job {
                id,
                state: state.as_str().into(),
                processed,
            });
        });
        Ok(job)
    }

    /// `GET /sync/jobs/{id}`, or 404.
    pub fn job(&self, id: &str) -> Result<JobInfo, HttpError> {
        self.lock_jobs()
            .all
            .values()
            .find(|j| j.id == id)
            .cloned()
            .ok_or_else(|| HttpError::new(404, "not_found", format!("no job {id}")))
    }
}
