//! Rewrites of the generated syntax tree applied after progenitor (listed in
//! `openapi/README.md`, "Code generation rules"):
//!
//! 1. **Tolerant scalars.** Every optional `String` and `bool` field of a generated model
//!    gets `deserialize_with` one of `crate::scalars::lenient::{string, boolean}`: a string
//!    also reads a JSON number, a boolean also reads `"true"`/`"false"`/`"1"`/`"0"` and
//!    `1`/`0`. Serialisation is unchanged.
//!    A struct that keeps unknown fields (a flattened `extra` map, from
//!    `additionalProperties: {}`) derives `Default` again when its other fields allow it, and
//!    its typify builder starts with an empty map instead of "no value supplied for extra".
//! 2. **Redacted errors.** Each builder's generated `send` becomes the private `send_raw`;
//!    a public `send` returns the same value with `keycrm_api::Error` as error type, whose
//!    `Display` and `Debug` never carry a body. It boxes the `send_raw` future, so callers'
//!    futures hold a pointer instead of the whole request state machine.
//! 3. **Paginated builders.** Every builder whose `send` answers `crate::Page<T>` is listed
//!    in one `crate::paginate::impl_list_requests!` call inside the builder module (which can
//!    read the builder's private `limit`).
//! 4. **Success bodies.** Every 2xx body is read by `crate::respond::from_response` (which
//!    decodes on a stack with room to spare); for operations marked `x-keycrm-empty-body-ok`
//!    by `crate::respond::from_response_or_default`, so an empty body is the type's default
//!    instead of a decode error.

use std::collections::BTreeSet;

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};
use syn::visit_mut::VisitMut;
use syn::{
    Attribute, Expr, GenericArgument, ImplItem, Item, ItemMod, PathArguments, ReturnType, Type,
    parse_quote,
};

/// The field types read tolerantly, and the function that reads each.
const LENIENT: &[(&str, &str)] = &[
    (
        "::std::option::Option<::std::string::String>",
        "crate::scalars::lenient::string",
    ),
    (
        "::std::option::Option<bool>",
        "crate::scalars::lenient::boolean",
    ),
];

/// What the rewrite did, for tests and the codegen summary.
#[derive(Debug, Default)]
pub struct Report {
    /// Fields given a tolerant reader.
    pub lenient_fields: usize,
    /// Builders whose `send` was wrapped.
    pub sends: usize,
    /// (builder, item type) of every paginated builder.
    pub list_builders: Vec<(String, String)>,
    /// Builders whose empty 2xx body decodes as the default.
    pub empty_body_ok: Vec<String>,
}

/// Applies every rewrite. `empty_body_ok` holds operation ids.
pub fn postprocess(
    file: &mut syn::File,
    empty_body_ok: &BTreeSet<String>,
) -> Result<Report, String> {
    let mut report = Report::default();
    let empty_builders: BTreeSet<String> = empty_body_ok.iter().map(|id| pascal(id)).collect();
    let mut saw_types = false;
    let mut saw_builder = false;
    for item in &mut file.items {
        let Item::Mod(module) = item else {
            continue;
        };
        if module.ident == "types" {
            saw_types = true;
            report.lenient_fields += tolerant_scalars(module);
        } else if module.ident == "builder" {
            saw_builder = true;
            redact_sends(module, &empty_builders, &mut report)?;
        }
    }
    if !saw_types || !saw_builder {
        return Err("generated code has no `types` or `builder` module".into());
    }
    let missing: Vec<&String> = empty_builders
        .iter()
        .filter(|b| !report.empty_body_ok.contains(b))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "operations marked x-keycrm-empty-body-ok without a 2xx body decode: {missing:?}"
        ));
    }
    Ok(report)
}

fn compact(tokens: impl ToTokens) -> String {
    tokens
        .to_token_stream()
        .to_string()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

/// `order_list` -> `OrderList`, as progenitor names builders.
pub fn pascal(id: &str) -> String {
    id.split('_')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn tolerant_scalars(types: &mut ItemMod) -> usize {
    let Some((_, items)) = &mut types.content else {
        return 0;
    };
    let mut count = 0;
    for item in items {
        if let Item::Mod(builders) = item
            && builders.ident == "builder"
        {
            let mut fix = EmptyExtra;
            fix.visit_item_mod_mut(builders);
            continue;
        }
        let Item::Struct(s) = item else {
            continue;
        };
        default_with_extra(s);
        for field in s.fields.iter_mut() {
            let ty = compact(&field.ty);
            let Some((_, reader)) = LENIENT.iter().find(|(t, _)| *t == ty) else {
                continue;
            };
            let has_default = field
                .attrs
                .iter()
                .filter(|a| a.path().is_ident("serde"))
                .any(|a| serde_keys(a).iter().any(|k| k == "default"));
            let attr: Attribute = if has_default {
                parse_quote!(#[serde(deserialize_with = #reader)])
            } else {
                parse_quote!(#[serde(default, deserialize_with = #reader)])
            };
            field.attrs.push(attr);
            count += 1;
        }
    }
    count
}

/// Adds `Default` to the derives of a struct with a flattened `extra` map whose other fields
/// are all optional or serde-defaulted (typify drops `Default` because of the map).
fn default_with_extra(s: &mut syn::ItemStruct) {
    let is_extra = |f: &syn::Field| {
        f.ident.as_ref().is_some_and(|i| i == "extra")
            && f.attrs
                .iter()
                .any(|a| a.path().is_ident("serde") && serde_keys(a).iter().any(|k| k == "flatten"))
    };
    if !s.fields.iter().any(is_extra) {
        return;
    }
    let defaultable = s.fields.iter().filter(|f| !is_extra(f)).all(|f| {
        compact(&f.ty).starts_with("::std::option::Option<")
            || f.attrs
                .iter()
                .any(|a| a.path().is_ident("serde") && serde_keys(a).iter().any(|k| k == "default"))
    });
    if !defaultable {
        return;
    }
    for attr in &mut s.attrs {
        if !attr.path().is_ident("derive") {
            continue;
        }
        let mut paths: Vec<syn::Path> = attr
            .parse_args_with(
                syn::punctuated::Punctuated::<syn::Path, syn::Token![,]>::parse_terminated,
            )
            .map(|p| p.into_iter().collect())
            .unwrap_or_default();
        if paths.iter().any(|p| compact(p) == "Default") {
            return;
        }
        let at = paths
            .iter()
            .position(|p| compact(p) == "PartialEq")
            .unwrap_or(paths.len());
        paths.insert(at, parse_quote!(Default));
        *attr = parse_quote!(#[derive(#(#paths),*)]);
        return;
    }
}

/// In typify's struct builders: an `extra` map starts empty instead of missing.
struct EmptyExtra;

impl VisitMut for EmptyExtra {
    fn visit_expr_mut(&mut self, expr: &mut Expr) {
        if compact(&*expr) == r#"Err("novaluesuppliedforextra".to_string())"# {
            *expr = parse_quote!(Ok(Default::default()));
            return;
        }
        syn::visit_mut::visit_expr_mut(self, expr);
    }
}

/// The keys of a `#[serde(...)]` attribute (`default`, `skip_serializing_if`...).
fn serde_keys(attr: &Attribute) -> Vec<String> {
    let mut keys = Vec::new();
    let _ = attr.parse_nested_meta(|meta| {
        if let Some(ident) = meta.path.get_ident() {
            keys.push(ident.to_string());
        }
        if meta.input.peek(syn::Token![=]) {
            let _: Expr = meta.value()?.parse()?;
        }
        Ok(())
    });
    keys
}

/// The generic arguments of the last segment of a path type.
fn generic_args(ty: &Type) -> Option<Vec<&Type>> {
    let Type::Path(p) = ty else { return None };
    let PathArguments::AngleBracketed(args) = &p.path.segments.last()?.arguments else {
        return None;
    };
    Some(
        args.args
            .iter()
            .filter_map(|a| match a {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
    )
}

fn redact_sends(
    builder: &mut ItemMod,
    empty_builders: &BTreeSet<String>,
    report: &mut Report,
) -> Result<(), String> {
    let Some((_, items)) = &mut builder.content else {
        return Err("the builder module is empty".into());
    };
    for item in items.iter_mut() {
        let Item::Impl(imp) = item else { continue };
        if imp.trait_.is_some() {
            continue;
        }
        let Type::Path(self_ty) = imp.self_ty.as_ref() else {
            continue;
        };
        let name = self_ty
            .path
            .segments
            .last()
            .map(|s| s.ident.to_string())
            .unwrap_or_default();
        let mut added = Vec::new();
        for member in imp.items.iter_mut() {
            let ImplItem::Fn(f) = member else { continue };
            if f.sig.ident != "send" {
                continue;
            }
            let ReturnType::Type(_, ret) = &f.sig.output else {
                return Err(format!("{name}::send returns nothing"));
            };
            let args = generic_args(ret).unwrap_or_default();
            let [value, error] = args.as_slice() else {
                return Err(format!("{name}::send does not return a Result"));
            };
            if compact(error) != "Error<types::Error>" {
                return Err(format!(
                    "{name}::send fails with `{}`, which keycrm_api::Error cannot convert",
                    compact(error)
                ));
            }
            let value: Type = (*value).clone();
            if let Some([inner]) = generic_args(&value).as_deref() {
                let inner = compact(inner);
                if let Some(item) = inner
                    .strip_prefix("crate::Page<crate::types::")
                    .and_then(|rest| rest.strip_suffix('>'))
                {
                    report.list_builders.push((name.clone(), item.to_string()));
                }
            }
            let empty_ok = empty_builders.contains(&name);
            let mut rewrite = SuccessDecode {
                with: if empty_ok {
                    parse_quote!(crate::respond::from_response_or_default)
                } else {
                    parse_quote!(crate::respond::from_response)
                },
                replaced: 0,
            };
            rewrite.visit_block_mut(&mut f.block);
            if empty_ok {
                if rewrite.replaced != 1 {
                    return Err(format!(
                        "{name}::send: expected one 2xx body decode, found {}",
                        rewrite.replaced
                    ));
                }
                report.empty_body_ok.push(name.clone());
            }
            let docs: Vec<&Attribute> = f
                .attrs
                .iter()
                .filter(|a| a.path().is_ident("doc"))
                .collect();
            let wrapper: ImplItem = parse_quote! {
                #(#docs)*
                ///
                ///A failure is a [`crate::Error`]: its `Display` and `Debug` never show a
                ///request or response body.
                pub async fn send(self) -> Result<#value, crate::Error> {
                    // Boxed: the request's state machine is large, and every future that
                    // awaits a request would otherwise carry it inline (and debug builds
                    // copy it between stack frames).
                    ::std::boxed::Box::pin(self.send_raw()).await.map_err(crate::Error::from)
                }
            };
            f.sig.ident = syn::Ident::new("send_raw", f.sig.ident.span());
            f.vis = syn::Visibility::Inherited;
            f.attrs.retain(|a| !a.path().is_ident("doc"));
            f.attrs.push(parse_quote!(#[doc = "The generated request; its error type can show whole bodies."]));
            added.push(wrapper);
            report.sends += 1;
        }
        imp.items.extend(added);
    }
    if !report.list_builders.is_empty() {
        let pairs: Vec<TokenStream> = report
            .list_builders
            .iter()
            .map(|(b, i)| {
                let b = syn::Ident::new(b, proc_macro2::Span::call_site());
                let i = syn::Ident::new(i, proc_macro2::Span::call_site());
                quote!(#b => #i)
            })
            .collect();
        items.push(parse_quote! {
            crate::paginate::impl_list_requests! { #(#pairs),* }
        });
    }
    Ok(())
}

/// Replaces `ResponseValue::from_response(..)` in the 2xx arm of a `send` body.
struct SuccessDecode {
    with: syn::Path,
    replaced: usize,
}

impl VisitMut for SuccessDecode {
    fn visit_arm_mut(&mut self, arm: &mut syn::Arm) {
        if compact(&arm.pat).starts_with("200") {
            let mut inner = ReplaceDecode {
                with: self.with.clone(),
                replaced: 0,
            };
            inner.visit_expr_mut(&mut arm.body);
            self.replaced += inner.replaced;
        }
        syn::visit_mut::visit_arm_mut(self, arm);
    }
}

struct ReplaceDecode {
    with: syn::Path,
    replaced: usize,
}

impl VisitMut for ReplaceDecode {
    fn visit_expr_call_mut(&mut self, call: &mut syn::ExprCall) {
        if compact(&call.func) == "ResponseValue::from_response" {
            let with = &self.with;
            call.func = parse_quote!(#with);
            self.replaced += 1;
        }
        syn::visit_mut::visit_expr_call_mut(self, call);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> syn::File {
        parse_quote! {
            pub mod types {
                #[derive(::serde::Deserialize)]
                pub struct Order {
                    #[serde(skip_serializing_if = "::std::option::Option::is_none")]
                    pub source_uuid: ::std::option::Option<::std::string::String>,
                    #[serde(default, skip_serializing_if = "::std::option::Option::is_none")]
                    pub is_gift: ::std::option::Option<bool>,
                    pub id: ::std::option::Option<i64>,
                    pub total: ::std::option::Option<crate::Decimal>,
                }
            }
            pub mod builder {
                pub struct OrderList<'a> { limit: u8 }
                impl<'a> OrderList<'a> {
                    ///Sends a `GET` request to `/order`
                    pub async fn send(self) -> Result<ResponseValue<crate::Page<crate::types::Order>>, Error<types::Error>> {
                        todo!()
                    }
                }
                pub struct OrderImport<'a> { body: u8 }
                impl<'a> OrderImport<'a> {
                    pub async fn send(self) -> Result<ResponseValue<types::OrderImportResult>, Error<types::Error>> {
                        match response.status().as_u16() {
                            200..=299 => ResponseValue::from_response(response).await,
                            400u16..=499u16 => Err(Error::ErrorResponse(ResponseValue::from_response(response).await?)),
                            _ => todo!(),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_rewrite_applies() {
        let mut file = sample();
        let report = postprocess(&mut file, &BTreeSet::from(["order_import".to_string()])).unwrap();
        assert_eq!(report.lenient_fields, 2);
        assert_eq!(report.sends, 2);
        assert_eq!(
            report.list_builders,
            vec![("OrderList".to_string(), "Order".to_string())]
        );
        assert_eq!(report.empty_body_ok, vec!["OrderImport".to_string()]);
        let text = compact(&file);
        assert!(text.contains(r#"#[serde(default,deserialize_with="crate::scalars::lenient::string")]pubsource_uuid"#), "{text}");
        assert!(
            text.contains(
                r#"#[serde(deserialize_with="crate::scalars::lenient::boolean")]pubis_gift"#
            ),
            "{text}"
        );
        assert!(text.contains("asyncfnsend_raw(self)"));
        assert!(text.contains("pubasyncfnsend(self)->Result<ResponseValue<crate::Page<crate::types::Order>>,crate::Error>"));
        assert!(text.contains("crate::paginate::impl_list_requests!{OrderList=>Order}"));
        assert!(
            text.contains("200..=299=>crate::respond::from_response_or_default(response).await")
        );
        assert!(
            text.contains(
                "Err(Error::ErrorResponse(ResponseValue::from_response(response).await?))"
            )
        );
        assert!(!text.contains("total:::std::option::Option<crate::Decimal>#[serde"));
    }

    #[test]
    fn a_send_with_an_unconvertible_error_type_is_refused() {
        let mut file: syn::File = parse_quote! {
            pub mod types {}
            pub mod builder {
                impl<'a> X<'a> {
                    pub async fn send(self) -> Result<ResponseValue<()>, Error<()>> { todo!() }
                }
            }
        };
        let err = postprocess(&mut file, &BTreeSet::new()).unwrap_err();
        assert!(err.contains("X::send"), "{err}");
    }

    #[test]
    fn a_marked_operation_without_a_body_decode_is_refused() {
        let mut file = sample();
        let err = postprocess(&mut file, &BTreeSet::from(["order_list".to_string()])).unwrap_err();
        assert!(err.contains("OrderList"), "{err}");
    }

    #[test]
    fn builder_names_follow_progenitor() {
        assert_eq!(
            pascal("order_payment_method_list"),
            "OrderPaymentMethodList"
        );
    }
}
