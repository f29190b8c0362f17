//! The actions: find an order, tag it, fulfil it, set inventory.

use serde::Deserialize;
use switchyard_sdk::http::Request;
use switchyard_sdk::{Context, Error, Value, json, log};

use crate::api::{self, Id, Shop};

#[derive(Deserialize)]
struct OrderBody {
    order: Value,
}

#[derive(Deserialize)]
pub(crate) struct Orders {
    pub(crate) orders: Vec<Value>,
}

/// The order `id`, or `None` if the shop has no such order.
fn get_order(shop: &Shop, id: u64) -> Result<Option<Value>, Error> {
    let response = Request::get(shop.url(&format!("/orders/{id}.json"))).send()?;
    if response.status == 404 {
        return Ok(None);
    }
    Ok(Some(api::check(response)?.json::<OrderBody>()?.order))
}

fn order_must_exist(id: u64) -> Error {
    Error::invalid_input(format!("order {id} does not exist in this shop"))
}

#[derive(Deserialize)]
pub(crate) struct FindOrder {
    order_id: Option<Id>,
    name: Option<String>,
}

pub(crate) fn find_order(ctx: &Context, input: FindOrder) -> Result<Value, Error> {
    let shop = Shop::new(ctx)?;
    let order = match (input.order_id, input.name) {
        (Some(id), _) => get_order(&shop, id.0)?,
        (None, Some(name)) => order_by_name(&shop, name.trim())?,
        (None, None) => return Err(Error::invalid_input("give `order_id` or `name`")),
    };
    Ok(match order {
        Some(order) => json!({ "found": true, "order": order }),
        None => json!({ "found": false }),
    })
}

/// The order named `name` (`#1001`, or `1001` for the same).
fn order_by_name(shop: &Shop, name: &str) -> Result<Option<Value>, Error> {
    let wanted = if name.starts_with('#') {
        name.to_owned()
    } else {
        format!("#{name}")
    };
    let page: Orders = api::send_json(
        Request::get(shop.url("/orders.json"))
            .query("status", "any")
            .query("name", name)
            .query("limit", "10"),
    )?;
    // `name` is a search, not an exact match: pick the exact one.
    Ok(page.orders.into_iter().find(|order| {
        order["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(&wanted) || n.eq_ignore_ascii_case(name))
    }))
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub(crate) enum NoteMode {
    #[default]
    Append,
    Replace,
}

#[derive(Deserialize)]
pub(crate) struct TagOrder {
    order_id: Id,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    remove_tags: Vec<String>,
    note: Option<String>,
    #[serde(default)]
    note_mode: NoteMode,
}

/// Reads the order, merges the tags and note, and writes them back only if
/// they changed, so a repeated step changes nothing. The REST API has no
/// conditional update: a tag another app adds between the read and the
/// write is lost (GraphQL's `tagsAdd` would not have that race).
pub(crate) fn tag_order(ctx: &Context, input: TagOrder, key: &str) -> Result<Value, Error> {
    let shop = Shop::new(ctx)?;
    let id = input.order_id.0;
    let order = get_order(&shop, id)?.ok_or_else(|| order_must_exist(id))?;
    let current_tags = split_tags(order["tags"].as_str().unwrap_or(""));
    let current_note = order["note"].as_str().map(str::to_owned);
    let tags = merge_tags(&current_tags, &input.tags, &input.remove_tags);
    let note = merge_note(
        current_note.as_deref(),
        input.note.as_deref(),
        input.note_mode,
    );
    if tags == current_tags && note == current_note {
        return Ok(json!({ "order_id": id, "tags": tags, "note": note, "changed": false }));
    }
    let mut update = json!({ "id": id, "tags": tags.join(", ") });
    if note != current_note {
        update["note"] = json!(note);
    }
    let updated: OrderBody = api::send_json(
        Request::put(shop.url(&format!("/orders/{id}.json")))
            .header("Idempotency-Key", key)
            .json(&json!({ "order": update })),
    )?;
    Ok(json!({
        "order_id": id,
        "tags": split_tags(updated.order["tags"].as_str().unwrap_or("")),
        "note": updated.order["note"],
        "changed": true,
    }))
}

/// Shopify keeps tags as one comma-separated string.
fn split_tags(tags: &str) -> Vec<String> {
    tags.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `current` without `remove` and with `add` (tags compare case-insensitively,
/// as Shopify's do), in their original order.
fn merge_tags(current: &[String], add: &[String], remove: &[String]) -> Vec<String> {
    let same = |a: &str, b: &str| a.trim().eq_ignore_ascii_case(b.trim());
    let mut tags: Vec<String> = current
        .iter()
        .filter(|t| !remove.iter().any(|r| same(t, r)))
        .cloned()
        .collect();
    for tag in add {
        if !tags.iter().any(|t| same(t, tag)) {
            tags.push(tag.trim().to_owned());
        }
    }
    tags
}

/// The note after adding `new`: appended as a line unless a line already
/// says it (so a retried step does not repeat it), or replacing the note.
fn merge_note(current: Option<&str>, new: Option<&str>, mode: NoteMode) -> Option<String> {
    let Some(new) = new.map(str::trim).filter(|n| !n.is_empty()) else {
        return current.map(str::to_owned);
    };
    match (mode, current.filter(|c| !c.trim().is_empty())) {
        (NoteMode::Replace, _) | (NoteMode::Append, None) => Some(new.to_owned()),
        (NoteMode::Append, Some(current)) if current.lines().any(|l| l.trim() == new) => {
            Some(current.to_owned())
        }
        (NoteMode::Append, Some(current)) => Some(format!("{current}\n{new}")),
    }
}

#[derive(Deserialize)]
pub(crate) struct CreateFulfillment {
    order_id: Id,
    tracking_number: Option<String>,
    tracking_url: Option<String>,
    tracking_company: Option<String>,
    #[serde(default)]
    notify_customer: bool,
}

#[derive(Deserialize)]
struct FulfillmentOrders {
    fulfillment_orders: Vec<FulfillmentOrder>,
}

#[derive(Deserialize)]
struct FulfillmentOrder {
    id: u64,
    status: String,
    assigned_location_id: Option<u64>,
}

#[derive(Deserialize)]
struct FulfillmentBody {
    fulfillment: Value,
}

/// Fulfils every open fulfillment order of the order. Shopify takes one
/// location per fulfillment, so there is one per location; the first uses
/// the step's idempotency key, the others the key and their location.
pub(crate) fn create_fulfillment(
    ctx: &Context,
    input: CreateFulfillment,
    key: &str,
) -> Result<Value, Error> {
    let shop = Shop::new(ctx)?;
    let id = input.order_id.0;
    let response =
        Request::get(shop.url(&format!("/orders/{id}/fulfillment_orders.json"))).send()?;
    if response.status == 404 {
        return Err(order_must_exist(id));
    }
    let found: FulfillmentOrders = api::check(response)?.json()?;
    let open: Vec<&FulfillmentOrder> = found
        .fulfillment_orders
        .iter()
        .filter(|fo| matches!(fo.status.as_str(), "open" | "in_progress"))
        .collect();
    if open.is_empty() {
        if let Some(held) = found
            .fulfillment_orders
            .iter()
            .find(|fo| matches!(fo.status.as_str(), "on_hold" | "scheduled" | "incomplete"))
        {
            return Err(Error::invalid_input(format!(
                "order {id} cannot be fulfilled now: fulfillment order {} is {}",
                held.id, held.status
            )));
        }
        log::info!("order {id} has nothing left to fulfil");
        return Ok(json!({ "created": false, "fulfillments": [] }));
    }
    let mut locations: Vec<Option<u64>> = open.iter().map(|fo| fo.assigned_location_id).collect();
    locations.dedup();
    let mut tracking = switchyard_sdk::serde_json::Map::new();
    for (field, value) in [
        ("number", &input.tracking_number),
        ("url", &input.tracking_url),
        ("company", &input.tracking_company),
    ] {
        if let Some(value) = value {
            tracking.insert(field.to_owned(), json!(value));
        }
    }
    let mut created = Vec::new();
    for (n, location) in locations.iter().enumerate() {
        let orders: Vec<Value> = open
            .iter()
            .filter(|fo| fo.assigned_location_id == *location)
            .map(|fo| json!({ "fulfillment_order_id": fo.id }))
            .collect();
        let body = json!({ "fulfillment": {
            "line_items_by_fulfillment_order": orders,
            "tracking_info": tracking,
            "notify_customer": input.notify_customer,
        }});
        let key = match (n, location) {
            (0, _) => key.to_owned(),
            (_, Some(location)) => format!("{key}:{location}"),
            (_, None) => format!("{key}:{n}"),
        };
        let response: FulfillmentBody = api::send_json(
            Request::post(shop.url("/fulfillments.json"))
                .header("Idempotency-Key", key)
                .json(&body),
        )?;
        let f = response.fulfillment;
        created.push(json!({
            "id": f["id"],
            "order_id": f["order_id"],
            "status": f["status"],
            "tracking_number": f["tracking_number"],
            "tracking_url": f["tracking_url"],
            "tracking_company": f["tracking_company"],
        }));
    }
    Ok(json!({ "created": true, "fulfillments": created }))
}

#[derive(Deserialize)]
pub(crate) struct SetInventory {
    inventory_item_id: Option<Id>,
    sku: Option<String>,
    location_id: Option<Id>,
    available: i64,
}

#[derive(Deserialize)]
struct LevelBody {
    inventory_level: Level,
}

#[derive(Deserialize)]
struct Level {
    inventory_item_id: u64,
    location_id: u64,
    available: Option<i64>,
    updated_at: Option<String>,
}

pub(crate) fn set_inventory(ctx: &Context, input: SetInventory, key: &str) -> Result<Value, Error> {
    let shop = Shop::new(ctx)?;
    let location = match input.location_id {
        Some(id) => id.0,
        None => match ctx.property("location_id") {
            Some(value) => {
                switchyard_sdk::serde_json::from_value::<Id>(value.clone())
                    .map_err(|e| {
                        Error::invalid_input(format!("connection property `location_id`: {e}"))
                    })?
                    .0
            }
            None => {
                return Err(Error::invalid_input(
                    "no location: give `location_id` or set the connection's `location_id`",
                ));
            }
        },
    };
    let item = match (input.inventory_item_id, input.sku) {
        (Some(id), _) => id.0,
        (None, Some(sku)) => inventory_item_for_sku(&shop, sku.trim())?,
        (None, None) => return Err(Error::invalid_input("give `inventory_item_id` or `sku`")),
    };
    let body = json!({
        "location_id": location,
        "inventory_item_id": item,
        "available": input.available,
    });
    let level = api::send_json::<LevelBody>(
        Request::post(shop.url("/inventory_levels/set.json"))
            .header("Idempotency-Key", key)
            .json(&body),
    )?
    .inventory_level;
    let mut out = json!({
        "inventory_item_id": level.inventory_item_id,
        "location_id": level.location_id,
        "available": level.available.unwrap_or(input.available),
    });
    if let Some(at) = level.updated_at {
        out["updated_at"] = json!(at);
    }
    Ok(out)
}

/// The REST API cannot search variants by SKU; the GraphQL Admin API can.
const VARIANTS_BY_SKU: &str = "query VariantsBySku($q: String!) { productVariants(first: 5, query: $q) { edges { node { id sku inventoryItem { id } } } } }";

/// The inventory item of the one variant whose SKU is exactly `sku`.
fn inventory_item_for_sku(shop: &Shop, sku: &str) -> Result<u64, Error> {
    let query = format!("sku:\"{}\"", sku.replace('\\', "\\\\").replace('"', "\\\""));
    let body: Value = api::send_json(
        Request::post(shop.url("/graphql.json"))
            .json(&json!({ "query": VARIANTS_BY_SKU, "variables": { "q": query } })),
    )?;
    if let Some(errors) = body.get("errors") {
        let throttled = errors.as_array().is_some_and(|errors| {
            errors
                .iter()
                .any(|e| e.pointer("/extensions/code") == Some(&json!("THROTTLED")))
        });
        return Err(if throttled {
            Error::rate_limited(1_000, format!("looking up SKU {sku}: throttled"))
        } else {
            Error::permanent(format!("looking up SKU {sku}: {errors}"))
        });
    }
    let mut items: Vec<u64> = body
        .pointer("/data/productVariants/edges")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|edge| edge.pointer("/node/sku").and_then(Value::as_str) == Some(sku))
        .filter_map(|edge| {
            edge.pointer("/node/inventoryItem/id")
                .and_then(Value::as_str)
                .and_then(api::gid_number)
        })
        .collect();
    items.sort_unstable();
    items.dedup();
    match items[..] {
        [item] => Ok(item),
        [] => Err(Error::invalid_input(format!(
            "no variant has the SKU `{sku}`"
        ))),
        _ => Err(Error::invalid_input(format!(
            "{} variants have the SKU `{sku}`: give `inventory_item_id`",
            items.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tags_merge() {
        let current = split_tags("vip, Ready to ship,, wholesale ");
        assert_eq!(current, strings(&["vip", "Ready to ship", "wholesale"]));
        let cases: &[(&[&str], &[&str], &[&str])] = &[
            (&[], &[], &["vip", "Ready to ship", "wholesale"]),
            (
                &["Delivered"],
                &["ready to ship"],
                &["vip", "wholesale", "Delivered"],
            ),
            (&["VIP"], &[], &["vip", "Ready to ship", "wholesale"]),
            (
                &[" new "],
                &["nope"],
                &["vip", "Ready to ship", "wholesale", "new"],
            ),
        ];
        for (add, remove, expected) in cases {
            assert_eq!(
                merge_tags(&current, &strings(add), &strings(remove)),
                strings(expected),
                "{add:?} {remove:?}"
            );
        }
    }

    #[test]
    fn notes_merge() {
        use NoteMode::*;
        // (current note, new note, mode, expected note)
        type Case = (
            Option<&'static str>,
            Option<&'static str>,
            NoteMode,
            Option<&'static str>,
        );
        let cases: &[Case] = &[
            (None, None, Append, None),
            (Some("a"), None, Append, Some("a")),
            (None, Some("Shipped"), Append, Some("Shipped")),
            (Some(" "), Some("Shipped"), Append, Some("Shipped")),
            (Some("Paid"), Some("Shipped"), Append, Some("Paid\nShipped")),
            (
                Some("Paid\nShipped"),
                Some("Shipped"),
                Append,
                Some("Paid\nShipped"),
            ),
            (Some("Paid"), Some("Shipped"), Replace, Some("Shipped")),
            (Some("Paid"), Some("  "), Replace, Some("Paid")),
        ];
        for (current, new, mode, expected) in cases {
            assert_eq!(
                merge_note(*current, *new, *mode).as_deref(),
                *expected,
                "{current:?} + {new:?} ({mode:?})"
            );
        }
    }
}
