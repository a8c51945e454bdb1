//! The 59 operations of the KeyCRM Open API: method, path and handler, named by the
//! operation ids of `openapi/keycrm.yaml` (which are the client's method names).

use super::http::{Ctx, Handled};
use super::state::State;
use super::{catalog, misc, orders, people, pipelines};

/// A handler: reads the request, changes the state, answers.
pub(crate) type Handler = fn(&mut State, &Ctx<'_>) -> Handled;

/// One operation.
pub(crate) struct Route {
    pub method: &'static str,
    /// Path below `/v1`; `{}` stands for a path parameter.
    pub pattern: &'static str,
    pub operation: &'static str,
    pub handler: Handler,
}

macro_rules! routes {
    ($($method:literal $pattern:literal $op:literal => $handler:path;)*) => {
        /// Every operation of the API.
        pub(crate) const ROUTES: &[Route] = &[
            $(Route { method: $method, pattern: $pattern, operation: $op, handler: $handler },)*
        ];
    };
}

routes! {
    "GET" "/order" "order_list" => orders::list;
    "POST" "/order" "order_create" => orders::create;
    "POST" "/order/import" "order_import" => orders::import;
    "GET" "/order/{}" "order_get" => orders::get;
    "PUT" "/order/{}" "order_update" => orders::update;
    "POST" "/order/{}/payment" "order_payment_create" => orders::payment_create;
    "PUT" "/order/{}/payment/{}" "order_payment_update" => orders::payment_update;
    "POST" "/order/{}/expense" "order_expense_create" => orders::expense_create;
    "PUT" "/order/{}/expense/{}" "order_expense_update" => orders::expense_update;
    "POST" "/order/{}/tag/{}" "order_tag_attach" => orders::tag_attach;
    "DELETE" "/order/{}/tag/{}" "order_tag_detach" => orders::tag_detach;
    "POST" "/order/{}/attachment/{}" "order_attachment_attach" => orders::attachment_attach;
    "DELETE" "/order/{}/attachment/{}" "order_attachment_detach" => orders::attachment_detach;
    "GET" "/order/tag" "order_tag_list" => misc::tag_list;
    "GET" "/order/source" "order_source_list" => misc::source_list;
    "GET" "/order/status" "order_status_list" => misc::status_list;
    "GET" "/order/payment-method" "order_payment_method_list" => misc::payment_method_list;
    "GET" "/order/expense-type" "order_expense_type_list" => misc::expense_type_list;
    "GET" "/order/delivery-service" "order_delivery_service_list" => misc::delivery_service_list;
    "GET" "/order/product-status" "order_product_status_list" => misc::product_status_list;
    "GET" "/payments/external-transactions" "external_transaction_list" => misc::transaction_list;
    "POST" "/payments/{}/external-transactions" "external_transaction_attach" => misc::transaction_attach;
    "GET" "/buyer" "buyer_list" => people::buyer_list;
    "POST" "/buyer" "buyer_create" => people::buyer_create;
    "POST" "/buyer/import" "buyer_import" => people::buyer_import;
    "GET" "/buyer/{}" "buyer_get" => people::buyer_get;
    "PUT" "/buyer/{}" "buyer_update" => people::buyer_update;
    "GET" "/companies" "company_list" => people::company_list;
    "POST" "/companies" "company_create" => people::company_create;
    "GET" "/companies/{}" "company_get" => people::company_get;
    "PUT" "/companies/{}" "company_update" => people::company_update;
    "GET" "/users" "user_list" => people::user_list;
    "GET" "/calls" "call_list" => people::call_list;
    "GET" "/custom-fields" "custom_field_list" => misc::custom_field_list;
    "GET" "/products" "product_list" => catalog::product_list;
    "POST" "/products" "product_create" => catalog::product_create;
    "POST" "/products/import" "product_import" => catalog::product_import;
    "GET" "/products/{}" "product_get" => catalog::product_get;
    "PUT" "/products/{}" "product_update" => catalog::product_update;
    "POST" "/products/{}/offers" "product_offers_create" => catalog::product_offers_create;
    "GET" "/products/categories" "category_list" => catalog::category_list;
    "POST" "/products/categories" "category_create" => catalog::category_create;
    "GET" "/offers" "offer_list" => catalog::offer_list;
    "PUT" "/offers" "offer_update_batch" => catalog::offer_update_batch;
    "GET" "/offers/stocks" "offer_stock_list" => catalog::stock_list;
    "PUT" "/offers/stocks" "offer_stock_update" => catalog::stock_update;
    "GET" "/storage" "storage_list" => misc::storage_list;
    "GET" "/storage/attachment/{}/{}" "storage_attachment_list" => misc::storage_attachment_list;
    "POST" "/storage/upload" "storage_upload" => misc::storage_upload;
    "GET" "/pipelines" "pipeline_list" => pipelines::pipeline_list;
    "GET" "/pipelines/{}/statuses" "pipeline_status_list" => pipelines::pipeline_status_list;
    "GET" "/pipelines/cards" "pipeline_card_list" => pipelines::card_list;
    "POST" "/pipelines/cards" "pipeline_card_create" => pipelines::card_create;
    "GET" "/pipelines/cards/{}" "pipeline_card_get" => pipelines::card_get;
    "PUT" "/pipelines/cards/{}" "pipeline_card_update" => pipelines::card_update;
    "POST" "/pipelines/cards/{}/payment" "pipeline_card_payment_create" => pipelines::card_payment_create;
    "PUT" "/pipelines/cards/{}/payment/{}" "pipeline_card_payment_update" => pipelines::card_payment_update;
    "POST" "/pipelines/cards/{}/attachment/{}" "pipeline_card_attachment_attach" => pipelines::card_attachment_attach;
    "DELETE" "/pipelines/cards/{}/attachment/{}" "pipeline_card_attachment_detach" => pipelines::card_attachment_detach;
}

/// The outcome of matching a request to the table.
pub(crate) enum Match<'a> {
    Found(&'static Route, Vec<&'a str>),
    /// The path exists, but not for this method; the methods it has.
    WrongMethod(Vec<&'static str>),
    Missing,
}

/// The parameters of `path` if it fits `pattern`.
fn fit<'a>(pattern: &str, path: &'a str) -> Option<Vec<&'a str>> {
    let pat: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    let got: Vec<&str> = path.trim_matches('/').split('/').collect();
    if pat.len() != got.len() {
        return None;
    }
    let mut params = Vec::new();
    for (p, g) in pat.iter().zip(&got) {
        if *p == "{}" {
            if g.is_empty() {
                return None;
            }
            params.push(*g);
        } else if p != g {
            return None;
        }
    }
    Some(params)
}

/// Finds the operation for `method path` (`path` below `/v1`). A literal segment wins over
/// a parameter (`/order/tag` is the tag list, not the order with id `tag`).
pub(crate) fn find<'a>(method: &str, path: &'a str) -> Match<'a> {
    let mut best: Option<(&'static Route, Vec<&'a str>)> = None;
    let mut methods = Vec::new();
    for route in ROUTES {
        let Some(params) = fit(route.pattern, path) else {
            continue;
        };
        if route.method != method {
            methods.push(route.method);
            continue;
        }
        if best.as_ref().is_none_or(|(_, p)| params.len() < p.len()) {
            best = Some((route, params));
        }
    }
    match best {
        Some((route, params)) => Match::Found(route, params),
        None if methods.is_empty() => Match::Missing,
        None => Match::WrongMethod(methods),
    }
}

/// Whether an operation creates records (the lost-response fault applies to these).
pub(crate) fn is_create(operation: &str) -> bool {
    operation.ends_with("_create")
        || operation.ends_with("_import")
        || operation == "storage_upload"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_every_operation_once() {
        assert_eq!(ROUTES.len(), 59);
        let mut ids: Vec<&str> = ROUTES.iter().map(|r| r.operation).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 59);
    }

    #[test]
    fn literal_segments_win() {
        let Match::Found(r, p) = find("GET", "/order/tag") else {
            panic!()
        };
        assert_eq!(r.operation, "order_tag_list");
        assert!(p.is_empty());
        let Match::Found(r, p) = find("GET", "/order/10001") else {
            panic!()
        };
        assert_eq!((r.operation, p), ("order_get", vec!["10001"]));
        assert!(matches!(find("PATCH", "/order"), Match::WrongMethod(_)));
        assert!(matches!(find("GET", "/warehouses"), Match::Missing));
    }
}
