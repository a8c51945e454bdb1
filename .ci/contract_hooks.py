"""schemathesis hooks for the contract test: generated request bodies meet the rules of KeyCRM
that the description does not state, so that writes get past validation and their success
answers are checked too.

openapi/keycrm.yaml types these values loosely on purpose (see openapi/README.md, "Contract
test against the simulator"): ids that must name existing reference records are plain
integers, `Decimal` is a number or *any* string, `Timestamp` and `Date` are strings without a
format, an order's buyer has no required field. KeyCRM, and the simulator, answer 422 to bodies
that break those rules, so without these hooks almost every generated create stops at
validation. The hooks only repair such values; every other generated value is sent as is.
"""

import os
import re

import schemathesis
import yaml

# Ids every simulator account has (`keycrm-mock` prints them; `GET /__mock/reference`): key ->
# (first id, how many). Buyers and companies are those of the default seed the test starts with.
REFERENCE = {
    "source_id": (1, 5),
    "manager_id": (1, 4),
    "pipeline_id": (1, 2),
    "warehouse_id": (1, 2),
    "payment_method_id": (1, 5),
    "delivery_service_id": (1, 4),
    "client_id": (2001, 25),
    "buyer_id": (2001, 25),
    "company_id": (101, 3),
    "transaction_id": (4501, 5),
}
ORDER_STATUSES = 6

NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}( \d{2}:\d{2}:\d{2})?$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _scalar_keys():
    """Property names typed `Decimal`, `Timestamp` or `Date` anywhere in the description."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "openapi", "keycrm.yaml"), encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    keys = {"Decimal": set(), "Timestamp": set(), "Date": set()}

    def walk(node):
        if isinstance(node, dict):
            for name, prop in (node.get("properties") or {}).items():
                ref = prop.get("$ref", "") if isinstance(prop, dict) else ""
                kind = ref.rsplit("/", 1)[-1]
                if kind in keys:
                    keys[kind].add(name)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc.get("components", {}))
    return keys["Decimal"], keys["Timestamp"], keys["Date"]


DECIMALS, TIMESTAMPS, DATES = _scalar_keys()


def repair(value, key=None, orders=False):
    if isinstance(value, dict):
        out = {}
        for k, item in value.items():
            if k == "custom_fields":
                # Values are addressed by the uuid of a field of the account.
                continue
            out[k] = repair(item, k, orders)
        for name in ("full_name", "name"):
            if isinstance(out.get(name), str) and not out[name].strip():
                # A name, when sent, must not be blank.
                out[name] = "Олена Коваленко"
        if key in ("buyer", "buyers", "contact") and not any(
            isinstance(out.get(k), str) and out[k].strip() for k in ("full_name", "email", "phone")
        ):
            # KeyCRM needs a name, an e-mail or a phone to find or create the buyer or contact.
            out["full_name"] = "Олена Коваленко"
        if key == "payments" and not isinstance(out.get("payment_method_id"), int):
            # A payment names its method by id or by name; generated names name nothing.
            out["payment_method_id"] = 1
        return out
    if isinstance(value, list):
        return [repair(item, key, orders) for item in value]
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if key in REFERENCE and is_int:
        first, count = REFERENCE[key]
        return first + abs(value) % count
    if key == "status_id" and orders and is_int:
        return 1 + abs(value) % ORDER_STATUSES
    if key in DECIMALS and isinstance(value, (int, float)) and not isinstance(value, bool):
        # KeyCRM keeps money and quantities as fixed-point decimals: no 1e308, no 1e-169.
        if abs(value) >= 1e9 or 0 < abs(value) < 1e-6:
            return round(abs(value) % 1000, 2)
        return value
    if isinstance(value, str):
        if key in DECIMALS and not NUMBER.match(value):
            return str(len(value))
        if key in DATES and not DATE.match(value):
            return "2024-05-17"
        if key in TIMESTAMPS and not TIMESTAMP.match(value):
            return "2024-05-17 10:30:00"
    return value


# Offers of the simulator account the contract test starts (the default seed: 18 offers).
FIRST_OFFER, OFFERS = 8001, 18


def seeded_offers(body, rows):
    """Batch rows of `PUT /offers` and `PUT /offers/stocks` name seeded offers by id."""
    if isinstance(body, dict) and isinstance(body.get(rows), list):
        for row in body[rows]:
            if isinstance(row, dict):
                row.pop("sku", None)
                raw = row.get("id")
                ok = isinstance(raw, int) and not isinstance(raw, bool)
                row["id"] = FIRST_OFFER + (abs(raw) % OFFERS if ok else 0)
    return body


@schemathesis.hook
def map_body(context, body):
    path = context.operation.path if context.operation is not None else ""
    body = repair(body, orders=path.startswith("/order"))
    if path == "/offers":
        body = seeded_offers(body, "offers")
    elif path == "/offers/stocks":
        body = seeded_offers(body, "stocks")
    return body


# Records of the account the contract test starts (`--orders 60`, the default seed), by path
# parameter: (first id, how many).
SEEDED = {
    "orderId": (10001, 60),
    "buyerId": (2001, 25),
    "companyId": (101, 3),
    "productId": (3001, 12),
    "cardId": (401, 8),
    "pipelineId": (1, 2),
    "tagId": (1, 5),
    "paymentId": (5001, 20),
}


@schemathesis.hook
def map_path_parameters(context, path_parameters):
    """Three in four generated ids name a seeded record; the rest keep testing the 404 answer."""
    if not isinstance(path_parameters, dict):
        return path_parameters
    out = dict(path_parameters)
    for name, (first, count) in SEEDED.items():
        raw = out.get(name)
        if isinstance(raw, int) and not isinstance(raw, bool) and raw % 4 != 0:
            out[name] = first + abs(raw) % count
    # GET /storage/attachment/{entityType}/{entityId}: an order or a card.
    raw = out.get("entityId")
    if "entityType" in out and isinstance(raw, int) and not isinstance(raw, bool) and raw % 4 != 0:
        if raw % 2:
            out["entityType"], out["entityId"] = "order", 10001 + abs(raw) % 60
        else:
            out["entityType"], out["entityId"] = "pipelines", 401 + abs(raw) % 8
    return out
