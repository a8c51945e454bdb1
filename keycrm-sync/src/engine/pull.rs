//! Inbound: local change collection, reconciliation passes, webhooks, and applying a remote
//! record to the host.

use std::collections::BTreeSet;

use chrono::{DateTime, SubsecRound, Utc};
use keycrm_api::Timestamp;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::quarantine::{self, Decoded, Quarantined, RawList, RawPages};
use super::{PassOutcome, RunReport, SyncEngine, SyncError, SyncEvent};
use crate::canonical::{self, MappingError};
use crate::host::{Applied, Host, RemoteChange};
use crate::model::{EntityKind, Snapshot};
use crate::plan::{FirstLink, PlanInput, Side, plan};
use crate::store::{Mapping, Store, SyncState, WriteOp};

/// Cursor of a kind's local changes (the host's opaque cursor).
pub(crate) const LOCAL_CURSOR: &str = "local";
/// Cursor of a kind's remote changes: the newest KeyCRM `updated_at` a complete pass read
/// (never later than that pass's start), or the pass start when it read nothing.
pub(crate) const REMOTE_CURSOR: &str = "remote";
/// Cursor of a scheduled kind's last complete full pass (the catalogue, stock): the pass's
/// start, RFC 3339. The kind is read whole again once its interval has passed since.
pub(crate) const FULL_PASS_CURSOR: &str = "full";
/// Cursor of a scheduled kind's last full pass that ended incomplete (a quarantined record,
/// a record the host refused, a pass held by the mass-zeroing guard): its start, RFC 3339.
/// Such a pass moves no [`FULL_PASS_CURSOR`], but is not tried again before the interval has
/// passed since it either: what made it incomplete seldom goes away within minutes, and a
/// whole catalogue read every run would spend the quota orders need.
pub(crate) const INCOMPLETE_PASS_CURSOR: &str = "full_incomplete";

/// What one reconciliation pass of a kind found.
pub(crate) struct PassState {
    /// KeyCRM ids of the records decoded.
    pub(crate) seen: BTreeSet<i64>,
    /// Records that could not be decoded.
    pub(crate) broken: Vec<Quarantined>,
    /// Whether every record was decoded and applied.
    pub(crate) complete: bool,
    /// Stock levels read, applied after the pass (see `apply_stock_levels`).
    pub(crate) levels: Vec<super::inbox::StockLevel>,
    /// The newest KeyCRM `updated_at` read by the pass's change feed (`updated_between` or a
    /// full read; not the orders' `created_between` pass, whose records may be newer than
    /// changes it did not read): the next window starts there.
    pub(crate) newest: Option<DateTime<Utc>>,
}

impl Default for PassState {
    fn default() -> Self {
        Self {
            seen: BTreeSet::new(),
            broken: Vec::new(),
            complete: true,
            levels: Vec::new(),
            newest: None,
        }
    }
}

/// The span of one reconciliation pass; [`close_span`] records its figures.
pub(crate) fn pass_span(kind: EntityKind, pass: &'static str) -> tracing::Span {
    tracing::info_span!(
        target: "keycrm_sync",
        "keycrm_sync.pass",
        kind = kind.as_str(),
        pass,
        records = tracing::field::Empty,
        requests = tracing::field::Empty,
        outcome = tracing::field::Empty,
    )
}

/// Records a pass's figures on its span: records read, KeyCRM requests, and the outcome
/// (`complete`, `incomplete`: a record failed or was quarantined, `failed`).
pub(crate) fn close_span(
    span: &tracing::Span,
    records: u64,
    requests: u64,
    result: &Result<(), SyncError>,
    complete: bool,
) {
    let outcome = match (result, complete) {
        (Err(_), _) => "failed",
        (Ok(()), true) => "complete",
        (Ok(()), false) => "incomplete",
    };
    span.record("records", records);
    span.record("requests", requests);
    span.record("outcome", outcome);
    span.in_scope(|| {
        tracing::info!(target: "keycrm_sync", records, requests, outcome, "pass finished");
    });
}

/// The name of the orders' `created_between` pass (see [`PassState::newest`]).
pub(crate) const CREATED_PASS: &str = "created";

/// The cursor after a complete pass that started at `start` and read records up to `newest`
/// (KeyCRM's `updated_at`), from the cursor `old` (`None` after a full read); `None` keeps
/// the cursor as it is. The next window starts at the cursor's second minus `overlap`.
///
/// The cursor follows what was read, not the pass start: the engine's own writes after the
/// pass (the push runs after the pull) are read once by the next pass, which moves the cursor
/// past them, so the run after does not read them again. KeyCRM stamps whole seconds: the
/// newest second read is left out of the next window only when it had ended (plus the
/// overlap, for clock skew and commit lag) before the pass started; else it is read again
/// (a record changed later in that second is seen, one already applied is recognised by its
/// base). The cursor is never later than the pass start (a record changed while the pass
/// paged is read again), never moves back, and stays where it is when an incremental pass
/// read nothing.
pub(crate) fn next_cursor(
    old: Option<DateTime<Utc>>,
    newest: Option<DateTime<Utc>>,
    start: DateTime<Utc>,
    overlap: chrono::Duration,
) -> Option<DateTime<Utc>> {
    let after =
        |t: DateTime<Utc>| (t.trunc_subsecs(0) + chrono::Duration::seconds(1) + overlap).min(start);
    match (old, newest) {
        (None, newest) => Some(newest.map_or(start, after)),
        (Some(_), None) => None,
        (Some(old), Some(t)) => Some(old.max(after(t))),
    }
}

/// How a remote record finds its mapping.
pub(crate) enum Key<'a> {
    /// By KeyCRM id (orders, buyers, products, offers).
    Remote(i64),
    /// By local id (stock: `<warehouse>/<sku>`).
    Local(&'a str),
}

impl<S: Store, H: Host> SyncEngine<S, H> {
    /// Writes every local change since the host cursor to the outbox, then advances it.
    pub(crate) async fn collect(
        &self,
        report: &mut RunReport,
        everything: bool,
    ) -> Result<(), SyncError> {
        let store = &self.inner.store;
        for kind in EntityKind::ALL {
            let cursor = if everything {
                None
            } else {
                store.get_cursor(kind, LOCAL_CURSOR).await?
            };
            let changes = self.inner.host.changes_since(kind, cursor).await?;
            for id in &changes.ids {
                store
                    .enqueue(kind, id, serde_json::json!({}), self.now())
                    .await?;
                report.collected += 1;
            }
            if let Some(next) = changes.cursor {
                store
                    .set_cursor(kind, LOCAL_CURSOR, &next, self.now())
                    .await?;
            }
        }
        Ok(())
    }

    /// Reconciliation: orders and buyers incrementally, catalogue and stock in full passes
    /// when they are due (see [`Self::full_pass_due`]), everything in full when `everything`.
    /// A complete full pass of a scheduled kind stores its start as the kind's last one
    /// ([`FULL_PASS_CURSOR`]); an incomplete one as its last try ([`INCOMPLETE_PASS_CURSOR`]);
    /// a failed one (the run stops) neither, so the next run tries again.
    pub(crate) async fn pull(
        &self,
        report: &mut RunReport,
        everything: bool,
    ) -> Result<(), SyncError> {
        for kind in crate::entity::PULL_ORDER {
            let start = self.now();
            let scheduled = self.inner.config.full_pass_interval(kind);
            let full = match scheduled {
                Some(interval) => everything || self.full_pass_due(kind, interval, start).await?,
                None => everything,
            };
            report.full_pass |= full;
            self.pull_kind(kind, report, full, everything).await?;
            if !full || scheduled.is_none() {
                continue;
            }
            let cursor = match report.full_passes.get(&kind) {
                Some(PassOutcome::Complete) => FULL_PASS_CURSOR,
                Some(PassOutcome::Incomplete) => INCOMPLETE_PASS_CURSOR,
                None => continue,
            };
            self.inner
                .store
                .set_cursor(kind, cursor, &start.to_rfc3339(), self.now())
                .await?;
        }
        Ok(())
    }

    /// Whether `kind`'s scheduled full pass is due at `now`: it never had one, or `interval`
    /// has passed since the start of the last, complete or not (a failed one stores nothing).
    /// A stored time later than `now` (the clock was set back) or one that does not parse
    /// counts as none, so that a wrong time never stops the passes.
    async fn full_pass_due(
        &self,
        kind: EntityKind,
        interval: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<bool, SyncError> {
        let store = &self.inner.store;
        let stored = |c: Option<String>| {
            c.and_then(|c| DateTime::parse_from_rfc3339(&c).ok())
                .map(|c| c.with_timezone(&Utc))
                .filter(|c| *c <= now)
        };
        let complete = stored(store.get_cursor(kind, FULL_PASS_CURSOR).await?);
        let incomplete = stored(store.get_cursor(kind, INCOMPLETE_PASS_CURSOR).await?);
        let Some(last) = complete.max(incomplete) else {
            return Ok(true);
        };
        let interval = chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX);
        Ok(now - last >= interval)
    }

    /// Notes how a full pass of `kind` ended in the run's report.
    pub(crate) fn note_full_pass(&self, kind: EntityKind, complete: bool, report: &mut RunReport) {
        let outcome = if complete {
            PassOutcome::Complete
        } else {
            PassOutcome::Incomplete
        };
        report.full_passes.insert(kind, outcome);
    }

    /// The `*_between` window of an incremental pass: from the cursor's second minus the
    /// overlap (or the beginning) to a minute from now; and the pass start (see
    /// [`next_cursor`]).
    pub(crate) async fn window(
        &self,
        kind: EntityKind,
        everything: bool,
    ) -> Result<(Option<String>, DateTime<Utc>), SyncError> {
        let start = self.now();
        if everything {
            return Ok((None, start));
        }
        let cursor = self.inner.store.get_cursor(kind, REMOTE_CURSOR).await?;
        let from = cursor
            .and_then(|c| DateTime::parse_from_rfc3339(&c).ok())
            .map(|c| {
                // From the cursor's whole second: KeyCRM compares its whole-second stamps.
                c.with_timezone(&Utc).trunc_subsecs(0)
                    - chrono::Duration::from_std(self.inner.config.overlap()).unwrap_or_default()
            });
        let Some(from) = from else {
            return Ok((None, start));
        };
        let to = start + chrono::Duration::minutes(1);
        Ok((
            Some(keycrm_api::filter::between(
                Timestamp::from(from),
                Timestamp::from(to),
            )),
            start,
        ))
    }

    /// Applies every record of a list (each one isolated, see [`Self::isolated`]), page by
    /// page; a record that cannot be decoded is quarantined and the rest of its page applied.
    /// Notes the ids seen and whether every record was applied in `state`. Runs in one span
    /// per pass (kind, records, requests, outcome).
    pub(crate) async fn apply_all<T: DeserializeOwned>(
        &self,
        kind: EntityKind,
        pass: &'static str,
        list: RawList,
        state: &mut PassState,
        report: &mut RunReport,
        remote_of: impl Fn(&T) -> Option<(i64, Result<Snapshot, MappingError>)>,
    ) -> Result<(), SyncError> {
        let span = pass_span(kind, pass);
        let requests_before = self.inner.client.stats().requests;
        let mut records = 0u64;
        let result = async {
            let already = self.quarantined_of(kind).await?;
            let mut pages = RawPages::new(list);
            while let Some(page) = self.next_raw_page(&mut pages).await? {
                // A page's store writes are one transaction.
                let gathering = self.gathering();
                let applied = async {
                    for record in page {
                        records += 1;
                        let item = match quarantine::decode::<T>(kind, pages.operation(), &record, self.now()) {
                            Decoded::Record(item) => item,
                            Decoded::Broken(q) => {
                                state.complete = false;
                                report.quarantined += 1;
                                self.quarantine(&q, &already, &state.broken).await?;
                                state.broken.push(q);
                                continue;
                            }
                        };
                        let Some((id, remote)) = remote_of(&item) else {
                            tracing::debug!(target: "keycrm_sync", kind = kind.as_str(), decision = "no-id", "record without an id skipped");
                            continue;
                        };
                        if pass != CREATED_PASS
                            && let Ok(remote) = &remote
                            && let Some(at) = remote.updated_at
                        {
                            state.newest = state.newest.max(Some(at));
                        }
                        if !state.seen.insert(id) {
                            continue;
                        }
                        let result = match remote {
                            Ok(remote) => {
                                self.apply_remote(kind, Key::Remote(id), id, true, remote, report)
                                    .await
                            }
                            Err(e) => Err(SyncError::Mapping(e)),
                        };
                        self.isolated(kind, id, result, &mut state.complete).await?;
                    }
                    Ok::<_, SyncError>(())
                }
                .await;
                // What was applied to the host is recorded even when the page stopped early.
                self.commit_gathered(gathering).await?;
                applied?;
            }
            Ok::<_, SyncError>(())
        }
        .instrument(span.clone())
        .await;
        close_span(
            &span,
            records,
            self.inner.client.stats().requests - requests_before,
            &result,
            state.complete,
        );
        result
    }

    /// After a pass: the quarantine is settled; a complete full pass turns absence into
    /// tombstones, and a complete pass advances the kind's cursor (see [`next_cursor`]).
    pub(crate) async fn finish_pass(
        &self,
        kind: EntityKind,
        state: PassState,
        full: bool,
        cursor: Option<DateTime<Utc>>,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let newest = state.newest;
        self.settle_quarantine(kind, &state.seen, state.broken, full)
            .await?;
        if full {
            self.note_full_pass(kind, state.complete, report);
        }
        if !state.complete {
            return Ok(());
        }
        if full {
            self.tombstones(kind, &state.seen, report).await?;
        }
        if let Some(start) = cursor {
            let store = &self.inner.store;
            let old = if full {
                None
            } else {
                store
                    .get_cursor(kind, REMOTE_CURSOR)
                    .await?
                    .and_then(|c| DateTime::parse_from_rfc3339(&c).ok())
                    .map(|c| c.with_timezone(&Utc))
            };
            let overlap =
                chrono::Duration::from_std(self.inner.config.overlap()).unwrap_or_default();
            if let Some(next) = next_cursor(old, newest, start, overlap) {
                store
                    .set_cursor(kind, REMOTE_CURSOR, &next.to_rfc3339(), self.now())
                    .await?;
            }
        }
        Ok(())
    }

    /// Keeps one record's failure (an unmapped status, a host refusal) from stopping a pass:
    /// the record is reported and the pass is marked incomplete, so its cursor stays and the
    /// record is pulled again next run. Store failures still stop the run.
    pub(crate) async fn isolated(
        &self,
        kind: EntityKind,
        remote_id: i64,
        result: Result<(), SyncError>,
        complete: &mut bool,
    ) -> Result<(), SyncError> {
        match result {
            Ok(()) => Ok(()),
            Err(SyncError::Store(e)) => Err(SyncError::Store(e)),
            Err(e) => {
                *complete = false;
                tracing::debug!(target: "keycrm_sync", kind = kind.as_str(), remote_id, decision = "failed", "remote record not applied; the pass stays incomplete");
                let local_id = format!("remote:{remote_id}");
                self.audit(kind, &local_id, "pull-failed", e.to_string())
                    .await?;
                self.publish(SyncEvent::Failed {
                    kind,
                    local_id,
                    error: e.to_string(),
                    dead: false,
                });
                Ok(())
            }
        }
    }

    /// Mapped records of `kind` that a complete pass did not see are gone from KeyCRM.
    pub(crate) async fn tombstones(
        &self,
        kind: EntityKind,
        seen: &BTreeSet<i64>,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let mappings = self.inner.store.list_mappings(kind, None).await?;
        let gathering = self.gathering();
        let applied = self.apply_tombstones(kind, mappings, seen, report).await;
        self.commit_gathered(gathering).await?;
        applied
    }

    /// Tombstones the mapped records a complete pass did not see; their personal values in
    /// the conflict log go with them.
    pub(crate) async fn apply_tombstones(
        &self,
        kind: EntityKind,
        mappings: Vec<Mapping>,
        seen: &BTreeSet<i64>,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        for mapping in mappings {
            let Some(remote_id) = mapping.remote_id else {
                continue;
            };
            if seen.contains(&remote_id) {
                continue;
            }
            let change = RemoteChange {
                local_id: Some(mapping.local_id.clone()),
                remote_id,
                fields: Default::default(),
                tombstone: true,
            };
            self.inner.host.apply(kind, change).await?;
            self.write(WriteOp::DeleteMapping {
                kind,
                local_id: mapping.local_id.clone(),
            })
            .await?;
            self.write(WriteOp::ForgetPersonalConflicts {
                kind,
                local_id: mapping.local_id.clone(),
            })
            .await?;
            self.audit(
                kind,
                &mapping.local_id,
                "tombstone",
                format!("{kind} {remote_id} is gone from KeyCRM"),
            )
            .await?;
            report.applied += 1;
            self.publish(SyncEvent::Applied {
                kind,
                local_id: mapping.local_id,
                remote_id: Some(remote_id),
            });
        }
        Ok(())
    }

    /// Pulls one record by id (on-demand sync).
    pub(crate) async fn pull_one(
        &self,
        kind: EntityKind,
        remote_id: i64,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let Some(remote) = self.fetch_one(kind, remote_id).await? else {
            return Ok(());
        };
        self.apply_remote(
            kind,
            Key::Remote(remote_id),
            remote_id,
            true,
            remote,
            report,
        )
        .await
    }

    /// Plans a remote record against its base and the host's record, applies the result to
    /// the host, logs conflicts, and queues what KeyCRM must still receive.
    pub(crate) async fn apply_remote(
        &self,
        kind: EntityKind,
        key: Key<'_>,
        remote_id: i64,
        map_remote_id: bool,
        remote: Snapshot,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        report.pulled += 1;
        let mut mapping = match key {
            Key::Remote(id) => self.mapping_by_remote(kind, id).await?,
            Key::Local(id) => self.mapping(kind, id).await?,
        };
        if mapping.is_none() {
            mapping = self.noted_mapping(kind, &remote.fields).await?;
        }
        // A first contact: the host already has the record, the engine has never linked it
        // (no mapping row, so neither a create of ours nor an earlier link).
        let mut first_contact = false;
        if mapping.is_none() && matches!(key, Key::Remote(_)) {
            // Not mapped yet: maybe the host has it already (first sync, or a create whose
            // mapping was never written).
            if let Some(local_id) = self
                .inner
                .host
                .find_local(kind, remote.fields.clone())
                .await?
            {
                mapping = Some(match self.mapping(kind, &local_id).await? {
                    Some(m) => m,
                    None => {
                        first_contact = true;
                        Mapping::new(kind, &local_id)
                    }
                });
            }
        }
        if let Key::Local(id) = key
            && mapping.is_none()
        {
            first_contact = true;
            mapping = Some(Mapping::new(kind, id));
        }
        if let Some(base) = mapping.as_ref().and_then(|m| m.base.as_ref())
            && base.fields == remote.fields
        {
            // Our own write coming back, or nothing new.
            tracing::debug!(target: "keycrm_sync", kind = kind.as_str(), remote_id, decision = "unchanged", "remote record equals its base");
            return Ok(());
        }
        let local = match &mapping {
            Some(m) => self.inner.host.load(kind, m.local_id.clone()).await?,
            None => None,
        };
        let base = mapping
            .as_ref()
            .and_then(|m| m.effective_base(&remote.fields));
        let first_contact = first_contact && base.is_none() && local.is_some();
        let mut policy = self.policy(kind);
        if !first_contact {
            policy.first_contact = None;
        } else if policy.first_contact.is_none() {
            // A policy set on the builder may name its own source of truth; else the
            // configuration's.
            policy.first_contact = Some(self.inner.config.source_of_truth(kind));
        }
        let planned = plan(&PlanInput {
            kind,
            base: base.as_ref(),
            local: local.as_ref(),
            remote: Some(&remote),
            policy: &policy,
        });
        let mapped_local_id = mapping.as_ref().map(|m| m.local_id.clone());
        let local_id = if local.is_none() || !planned.to_local.is_empty() {
            let change = RemoteChange {
                local_id: mapped_local_id.clone(),
                remote_id,
                fields: planned.merged.clone(),
                tombstone: false,
            };
            match self.inner.host.apply(kind, change).await? {
                Applied::Stored { local_id } => {
                    tracing::debug!(target: "keycrm_sync", kind = kind.as_str(), remote_id, decision = "applied", fields = planned.to_local.len(), "remote change applied to the host");
                    report.applied += 1;
                    self.publish(SyncEvent::Applied {
                        kind,
                        local_id: local_id.clone(),
                        remote_id: Some(remote_id),
                    });
                    local_id
                }
                Applied::Skipped { reason } => {
                    tracing::debug!(target: "keycrm_sync", kind = kind.as_str(), remote_id, decision = "skipped", "the host skipped a remote change");
                    self.audit(
                        kind,
                        mapped_local_id.as_deref().unwrap_or("-"),
                        "skipped",
                        reason,
                    )
                    .await?;
                    return Ok(());
                }
            }
        } else {
            // The host's record was loaded through its mapping.
            match mapped_local_id.clone() {
                Some(id) => id,
                None => {
                    return Err(SyncError::Config(format!(
                        "{kind} {remote_id}: a host record without a mapping"
                    )));
                }
            }
        };
        if first_contact {
            self.audit_first_link(kind, &local_id, remote_id, &planned.first_link)
                .await?;
        }
        self.log_conflicts(kind, &local_id, Some(remote_id), &planned.conflicts, report)
            .await?;
        let mut m = mapping.unwrap_or_else(|| Mapping::new(kind, &local_id));
        m.local_id = local_id.clone();
        if map_remote_id {
            m.remote_id = Some(remote_id);
        }
        // The base is what KeyCRM has now: what the host still has to send shows up as a
        // local change against it.
        m.base = Some(remote.clone());
        m.in_flight = None;
        m.remote_updated_at = remote.updated_at;
        m.last_sync_at = Some(self.now());
        m.content_hash = Some(canonical::snapshot(planned.merged.clone(), None).hash());
        m.error = None;
        tracing::debug!(
            target: "keycrm_sync",
            kind = kind.as_str(),
            remote_id,
            decision = if first_contact { "first-link" } else { "planned" },
            to_local = planned.to_local.len(),
            to_remote = planned.to_remote.len(),
            conflicts = planned.conflicts.len(),
            "remote record reconciled"
        );
        if planned.to_remote.is_empty() {
            m.state = SyncState::Synced;
        } else {
            m.state = SyncState::Pending;
            self.write(WriteOp::Enqueue {
                kind,
                local_id: local_id.clone(),
                payload: serde_json::json!({}),
                now: self.now(),
            })
            .await?;
        }
        self.write(WriteOp::PutMapping(m)).await?;
        Ok(())
    }
}

impl<S: Store, H: Host> SyncEngine<S, H> {
    /// Audits a first contact once: the record existed on both sides and is linked now; the
    /// fields that differed took the source of truth's value (they are no conflicts). Field
    /// names and sides are listed; values only for the catalogue and stock (prices, levels),
    /// never for orders and buyers (customer data).
    pub(crate) async fn audit_first_link(
        &self,
        kind: EntityKind,
        local_id: &str,
        remote_id: i64,
        fields: &[FirstLink],
    ) -> Result<(), SyncError> {
        let with_values = matches!(
            kind,
            EntityKind::Product | EntityKind::Offer | EntityKind::Stock
        );
        let mut detail = format!("linked to KeyCRM {kind} {remote_id} on first contact");
        if fields.is_empty() {
            detail.push_str("; no field differed");
        } else {
            detail.push_str("; differing fields took the source of truth's value: ");
            let parts: Vec<String> = fields
                .iter()
                .map(|f| {
                    let side = match f.winner {
                        Side::Local => "host",
                        Side::Remote => "KeyCRM",
                    };
                    if with_values {
                        format!(
                            "{} from {side} (host {}, KeyCRM {})",
                            f.field, f.local, f.remote
                        )
                    } else {
                        format!("{} from {side}", f.field)
                    }
                })
                .collect();
            detail.push_str(&parts.join(", "));
        }
        self.audit(kind, local_id, FIRST_LINK_ACTION, detail).await
    }
}

/// The audit action of a first contact (see [`crate::plan::Policy::first_contact`]).
pub const FIRST_LINK_ACTION: &str = "first-link";

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, Utc};

    use super::next_cursor;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn the_cursor_follows_what_was_read_and_keeps_an_unfinished_second() {
        let start = at("2026-01-01T12:00:00.400Z");
        let overlap = Duration::seconds(2);
        // Nothing read after a full read: the pass start.
        assert_eq!(next_cursor(None, None, start, overlap), Some(start));
        // Nothing read incrementally: the cursor stays.
        assert_eq!(next_cursor(Some(start), None, start, overlap), None);
        // A second that had ended (plus the overlap) before the pass is left out next time.
        let newest = at("2026-01-01T11:59:50.700Z");
        assert_eq!(
            next_cursor(
                Some(at("2026-01-01T11:00:00Z")),
                Some(newest),
                start,
                overlap
            ),
            Some(at("2026-01-01T11:59:53Z"))
        );
        // One that had not is read again: the cursor is the pass start at the latest.
        let newest = at("2026-01-01T11:59:58.100Z");
        assert_eq!(next_cursor(None, Some(newest), start, overlap), Some(start));
        // Never back.
        let old = at("2026-01-01T12:00:00Z");
        assert_eq!(
            next_cursor(Some(old), Some(at("2026-01-01T11:00:00Z")), start, overlap),
            Some(old)
        );
    }
}
