//! The planner's rules, case by case.

use super::*;
use serde_json::json;

// ---- helpers -------------------------------------------------------------------------------

pub(super) fn fields(pairs: &[(&str, Value)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

pub(super) fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("valid timestamp")
}

pub(super) fn snap(pairs: &[(&str, Value)], secs: Option<i64>) -> Snapshot {
    Snapshot::new(fields(pairs), secs.map(at))
}

pub(super) fn run(
    policy: &Policy,
    base: Option<&Snapshot>,
    local: Option<&Snapshot>,
    remote: Option<&Snapshot>,
) -> Plan {
    plan(&PlanInput {
        kind: EntityKind::Order,
        base,
        local,
        remote,
        policy,
    })
}

/// Applies a side's writes the way a host would (`null` removes), normalising `null` away.
pub(super) fn apply(side: Option<&Snapshot>, changes: &Fields) -> Fields {
    let mut out = side.map(|s| s.fields.clone()).unwrap_or_default();
    for (field, value) in changes {
        if value.is_null() {
            out.remove(field);
        } else {
            out.insert(field.clone(), value.clone());
        }
    }
    out.retain(|_, v| !v.is_null());
    out
}

pub(super) fn order_policy(default: Resolution) -> Policy {
    Policy::new(default).with_status_ranks(
        "status_id",
        [
            ("1", 10),
            ("2", 20),
            ("3", 30),
            ("12", 20),
            ("cancelled", 90),
        ],
    )
}

// ---- one side / both sides -----------------------------------------------------------------

#[test]
fn local_only_change_is_taken_without_conflict() {
    let base = snap(&[("note", json!("a")), ("qty", json!(1))], Some(0));
    let local = snap(&[("note", json!("b")), ("qty", json!(1))], Some(5));
    let remote = base.clone();
    let p = run(
        &Policy::new(Resolution::RemoteWins),
        Some(&base),
        Some(&local),
        Some(&remote),
    );
    assert_eq!(p.merged, local.fields);
    assert_eq!(p.to_remote, fields(&[("note", json!("b"))]));
    assert!(p.to_local.is_empty());
    assert!(p.conflicts.is_empty());
}

#[test]
fn remote_only_change_is_taken_without_conflict() {
    let base = snap(&[("note", json!("a")), ("qty", json!(1))], None);
    let local = base.clone();
    let remote = snap(&[("note", json!("a")), ("qty", json!(7))], None);
    let p = run(
        &Policy::new(Resolution::LocalWins),
        Some(&base),
        Some(&local),
        Some(&remote),
    );
    assert_eq!(p.merged, remote.fields);
    assert_eq!(p.to_local, fields(&[("qty", json!(7))]));
    assert!(p.to_remote.is_empty());
    assert!(p.conflicts.is_empty());
}

#[test]
fn both_changed_to_the_same_value_is_not_a_conflict() {
    let base = snap(&[("note", json!("a"))], None);
    let local = snap(&[("note", json!("z"))], Some(1));
    let remote = snap(&[("note", json!("z"))], Some(2));
    let p = run(
        &Policy::new(Resolution::LocalWins),
        Some(&base),
        Some(&local),
        Some(&remote),
    );
    assert_eq!(p.merged, fields(&[("note", json!("z"))]));
    assert!(p.is_noop());
}

#[test]
fn both_changed_remote_wins_logs_the_local_value() {
    let base = snap(&[("note", json!("a"))], Some(0));
    let local = snap(&[("note", json!("l"))], Some(9));
    let remote = snap(&[("note", json!("r"))], Some(1));
    let p = run(
        &Policy::new(Resolution::RemoteWins),
        Some(&base),
        Some(&local),
        Some(&remote),
    );
    assert_eq!(p.merged["note"], json!("r"));
    assert_eq!(p.to_local, fields(&[("note", json!("r"))]));
    assert!(p.to_remote.is_empty());
    assert_eq!(
        p.conflicts,
        vec![Conflict {
            field: "note".into(),
            base: Some(json!("a")),
            local: Some(json!("l")),
            remote: Some(json!("r")),
            merged: Some(json!("r")),
            winner: Some(Side::Remote),
            reason: ConflictReason::BothChanged {
                resolution: Resolution::RemoteWins
            },
            local_updated_at: Some(at(9)),
            remote_updated_at: Some(at(1)),
        }]
    );
}

#[test]
fn both_changed_local_wins() {
    let base = snap(&[("note", json!("a"))], None);
    let local = snap(&[("note", json!("l"))], Some(1));
    let remote = snap(&[("note", json!("r"))], Some(9));
    let p = run(
        &Policy::new(Resolution::LocalWins),
        Some(&base),
        Some(&local),
        Some(&remote),
    );
    assert_eq!(p.merged["note"], json!("l"));
    assert_eq!(p.to_remote, fields(&[("note", json!("l"))]));
    assert!(p.to_local.is_empty());
    let c = p.conflict("note").expect("conflict logged");
    assert_eq!(c.winner, Some(Side::Local));
    assert_eq!(
        c.reason,
        ConflictReason::BothChanged {
            resolution: Resolution::LocalWins
        }
    );
    assert_eq!(c.remote, Some(json!("r")));
}

#[test]
fn newest_wins_takes_the_later_timestamp() {
    let base = snap(&[("note", json!("a"))], None);
    let policy = Policy::new(Resolution::NewestWins);
    let local = snap(&[("note", json!("l"))], Some(10));
    let remote = snap(&[("note", json!("r"))], Some(5));
    let p = run(&policy, Some(&base), Some(&local), Some(&remote));
    assert_eq!(p.merged["note"], json!("l"));
    assert_eq!(p.conflict("note").unwrap().winner, Some(Side::Local));

    let remote = snap(&[("note", json!("r"))], Some(11));
    let p = run(&policy, Some(&base), Some(&local), Some(&remote));
    assert_eq!(p.merged["note"], json!("r"));
    assert_eq!(
        p.conflict("note").unwrap().reason,
        ConflictReason::BothChanged {
            resolution: Resolution::NewestWins
        }
    );
}

#[test]
fn newest_wins_missing_time_loses_to_a_present_one() {
    let base = snap(&[("note", json!("a"))], None);
    let policy = Policy::new(Resolution::NewestWins);
    let local = snap(&[("note", json!("l"))], Some(-1000));
    let remote = snap(&[("note", json!("r"))], None);
    let p = run(&policy, Some(&base), Some(&local), Some(&remote));
    assert_eq!(p.merged["note"], json!("l"));

    let local = snap(&[("note", json!("l"))], None);
    let remote = snap(&[("note", json!("r"))], Some(-1000));
    let p = run(&policy, Some(&base), Some(&local), Some(&remote));
    assert_eq!(p.merged["note"], json!("r"));
}

#[test]
fn newest_wins_ties_go_to_remote() {
    let base = snap(&[("note", json!("a"))], None);
    let policy = Policy::new(Resolution::NewestWins);
    for t in [Some(3), None] {
        let local = snap(&[("note", json!("l"))], t);
        let remote = snap(&[("note", json!("r"))], t);
        let p = run(&policy, Some(&base), Some(&local), Some(&remote));
        assert_eq!(p.merged["note"], json!("r"), "time {t:?}");
        assert_eq!(p.conflict("note").unwrap().winner, Some(Side::Remote));
    }
}

#[test]
fn removal_on_one_side_is_a_change_and_is_sent_as_null() {
    let base = snap(&[("note", json!("a")), ("tag", json!("x"))], None);
    let local = snap(&[("note", json!("a"))], None);
    let remote = base.clone();
    let p = run(&Policy::default(), Some(&base), Some(&local), Some(&remote));
    assert_eq!(p.merged, fields(&[("note", json!("a"))]));
    assert_eq!(p.to_remote, fields(&[("tag", Value::Null)]));
    assert!(p.to_local.is_empty());
    assert!(p.conflicts.is_empty());
}

#[test]
fn removal_against_a_change_is_a_conflict() {
    let base = snap(&[("tag", json!("x"))], None);
    let local = snap(&[], Some(1));
    let remote = snap(&[("tag", json!("y"))], Some(2));
    let p = run(
        &Policy::new(Resolution::LocalWins),
        Some(&base),
        Some(&local),
        Some(&remote),
    );
    assert!(p.merged.is_empty());
    assert_eq!(p.to_remote, fields(&[("tag", Value::Null)]));
    let c = p.conflict("tag").unwrap();
    assert_eq!(
        (c.local.clone(), c.remote.clone(), c.merged.clone()),
        (None, Some(json!("y")), None)
    );
    assert_eq!(c.winner, Some(Side::Local));
}

#[test]
fn null_is_the_same_as_absent() {
    let base = snap(&[("tag", Value::Null)], None);
    let local = snap(&[], None);
    let remote = snap(&[("tag", Value::Null), ("note", json!("n"))], None);
    let p = run(&Policy::default(), Some(&base), Some(&local), Some(&remote));
    assert_eq!(p.merged, fields(&[("note", json!("n"))]));
    assert_eq!(p.to_local, fields(&[("note", json!("n"))]));
    assert!(p.to_remote.is_empty());
    assert!(p.conflicts.is_empty());
}

// ---- owners ----------------------------------------------------------------------------------

#[test]
fn owner_longest_dotted_prefix_wins() {
    let policy = Policy::new(Resolution::RemoteWins)
        .with_owner("shipping", Side::Local)
        .with_owner("shipping.tracking_code", Side::Remote);
    assert_eq!(policy.owner_of("shipping"), Some(Side::Local));
    assert_eq!(policy.owner_of("shipping.city"), Some(Side::Local));
    assert_eq!(
        policy.owner_of("shipping.tracking_code"),
        Some(Side::Remote)
    );
    assert_eq!(
        policy.owner_of("shipping.tracking_code.x"),
        Some(Side::Remote)
    );
    assert_eq!(policy.owner_of("shipping_method"), None);
    assert_eq!(policy.owner_of("note"), None);

    let base = snap(
        &[
            ("shipping.city", json!("a")),
            ("shipping.tracking_code", json!("a")),
        ],
        None,
    );
    let local = snap(
        &[
            ("shipping.city", json!("l")),
            ("shipping.tracking_code", json!("l")),
        ],
        None,
    );
    let remote = snap(
        &[
            ("shipping.city", json!("r")),
            ("shipping.tracking_code", json!("r")),
        ],
        None,
    );
    let p = run(&policy, Some(&base), Some(&local), Some(&remote));
    assert_eq!(p.merged["shipping.city"], json!("l"));
    assert_eq!(p.merged["shipping.tracking_code"], json!("r"));
    assert_eq!(
        p.conflict("shipping.city").unwrap().reason,
        ConflictReason::Owner { owner: Side::Local }
    );
    assert_eq!(
        p.conflict("shipping.tracking_code").unwrap().reason,
        ConflictReason::Owner {
            owner: Side::Remote
        }
    );
}

#[test]
fn owner_beats_newest_and_decides_only_true_conflicts() {
    let policy = Policy::new(Resolution::NewestWins).with_owner("stock", Side::Local);
    let base = snap(&[("stock", json!(5)), ("stock.reserved", json!(0))], None);
    // Remote is newer, but local owns "stock".
    let local = snap(
        &[("stock", json!(4)), ("stock.reserved", json!(0))],
        Some(1),
    );
    let remote = snap(
        &[("stock", json!(9)), ("stock.reserved", json!(2))],
        Some(2),
    );
    let p = run(&policy, Some(&base), Some(&local), Some(&remote));
    assert_eq!(p.merged["stock"], json!(4));
    assert_eq!(p.conflict("stock").unwrap().winner, Some(Side::Local));
    // "stock.reserved" changed only on the non-owner side: taken, no conflict.
    assert_eq!(p.merged["stock.reserved"], json!(2));
    assert!(p.conflict("stock.reserved").is_none());
    assert_eq!(p.conflicts.len(), 1);
}

// ---- first meetings and missing records --------------------------------------------------------

#[test]
fn first_contact_follows_the_source_of_truth_without_conflicts() {
    let local = snap(
        &[
            ("price", json!("10")),
            ("purchased_price", json!("4")),
            ("sku", json!("A")),
        ],
        Some(9),
    );
    let remote = snap(
        &[
            ("price", json!("12")),
            ("purchased_price", json!("4")),
            ("note", json!("x")),
        ],
        Some(1),
    );
    let source = SourceOfTruth::new(Side::Local).with_field("note", Side::Remote);
    let policy = Policy::new(Resolution::RemoteWins).with_first_contact(source);
    let p = run(&policy, None, Some(&local), Some(&remote));
    assert!(p.conflicts.is_empty(), "{:?}", p.conflicts);
    assert_eq!(
        p.merged["price"],
        json!("10"),
        "the host is right about prices"
    );
    assert_eq!(p.merged["sku"], json!("A"), "one side only: taken");
    assert_eq!(p.merged["note"], json!("x"));
    assert_eq!(
        p.first_link,
        vec![FirstLink {
            field: "price".into(),
            local: json!("10"),
            remote: json!("12"),
            winner: Side::Local,
        }]
    );
    assert_eq!(
        p.to_remote,
        fields(&[("price", json!("10")), ("sku", json!("A"))])
    );
    assert!(!p.is_noop());

    // Flipped: KeyCRM is right.
    let policy =
        Policy::new(Resolution::LocalWins).with_first_contact(SourceOfTruth::new(Side::Remote));
    let p = run(&policy, None, Some(&local), Some(&remote));
    assert!(p.conflicts.is_empty());
    assert_eq!(p.merged["price"], json!("12"));
    assert_eq!(p.first_link[0].winner, Side::Remote);

    // With a base there is no first contact: the usual three-way rules apply.
    let base = snap(&[("price", json!("11"))], None);
    let p = run(&policy, Some(&base), Some(&local), Some(&remote));
    assert!(p.first_link.is_empty());
    assert_eq!(p.conflicts.len(), 1);
    // The status rule does not apply to a first contact either.
    let ranked =
        order_policy(Resolution::NewestWins).with_first_contact(SourceOfTruth::new(Side::Remote));
    let l = snap(&[("status_id", json!(3))], None);
    let r = snap(&[("status_id", json!(1))], None);
    let p = run(&ranked, None, Some(&l), Some(&r));
    assert_eq!(p.merged["status_id"], json!(1));
    assert!(p.conflicts.is_empty());
}

#[test]
fn source_of_truth_matches_fields_by_dotted_prefix() {
    let source = SourceOfTruth::new(Side::Remote)
        .with_field("lines", Side::Local)
        .with_field("lines.A.price", Side::Remote);
    assert_eq!(source.side_for("lines.B.quantity"), Side::Local);
    assert_eq!(source.side_for("lines.A.price"), Side::Remote);
    assert_eq!(source.side_for("linesX"), Side::Remote);
    let text = serde_json::to_string(&source).unwrap();
    assert_eq!(
        serde_json::from_str::<SourceOfTruth>(&text).unwrap(),
        source
    );
}

#[test]
fn no_base_merges_the_union_and_conflicts_on_differences() {
    let local = snap(
        &[("a", json!(1)), ("b", json!("same")), ("c", json!("l"))],
        Some(1),
    );
    let remote = snap(
        &[("b", json!("same")), ("c", json!("r")), ("d", json!(true))],
        Some(2),
    );
    let p = run(
        &Policy::new(Resolution::LocalWins),
        None,
        Some(&local),
        Some(&remote),
    );
    assert_eq!(
        p.merged,
        fields(&[
            ("a", json!(1)),
            ("b", json!("same")),
            ("c", json!("l")),
            ("d", json!(true))
        ])
    );
    assert_eq!(p.to_remote, fields(&[("a", json!(1)), ("c", json!("l"))]));
    assert_eq!(p.to_local, fields(&[("d", json!(true))]));
    assert_eq!(p.conflicts.len(), 1);
    let c = &p.conflicts[0];
    assert_eq!((c.field.as_str(), c.base.clone()), ("c", None));
    assert_eq!(
        c.reason,
        ConflictReason::BothChanged {
            resolution: Resolution::LocalWins
        }
    );
}

#[test]
fn missing_local_record_gets_the_whole_record() {
    let remote = snap(&[("a", json!(1)), ("b", json!(2))], Some(1));
    let p = run(&Policy::default(), None, None, Some(&remote));
    assert_eq!(p.merged, remote.fields);
    assert_eq!(p.to_local, remote.fields);
    assert!(p.to_remote.is_empty());
    assert!(p.conflicts.is_empty());
}

#[test]
fn missing_remote_record_gets_the_whole_record_and_has_no_opinion() {
    let base = snap(&[("a", json!(1)), ("b", json!(2))], None);
    let local = snap(&[("a", json!(1)), ("b", json!(3))], None);
    let p = run(
        &Policy::new(Resolution::RemoteWins),
        Some(&base),
        Some(&local),
        None,
    );
    assert_eq!(p.merged, local.fields);
    assert_eq!(p.to_remote, local.fields);
    assert!(p.to_local.is_empty());
    assert!(p.conflicts.is_empty());
}

// ---- status ----------------------------------------------------------------------------------

#[test]
fn status_backwards_on_one_side_is_refused() {
    let policy = order_policy(Resolution::NewestWins);
    let base = snap(&[("status_id", json!(3))], Some(0));
    let local = snap(&[("status_id", json!(1))], Some(5));
    let remote = base.clone();
    let p = run(&policy, Some(&base), Some(&local), Some(&remote));
    assert_eq!(p.merged["status_id"], json!(3));
    assert_eq!(p.to_local, fields(&[("status_id", json!(3))]));
    assert!(p.to_remote.is_empty());
    let c = p.conflict("status_id").unwrap();
    assert_eq!(
        c.reason,
        ConflictReason::StatusBackwards {
            refused: Refused::Local
        }
    );
    assert_eq!(c.winner, Some(Side::Remote));
    assert_eq!(
        (c.local.clone(), c.merged.clone()),
        (Some(json!(1)), Some(json!(3)))
    );
    assert_eq!(
        (c.local_updated_at, c.remote_updated_at),
        (Some(at(5)), Some(at(0)))
    );
}

#[test]
fn status_forward_and_equal_rank_moves_are_taken() {
    let policy = order_policy(Resolution::RemoteWins);
    let base = snap(&[("status_id", json!(2))], None);
    for to in [json!(3), json!(12), json!("12"), json!("cancelled")] {
        let remote = snap(&[("status_id", to.clone())], None);
        let p = run(&policy, Some(&base), Some(&base), Some(&remote));
        assert_eq!(p.merged["status_id"], to);
        assert!(p.conflicts.is_empty(), "to {to}");
    }
}

#[test]
fn status_both_changed_keeps_the_side_further_along() {
    // Local wins by policy, but writing local's 2 to KeyCRM would pull its 3 backwards.
    let policy = order_policy(Resolution::LocalWins);
    let base = snap(&[("status_id", json!(1))], None);
    let local = snap(&[("status_id", json!(2))], Some(9));
    let remote = snap(&[("status_id", json!(3))], Some(1));
    let p = run(&policy, Some(&base), Some(&local), Some(&remote));
    assert_eq!(p.merged["status_id"], json!(3));
    let c = p.conflict("status_id").unwrap();
    assert_eq!(
        c.reason,
        ConflictReason::StatusBackwards {
            refused: Refused::Local
        }
    );
    assert_eq!(c.winner, Some(Side::Remote));
    assert_eq!(p.conflicts.len(), 1);
}

#[test]
fn status_both_backwards_keeps_the_base() {
    let policy = order_policy(Resolution::RemoteWins);
    let base = snap(&[("status_id", json!(3))], None);
    let local = snap(&[("status_id", json!(1))], None);
    let remote = snap(&[("status_id", json!(2))], None);
    let p = run(&policy, Some(&base), Some(&local), Some(&remote));
    assert_eq!(p.merged["status_id"], json!(3));
    assert_eq!(p.to_local, fields(&[("status_id", json!(3))]));
    assert_eq!(p.to_remote, fields(&[("status_id", json!(3))]));
    let c = p.conflict("status_id").unwrap();
    assert_eq!(
        c.reason,
        ConflictReason::StatusBackwards {
            refused: Refused::Both
        }
    );
    assert_eq!(c.winner, None);
    assert!(
        c.reason
            != ConflictReason::StatusBackwards {
                refused: Refused::Remote
            }
    );
}

#[test]
fn status_without_base_compares_with_the_other_side() {
    let policy = order_policy(Resolution::RemoteWins);
    let local = snap(&[("status_id", json!(3))], None);
    let remote = snap(&[("status_id", json!(1))], None);
    let p = run(&policy, None, Some(&local), Some(&remote));
    assert_eq!(p.merged["status_id"], json!(3));
    assert_eq!(p.to_remote, fields(&[("status_id", json!(3))]));
    let c = p.conflict("status_id").unwrap();
    assert_eq!(
        c.reason,
        ConflictReason::StatusBackwards {
            refused: Refused::Remote
        }
    );
    assert_eq!(c.winner, Some(Side::Local));
}

#[test]
fn status_unknown_values_are_not_ranked() {
    let policy = order_policy(Resolution::NewestWins);
    let base = snap(&[("status_id", json!(3))], None);
    let local = snap(&[("status_id", json!(77))], None);
    let p = run(&policy, Some(&base), Some(&local), Some(&base));
    assert_eq!(p.merged["status_id"], json!(77));
    assert!(p.conflicts.is_empty());

    // And an unknown base does not block a move to a ranked status.
    let p = run(&policy, Some(&local), Some(&local), Some(&base));
    assert_eq!(p.merged["status_id"], json!(3));
    assert!(p.conflicts.is_empty());
}

#[test]
fn status_backwards_allowed_when_configured() {
    let policy = order_policy(Resolution::NewestWins).allowing_status_backwards(true);
    let base = snap(&[("status_id", json!(3))], None);
    let local = snap(&[("status_id", json!(1))], None);
    let p = run(&policy, Some(&base), Some(&local), Some(&base));
    assert_eq!(p.merged["status_id"], json!(1));
    assert!(p.conflicts.is_empty());
}

#[test]
fn status_rules_apply_only_to_the_status_field() {
    let policy = order_policy(Resolution::NewestWins);
    let base = snap(&[("payment_status", json!(3))], None);
    let local = snap(&[("payment_status", json!(1))], None);
    let p = run(&policy, Some(&base), Some(&local), Some(&base));
    assert_eq!(p.merged["payment_status"], json!(1));
    assert!(p.conflicts.is_empty());
    assert_eq!(status_key(&json!("new")), "new");
    assert_eq!(status_key(&json!(12)), "12");
    assert_eq!(policy.status_rank_of(&json!("12")), Some(20));
}

// ---- echo, determinism, misc -------------------------------------------------------------------

#[test]
fn echo_is_a_noop() {
    let policy = order_policy(Resolution::NewestWins).with_owner("note", Side::Local);
    let base = snap(&[("status_id", json!(1)), ("note", json!("a"))], Some(0));
    let both = snap(&[("status_id", json!(2)), ("note", json!("b"))], Some(3));
    let p = run(&policy, Some(&base), Some(&both), Some(&both));
    assert!(p.is_noop());
    assert_eq!(p.merged, both.fields);
    assert_eq!(p.merged_hash(), both.hash());
    // Planning against the new base again: still nothing.
    let p = run(&policy, Some(&both), Some(&both), Some(&both));
    assert!(p.is_noop());
}

#[test]
fn plan_is_deterministic_and_conflicts_are_ordered() {
    let policy = order_policy(Resolution::NewestWins);
    let base = snap(
        &[("z", json!(0)), ("a", json!(0)), ("status_id", json!(2))],
        None,
    );
    let local = snap(
        &[("z", json!(1)), ("a", json!(1)), ("status_id", json!(1))],
        Some(1),
    );
    let remote = snap(
        &[("z", json!(2)), ("a", json!(2)), ("status_id", json!(2))],
        Some(1),
    );
    let first = run(&policy, Some(&base), Some(&local), Some(&remote));
    let second = run(
        &policy,
        Some(&base.clone()),
        Some(&local.clone()),
        Some(&remote.clone()),
    );
    assert_eq!(first, second);
    let names: Vec<&str> = first.conflicts.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(names, ["a", "status_id", "z"]);
}

#[test]
fn policy_and_conflicts_round_trip_through_serde() {
    let policy = order_policy(Resolution::LocalWins).with_owner("shipping", Side::Remote);
    let text = serde_json::to_string(&policy).unwrap();
    assert_eq!(serde_json::from_str::<Policy>(&text).unwrap(), policy);
    let empty: Policy = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, Policy::default());
    assert_eq!(empty.default, Resolution::NewestWins);

    let reason = ConflictReason::StatusBackwards {
        refused: Refused::Both,
    };
    assert_eq!(
        serde_json::to_value(reason).unwrap(),
        json!({"kind": "status_backwards", "refused": "both"})
    );
    assert_eq!(Side::Local.other(), Side::Remote);
    assert_eq!(Side::Remote.as_str(), "remote");
    assert!(Refused::Both.includes(Side::Local) && !Refused::Remote.includes(Side::Local));
}
