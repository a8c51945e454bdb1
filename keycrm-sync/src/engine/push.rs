//! Outbound: sending due outbox items to KeyCRM with as few requests as it allows.

use std::collections::BTreeMap;

use super::{RunReport, SyncEngine, SyncError, SyncEvent, outbox_backoff};
use crate::field::FieldPath;
use crate::host::Host;
use crate::model::{EntityKind, Fields, Snapshot};
use crate::store::{Mapping, OutboxItem, Store, StoreError, SyncState};

pub use crate::entity::stock::GUARD_MIN_ROWS;

// requests: buyers in batches and order updates without reads (own files, children of
// this module for its helpers).
#[path = "buyer_batch.rs"]
mod buyer_batch;
#[path = "writes.rs"]
mod writes;

/// One outbox item ready to send: the local record and its mapping.
pub(crate) struct Work {
    pub(crate) item: OutboxItem,
    pub(crate) local: Snapshot,
    pub(crate) mapping: Option<Mapping>,
}

impl Work {
    pub(crate) fn remote_id(&self) -> Option<i64> {
        self.mapping.as_ref().and_then(|m| m.remote_id)
    }
}

pub(crate) fn text(fields: &Fields, path: &FieldPath) -> Option<String> {
    path.get(fields)
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

impl<S: Store, H: Host> SyncEngine<S, H> {
    pub(crate) async fn push(&self, report: &mut RunReport) -> Result<(), SyncError> {
        self.push_only(report, None).await
    }

    /// Sends the due outbox (or one record of it).
    pub(crate) async fn push_only(
        &self,
        report: &mut RunReport,
        only: Option<(EntityKind, &str)>,
    ) -> Result<(), SyncError> {
        let due = self
            .inner
            .store
            .due_outbox(self.outbox_now(), usize::MAX >> 1)
            .await?;
        let mut by_kind: BTreeMap<EntityKind, Vec<Work>> = BTreeMap::new();
        for item in due {
            if only.is_some_and(|(k, id)| k != item.kind || id != item.local_id) {
                continue;
            }
            let kind = item.kind;
            let local = match self.inner.host.load(kind, item.local_id.clone()).await {
                Ok(local) => local,
                Err(e) => {
                    self.fail(&item, &e.to_string(), report).await?;
                    continue;
                }
            };
            let Some(local) = local else {
                // KeyCRM has no deletes for these records: keep the remote record, log it.
                self.audit(
                    kind,
                    &item.local_id,
                    "local-delete",
                    "deleted locally; KeyCRM keeps its record".into(),
                )
                .await?;
                self.inner
                    .store
                    .complete_outbox(item.id, item.revision)
                    .await?;
                continue;
            };
            let mapping = self.inner.store.get_mapping(kind, &item.local_id).await?;
            let mapped = kind == EntityKind::Stock
                || mapping.as_ref().is_some_and(|m| m.remote_id.is_some());
            let unchanged = mapping.as_ref().is_some_and(|m| {
                m.state == SyncState::Synced
                    && m.content_hash.as_deref() == Some(local.hash().as_str())
            });
            if mapped && unchanged {
                self.inner
                    .store
                    .complete_outbox(item.id, item.revision)
                    .await?;
                report.unchanged += 1;
                continue;
            }
            by_kind.entry(kind).or_default().push(Work {
                item,
                local,
                mapping,
            });
        }
        for kind in EntityKind::ALL {
            let Some(work) = by_kind.remove(&kind) else {
                continue;
            };
            self.push_kind(kind, work, report).await?;
        }
        Ok(())
    }

    /// Records a failed attempt: backoff, dead letter after the configured attempts.
    pub(crate) async fn fail(
        &self,
        item: &OutboxItem,
        error: &str,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        self.fail_as(item, error, false, report).await
    }

    /// Dead-letters at once a record KeyCRM refused (a 422 naming its row): sending it
    /// again unchanged would be refused again.
    pub(crate) async fn reject(
        &self,
        item: &OutboxItem,
        error: &str,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        self.fail_as(item, error, true, report).await
    }

    pub(crate) async fn fail_as(
        &self,
        item: &OutboxItem,
        error: &str,
        dead_now: bool,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let dead = dead_now || item.attempts + 1 >= self.inner.config.retry_attempts;
        let next = self.outbox_now() + outbox_backoff(item.attempts);
        self.inner
            .store
            .fail_outbox(item.id, item.revision, error, next, dead)
            .await?;
        let mut mapping = self
            .inner
            .store
            .get_mapping(item.kind, &item.local_id)
            .await?
            .unwrap_or_else(|| Mapping::new(item.kind, &item.local_id));
        mapping.state = SyncState::Error;
        mapping.error = Some(error.to_string());
        self.inner.store.put_mapping(&mapping).await?;
        report.failed += 1;
        self.publish(SyncEvent::Failed {
            kind: item.kind,
            local_id: item.local_id.clone(),
            error: error.to_string(),
            dead,
        });
        Ok(())
    }

    /// Turns one record's failure into a failed outbox item; only store failures (other than
    /// a remote id already mapped to another record) stop the run.
    pub(crate) async fn item_result(
        &self,
        item: &OutboxItem,
        result: Result<(), SyncError>,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        match result {
            Ok(()) => Ok(()),
            Err(SyncError::Store(e)) if !matches!(e, StoreError::DuplicateRemoteId { .. }) => {
                Err(SyncError::Store(e))
            }
            Err(e) => self.fail(item, &e.to_string(), report).await,
        }
    }

    /// Marks a record as written: its mapping takes the new base and hash.
    pub(crate) async fn done(
        &self,
        work: &Work,
        remote_id: Option<i64>,
        base: Fields,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        self.done_at(work, remote_id, Snapshot::new(base, None), report)
            .await
    }

    /// [`Self::done`] with the KeyCRM `updated_at` the base was taken at, when known: the
    /// mapping then also notes it as the last time seen (so the next update of an order
    /// needs no read first, see `engine/writes.rs`), in the same write.
    pub(crate) async fn done_at(
        &self,
        work: &Work,
        remote_id: Option<i64>,
        base: Snapshot,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let remote_id = self.record_synced(work, remote_id, base).await?;
        report.pushed += 1;
        self.publish(SyncEvent::Pushed {
            kind: work.item.kind,
            local_id: work.item.local_id.clone(),
            remote_id,
        });
        Ok(())
    }

    /// Writes the mapping of a record both sides now agree on (new base and hash) and removes
    /// its outbox item; returns the record's remote id.
    pub(crate) async fn record_synced(
        &self,
        work: &Work,
        remote_id: Option<i64>,
        base: Snapshot,
    ) -> Result<Option<i64>, SyncError> {
        let mut mapping = work
            .mapping
            .clone()
            .unwrap_or_else(|| Mapping::new(work.item.kind, &work.item.local_id));
        if remote_id.is_some() {
            mapping.remote_id = remote_id;
        }
        mapping.state = SyncState::Synced;
        mapping.error = None;
        mapping.content_hash = Some(work.local.hash());
        if base.updated_at.is_some() {
            mapping.remote_updated_at = base.updated_at;
        }
        mapping.base = Some(base);
        mapping.last_sync_at = Some(self.now());
        self.inner.store.put_mapping(&mapping).await?;
        self.inner
            .store
            .complete_outbox(work.item.id, work.item.revision)
            .await?;
        Ok(mapping.remote_id)
    }

    /// Notes, before a create is sent, the body being created as the record's base (the
    /// mapping has no remote id yet). If the engine stops between the create and its
    /// bookkeeping, the pull or look-up that meets the created record links it against this
    /// base, so a local edit made in between counts as a local change and is not lost to
    /// KeyCRM's copy of the older body.
    pub(crate) async fn note_create(&self, work: &Work) -> Result<(), SyncError> {
        let mut mapping = self
            .inner
            .store
            .get_mapping(work.item.kind, &work.item.local_id)
            .await?
            .unwrap_or_else(|| Mapping::new(work.item.kind, &work.item.local_id));
        if mapping.remote_id.is_some() {
            return Ok(());
        }
        mapping.base = Some(Snapshot::new(work.local.fields.clone(), None));
        self.inner.store.put_mapping(&mapping).await?;
        Ok(())
    }

    /// The base noted by [`Self::note_create`] for a record not linked yet, if any.
    pub(crate) fn noted_create(work: &Work) -> Option<Snapshot> {
        work.mapping
            .as_ref()
            .filter(|m| m.remote_id.is_none())
            .and_then(|m| m.base.clone())
    }

    pub(crate) fn dry_run(&self) -> bool {
        self.inner.config.dry_run
    }

    pub(crate) async fn would(&self, work: &Work, what: String) -> Result<(), SyncError> {
        self.audit(work.item.kind, &work.item.local_id, "dry-run", what)
            .await
    }
}

/// Looks records up by a key that a list filter takes comma-separated, 50 keys per request,
/// keeping the first record found for each key asked for.
pub(crate) async fn lookup<T, Fut>(
    keys: &[String],
    fetch: impl Fn(String) -> Fut,
    key_of: impl Fn(&T) -> Option<String>,
) -> Result<BTreeMap<String, T>, SyncError>
where
    Fut: std::future::Future<Output = keycrm_api::Result<Vec<T>>>,
{
    let mut found = BTreeMap::new();
    for chunk in keys.chunks(50) {
        for item in fetch(chunk.join(",")).await? {
            if let Some(key) = key_of(&item)
                && chunk.contains(&key)
            {
                found.entry(key).or_insert(item);
            }
        }
    }
    Ok(found)
}
