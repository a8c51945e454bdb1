//! What a planned change of an existing order becomes in KeyCRM: an update, payments to create
//! or update, and changes KeyCRM cannot make.

use std::collections::{BTreeMap, BTreeSet};

use keycrm_api::types;
use serde::{Deserialize, Serialize};

use super::mapping::{SHIPPING_TEXT, ordered_payments, payment_keys, payment_parts};
use super::{
    BUYER, MANAGER_COMMENT, ORDERED_AT, PAYMENT_STATUS, PaymentStatus,
    SHIPPING_DELIVERY_SERVICE_ID, SHIPPING_TRACKING_CODE, SOURCE_UUID, STATUS_ID,
};
use crate::entity::mapping::MappingError;
use crate::entity::values::{Member, body_error, groups};
use crate::field::{FieldPath, Group as KeyedGroup};
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
    /// What `PUT /order/{id}` carries: pass it to [`order_update_body`](super::order_update_body).
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
    let remote_lines = groups(remote, KeyedGroup::Lines);
    let remote_payments = groups(remote, KeyedGroup::Payments);
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
        let path = FieldPath::parse(key);
        if path == STATUS_ID {
            if removed {
                unsupported(key, "KeyCRM cannot clear an order's status");
            } else {
                update.insert(key.clone(), value.clone());
            }
        } else if path == MANAGER_COMMENT {
            update.insert(key.clone(), value.clone());
        } else if path == SHIPPING_DELIVERY_SERVICE_ID && removed {
            unsupported(key, "KeyCRM cannot clear an order's delivery service");
        } else if path == SHIPPING_TRACKING_CODE
            && remote.get(key).is_some_and(|v| !v.is_null())
            && !removed
        {
            unsupported(key, "KeyCRM refuses to replace a tracking code once set");
        } else if path == SHIPPING_DELIVERY_SERVICE_ID || SHIPPING_TEXT.contains(&path) {
            update.insert(key.clone(), value.clone());
        } else if path == SOURCE_UUID {
            unsupported(key, "KeyCRM cannot change an order's external number");
        } else if path == ORDERED_AT {
            unsupported(key, "KeyCRM cannot change an order's date");
        } else if path.is_below(BUYER) {
            unsupported(
                key,
                "KeyCRM cannot change an order's buyer; sync the buyer record instead",
            );
        } else if let Some((sku, _)) = path.member_of(KeyedGroup::Lines) {
            if !remote_lines.contains_key(sku) {
                if !removed {
                    unsupported(key, "KeyCRM cannot add a line to an existing order");
                }
            } else if removed {
                unsupported(key, "KeyCRM cannot remove an order line or its values");
            } else {
                update.insert(key.clone(), value.clone());
            }
        } else if let Some((payment, field)) = path.member_of(KeyedGroup::Payments) {
            if !remote_payments.contains_key(payment) {
                if !removed {
                    new_payments.insert(payment.to_string());
                }
            } else if removed {
                unsupported(key, "KeyCRM cannot delete a recorded payment or its values");
            } else if field == PAYMENT_STATUS {
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
    let local_groups = groups(local, KeyedGroup::Payments);
    let remote_groups = groups(remote, KeyedGroup::Payments);
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
    for (&key, group) in &groups(changed, KeyedGroup::Payments) {
        let Some(id) = ids.get(key) else { continue };
        let g = Member {
            kind: EntityKind::Order,
            group: KeyedGroup::Payments,
            key,
            fields: group,
        };
        if let Some(status) = g.text(PAYMENT_STATUS)? {
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
