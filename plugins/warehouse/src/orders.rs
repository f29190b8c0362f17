//! The actions on warehouse orders: create, move on, look up.

use serde::Deserialize;
use switchyard_sdk::http::{Request, percent_encode};
use switchyard_sdk::{Context, Error, Value, json, log};

use crate::url;

/// A channel's order id: Shopify's are numbers, other channels' text.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum ChannelOrderId {
    Number(u64),
    Text(String),
}

impl ChannelOrderId {
    fn text(&self) -> String {
        match self {
            Self::Number(n) => n.to_string(),
            Self::Text(s) => s.trim().to_owned(),
        }
    }
}

fn default_channel() -> String {
    "shopify".to_owned()
}

#[derive(Deserialize)]
pub(crate) struct CreateOrder {
    #[serde(default = "default_channel")]
    channel: String,
    channel_order_id: ChannelOrderId,
    channel_order_name: Option<String>,
    items: Vec<Item>,
    customer: Option<Value>,
    shipping_address: Option<Value>,
    notes: Option<String>,
}

/// A line of the order. Shopify line items fit: `title` becomes the name and
/// their other fields are left out.
#[derive(Deserialize)]
struct Item {
    sku: String,
    quantity: u32,
    price: Option<Value>,
    name: Option<String>,
    title: Option<String>,
}

#[derive(Deserialize)]
struct OrderBody {
    order: Value,
}

#[derive(Deserialize)]
struct Orders {
    orders: Vec<Value>,
}

/// What the warehouse says about a channel order it already has (409).
#[derive(Deserialize)]
struct Conflict {
    error: ConflictDetail,
}

#[derive(Deserialize)]
struct ConflictDetail {
    code: String,
    order_id: Option<String>,
}

/// `POST /orders` with the step's idempotency key: the warehouse answers a
/// repeated key with the order it created the first time. An order for the
/// same channel order made under another key (an earlier run of the flow)
/// comes back as 409 `duplicate_order`; that order is fetched and returned
/// with `created: false` rather than failing the step.
pub(crate) fn create(ctx: &Context, input: CreateOrder, key: &str) -> Result<Value, Error> {
    let items: Vec<Value> = input
        .items
        .into_iter()
        .map(|item| {
            let price = match item.price {
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(Value::String(s)) => Some(s),
                _ => None,
            };
            json!({
                "sku": item.sku,
                "quantity": item.quantity,
                "price": price,
                "name": item.name.or(item.title),
            })
        })
        .collect();
    let body = json!({
        "channel": input.channel,
        "channel_order_id": input.channel_order_id.text(),
        "channel_order_name": input.channel_order_name,
        "items": items,
        "customer": input.customer,
        "shipping_address": input.shipping_address,
        "notes": input.notes,
    });
    let response = Request::post(url(ctx, "/orders")?)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()?;
    if response.status == 409
        && let Ok(Conflict { error }) = response.json::<Conflict>()
        && error.code == "duplicate_order"
        && let Some(existing) = error.order_id
    {
        log::info!("the warehouse already has this order as {existing}");
        let order = fetch(ctx, &existing)?.ok_or_else(|| {
            Error::transient(format!(
                "order {existing} was reported but cannot be read yet"
            ))
        })?;
        return Ok(json!({ "created": false, "order": order }));
    }
    let created: OrderBody = response.error_for_status()?.json()?;
    Ok(json!({ "created": true, "order": created.order }))
}

#[derive(Deserialize)]
pub(crate) struct UpdateStatus {
    order_id: String,
    status: String,
    note: Option<String>,
}

/// `PATCH /orders/{id}`. Setting the status an order already has changes
/// nothing; a move the warehouse does not allow (delivered back to packed)
/// is refused with 422 and fails the step.
pub(crate) fn update_status(ctx: &Context, input: UpdateStatus, key: &str) -> Result<Value, Error> {
    let id = input.order_id.trim();
    let mut body = json!({ "status": input.status });
    if let Some(note) = input.note {
        body["note"] = json!(note);
    }
    let response = Request::patch(url(ctx, &format!("/orders/{}", percent_encode(id)))?)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()?;
    if response.status == 404 {
        return Err(Error::invalid_input(format!(
            "the warehouse has no order {id}"
        )));
    }
    Ok(response.error_for_status()?.json::<OrderBody>()?.order)
}

#[derive(Deserialize)]
pub(crate) struct GetOrder {
    order_id: Option<String>,
    #[serde(default = "default_channel")]
    channel: String,
    channel_order_id: Option<ChannelOrderId>,
}

pub(crate) fn get(ctx: &Context, input: GetOrder) -> Result<Value, Error> {
    let order = match (input.order_id, input.channel_order_id) {
        (Some(id), _) => fetch(ctx, id.trim())?,
        (None, Some(channel_id)) => {
            let found: Orders = Request::get(url(ctx, "/orders")?)
                .query("channel", &input.channel)
                .query("channel_order_id", &channel_id.text())
                .send()?
                .error_for_status()?
                .json()?;
            found.orders.into_iter().next()
        }
        (None, None) => {
            return Err(Error::invalid_input(
                "give `order_id` or `channel_order_id`",
            ));
        }
    };
    Ok(match order {
        Some(order) => json!({ "found": true, "order": order }),
        None => json!({ "found": false }),
    })
}

/// The order `id`, or `None` if the warehouse has none.
fn fetch(ctx: &Context, id: &str) -> Result<Option<Value>, Error> {
    let response = Request::get(url(ctx, &format!("/orders/{}", percent_encode(id)))?).send()?;
    if response.status == 404 {
        return Ok(None);
    }
    Ok(Some(
        response.error_for_status()?.json::<OrderBody>()?.order,
    ))
}
