//! The planner's properties over generated records.

use super::tests::{apply, at, run};
use super::*;
use proptest::prelude::*;
use serde_json::json;

// ---- properties --------------------------------------------------------------------------------

const KEYS: [&str; 6] = [
    "note",
    "status_id",
    "shipping",
    "shipping.city",
    "shipping.code",
    "qty",
];
const STATUS: &str = "status_id";

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::from),
        4 => (0i64..5).prop_map(Value::from),
        2 => prop::sample::select(vec!["a", "b", "1"]).prop_map(Value::from),
    ]
}

fn arb_key() -> impl Strategy<Value = String> {
    prop::sample::select(KEYS.to_vec()).prop_map(String::from)
}

prop_compose! {
    fn arb_fields()(map in prop::collection::btree_map(arb_key(), arb_value(), 0..6)) -> Fields {
        map
    }
}

prop_compose! {
    /// Per key: `Some(v)` sets, `None` removes; other keys keep the base value.
    fn arb_edits()(
        map in prop::collection::btree_map(arb_key(), prop::option::of(arb_value()), 0..5)
    ) -> BTreeMap<String, Option<Value>> {
        map
    }
}

prop_compose! {
    fn arb_time()(t in prop::option::of(0i64..3)) -> Option<DateTime<Utc>> {
        t.map(at)
    }
}

prop_compose! {
    fn arb_policy()(
        default in prop::sample::select(vec![
            Resolution::RemoteWins, Resolution::LocalWins, Resolution::NewestWins,
        ]),
        owners in prop::collection::btree_map(
            prop::sample::select(vec!["shipping", "shipping.code", "note", STATUS]),
            prop::sample::select(vec![Side::Local, Side::Remote]),
            0..3,
        ),
        ranked in prop::bool::weighted(0.8),
        allow_backwards in prop::bool::weighted(0.2),
    ) -> Policy {
        let mut policy = Policy::new(default).allowing_status_backwards(allow_backwards);
        for (field, side) in owners {
            policy = policy.with_owner(field, side);
        }
        if ranked {
            // "4", "true", "false", "b" stay unranked; "1" and 1 share a rank, "a" ties with 2.
            policy = policy.with_status_ranks(
                STATUS,
                [("0", 0), ("1", 10), ("2", 20), ("a", 20), ("3", 30)],
            );
        }
        policy
    }
}

#[derive(Clone, Debug)]
struct Case {
    base: Option<Snapshot>,
    local: Option<Snapshot>,
    remote: Option<Snapshot>,
    policy: Policy,
}

impl Case {
    fn plan(&self) -> Plan {
        run(
            &self.policy,
            self.base.as_ref(),
            self.local.as_ref(),
            self.remote.as_ref(),
        )
    }
}

fn arb_status() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        json!(0),
        json!(1),
        json!("1"),
        json!(2),
        json!("a"),
        json!(3),
        json!(4),
    ])
}

/// `None` keeps the common status, `Some(None)` removes it, `Some(Some(v))` sets it.
fn arb_status_edit() -> impl Strategy<Value = Option<Option<Value>>> {
    prop::option::weighted(0.6, prop::option::weighted(0.9, arb_status()))
}

fn edited(
    base: &Fields,
    edits: &BTreeMap<String, Option<Value>>,
    status: &Option<Option<Value>>,
) -> Fields {
    let mut out = base.clone();
    let status = status.clone().map(|edit| (STATUS.to_owned(), edit));
    for (field, edit) in edits.clone().into_iter().chain(status) {
        match edit {
            Some(value) => out.insert(field, value),
            None => out.remove(&field),
        };
    }
    out
}

prop_compose! {
    fn arb_case()(
        mut common in arb_fields(),
        common_status in prop::option::weighted(0.8, arb_status()),
        has_base in prop::bool::weighted(0.8),
        base_time in arb_time(),
        local_edits in arb_edits(),
        remote_edits in arb_edits(),
        local_status in arb_status_edit(),
        remote_status in arb_status_edit(),
        has_local in prop::bool::weighted(0.9),
        has_remote in prop::bool::weighted(0.9),
        local_time in arb_time(),
        remote_time in arb_time(),
        policy in arb_policy(),
    ) -> Case {
        if let Some(status) = common_status {
            common.insert(STATUS.to_owned(), status);
        }
        Case {
            local: has_local
                .then(|| Snapshot::new(edited(&common, &local_edits, &local_status), local_time)),
            remote: has_remote
                .then(|| Snapshot::new(edited(&common, &remote_edits, &remote_status), remote_time)),
            base: has_base.then(|| Snapshot::new(common, base_time)),
            policy,
        }
    }
}

fn norm<'a>(snapshot: Option<&'a Snapshot>, field: &str) -> Option<&'a Value> {
    value_of(snapshot.map(|s| &s.fields), field)
}

fn side_of(case: &Case, side: Side) -> Option<&Snapshot> {
    match side {
        Side::Local => case.local.as_ref(),
        Side::Remote => case.remote.as_ref(),
    }
}

fn all_fields(case: &Case) -> BTreeSet<String> {
    [&case.base, &case.local, &case.remote]
        .into_iter()
        .flatten()
        .flat_map(|s| s.fields.keys().cloned())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Applying the writes brings both sides to `merged`, and planning again from there is a no-op.
    #[test]
    fn prop_idempotent(case in arb_case()) {
        let p = case.plan();
        prop_assert!(p.merged.values().all(|v| !v.is_null()));
        prop_assert_eq!(&apply(case.local.as_ref(), &p.to_local), &p.merged);
        prop_assert_eq!(&apply(case.remote.as_ref(), &p.to_remote), &p.merged);

        let next = Snapshot::new(p.merged.clone(), case.remote.as_ref().and_then(|s| s.updated_at));
        let again = run(&case.policy, Some(&next), Some(&next), Some(&next));
        prop_assert!(again.is_noop(), "second plan: {:?}", again);
        prop_assert_eq!(&again.merged, &p.merged);

        // Also with the applied sides (they keep their own times) against the new base.
        let local = Snapshot::new(apply(case.local.as_ref(), &p.to_local), Some(at(7)));
        let remote = Snapshot::new(apply(case.remote.as_ref(), &p.to_remote), None);
        prop_assert!(run(&case.policy, Some(&next), Some(&local), Some(&remote)).is_noop());
    }

    /// A field changed on exactly one side keeps that side's value, unless it is a refused
    /// backwards status move (which must then really be backwards and logged).
    #[test]
    fn prop_never_loses_a_one_side_change(case in arb_case()) {
        let p = case.plan();
        for field in all_fields(&case) {
            let base = norm(case.base.as_ref(), &field);
            for side in [Side::Local, Side::Remote] {
                let Some(snapshot) = side_of(&case, side) else { continue };
                let value = norm(Some(snapshot), &field);
                let other_changed = side_of(&case, side.other())
                    .is_some_and(|o| norm(Some(o), &field) != base);
                if value == base || other_changed {
                    continue;
                }
                let refused = p.conflict(&field).is_some_and(|c| matches!(
                    c.reason,
                    ConflictReason::StatusBackwards { refused } if refused.includes(side)
                ));
                if refused {
                    prop_assert_eq!(case.policy.status_field.as_deref(), Some(field.as_str()));
                    prop_assert!(!case.policy.allow_status_backwards);
                    let rank = |v: Option<&Value>| v.and_then(|v| case.policy.status_rank_of(v));
                    prop_assert!(rank(value).is_some() && rank(value) < rank(base));
                    prop_assert_eq!(p.merged.get(&field), base);
                } else {
                    prop_assert_eq!(p.merged.get(&field), value, "field {}", field);
                }
            }
        }
    }

    /// Same input, same plan.
    #[test]
    fn prop_deterministic(case in arb_case()) {
        let copy = case.clone();
        prop_assert_eq!(case.plan(), copy.plan());
        prop_assert_eq!(case.plan(), case.plan());
    }

    /// Every changed value that did not make it into `merged` is in the conflict log, with
    /// the real values; and no conflict is logged where no side's value was overwritten.
    #[test]
    fn prop_every_overwritten_change_is_logged(case in arb_case()) {
        let p = case.plan();
        for field in all_fields(&case) {
            let base = norm(case.base.as_ref(), &field);
            let merged = p.merged.get(&field);
            for side in [Side::Local, Side::Remote] {
                let Some(snapshot) = side_of(&case, side) else { continue };
                let value = norm(Some(snapshot), &field);
                if value != base && merged != value {
                    prop_assert!(p.conflict(&field).is_some(), "field {} side {:?}", field, side);
                }
            }
        }
        let names: Vec<&str> = p.conflicts.iter().map(|c| c.field.as_str()).collect();
        prop_assert!(names.windows(2).all(|w| w[0] < w[1]), "one per field, ordered: {:?}", names);
        for c in &p.conflicts {
            prop_assert_eq!(c.merged.as_ref(), p.merged.get(&c.field));
            prop_assert_eq!(c.base.as_ref(), norm(case.base.as_ref(), &c.field));
            prop_assert_eq!(c.local.as_ref(), norm(case.local.as_ref(), &c.field));
            prop_assert_eq!(c.remote.as_ref(), norm(case.remote.as_ref(), &c.field));
            let overwritten = [Side::Local, Side::Remote].into_iter().any(|side| {
                side_of(&case, side).is_some_and(|s| norm(Some(s), &c.field) != c.merged.as_ref())
            });
            prop_assert!(overwritten, "spurious conflict {:?}", c);
            if let Some(winner) = c.winner {
                prop_assert_eq!(norm(side_of(&case, winner), &c.field), c.merged.as_ref());
            }
        }
    }
}
