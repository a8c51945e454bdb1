"""Writes the copy of openapi/keycrm.yaml that the schemathesis contract test runs against.

keycrm.yaml follows one documented convention that plain OpenAPI validation does not know
(openapi/README.md, "Response schemas are tolerant"): in a response, a property that is
`null` reads as absent, so response properties are optional and not marked `nullable`. The
live service sends `null` for most unset fields, and so does the simulator. This script
states that convention in OpenAPI terms for the test, and nothing else: every property of
every schema reachable from a response gets `nullable: true`. Types, formats, required
lists, status codes and request schemas are left exactly as written.

Usage: python contract_schema.py IN.yaml OUT.yaml
"""

import sys

import yaml

COMBINERS = ("allOf", "oneOf", "anyOf")


def ref_name(ref):
    prefix = "#/components/schemas/"
    return ref[len(prefix):] if ref.startswith(prefix) else None


def response_schemas(doc):
    """The schema of every response body, following `#/components/responses/...`."""
    responses = doc.get("components", {}).get("responses", {})
    for item in doc.get("paths", {}).values():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            for response in op["responses"].values():
                ref = response.get("$ref", "")
                if ref.startswith("#/components/responses/"):
                    response = responses[ref.rsplit("/", 1)[1]]
                for media in response.get("content", {}).values():
                    if "schema" in media:
                        yield media["schema"]


def walk(schema, visit_property, seen, schemas):
    """Visits every property schema under `schema`, following references once."""
    if not isinstance(schema, dict):
        return
    name = ref_name(schema.get("$ref", ""))
    if name is not None:
        if name not in seen:
            seen.add(name)
            walk(schemas[name], visit_property, seen, schemas)
        return
    for prop in schema.get("properties", {}).values():
        visit_property(prop)
        walk(prop, visit_property, seen, schemas)
    for key in COMBINERS:
        for branch in schema.get(key, []):
            walk(branch, visit_property, seen, schemas)
    for key in ("items", "additionalProperties"):
        walk(schema.get(key), visit_property, seen, schemas)


def main(source, target):
    with open(source, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    schemas = doc.get("components", {}).get("schemas", {})
    count = 0

    def nullable(prop):
        nonlocal count
        if isinstance(prop, dict) and not prop.get("nullable"):
            prop["nullable"] = True
            count += 1

    seen = set()
    for schema in list(response_schemas(doc)):
        walk(schema, nullable, seen, schemas)
    with open(target, "w", encoding="utf-8") as f:
        yaml.safe_dump(doc, f, allow_unicode=True, sort_keys=False)
    print(f"contract schema: {count} response properties read null as absent ({len(seen)} schemas)")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
