//! What a planned change of an existing order becomes in KeyCRM: an update, payments to create
//! or update, and changes KeyCRM cannot make.

use std::collections::{BTreeMap, BTreeSet};

use keycrm_api::types;
use serde::{Deserialize, Serialize};

use super::PaymentStatus;
use super::mapping::{SHIPPING_TEXT, ordered_payments, payment_keys, payment_parts};
use crate::entity::mapping::MappingError;
use crate::entity::values::{Group, body_error, groups};
use crate::model::{EntityKind, Fields};

/// A change of an order field that KeyCRM cannot apply to an existing order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsupportedChange {
    /// The field's dotted name.
    pub field: String,
    /// Why KeyCRM cannot apply it.
    pub reason: String,
}

/// A planned change of an existing order, sorted by the KeyCRM call that can carry it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OrderChanges {
    /// What `PUT /order/{id}` carries: pass it to [`order_update_body`].
    pub update: Fields,
    /// Keys of payments the order lacks (pass the local fields to [`payment_create_bodies`]).
    pub create_payments: Vec<String>,
    /// Keys of recorded payments whose status changes (see [`payment_update_bodies`]).
    pub update_payments: Vec<String>,
    /// Changes no KeyCRM call can make; report them (conflict log) rather than drop them.
    pub unsupported: Vec<UnsupportedChange>,
}

impl OrderChanges {
    /// Whether nothing is to be sent (unsupported changes aside).
    pub fn is_empty(&self) -> bool {
        self.update.is_empty() && self.create_payments.is_empty() && self.update_payments.is_empty()
    }
}

/// Sorts `changed` (fields to write to KeyCRM; `null` = removed) against the order as KeyCRM
/// has it now (`remote`, its fields) into updatable fields, payments to create or update, and
/// changes KeyCRM cannot apply: new or removed lines, buyer, number or date changes, a
/// replaced tracking code, a cleared status or delivery service, a changed amount or method of
/// a recorded payment, a removed payment.
pub fn split_order_changes(changed: &Fields, remote: &Fields) -> OrderChanges {
    let mut out = OrderChanges::default();
    let remote_lines = groups(remote, "lines");
    let remote_payments = groups(remote, "payments");
    let mut new_payments = BTreeSet::new();
    let mut status_payments = BTreeSet::new();
    let mut unsupported = |field: &str, reason: &str| {
        out.unsupported.push(UnsupportedChange {
            field: field.to_string(),
            reason: reason.to_string(),
        });
    };
    let mut update = Fields::new();
    for (key, value) in changed {
        let removed = value.is_null();
        let group_of = |prefix: &str| {
            key.strip_prefix(prefix)
                .and_then(|rest| rest.rsplit_once('.'))
        };
        match key.as_str() {
            "status_id" if removed => unsupported(key, "KeyCRM cannot clear an order's status"),
            "status_id" | "manager_comment" => {
                update.insert(key.clone(), value.clone());
            }
            "shipping.delivery_service_id" if removed => {
                unsupported(key, "KeyCRM cannot clear an order's delivery service")
            }
            "shipping.tracking_code"
                if remote.get(key).is_some_and(|v| !v.is_null()) && !removed =>
            {
                unsupported(key, "KeyCRM refuses to replace a tracking code once set")
            }
            k if k == "shipping.delivery_service_id" || SHIPPING_TEXT.contains(&k) => {
                update.insert(key.clone(), value.clone());
            }
            "source_uuid" => unsupported(key, "KeyCRM cannot change an order's external number"),
            "ordered_at" => unsupported(key, "KeyCRM cannot change an order's date"),
            k if k.starts_with("buyer.") => unsupported(
                key,
                "KeyCRM cannot change an order's buyer; sync the buyer record instead",
            ),
            _ => {
                if let Some((sku, _)) = group_of("lines.") {
                    if !remote_lines.contains_key(sku) {
                        if !removed {
                            unsupported(key, "KeyCRM cannot add a line to an existing order");
                        }
                    } else if removed {
                        unsupported(key, "KeyCRM cannot remove an order line or its values");
                    } else {
                        update.insert(key.clone(), value.clone());
                    }
                } else if let Some((payment, field)) = group_of("payments.") {
                    if !remote_payments.contains_key(payment) {
                        if !removed {
                            new_payments.insert(payment.to_string());
                        }
                    } else if removed {
                        unsupported(key, "KeyCRM cannot delete a recorded payment or its values");
                    } else if field == "status" {
                        status_payments.insert(payment.to_string());
                    } else {
                        unsupported(
                            key,
                            "KeyCRM cannot change a recorded payment's amount, method or reference",
                        );
                    }
                } else {
                    unsupported(key, "not an order field KeyCRM knows");
                }
            }
        }
    }
    out.update = update;
    out.create_payments = new_payments.into_iter().collect();
    out.update_payments = status_payments.into_iter().collect();
    out
}

/// `POST /order/{id}/payment` bodies for the payments in `local` (an order's fields) that
/// `remote` (the order's KeyCRM fields) lacks, in payment order.
pub fn payment_create_bodies(
    local: &Fields,
    remote: &Fields,
) -> Result<Vec<types::PaymentCreate>, MappingError> {
    let local_groups = groups(local, "payments");
    let remote_groups = groups(remote, "payments");
    let mut out = Vec::new();
    for (key, group) in ordered_payments(&local_groups) {
        if remote_groups.contains_key(key) {
            continue;
        }
        let p = payment_parts(key, group)?;
        out.push(
            types::PaymentCreate::builder()
                .amount(p.amount)
                .payment_method_id(Some(p.method_id))
                .status(p.status.map(|s| match s {
                    PaymentStatus::Paid => types::PaymentCreateStatus::Paid,
                    PaymentStatus::NotPaid => types::PaymentCreateStatus::NotPaid,
                    PaymentStatus::Canceled => types::PaymentCreateStatus::Canceled,
                }))
                .description(p.description)
                .try_into()
                .map_err(body_error("PaymentCreate"))?,
        );
    }
    Ok(out)
}

/// `PUT /order/{id}/payment/{paymentId}` bodies for the payment status changes in `changed`,
/// each with the KeyCRM payment id found in `remote` (the order read with
/// `include=payments`). Payments the order lacks are skipped (they are created instead).
pub fn payment_update_bodies(
    changed: &Fields,
    remote: &types::Order,
) -> Result<Vec<(i64, types::PaymentUpdate)>, MappingError> {
    let list: Vec<&types::Payment> = remote.payments.iter().flatten().collect();
    let keys = payment_keys(list.iter().map(|p| p.description.as_deref()));
    let ids: BTreeMap<&str, i64> = keys
        .iter()
        .zip(&list)
        .filter_map(|(k, p)| Some((k.as_str(), p.id?)))
        .collect();
    let mut out = Vec::new();
    for (&key, group) in &groups(changed, "payments") {
        let Some(id) = ids.get(key) else { continue };
        let g = Group {
            kind: EntityKind::Order,
            prefix: "payments",
            key,
            fields: group,
        };
        if let Some(status) = g.text("status")? {
            let status = match PaymentStatus::parse(&status)? {
                PaymentStatus::Paid => types::PaymentUpdateStatus::Paid,
                PaymentStatus::NotPaid => types::PaymentUpdateStatus::NotPaid,
                PaymentStatus::Canceled => types::PaymentUpdateStatus::Canceled,
            };
            out.push((
                *id,
                types::PaymentUpdate {
                    status: Some(status),
                    description: None,
                },
            ));
        }
    }
    Ok(out)
}
