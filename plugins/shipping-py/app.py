"""Shipping aggregator connector (the Shiprocket/Delhivery role), written in Python.

Built into a WebAssembly component with componentize-py against
`wit/connector@0.1.0` (world `connector`); see README.md. It talks to a JSON
API at the connection's `base_url`:

| call                            | request                                                       |
| ------------------------------- | ------------------------------------------------------------- |
| test-connection                 | `GET /account`                                                |
| action `get-tracking`           | `GET /tracking/{awb}` (404 means not found)                   |
| action `create-shipment`        | `POST /shipments` with `Idempotency-Key`                      |
| polling trigger `tracking-status` | `GET /tracking?updated_since={cursor}&page={n}&per_page=100&order=asc` |
| webhook trigger `tracking-update` | `POST /webhooks` to subscribe, `DELETE /webhooks/{id}` to stop; deliveries signed with `X-Shipping-Signature: sha256=<hex>` |

The host adds `Authorization: Bearer <token>` to every request and checks
webhook signatures with the secret `webhook_secret`: this code never sees
either secret.
"""

import json
from typing import Any, Dict, List, Optional

from wit_world import exports
from wit_world.exports import plugin
from wit_world.imports import manifest as m, types

import switchyard_sdk as kit

VERSION = "0.1.0"

# Records per page of `GET /tracking`, and pages one poll reads at most; the
# next poll goes on from the cursor.
PER_PAGE = 100
MAX_PAGES = 10

# Where the first poll starts when the account has no shipments yet.
EPOCH = "1970-01-01T00:00:00Z"

STATUSES = [
    "CREATED",
    "PICKED_UP",
    "IN_TRANSIT",
    "OUT_FOR_DELIVERY",
    "DELIVERED",
    "UNDELIVERED",
    "RTO_INITIATED",
    "RTO_DELIVERED",
    "CANCELLED",
]

TRACKING_SCHEMA = {
    "type": "object",
    "required": ["awb", "status", "updated_at"],
    "properties": {
        "awb": {"type": "string", "description": "Air waybill (tracking) number"},
        "order_ref": {"type": "string", "description": "The merchant's order reference"},
        "courier": {"type": "string"},
        "status": {"type": "string", "description": "One of " + ", ".join(STATUSES)},
        "status_detail": {"type": "string"},
        "location": {"type": "string"},
        "updated_at": {"type": "string", "description": "RFC 3339 time of the last status change"},
    },
    "additionalProperties": True,
}

STATUS_FILTER = {
    "type": "object",
    "properties": {
        "statuses": {
            "type": "array",
            "items": {"type": "string", "enum": STATUSES},
            "description": "Only these statuses; all when absent",
        }
    },
    "additionalProperties": False,
}


class Plugin(exports.Plugin):
    def describe(self) -> m.Manifest:
        return m.Manifest(
            key="shipping",
            name="Shipping aggregator",
            description="Creates shipments and follows their tracking status "
            "(a Shiprocket/Delhivery-style courier aggregator). Written in Python.",
            version=VERSION,
            auth=m.AuthScheme_Bearer(),
            connection_properties=[
                kit.prop(
                    "base_url",
                    "API base URL",
                    "Root URL of the aggregator's API, for example https://api.shipping.example/v1",
                    {"type": "string", "format": "uri"},
                    required=True,
                ),
                kit.prop(
                    "token",
                    "API token",
                    "Sent by the host as Authorization: Bearer",
                    {"type": "string", "minLength": 1},
                    required=True,
                    secret=True,
                ),
                kit.prop(
                    "webhook_secret",
                    "Webhook secret",
                    "The account's webhook signing secret: X-Shipping-Signature is sha256= "
                    "and the hex HMAC-SHA256 of the body with it",
                    {"type": "string", "minLength": 1},
                    secret=True,
                ),
            ],
            allowed_hosts=["{base_url}"],
            rate_limit=m.RateLimit(requests=10, period_ms=1000, burst=10),
            triggers=[
                kit.webhook_trigger(
                    "tracking-update",
                    "Tracking update",
                    "The aggregator pushes a shipment's new status (signed delivery)",
                    STATUS_FILTER,
                    TRACKING_SCHEMA,
                ),
                kit.polling_trigger(
                    "tracking-status",
                    "Tracking status changed",
                    "Shipments whose status changed since the last poll, oldest first",
                    STATUS_FILTER,
                    TRACKING_SCHEMA,
                    300,
                ),
            ],
            actions=[
                kit.action(
                    "get-tracking",
                    "Get tracking",
                    "Finds a shipment by AWB; `found` is false when there is none",
                    m.ActionKind.SEARCH,
                    {
                        "type": "object",
                        "required": ["awb"],
                        "properties": {"awb": {"type": "string", "minLength": 1}},
                        "additionalProperties": False,
                    },
                    {
                        "type": "object",
                        "required": ["found"],
                        "properties": {"found": {"type": "boolean"}, "tracking": TRACKING_SCHEMA},
                    },
                ),
                kit.action(
                    "create-shipment",
                    "Create shipment",
                    "Books a shipment for an order; a retried step books it once",
                    m.ActionKind.CREATE,
                    {
                        "type": "object",
                        "required": ["order_ref", "weight_grams", "destination"],
                        "properties": {
                            "order_ref": {"type": "string", "minLength": 1},
                            "courier": {"type": "string"},
                            "weight_grams": {"type": "integer", "minimum": 1},
                            "destination": {
                                "type": "object",
                                "required": ["name", "pincode"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "address": {"type": "string"},
                                    "city": {"type": "string"},
                                    "pincode": {"type": "string"},
                                    "phone": {"type": "string"},
                                },
                            },
                        },
                        "additionalProperties": False,
                    },
                    TRACKING_SCHEMA,
                ),
            ],
        )

    def test_connection(self, ctx: types.Context) -> None:
        kit.send("GET", url(ctx, "/account")).error_for_status()

    def perform(self, ctx: types.Context, action: str, input: str, idempotency_key: str) -> str:
        data = kit.parse_json(input, "the input")
        if action == "get-tracking":
            return json.dumps(get_tracking(ctx, data["awb"]))
        if action == "create-shipment":
            response = kit.send(
                "POST",
                url(ctx, "/shipments"),
                # The same for every retry of the step: the API books one shipment.
                headers=[("Idempotency-Key", idempotency_key)],
                json_body=data,
            ).error_for_status()
            return json.dumps(response.json())
        raise kit.invalid_input(f"unknown action `{action}`")

    def poll(self, ctx: types.Context, trigger: str, params: str, cursor: Optional[str]) -> plugin.PollResult:
        if trigger != "tracking-status":
            raise kit.invalid_input(f"unknown trigger `{trigger}`")
        wanted = statuses(params)
        if cursor is None:
            # The first poll only remembers where "now" is, so that a new flow
            # does not replay the account's whole history.
            page = fetch_page(ctx, [("order", "desc"), ("page", "1"), ("per_page", "1")])
            newest = page["data"][0]["updated_at"] if page["data"] else EPOCH
            kit.debug(f"tracking-status: starting after {newest}")
            return plugin.PollResult([], newest)

        records: List[Dict[str, Any]] = []
        number = 1
        while True:
            page = fetch_page(
                ctx,
                [
                    ("updated_since", cursor),
                    ("order", "asc"),
                    ("page", str(number)),
                    ("per_page", str(PER_PAGE)),
                ],
            )
            records.extend(page["data"])
            total_pages = int(page.get("meta", {}).get("total_pages", 1))
            if number >= total_pages:
                break
            if number >= MAX_PAGES:
                # More to come: stop before the last timestamp, whose records
                # may go on in the next page, so the next poll starts cleanly.
                last = records[-1]["updated_at"]
                kept = [r for r in records if r["updated_at"] != last]
                if kept:
                    records = kept
                break
            number += 1

        kit.debug(f"tracking-status: {len(records)} changes after {cursor} in {number} page(s)")
        if not records:
            return plugin.PollResult([], None)
        events = [tracking_event(r) for r in records if wanted is None or r.get("status") in wanted]
        return plugin.PollResult(events, records[-1]["updated_at"])

    def subscribe(self, ctx: types.Context, trigger: str, params: str, target_url: str) -> str:
        if trigger != "tracking-update":
            raise kit.invalid_input(f"unknown trigger `{trigger}`")
        hook = (
            kit.send(
                "POST",
                url(ctx, "/webhooks"),
                json_body={"url": target_url, "events": ["tracking.updated"]},
            )
            .error_for_status()
            .json()
        )
        kit.info(f"tracking-update: registered webhook {hook['id']}")
        return str(hook["id"])

    def unsubscribe(self, ctx: types.Context, trigger: str, params: str, state: str) -> None:
        if trigger != "tracking-update":
            raise kit.invalid_input(f"unknown trigger `{trigger}`")
        if not state:
            return
        response = kit.send("DELETE", url(ctx, "/webhooks/" + kit.path_segment(state)))
        if response.status != 404:  # already gone is as good as removed
            response.error_for_status()

    def handle_webhook(
        self, ctx: types.Context, trigger: str, params: str, request: plugin.WebhookRequest
    ) -> plugin.WebhookOutcome:
        if trigger != "tracking-update":
            raise kit.invalid_input(f"unknown trigger `{trigger}`")
        kit.verify_hmac_sha256(
            request.headers, request.body, "webhook_secret", "X-Shipping-Signature", "hex", "sha256="
        )
        body = kit.parse_json(request.body.decode("utf-8", errors="replace"), "the delivery")
        record = body.get("data") if isinstance(body, dict) else None
        if not isinstance(record, dict) or not record.get("awb") or not record.get("status"):
            raise kit.invalid_input("a tracking delivery needs `data` with `awb` and `status`")
        wanted = statuses(params)
        if wanted is not None and record["status"] not in wanted:
            return plugin.WebhookOutcome([], None)
        # The aggregator resends a delivery with the same id; the host drops repeats.
        delivery_id = kit.header_of(request.headers, "X-Shipping-Delivery-Id")
        event = tracking_event(record)
        if delivery_id:
            event.id = delivery_id
        return plugin.WebhookOutcome([event], None)


def url(ctx: types.Context, path: str) -> str:
    return kit.string_property(ctx, "base_url").rstrip("/") + path


def get_tracking(ctx: types.Context, awb: str) -> Dict[str, Any]:
    response = kit.send("GET", url(ctx, "/tracking/" + kit.path_segment(awb)))
    if response.status == 404:
        return {"found": False}
    return {"found": True, "tracking": response.error_for_status().json()}


def fetch_page(ctx: types.Context, query) -> Dict[str, Any]:
    page = kit.send("GET", url(ctx, "/tracking"), query=query).error_for_status().json()
    if not isinstance(page, dict) or not isinstance(page.get("data"), list):
        raise kit.permanent("GET /tracking returned no `data` list")
    for record in page["data"]:
        if not isinstance(record, dict) or not record.get("awb") or not record.get("updated_at"):
            raise kit.permanent("GET /tracking returned a record without `awb` or `updated_at`")
    return page


def tracking_event(record: Dict[str, Any]) -> types.Event:
    # One event per status change: the same change polled twice has one id.
    return kit.event(f"{record['awb']}:{record['updated_at']}", record)


def statuses(params: str) -> Optional[set]:
    value = kit.parse_json(params or "{}", "the trigger's params")
    wanted = value.get("statuses") if isinstance(value, dict) else None
    return set(wanted) if wanted else None
