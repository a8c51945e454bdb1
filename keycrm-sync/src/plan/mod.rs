//! The conflict planner: a pure three-way merge of one record, field by field, against its base.
//!
//! [`plan`] takes the last agreed state of a record (the *base* snapshot, see rule 5 of the sync
//! principles), the host's current record (*local*) and KeyCRM's current record (*remote*), and
//! returns a [`Plan`]: the agreed record, what to write to each side, and a log entry for every
//! value that was overwritten or refused. It does no IO and reads no clock: every time it uses
//! comes in with the snapshots, so the same input always gives the same plan.
//!
//! # Rules, per field
//!
//! Fields are the flat dotted names of [`Fields`]. A field that is absent from a snapshot, or
//! present with the JSON value `null`, has *no value*; the two are the same thing everywhere in this
//! module (the merged record never holds `null`, and `null` in [`Plan::to_local`] /
//! [`Plan::to_remote`] means "remove the field").
//!
//! 1. **One side changed** (its value differs from the base): that side's value is taken, no
//!    conflict. Removing a field is a change like any other.
//! 2. **Both sides changed to the same value**: it is taken, no conflict.
//! 3. **Both sides changed to different values**: the field's owner wins if [`Policy::owners`] names
//!    one (reason [`ConflictReason::Owner`]); otherwise [`Policy::default`] decides (reason
//!    [`ConflictReason::BothChanged`]): [`Resolution::RemoteWins`], [`Resolution::LocalWins`] or
//!    [`Resolution::NewestWins`], which compares the snapshots' `updated_at` (UTC): the later one
//!    wins, a missing time loses to a present one, and when both are equal or both missing
//!    **Remote wins** (the deterministic tiebreak). The losing value goes to [`Plan::conflicts`].
//!    Owners only decide true conflicts: a change made by the non-owner side while the owner kept
//!    its value is a one-side change and is taken (rule 1).
//! 4. **No base** (the first meeting of two existing records, `base: None`): every present value
//!    counts as a change, so a field present on one side only is taken from it, and a field present
//!    on both with different values is a both-changed conflict (rule 3) — unless the policy names
//!    a source of truth for first contact ([`Policy::first_contact`]): then such a field takes the
//!    value of the side the [`SourceOfTruth`] names for it, and is reported in
//!    [`Plan::first_link`] instead of [`Plan::conflicts`]. Two systems that held the same records
//!    before they were linked differ on many fields; those differences are the starting state,
//!    not edits made on both sides, so the source of truth decides them (the status rule 6 does
//!    not apply to them either: there is no move yet).
//! 5. **A side without a record** (`local: None` or `remote: None`) has no opinion: it counts as
//!    unchanged for every field, so the merged record comes from the other side (and the base), and
//!    that side's `to_*` map holds the whole merged record, ready to create. The planner never
//!    deletes a record: turning absence into a tombstone is decided by the engine, and only after a
//!    complete pass (rule 8 of the sync principles).
//! 6. **Status moves only forward** when [`Policy::status_field`] is set and
//!    [`Policy::allow_status_backwards`] is false. Ranks come from [`Policy::status_rank`], keyed
//!    by [`status_key`]. The *floor* is the highest rank among the base status and both sides'
//!    current statuses: the status the planner settles on may not rank below it, because that
//!    would move the base or a side's record backwards. When the merged status (from rules 1-5)
//!    ranks below the floor, the backwards move is refused: the merged status becomes a value of
//!    the floor's rank (preferring the side that rule 3 would prefer, then the other side, then the
//!    base) and a [`ConflictReason::StatusBackwards`] conflict names the refused side or sides.
//!    Statuses absent from the rank map are not ranked and never refused; nor is a removal.
//!    Without a base this compares the two sides' current statuses, as the issue asks; with a base
//!    it also keeps a side that is already further along from being pulled back by a both-changed
//!    resolution (base `new`, local `packed`, remote `shipped`: `shipped` is kept whatever the
//!    default resolution says).
//! 7. **Echo**: when local, remote and the merged record are equal, the plan is a no-op
//!    ([`Plan::is_noop`]): nothing to write, nothing to log.
//!
//! At most one [`Conflict`] is logged per field (a refused status move takes precedence over the
//! both-changed reason; the conflict still carries both sides' values). Conflicts are ordered by
//! field name, as are all maps ([`Fields`] is a `BTreeMap`).
//!
//! # Example
//!
//! ```
//! use keycrm_sync::model::{EntityKind, Fields, Snapshot};
//! use keycrm_sync::plan::{plan, PlanInput, Policy, Resolution, Side};
//! use serde_json::json;
//!
//! let fields = |pairs: &[(&str, serde_json::Value)]| -> Fields {
//!     pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
//! };
//! let base = Snapshot::new(fields(&[("note", json!("a")), ("shipping.city", json!("Kyiv"))]), None);
//! let local = Snapshot::new(fields(&[("note", json!("b")), ("shipping.city", json!("Lviv"))]), None);
//! let remote = Snapshot::new(fields(&[("note", json!("c")), ("shipping.city", json!("Kyiv"))]), None);
//! let policy = Policy::new(Resolution::RemoteWins).with_owner("shipping", Side::Local);
//!
//! let plan = plan(&PlanInput {
//!     kind: EntityKind::Order,
//!     base: Some(&base),
//!     local: Some(&local),
//!     remote: Some(&remote),
//!     policy: &policy,
//! });
//! assert_eq!(plan.merged["note"], json!("c")); // both changed: remote wins by default
//! assert_eq!(plan.merged["shipping.city"], json!("Lviv")); // changed locally only
//! assert_eq!(plan.to_remote, fields(&[("shipping.city", json!("Lviv"))]));
//! assert_eq!(plan.to_local, fields(&[("note", json!("c"))]));
//! assert_eq!(plan.conflicts.len(), 1); // local's "b" was overwritten and is logged
//! ```

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::field::prefixes;
use crate::model::{EntityKind, Fields, Snapshot, content_hash};

/// One of the two systems kept in agreement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The host system embedding the engine (a warehouse, a shop).
    Local,
    /// KeyCRM.
    Remote,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Local => Side::Remote,
            Side::Remote => Side::Local,
        }
    }

    /// The stable name used in storage and logs (`local`, `remote`).
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Local => "local",
            Side::Remote => "remote",
        }
    }
}

/// How a field changed on both sides to different values is resolved when it has no owner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// KeyCRM's value wins.
    RemoteWins,
    /// The host's value wins.
    LocalWins,
    /// The side whose snapshot has the later `updated_at` (UTC) wins; a missing time loses to a
    /// present one; equal or both missing: Remote wins. The default.
    #[default]
    NewestWins,
}

/// Which sides' backwards status moves were refused (see [`ConflictReason::StatusBackwards`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refused {
    /// The host moved the status backwards.
    Local,
    /// KeyCRM moved the status backwards.
    Remote,
    /// Both sides moved the status backwards (the base status is kept).
    Both,
}

impl Refused {
    /// Whether `side`'s move was refused.
    pub fn includes(self, side: Side) -> bool {
        matches!(
            (self, side),
            (Refused::Both, _) | (Refused::Local, Side::Local) | (Refused::Remote, Side::Remote)
        )
    }

    fn from_flags(local: bool, remote: bool) -> Option<Refused> {
        match (local, remote) {
            (true, true) => Some(Refused::Both),
            (true, false) => Some(Refused::Local),
            (false, true) => Some(Refused::Remote),
            (false, false) => None,
        }
    }
}

/// How conflicts of one entity kind are resolved. Serde-friendly, so it can sit in configuration.
///
/// The default is [`Resolution::NewestWins`], no owners, no status field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// How a field changed on both sides to different values is resolved when it has no owner.
    pub default: Resolution,
    /// Per-field owners. A key matches the field itself or any field below it at a dot boundary
    /// (`shipping` owns `shipping.tracking_code`, not `shipping_method`); the longest matching key
    /// wins. An owner decides only fields changed on both sides (see the module docs, rule 3).
    pub owners: BTreeMap<String, Side>,
    /// The field holding the record's status (`status_id` for orders), if statuses are ranked.
    pub status_field: Option<String>,
    /// Status value (rendered by [`status_key`]: a JSON string as its text, anything else as
    /// compact JSON, so `3` and `"3"` both render as `3`) to rank. Statuses may only move to a
    /// higher or equal rank; statuses missing here are not ranked and never refused.
    pub status_rank: BTreeMap<String, i64>,
    /// When true, statuses may move to a lower rank (ranks are then ignored).
    pub allow_status_backwards: bool,
    /// Which side is right when two existing records meet for the first time (no base) and a
    /// field differs (see the module docs, rule 4). `None`: such a difference is a conflict.
    pub first_contact: Option<SourceOfTruth>,
}

/// The side whose values a record takes on its first contact, per field, with a default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceOfTruth {
    /// The side of every field not named in [`SourceOfTruth::fields`].
    pub default: Side,
    /// Per field (a key matches the field itself or any field below it at a dot boundary; the
    /// longest key wins, as for [`Policy::owners`]).
    pub fields: BTreeMap<String, Side>,
}

impl Default for SourceOfTruth {
    fn default() -> Self {
        Self::new(Side::Remote)
    }
}

impl SourceOfTruth {
    /// `default` is right for every field.
    pub fn new(default: Side) -> Self {
        Self {
            default,
            fields: BTreeMap::new(),
        }
    }

    /// `side` is right for `field` and every field below it.
    pub fn with_field(mut self, field: impl Into<String>, side: Side) -> Self {
        self.fields.insert(field.into(), side);
        self
    }

    /// The side that is right for `field`.
    pub fn side_for(&self, field: &str) -> Side {
        longest_prefix(&self.fields, field).unwrap_or(self.default)
    }
}

/// The value of the longest key of `map` equal to `field` or one of its dotted prefixes.
fn longest_prefix(map: &BTreeMap<String, Side>, field: &str) -> Option<Side> {
    prefixes(field).find_map(|key| map.get(key).copied())
}

impl Policy {
    /// A policy resolving both-side changes with `default`, with no owners and no status field.
    pub fn new(default: Resolution) -> Self {
        Self {
            default,
            ..Self::default()
        }
    }

    /// Makes `side` the owner of `field` and every field below it (see [`Policy::owners`]).
    pub fn with_owner(mut self, field: impl Into<String>, side: Side) -> Self {
        self.owners.insert(field.into(), side);
        self
    }

    /// Ranks the statuses held in `field` (see [`Policy::status_rank`]); backwards moves are
    /// refused unless [`Policy::allowing_status_backwards`] says otherwise.
    pub fn with_status_ranks<K: Into<String>>(
        mut self,
        field: impl Into<String>,
        ranks: impl IntoIterator<Item = (K, i64)>,
    ) -> Self {
        self.status_field = Some(field.into());
        self.status_rank
            .extend(ranks.into_iter().map(|(k, rank)| (k.into(), rank)));
        self
    }

    /// Sets [`Policy::allow_status_backwards`].
    pub fn allowing_status_backwards(mut self, allow: bool) -> Self {
        self.allow_status_backwards = allow;
        self
    }

    /// The owner of `field`: the entry of [`Policy::owners`] with the longest key equal to
    /// `field` or to one of its dotted prefixes.
    pub fn owner_of(&self, field: &str) -> Option<Side> {
        longest_prefix(&self.owners, field)
    }

    /// Sets [`Policy::first_contact`].
    pub fn with_first_contact(mut self, source: SourceOfTruth) -> Self {
        self.first_contact = Some(source);
        self
    }

    /// The rank of a status value, if it is in [`Policy::status_rank`].
    pub fn status_rank_of(&self, value: &Value) -> Option<i64> {
        self.status_rank.get(status_key(value).as_ref()).copied()
    }
}

/// Renders a status value as a key of [`Policy::status_rank`]: a JSON string as its text, any other
/// value as compact JSON (`3` -> `3`, `"new"` -> `new`).
pub fn status_key(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(other.to_string()),
    }
}

/// Everything [`plan`] needs for one record.
#[derive(Clone, Copy, Debug)]
pub struct PlanInput<'a> {
    /// The record's kind (carried into the [`Plan`] for logging).
    pub kind: EntityKind,
    /// The last state both sides agreed on (written or seen), or `None` when the two records meet
    /// for the first time.
    pub base: Option<&'a Snapshot>,
    /// The host's current record, or `None` when the host has no such record.
    pub local: Option<&'a Snapshot>,
    /// KeyCRM's current record, or `None` when KeyCRM has no such record.
    pub remote: Option<&'a Snapshot>,
    /// How conflicts are resolved.
    pub policy: &'a Policy,
}

/// The outcome of [`plan`]: the agreed record, the writes that bring each side to it, and the
/// conflict log entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The record's kind, from the input.
    pub kind: EntityKind,
    /// The agreed record: the next base snapshot once both sides have applied their writes. Never
    /// holds `null`.
    pub merged: Fields,
    /// Fields to write to KeyCRM: every field whose merged value differs from the remote record
    /// (all of `merged` when KeyCRM has no record). `null` means remove the field.
    pub to_remote: Fields,
    /// Fields the host must apply: every field whose merged value differs from the local record
    /// (all of `merged` when the host has no record). `null` means remove the field.
    pub to_local: Fields,
    /// One entry per field where a side's value was overwritten or a change refused, by field.
    pub conflicts: Vec<Conflict>,
    /// On a first contact decided by [`Policy::first_contact`]: one entry per field whose two
    /// values differed, by field (empty otherwise). These are not conflicts.
    pub first_link: Vec<FirstLink>,
}

/// A field that differed when two existing records were linked for the first time, and the
/// side whose value was taken (see [`Policy::first_contact`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstLink {
    /// The dotted field name.
    pub field: String,
    /// The host's value.
    pub local: Value,
    /// KeyCRM's value.
    pub remote: Value,
    /// The side whose value was taken.
    pub winner: Side,
}

impl Plan {
    /// True when there is nothing to write and nothing to log (an echo, or nothing changed).
    pub fn is_noop(&self) -> bool {
        self.to_remote.is_empty()
            && self.to_local.is_empty()
            && self.conflicts.is_empty()
            && self.first_link.is_empty()
    }

    /// The conflict logged for `field`, if any.
    pub fn conflict(&self, field: &str) -> Option<&Conflict> {
        self.conflicts.iter().find(|c| c.field == field)
    }

    /// The content hash of [`Plan::merged`] (see [`content_hash`]), to store with the next base.
    pub fn merged_hash(&self) -> String {
        content_hash(&self.merged)
    }
}

/// A conflict log entry: one field where a value was overwritten or a change refused. Carries
/// every value involved, so no value is ever lost silently.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The dotted field name.
    pub field: String,
    /// The base value (`None`: no base, or the field was absent from it).
    pub base: Option<Value>,
    /// The host's value (`None`: absent, or the host has no record).
    pub local: Option<Value>,
    /// KeyCRM's value (`None`: absent, or KeyCRM has no record).
    pub remote: Option<Value>,
    /// The value kept in the merged record (`None`: the field is removed).
    pub merged: Option<Value>,
    /// The side whose value was kept; `None` when neither side's value was (both sides moved a
    /// status backwards, or the only other value is the base's), so the base value was kept.
    pub winner: Option<Side>,
    /// Why this value won.
    pub reason: ConflictReason,
    /// The host's `updated_at`, if known.
    pub local_updated_at: Option<DateTime<Utc>>,
    /// KeyCRM's `updated_at`, if known.
    pub remote_updated_at: Option<DateTime<Utc>>,
}

/// Why a [`Conflict`] was resolved the way it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConflictReason {
    /// Both sides changed the field to different values and it has no owner: the policy's
    /// default resolution decided.
    BothChanged {
        /// The resolution applied.
        resolution: Resolution,
    },
    /// Both sides changed the field to different values and its owner's value was kept.
    Owner {
        /// The field's owner (from [`Policy::owners`]).
        owner: Side,
    },
    /// A status move to a lower rank was refused and a forward status kept.
    StatusBackwards {
        /// The side or sides whose move was refused.
        refused: Refused,
    },
}

/// Plans the merge of one record. Pure: no IO, no clock, deterministic. See the module docs for
/// the rules.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let base = input.base.map(|s| &s.fields);
    let local = input.local.map(|s| &s.fields);
    let remote = input.remote.map(|s| &s.fields);
    let times = Times {
        local: input.local.and_then(|s| s.updated_at),
        remote: input.remote.and_then(|s| s.updated_at),
    };

    let keys: BTreeSet<&str> = [base, local, remote]
        .into_iter()
        .flatten()
        .flat_map(|fields| fields.keys().map(String::as_str))
        .collect();

    // First contact: two existing records, no base, and a source of truth to decide.
    let first_contact = match (input.base, local, remote) {
        (None, Some(_), Some(_)) => input.policy.first_contact.as_ref(),
        _ => None,
    };

    let mut merged = Fields::new();
    let mut conflicts = Vec::new();
    let mut first_link = Vec::new();
    for field in keys {
        if let Some(source) = first_contact {
            let local = value_of(local, field);
            let remote = value_of(remote, field);
            let value = match (local, remote) {
                (Some(l), Some(r)) if l != r => {
                    let winner = source.side_for(field);
                    first_link.push(FirstLink {
                        field: field.to_owned(),
                        local: l.clone(),
                        remote: r.clone(),
                        winner,
                    });
                    if winner == Side::Local { l } else { r }
                }
                (Some(v), _) | (None, Some(v)) => v,
                (None, None) => continue,
            };
            merged.insert(field.to_owned(), value.clone());
            continue;
        }
        let values = FieldValues {
            base: value_of(base, field),
            local: local.map(|fields| value_of(Some(fields), field)),
            remote: remote.map(|fields| value_of(Some(fields), field)),
        };
        let (value, conflict) = merge_field(field, &values, input.policy, times);
        if let Some(value) = value {
            merged.insert(field.to_owned(), value.clone());
        }
        conflicts.extend(conflict);
    }

    Plan {
        kind: input.kind,
        to_remote: changes_for(&merged, remote),
        to_local: changes_for(&merged, local),
        merged,
        conflicts,
        first_link,
    }
}

/// The two sides' `updated_at`.
#[derive(Clone, Copy)]
struct Times {
    local: Option<DateTime<Utc>>,
    remote: Option<DateTime<Utc>>,
}

impl Times {
    /// The newer side; a missing time loses; ties (and both missing) go to Remote.
    fn newest(self) -> Side {
        match (self.local, self.remote) {
            (Some(local), Some(remote)) if local > remote => Side::Local,
            (Some(_), None) => Side::Local,
            _ => Side::Remote,
        }
    }
}

/// One field's values. For a side, the outer `None` means the side has no record.
struct FieldValues<'v> {
    base: Option<&'v Value>,
    local: Option<Option<&'v Value>>,
    remote: Option<Option<&'v Value>>,
}

impl<'v> FieldValues<'v> {
    /// The side's current value (`None` when absent or the side has no record).
    fn current(&self, side: Side) -> Option<&'v Value> {
        match side {
            Side::Local => self.local.flatten(),
            Side::Remote => self.remote.flatten(),
        }
    }

    /// The side's opinion: its current value, or the base's when it has no record.
    fn opinion(&self, side: Side) -> Option<&'v Value> {
        match side {
            Side::Local => self.local.unwrap_or(self.base),
            Side::Remote => self.remote.unwrap_or(self.base),
        }
    }

    fn changed(&self, side: Side) -> bool {
        self.opinion(side) != self.base
    }
}

/// A field's value in a snapshot; `null` counts as absent.
fn value_of<'v>(fields: Option<&'v Fields>, field: &str) -> Option<&'v Value> {
    fields.and_then(|f| f.get(field)).filter(|v| !v.is_null())
}

/// The side that wins a both-changed conflict on `field`, and why.
fn preference(field: &str, policy: &Policy, times: Times) -> (Side, ConflictReason) {
    if let Some(owner) = policy.owner_of(field) {
        return (owner, ConflictReason::Owner { owner });
    }
    let side = match policy.default {
        Resolution::RemoteWins => Side::Remote,
        Resolution::LocalWins => Side::Local,
        Resolution::NewestWins => times.newest(),
    };
    (
        side,
        ConflictReason::BothChanged {
            resolution: policy.default,
        },
    )
}

/// Merges one field: the merged value and the conflict to log, if any.
fn merge_field<'v>(
    field: &str,
    values: &FieldValues<'v>,
    policy: &Policy,
    times: Times,
) -> (Option<&'v Value>, Option<Conflict>) {
    let local = values.opinion(Side::Local);
    let remote = values.opinion(Side::Remote);
    let (mut merged, mut decision) =
        match (values.changed(Side::Local), values.changed(Side::Remote)) {
            (false, false) => (values.base, None),
            (true, false) => (local, None),
            (false, true) => (remote, None),
            (true, true) if local == remote => (local, None),
            (true, true) => {
                let (winner, reason) = preference(field, policy, times);
                let value = if winner == Side::Local { local } else { remote };
                (value, Some((Some(winner), reason)))
            }
        };

    if policy.status_field.as_deref() == Some(field)
        && !policy.allow_status_backwards
        && let Some((kept, winner, refused)) =
            refuse_backwards(field, values, merged, policy, times)
    {
        merged = kept;
        decision = Some((winner, ConflictReason::StatusBackwards { refused }));
    }

    let conflict = decision.map(|(winner, reason)| Conflict {
        field: field.to_owned(),
        base: values.base.cloned(),
        local: values.current(Side::Local).cloned(),
        remote: values.current(Side::Remote).cloned(),
        merged: merged.cloned(),
        winner,
        reason,
        local_updated_at: times.local,
        remote_updated_at: times.remote,
    });
    (merged, conflict)
}

/// When `merged` would move a ranked status below the floor (the highest rank among the base and
/// both sides' current statuses), the value to keep instead, its side, and the refused sides.
/// A side is refused when it changed the status to a ranked value below the floor (so its value
/// always differs from the kept one, whose rank is the floor).
fn refuse_backwards<'v>(
    field: &str,
    values: &FieldValues<'v>,
    merged: Option<&'v Value>,
    policy: &Policy,
    times: Times,
) -> Option<(Option<&'v Value>, Option<Side>, Refused)> {
    let rank = |value: Option<&Value>| value.and_then(|v| policy.status_rank_of(v));
    let floor = [
        values.base,
        values.current(Side::Local),
        values.current(Side::Remote),
    ]
    .into_iter()
    .filter_map(rank)
    .max()?;
    if rank(merged)? >= floor {
        return None;
    }

    let (first, _) = preference(field, policy, times);
    let (winner, kept) = [
        (Some(first), values.current(first)),
        (Some(first.other()), values.current(first.other())),
        (None, values.base),
    ]
    .into_iter()
    .find(|(_, value)| rank(*value) == Some(floor))?;

    let refused =
        |side: Side| values.changed(side) && rank(values.current(side)).is_some_and(|r| r < floor);
    let refused = Refused::from_flags(refused(Side::Local), refused(Side::Remote))?;
    Some((kept, winner, refused))
}

/// The writes that bring a side's record to `merged`: changed or added fields with their merged
/// value, removed ones as `null`. A side with no record gets all of `merged`.
fn changes_for(merged: &Fields, side: Option<&Fields>) -> Fields {
    let mut changes: Fields = merged
        .iter()
        .filter(|(field, value)| value_of(side, field) != Some(*value))
        .map(|(field, value)| (field.clone(), value.clone()))
        .collect();
    if let Some(side) = side {
        for (field, value) in side {
            if !value.is_null() && !merged.contains_key(field) {
                changes.insert(field.clone(), Value::Null);
            }
        }
    }
    changes
}
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
