//! The JSON Schemas of the manifest: inputs, outputs, params and event payloads.

use switchyard_sdk::{Value, json};

/// The statuses a shipment goes through.
pub(crate) const SHIPMENT_STATUSES: [&str; 3] = ["packed", "shipped", "delivered"];

pub(crate) fn order() -> Value {
    let nullable_string = json!({ "type": ["string", "null"] });
    json!({
        "type": "object",
        "required": ["id", "channel", "channel_order_id", "status", "items", "created_at", "updated_at"],
        "properties": {
            "id": { "type": "string", "description": "The warehouse's order id, like WO-000001" },
            "channel": { "type": "string" },
            "channel_order_id": { "type": "string" },
            "channel_order_name": nullable_string,
            "status": { "enum": ["created", "packed", "shipped", "delivered", "cancelled"] },
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["sku", "quantity"],
                    "properties": {
                        "sku": { "type": "string" },
                        "quantity": { "type": "integer" },
                        "price": nullable_string,
                        "name": nullable_string
                    }
                }
            },
            "customer": { "type": ["object", "null"] },
            "shipping_address": { "type": ["object", "null"] },
            "notes": nullable_string,
            "created_at": { "type": "string", "format": "date-time" },
            "updated_at": { "type": "string", "format": "date-time" }
        },
        "additionalProperties": true
    })
}

pub(crate) fn shipment() -> Value {
    let nullable_string = json!({ "type": ["string", "null"] });
    json!({
        "type": "object",
        "required": ["id", "order_id", "channel_order_id", "status", "updated_at"],
        "properties": {
            "id": { "type": "string", "description": "Like SH-000001" },
            "order_id": { "type": "string" },
            "channel": { "type": "string" },
            "channel_order_id": {
                "type": "string",
                "description": "The order's id in the sales channel (a Shopify order id)"
            },
            "status": { "enum": SHIPMENT_STATUSES },
            "awb": nullable_string,
            "courier": nullable_string,
            "tracking_url": nullable_string,
            "updated_at": { "type": "string", "format": "date-time" }
        },
        "additionalProperties": true
    })
}

pub(crate) fn stock_change() -> Value {
    json!({
        "type": "object",
        "required": ["sku", "location_id", "available"],
        "properties": {
            "sku": { "type": "string" },
            "location_id": { "type": "string" },
            "available": { "type": "integer" },
            "updated_at": { "type": "string", "format": "date-time" }
        },
        "additionalProperties": true
    })
}

/// An id the channel gave: text, or a number (Shopify's ids are numbers).
fn channel_order_id() -> Value {
    json!({ "type": ["string", "integer"], "minLength": 1, "minimum": 1 })
}

pub(crate) fn create_order_input() -> Value {
    json!({
        "type": "object",
        "required": ["channel_order_id", "items"],
        "properties": {
            "channel": { "type": "string", "minLength": 1, "default": "shopify" },
            "channel_order_id": channel_order_id(),
            "channel_order_name": { "type": "string", "description": "Like #1001" },
            "items": {
                "type": "array",
                "minItems": 1,
                "description": "Shopify line items can be passed as they are: other fields are ignored",
                "items": {
                    "type": "object",
                    "required": ["sku", "quantity"],
                    "properties": {
                        "sku": { "type": "string", "minLength": 1 },
                        "quantity": { "type": "integer", "minimum": 1 },
                        "price": { "type": ["string", "number"] },
                        "name": { "type": "string" },
                        "title": { "type": "string", "description": "Used as the name when there is none" }
                    }
                }
            },
            "customer": {
                "type": "object",
                "properties": {
                    "name": { "type": "string" },
                    "email": { "type": "string" },
                    "phone": { "type": "string" }
                }
            },
            "shipping_address": { "type": ["object", "null"] },
            "notes": { "type": "string" }
        },
        "additionalProperties": false
    })
}

pub(crate) fn create_order_output() -> Value {
    json!({
        "type": "object",
        "required": ["created", "order"],
        "properties": {
            "created": {
                "type": "boolean",
                "description": "false when the warehouse already had this channel order (made by an earlier run)"
            },
            "order": order()
        },
        "additionalProperties": false
    })
}

pub(crate) fn update_order_status_input() -> Value {
    json!({
        "type": "object",
        "required": ["order_id", "status"],
        "properties": {
            "order_id": { "type": "string", "minLength": 1 },
            "status": { "enum": ["packed", "shipped", "delivered", "cancelled"] },
            "note": { "type": "string" }
        },
        "additionalProperties": false
    })
}

pub(crate) fn get_order_input() -> Value {
    json!({
        "type": "object",
        "properties": {
            "order_id": { "type": "string", "minLength": 1 },
            "channel": { "type": "string", "minLength": 1, "default": "shopify" },
            "channel_order_id": channel_order_id()
        },
        "oneOf": [
            { "required": ["order_id"] },
            { "required": ["channel_order_id"] }
        ],
        "additionalProperties": false
    })
}

pub(crate) fn get_order_output() -> Value {
    json!({
        "type": "object",
        "required": ["found"],
        "properties": {
            "found": { "type": "boolean" },
            "order": order()
        },
        "additionalProperties": false
    })
}

fn statuses() -> Value {
    json!({
        "type": "array",
        "items": { "enum": SHIPMENT_STATUSES },
        "uniqueItems": true,
        "description": "Only these statuses start the flow (all when absent)"
    })
}

pub(crate) fn shipment_status_params() -> Value {
    json!({
        "type": "object",
        "properties": { "statuses": statuses() },
        "additionalProperties": false
    })
}

pub(crate) fn shipment_updates_params() -> Value {
    json!({
        "type": "object",
        "properties": {
            "statuses": statuses(),
            "include_existing": {
                "type": "boolean",
                "default": false,
                "description": "On the first poll, report existing shipments too (otherwise start from now)"
            },
            "page_size": { "type": "integer", "minimum": 1, "maximum": 100, "default": 50 },
            "max_pages": { "type": "integer", "minimum": 1, "maximum": 20, "default": 10 }
        },
        "additionalProperties": false
    })
}

pub(crate) fn no_params() -> Value {
    json!({ "type": "object", "properties": {}, "additionalProperties": false })
}
