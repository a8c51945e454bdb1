//! Rewrites of the parsed description applied before generation (listed in
//! `openapi/README.md`, "Code generation rules").

use std::collections::{BTreeSet, VecDeque};

use openapiv3::{
    AdditionalProperties, AnySchema, OpenAPI, ReferenceOr, Schema, SchemaData, SchemaKind,
    StatusCode, Type,
};

/// The operation extension naming a 2xx answer whose body may be empty: the operation's
/// success body then decodes as the type's default when the service sends nothing.
pub const EMPTY_BODY_OK: &str = "x-keycrm-empty-body-ok";

/// Gives every object schema that a success response can reach (named or inline, with at
/// least one property and no `additionalProperties` of its own) a permissive
/// `additionalProperties: {}`, so the generated struct keeps every field the description does
/// not name in a flattened `extra` map. Returns the names of the component schemas changed.
///
/// Error bodies (4xx) are left alone: the runtime builds and reads them itself.
pub fn keep_unknown_fields(spec: &mut OpenAPI) -> Vec<String> {
    let reached = success_schemas(spec);
    let mut changed = Vec::new();
    let Some(components) = spec.components.as_mut() else {
        return changed;
    };
    for name in &reached {
        if let Some(ReferenceOr::Item(schema)) = components.schemas.get_mut(name)
            && open_objects(schema)
        {
            changed.push(name.clone());
        }
    }
    changed.sort();
    changed
}

/// Opens `schema` and every inline object below it; true when `schema` itself was opened.
fn open_objects(schema: &mut Schema) -> bool {
    let mut opened = false;
    match &mut schema.schema_kind {
        SchemaKind::Type(Type::Object(obj)) => {
            for prop in obj.properties.values_mut() {
                if let ReferenceOr::Item(inner) = prop {
                    open_objects(inner);
                }
            }
            if !obj.properties.is_empty() && obj.additional_properties.is_none() {
                obj.additional_properties = Some(AdditionalProperties::Schema(Box::new(
                    ReferenceOr::Item(Schema {
                        schema_data: SchemaData::default(),
                        schema_kind: SchemaKind::Any(AnySchema::default()),
                    }),
                )));
                opened = true;
            }
        }
        SchemaKind::Type(Type::Array(array)) => {
            if let Some(ReferenceOr::Item(inner)) = &mut array.items {
                open_objects(inner);
            }
        }
        SchemaKind::OneOf { one_of: list }
        | SchemaKind::AllOf { all_of: list }
        | SchemaKind::AnyOf { any_of: list } => {
            for inner in list.iter_mut() {
                if let ReferenceOr::Item(inner) = inner {
                    open_objects(inner);
                }
            }
        }
        _ => {}
    }
    opened
}

/// Names of the component schemas reachable from a 2xx response body.
pub fn success_schemas(spec: &OpenAPI) -> BTreeSet<String> {
    let mut queue: VecDeque<String> = VecDeque::new();
    let mut roots = Vec::new();
    for (_, item) in spec.paths.iter() {
        let ReferenceOr::Item(item) = item else {
            continue;
        };
        for (_, op) in item.iter() {
            for (status, response) in &op.responses.responses {
                let success = match status {
                    StatusCode::Code(code) => (200..300).contains(code),
                    StatusCode::Range(range) => *range == 2,
                };
                if !success {
                    continue;
                }
                let response = match response {
                    ReferenceOr::Item(r) => Some(r),
                    ReferenceOr::Reference { reference } => spec
                        .components
                        .as_ref()
                        .and_then(|c| c.responses.get(ref_name(reference)))
                        .and_then(ReferenceOr::as_item),
                };
                for media in response.into_iter().flat_map(|r| r.content.values()) {
                    if let Some(schema) = &media.schema {
                        roots.push(schema.clone());
                    }
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    for root in &roots {
        match root {
            ReferenceOr::Reference { reference } => queue.push_back(ref_name(reference).into()),
            ReferenceOr::Item(schema) => refs_of(schema, &mut queue),
        }
    }
    let schemas = spec.components.as_ref().map(|c| &c.schemas);
    while let Some(name) = queue.pop_front() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(ReferenceOr::Item(schema)) = schemas.and_then(|s| s.get(&name)) {
            refs_of(schema, &mut queue);
        }
    }
    seen
}

fn ref_name(reference: &str) -> &str {
    reference.rsplit('/').next().unwrap_or(reference)
}

/// Pushes the names of the schemas `schema` refers to.
fn refs_of(schema: &Schema, out: &mut VecDeque<String>) {
    let mut visit = |r: &ReferenceOr<Schema>| match r {
        ReferenceOr::Reference { reference } => out.push_back(ref_name(reference).into()),
        ReferenceOr::Item(inner) => refs_of(inner, out),
    };
    match &schema.schema_kind {
        SchemaKind::Type(Type::Object(obj)) => {
            for prop in obj.properties.values() {
                visit(&prop.clone().unbox());
            }
            if let Some(AdditionalProperties::Schema(extra)) = &obj.additional_properties {
                visit(extra);
            }
        }
        SchemaKind::Type(Type::Array(array)) => {
            if let Some(items) = &array.items {
                visit(&items.clone().unbox());
            }
        }
        SchemaKind::OneOf { one_of: list }
        | SchemaKind::AllOf { all_of: list }
        | SchemaKind::AnyOf { any_of: list } => list.iter().for_each(visit),
        SchemaKind::Not { not } => visit(not),
        SchemaKind::Any(any) => {
            for prop in any.properties.values() {
                visit(&prop.clone().unbox());
            }
            if let Some(items) = &any.items {
                visit(&items.clone().unbox());
            }
            any.one_of
                .iter()
                .chain(&any.all_of)
                .chain(&any.any_of)
                .for_each(visit);
        }
        SchemaKind::Type(_) => {}
    }
}

/// The operation ids marked [`EMPTY_BODY_OK`].
pub fn empty_body_ok_operations(spec: &OpenAPI) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (_, item) in spec.paths.iter() {
        let ReferenceOr::Item(item) = item else {
            continue;
        };
        for (_, op) in item.iter() {
            if op.extensions.get(EMPTY_BODY_OK).and_then(|v| v.as_bool()) == Some(true)
                && let Some(id) = &op.operation_id
            {
                out.insert(id.clone());
            }
        }
    }
    out
}
