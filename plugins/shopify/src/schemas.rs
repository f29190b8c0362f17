//! The JSON Schemas of the manifest: inputs, outputs, params and event payloads.

use switchyard_sdk::{Value, json};

/// An order or other resource id: an integer, or its digits as text.
pub(crate) fn id() -> Value {
    json!({
        "type": ["integer", "string"],
        "minimum": 1,
        "pattern": "^[0-9]+$"
    })
}

/// A Shopify order as the REST API returns it (the fields flows use; the
/// API sends many more, and they are passed on).
pub(crate) fn order() -> Value {
    let nullable_string = json!({ "type": ["string", "null"] });
    json!({
        "type": "object",
        "required": ["id", "name", "created_at", "updated_at"],
        "properties": {
            "id": { "type": "integer" },
            "name": { "type": "string", "description": "The order's name, like #1001" },
            "order_number": { "type": "integer" },
            "email": nullable_string,
            "created_at": { "type": "string", "format": "date-time" },
            "updated_at": { "type": "string", "format": "date-time" },
            "cancelled_at": nullable_string,
            "currency": { "type": "string" },
            "total_price": { "type": "string" },
            "financial_status": nullable_string,
            "fulfillment_status": nullable_string,
            "tags": { "type": "string", "description": "Comma-separated" },
            "note": nullable_string,
            "line_items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "quantity"],
                    "properties": {
                        "id": { "type": "integer" },
                        "variant_id": { "type": ["integer", "null"] },
                        "sku": nullable_string,
                        "title": { "type": "string" },
                        "quantity": { "type": "integer" },
                        "price": { "type": "string" }
                    }
                }
            },
            "shipping_address": { "type": ["object", "null"] }
        },
        "additionalProperties": true
    })
}

pub(crate) fn find_order_input() -> Value {
    json!({
        "type": "object",
        "properties": {
            "order_id": id(),
            "name": {
                "type": "string",
                "minLength": 1,
                "description": "The order's name, like #1001 (the # may be left out)"
            }
        },
        "oneOf": [
            { "required": ["order_id"] },
            { "required": ["name"] }
        ],
        "additionalProperties": false
    })
}

pub(crate) fn find_order_output() -> Value {
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

fn tag_list() -> Value {
    json!({
        "type": "array",
        "maxItems": 250,
        "items": { "type": "string", "minLength": 1, "maxLength": 40, "pattern": "^[^,]+$" }
    })
}

pub(crate) fn tag_order_input() -> Value {
    json!({
        "type": "object",
        "required": ["order_id"],
        "properties": {
            "order_id": id(),
            "tags": {
                "description": "Tags to add, for example [\"Ready to ship\"]",
                "allOf": [tag_list()]
            },
            "remove_tags": {
                "description": "Tags to take off (case-insensitive), for example a previous status",
                "allOf": [tag_list()]
            },
            "note": { "type": "string", "minLength": 1, "maxLength": 5000 },
            "note_mode": {
                "enum": ["append", "replace"],
                "default": "append",
                "description": "append adds the note as a new line unless the note already has it"
            }
        },
        "anyOf": [
            { "required": ["tags"] },
            { "required": ["remove_tags"] },
            { "required": ["note"] }
        ],
        "additionalProperties": false
    })
}

pub(crate) fn tag_order_output() -> Value {
    json!({
        "type": "object",
        "required": ["order_id", "tags", "note", "changed"],
        "properties": {
            "order_id": { "type": "integer" },
            "tags": { "type": "array", "items": { "type": "string" } },
            "note": { "type": ["string", "null"] },
            "changed": {
                "type": "boolean",
                "description": "false when the order already had these tags and note (nothing was sent)"
            }
        },
        "additionalProperties": false
    })
}

pub(crate) fn create_fulfillment_input() -> Value {
    json!({
        "type": "object",
        "required": ["order_id"],
        "properties": {
            "order_id": id(),
            "tracking_number": { "type": "string", "minLength": 1 },
            "tracking_url": { "type": "string", "format": "uri" },
            "tracking_company": { "type": "string", "minLength": 1 },
            "notify_customer": { "type": "boolean", "default": false }
        },
        "additionalProperties": false
    })
}

pub(crate) fn create_fulfillment_output() -> Value {
    json!({
        "type": "object",
        "required": ["created", "fulfillments"],
        "properties": {
            "created": {
                "type": "boolean",
                "description": "false when nothing was left to fulfil (already fulfilled)"
            },
            "fulfillments": {
                "type": "array",
                "description": "One per location the order ships from",
                "items": {
                    "type": "object",
                    "required": ["id", "order_id", "status"],
                    "properties": {
                        "id": { "type": "integer" },
                        "order_id": { "type": "integer" },
                        "status": { "type": "string" },
                        "tracking_number": { "type": ["string", "null"] },
                        "tracking_url": { "type": ["string", "null"] },
                        "tracking_company": { "type": ["string", "null"] }
                    }
                }
            }
        },
        "additionalProperties": false
    })
}

pub(crate) fn set_inventory_input() -> Value {
    json!({
        "type": "object",
        "required": ["available"],
        "properties": {
            "inventory_item_id": id(),
            "sku": {
                "type": "string",
                "minLength": 1,
                "description": "Looked up among the shop's variants when there is no inventory_item_id"
            },
            "location_id": {
                "description": "Defaults to the connection's location_id",
                "allOf": [id()]
            },
            "available": { "type": "integer" }
        },
        "oneOf": [
            { "required": ["inventory_item_id"] },
            { "required": ["sku"] }
        ],
        "additionalProperties": false
    })
}

pub(crate) fn set_inventory_output() -> Value {
    json!({
        "type": "object",
        "required": ["inventory_item_id", "location_id", "available"],
        "properties": {
            "inventory_item_id": { "type": "integer" },
            "location_id": { "type": "integer" },
            "available": { "type": "integer" },
            "updated_at": { "type": "string" }
        },
        "additionalProperties": false
    })
}

pub(crate) fn order_updated_params() -> Value {
    json!({
        "type": "object",
        "properties": {
            "include_existing": {
                "type": "boolean",
                "default": false,
                "description": "On the first poll, report existing orders too (otherwise start from now)"
            },
            "page_size": { "type": "integer", "minimum": 1, "maximum": 250, "default": 50 },
            "max_pages": {
                "type": "integer",
                "minimum": 1,
                "maximum": 20,
                "default": 10,
                "description": "Pages read per poll; the next poll goes on where this one stopped"
            }
        },
        "additionalProperties": false
    })
}

pub(crate) fn no_params() -> Value {
    json!({ "type": "object", "properties": {}, "additionalProperties": false })
}
