//! Buyers in batches: new buyers are matched by comma lists of their phones and e-mails
//! (`GET /buyer?filter[buyer_phone]=…`, at most 50 values and a bounded URL per request),
//! the missing ones imported 50 per `POST /buyer/import`, and their new ids read back with
//! the same filters (KeyCRM's import answers `{"status": true}`, no ids). An import and its
//! read-back are two requests, so one or two buyers are created by `POST /buyer` instead,
//! whose answer carries the id.
//!
//! Nothing is created twice: every create notes its body as the record's base before it is
//! sent, so a batch whose answer was lost is found by the next attempt's look-up and linked.
//! A buyer with neither phone nor e-mail cannot be looked up by them: it is created alone
//! (`POST /buyer` answers its id), and a retry after a lost answer first looks among the
//! buyers created since that attempt (`filter[created_between]`) for one of the same name.
//!
//! Phones are compared in E.164 under the configured [`PhoneRegion`](crate::phone::PhoneRegion),
//! e-mails trimmed and in lower case.

use std::collections::{BTreeMap, BTreeSet};

use keycrm_api::{Paginate, Timestamp, types};

use super::{Work, text};
use crate::RunReport;
use crate::canonical;
use crate::engine::{SyncEngine, SyncError, batch};
use crate::field::FieldPath;
use crate::host::Host;
use crate::model::{EntityKind, Fields, Snapshot};
use crate::plan::{PlanInput, plan};
use crate::store::{Mapping, Store};

/// Values per comma-list filter: KeyCRM's page size, so one request answers one list.
pub const LOOKUP_VALUES: usize = 50;

/// Longest comma list sent in one filter, in characters: with the rest of the URL it stays
/// far below the 8 KiB request-line limit common to web servers and proxies.
pub const MAX_FILTER_CHARS: usize = 2000;

/// Buyers per `POST /buyer/import`. KeyCRM documents no limit for this import (the order
/// import takes 50, the product import 100); 50 keeps each batch readable back in one page.
pub const IMPORT_BATCH: usize = 50;

/// How far before a noted create the look-up for a buyer without contacts starts (clock
/// skew between this host and KeyCRM).
const CREATED_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// Which filter finds a buyer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum By {
    Phone,
    Email,
}

/// A new buyer with its match keys.
struct New {
    work: Work,
    phones: Vec<String>,
    emails: Vec<String>,
}

impl New {
    fn keys(&self, by: By) -> &[String] {
        match by {
            By::Phone => &self.phones,
            By::Email => &self.emails,
        }
    }

    /// The key its import is read back by: its first phone, else its first e-mail.
    fn read_back_key(&self) -> Option<(By, &String)> {
        self.phones
            .first()
            .map(|p| (By::Phone, p))
            .or_else(|| self.emails.first().map(|e| (By::Email, e)))
    }
}

/// Splits keys into comma lists of at most [`LOOKUP_VALUES`] values and
/// [`MAX_FILTER_CHARS`] characters.
pub(crate) fn comma_lists(keys: &[String]) -> Vec<String> {
    let mut lists = Vec::new();
    let mut current = String::new();
    let mut count = 0;
    for key in keys {
        if count == LOOKUP_VALUES || (count > 0 && current.len() + 1 + key.len() > MAX_FILTER_CHARS)
        {
            lists.push(std::mem::take(&mut current));
            count = 0;
        }
        if count > 0 {
            current.push(',');
        }
        current.push_str(key);
        count += 1;
    }
    if count > 0 {
        lists.push(current);
    }
    lists
}

/// The asked keys a buyer KeyCRM returned for a comma list stands for. KeyCRM did the
/// matching, so a buyer is never dropped for being written differently: the keys equal to
/// one of its own (normalised), else those whose last nine digits end one of its phones
/// (a number stored without its country code), else, for a list of one, that one.
fn attribute<'a>(asked: &[&'a str], theirs: &[String], by: By) -> Vec<&'a str> {
    let exact: Vec<&str> = asked
        .iter()
        .copied()
        .filter(|k| theirs.iter().any(|t| t == k))
        .collect();
    if !exact.is_empty() {
        return exact;
    }
    if by == By::Phone {
        let tail = |p: &str| -> String {
            let digits: Vec<char> = p.chars().filter(char::is_ascii_digit).collect();
            digits[digits.len().saturating_sub(9)..].iter().collect()
        };
        let suffix: Vec<&str> = asked
            .iter()
            .copied()
            .filter(|k| theirs.iter().any(|t| tail(t) == tail(k)))
            .collect();
        if !suffix.is_empty() {
            return suffix;
        }
    }
    if asked.len() == 1 {
        asked.to_vec()
    } else {
        Vec::new()
    }
}

/// The indexed values of a list field (`phone.0`, `phone.1`, …).
fn list_values(fields: &Fields, field: &'static str) -> Vec<String> {
    (0..)
        .map_while(|i| text(fields, &FieldPath::item(field, i)))
        .collect()
}

fn buyer_id(b: &types::Buyer) -> Result<i64, SyncError> {
    b.id.ok_or(SyncError::Answer {
        operation: "GET /buyer",
        problem: "a buyer without id",
    })
}

fn import_item(body: types::BuyerCreate) -> types::BuyerImportItem {
    types::BuyerImportItem {
        birthday: body.birthday,
        company_id: body.company_id,
        custom_fields: body.custom_fields,
        discount: body.discount,
        email: body.email,
        full_name: Some(body.full_name),
        manager_id: body.manager_id,
        note: body.note,
        phone: body.phone,
        shipping: body.shipping,
    }
}

impl<S: Store, H: Host> SyncEngine<S, H> {
    /// Buyers: known ones updated one by one (KeyCRM has no bulk buyer update), new ones
    /// matched, imported and read back in batches.
    pub(crate) async fn push_buyers(
        &self,
        work: Vec<Work>,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let (known, new): (Vec<Work>, Vec<Work>) =
            work.into_iter().partition(|w| w.remote_id().is_some());
        for w in known {
            let remote_id = w.remote_id().expect("partitioned on it");
            let base = w.mapping.as_ref().and_then(|m| m.base.clone());
            let result = self.update_buyer(&w, remote_id, base, report).await;
            self.item_result(&w.item, result, report).await?;
        }
        self.create_buyers(new, report).await
    }

    /// The phones (E.164 under the configured region) and e-mails a buyer is matched by.
    fn match_keys(&self, fields: &Fields) -> (Vec<String>, Vec<String>) {
        let region = self.inner.mappings.phone_region();
        let mut phones: Vec<String> = list_values(fields, "phone")
            .iter()
            .filter_map(|p| region.normalize(p))
            .collect();
        let mut emails: Vec<String> = list_values(fields, "email")
            .iter()
            .filter_map(|e| canonical::normalize_email(e))
            .collect();
        phones.dedup();
        emails.dedup();
        (phones, emails)
    }

    /// Buyers KeyCRM has with any of these keys (one request per comma list, more only
    /// when a list matches more than a page), by key.
    async fn buyers_by(
        &self,
        by: By,
        keys: &[String],
    ) -> Result<BTreeMap<String, types::Buyer>, SyncError> {
        let mut found: BTreeMap<String, types::Buyer> = BTreeMap::new();
        let client = &self.inner.client;
        for list in comma_lists(keys) {
            // Pages of 50 (the paginator's default).
            let request = client.buyer_list();
            let request = match by {
                By::Phone => request.filter_buyer_phone(list.clone()),
                By::Email => request.filter_buyer_email(list.clone()),
            };
            let asked: Vec<&str> = list.split(',').collect();
            let buyers = self.call(request.collect_all()).await?;
            for b in buyers {
                let fields = self.remote_fields(&b);
                let (phones, emails) = self.match_keys(&fields);
                let theirs = if by == By::Phone { phones } else { emails };
                for key in attribute(&asked, &theirs, by) {
                    // The oldest buyer with a key is the one matched (ids grow).
                    let older = found
                        .get(key)
                        .is_some_and(|f| f.id.unwrap_or(i64::MAX) <= b.id.unwrap_or(i64::MAX));
                    if !older {
                        found.insert(key.to_string(), b.clone());
                    }
                }
            }
        }
        Ok(found)
    }

    /// Creates new buyers at most once, in as few requests as KeyCRM allows.
    async fn create_buyers(
        &self,
        work: Vec<Work>,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        if work.is_empty() {
            return Ok(());
        }
        if self.dry_run() {
            for w in &work {
                self.would(w, "create buyer".into()).await?;
            }
            return Ok(());
        }
        let mut pending = Vec::new();
        let mut lone = Vec::new();
        for w in work {
            let (phones, emails) = self.match_keys(&w.local.fields);
            if phones.is_empty() && emails.is_empty() {
                lone.push(w);
            } else {
                pending.push(New {
                    work: w,
                    phones,
                    emails,
                });
            }
        }
        // Two new records with a key in common are one KeyCRM buyer at most: the later one
        // waits for the next round, where it finds the buyer the first one created.
        while !pending.is_empty() {
            let mut claimed = BTreeSet::new();
            let (round, later): (Vec<New>, Vec<New>) = pending.into_iter().partition(|n| {
                let keys: Vec<(By, String)> = n
                    .phones
                    .iter()
                    .map(|p| (By::Phone, p.clone()))
                    .chain(n.emails.iter().map(|e| (By::Email, e.clone())))
                    .collect();
                if keys.iter().any(|k| claimed.contains(k)) {
                    return false;
                }
                claimed.extend(keys);
                true
            });
            self.create_round(round, report).await?;
            pending = later;
        }
        for w in lone {
            let result = self.create_lone_buyer(&w, report).await;
            self.item_result(&w.item, result, report).await?;
        }
        Ok(())
    }

    /// One round of new buyers whose keys are all distinct: look-up, import, read-back.
    async fn create_round(&self, round: Vec<New>, report: &mut RunReport) -> Result<(), SyncError> {
        // Look-up: phones first, then e-mails of those no phone matched.
        let mut matched: Vec<(New, types::Buyer)> = Vec::new();
        let mut unmatched = round;
        for by in [By::Phone, By::Email] {
            let keys: Vec<String> = unmatched
                .iter()
                .flat_map(|n| n.keys(by).iter().cloned())
                .collect();
            if keys.is_empty() {
                continue;
            }
            let found = match self.buyers_by(by, &keys).await {
                Ok(found) => found,
                Err(e) => return self.fail_all(unmatched, e, report).await,
            };
            let mut rest = Vec::new();
            for n in unmatched {
                match n.keys(by).iter().find_map(|k| found.get(k)) {
                    Some(b) => matched.push((n, b.clone())),
                    None => rest.push(n),
                }
            }
            unmatched = rest;
        }
        for (n, b) in matched {
            let result = self.link_found(&n.work, &b, report).await;
            self.item_result(&n.work.item, result, report).await?;
        }
        // Import: buyers with a phone in batches read back by phone, the others by e-mail.
        let mut by_key: BTreeMap<By, Vec<(New, types::BuyerCreate)>> = BTreeMap::new();
        for n in unmatched {
            match canonical::buyer_create_body(&n.work.local.fields) {
                Ok(body) => {
                    let by = n.read_back_key().map_or(By::Phone, |(by, _)| by);
                    self.note_create(&n.work).await?;
                    by_key.entry(by).or_default().push((n, body));
                }
                Err(e) => self.fail(&n.work.item, &e.to_string(), report).await?,
            }
        }
        for (by, rows) in by_key {
            let mut rows = rows.into_iter().peekable();
            while rows.peek().is_some() {
                let chunk: Vec<(New, types::BuyerCreate)> =
                    rows.by_ref().take(IMPORT_BATCH).collect();
                if chunk.len() <= 2 {
                    // An import costs two requests (it and its read-back); `POST /buyer`
                    // answers the id, so one or two buyers are created one by one.
                    for (n, body) in chunk {
                        let result = self.create_one(&n.work, body, report).await;
                        self.item_result(&n.work.item, result, report).await?;
                    }
                } else {
                    self.import_chunk(by, chunk, report).await?;
                }
            }
        }
        Ok(())
    }

    /// Imports one batch and reads the new ids back by `by`.
    async fn import_chunk(
        &self,
        by: By,
        chunk: Vec<(New, types::BuyerCreate)>,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let rows: Vec<types::BuyerImportItem> =
            chunk.iter().map(|(_, r)| import_item(r.clone())).collect();
        let outcome = batch::send_splitting(EntityKind::Buyer, "buyers", &rows, |buyers| {
            self.call(
                self.inner
                    .client
                    .buyer_import()
                    .body(types::BuyerImport { buyers })
                    .send(),
            )
        })
        .await;
        for (index, message) in &outcome.rejected {
            self.reject(&chunk[*index].0.work.item, message, report)
                .await?;
        }
        if let Some(error) = &outcome.error {
            // A lost answer may still have created them: the next attempt looks them up
            // first and links what it finds against the noted body.
            for index in &outcome.failed {
                self.fail(&chunk[*index].0.work.item, &error.to_string(), report)
                    .await?;
            }
        }
        if outcome.delivered.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = outcome
            .delivered
            .iter()
            .filter_map(|&i| chunk[i].0.read_back_key().map(|(_, k)| k.clone()))
            .collect();
        let created = match self.buyers_by(by, &keys).await {
            Ok(created) => created,
            Err(e) => {
                let delivered: Vec<&Work> = outcome
                    .delivered
                    .iter()
                    .map(|&i| &chunk[i].0.work)
                    .collect();
                for w in delivered {
                    self.fail(&w.item, &e.to_string(), report).await?;
                }
                return Ok(());
            }
        };
        for index in outcome.delivered {
            let n = &chunk[index].0;
            let found = n.read_back_key().and_then(|(_, k)| created.get(k));
            match found {
                Some(b) => {
                    let result = self.finish_buyer_create(&n.work, b, report).await;
                    self.item_result(&n.work.item, result, report).await?;
                }
                None => {
                    self.fail(
                        &n.work.item,
                        "imported, but not found on read-back yet",
                        report,
                    )
                    .await?
                }
            }
        }
        Ok(())
    }

    /// A failed look-up fails every buyer waiting on it (retried later; nothing was sent).
    async fn fail_all(
        &self,
        round: Vec<New>,
        error: SyncError,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        if let SyncError::Store(_) = error {
            return Err(error);
        }
        for n in round {
            self.fail(&n.work.item, &error.to_string(), report).await?;
        }
        Ok(())
    }

    /// KeyCRM's buyer as fields, its phones read in the configured region.
    fn remote_fields(&self, b: &types::Buyer) -> crate::model::Fields {
        canonical::buyer_fields_from_remote_in(b, self.inner.mappings.phone_region())
    }

    /// Links a buyer KeyCRM already has. One this engine created before it could note the
    /// answer has the body it sent as base (see `note_create`); any other is met for the
    /// first time and its fields are the base.
    async fn link_found(
        &self,
        w: &Work,
        b: &types::Buyer,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let id = buyer_id(b)?;
        let base = Self::noted_create(w)
            .map(|noted| Snapshot::new(noted.fields, None))
            .unwrap_or_else(|| Snapshot::new(self.remote_fields(b), None));
        self.update_buyer(w, id, Some(base), report).await
    }

    /// A buyer this run created (read back): its KeyCRM fields are the base.
    async fn finish_buyer_create(
        &self,
        w: &Work,
        b: &types::Buyer,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let id = buyer_id(b)?;
        self.done(w, Some(id), self.remote_fields(b), report).await
    }

    /// A buyer with neither phone nor e-mail: created alone, never twice. A create that
    /// was noted (its answer lost) is first looked for among the buyers created since.
    async fn create_lone_buyer(&self, w: &Work, report: &mut RunReport) -> Result<(), SyncError> {
        let client = &self.inner.client;
        let body = canonical::buyer_create_body(&w.local.fields)?;
        if let Some(since) = Self::noted_create(w).and_then(|s| s.updated_at) {
            let window = keycrm_api::filter::between(
                Timestamp::from(since - CREATED_SKEW),
                Timestamp::from(self.now() + chrono::Duration::minutes(1)),
            );
            let candidates = self
                .call(
                    client
                        .buyer_list()
                        .filter_created_between(window)
                        .collect_all(),
                )
                .await?;
            let same = candidates.iter().find(|b| {
                let fields = self.remote_fields(b);
                let (phones, emails) = self.match_keys(&fields);
                phones.is_empty()
                    && emails.is_empty()
                    && fields.get("full_name") == w.local.fields.get("full_name")
            });
            if let Some(b) = same {
                return self.link_found(w, b, report).await;
            }
        }
        // Noted with the time of this attempt, for the look-up above after a lost answer.
        let mut mapping = w
            .mapping
            .clone()
            .unwrap_or_else(|| Mapping::new(EntityKind::Buyer, &w.item.local_id));
        mapping.base = Some(Snapshot::new(w.local.fields.clone(), Some(self.now())));
        self.inner.store.put_mapping(&mapping).await?;
        self.create_one(w, body, report).await
    }

    /// `POST /buyer` of one buyer whose create was noted: its answer carries the id.
    async fn create_one(
        &self,
        w: &Work,
        body: types::BuyerCreate,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let client = &self.inner.client;
        let created = self
            .call(client.buyer_create().body(body).send())
            .await?
            .into_inner();
        let id = created.id.ok_or(SyncError::Answer {
            operation: "POST /buyer",
            problem: "a created buyer without id",
        })?;
        self.done(w, Some(id), self.remote_fields(&created), report)
            .await
    }

    /// A linked buyer: the local change planned against the base, then the whole agreed
    /// record sent when something is to change (KeyCRM replaces phone and e-mail lists).
    async fn update_buyer(
        &self,
        w: &Work,
        remote_id: i64,
        base: Option<Snapshot>,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let base = base.unwrap_or_default();
        let policy = self.policy(EntityKind::Buyer);
        let planned = plan(&PlanInput {
            kind: EntityKind::Buyer,
            base: Some(&base),
            local: Some(&w.local),
            remote: Some(&base),
            policy: &policy,
        });
        if !planned.to_remote.is_empty() {
            if self.dry_run() {
                return self.would(w, format!("update buyer {remote_id}")).await;
            }
            let body = canonical::buyer_update_body(&planned.merged)?;
            self.call(
                self.inner
                    .client
                    .buyer_update()
                    .buyer_id(remote_id)
                    .body(body)
                    .send(),
            )
            .await?;
        }
        self.done(w, Some(remote_id), planned.merged, report).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comma_lists_keep_to_fifty_values_and_a_bounded_length() {
        let keys: Vec<String> = (0..120).map(|i| format!("+38067{i:07}")).collect();
        let lists = comma_lists(&keys);
        assert_eq!(lists.len(), 3);
        assert_eq!(lists[0].split(',').count(), 50);
        assert_eq!(lists[2].split(',').count(), 20);
        let long: Vec<String> = (0..50).map(|i| format!("{i}{}", "x".repeat(100))).collect();
        let lists = comma_lists(&long);
        assert!(
            lists.iter().all(|l| l.len() <= MAX_FILTER_CHARS),
            "{lists:?}"
        );
        assert_eq!(
            lists.iter().map(|l| l.split(',').count()).sum::<usize>(),
            50
        );
        assert!(comma_lists(&[]).is_empty());
    }
}
