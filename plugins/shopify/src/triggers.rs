//! The triggers: `order-created` and `order-changed` by webhook,
//! `order-updated` by polling.

use serde::Deserialize;
use switchyard_sdk::cursor::Watermark;
use switchyard_sdk::http::Request;
use switchyard_sdk::webhooks::Scheme;
use switchyard_sdk::{
    Context, Error, Event, PollResult, Value, WebhookOutcome, WebhookRequest, json, log,
};

use crate::actions::Orders;
use crate::api::{self, Shop};

/// The Shopify topic behind a webhook trigger.
pub(crate) fn topic(trigger: &str) -> Result<&'static str, Error> {
    match trigger {
        "order-created" => Ok("orders/create"),
        "order-changed" => Ok("orders/updated"),
        _ => Err(Error::unknown_trigger(trigger)),
    }
}

#[derive(Deserialize)]
struct WebhookBody {
    webhook: Webhook,
}

#[derive(Deserialize)]
struct Webhooks {
    webhooks: Vec<Webhook>,
}

#[derive(Deserialize)]
struct Webhook {
    id: u64,
    topic: String,
    address: String,
}

/// Registers `target_url` for `topic`; the state kept is the webhook's id.
/// Shopify refuses a second webhook for the same topic and address (422,
/// "has already been taken"): that happens when an activation is retried
/// after the first one registered it, so the existing webhook is adopted.
pub(crate) fn subscribe(ctx: &Context, topic: &str, target_url: &str) -> Result<String, Error> {
    let shop = Shop::new(ctx)?;
    let body = json!({ "webhook": { "topic": topic, "address": target_url, "format": "json" } });
    let response = Request::post(shop.url("/webhooks.json"))
        .json(&body)
        .send()?;
    if response.status == 422 && api::errors_text(&response).contains("already been taken") {
        let existing: Webhooks = api::send_json(
            Request::get(shop.url("/webhooks.json"))
                .query("topic", topic)
                .query("address", target_url),
        )?;
        let found = existing
            .webhooks
            .into_iter()
            .find(|w| w.topic == topic && w.address == target_url)
            .ok_or_else(|| {
                Error::permanent(format!(
                    "Shopify says a {topic} webhook for {target_url} exists but does not list it"
                ))
            })?;
        log::info!("adopted the existing {topic} webhook {}", found.id);
        return Ok(found.id.to_string());
    }
    let created: WebhookBody = api::check(response)?.json()?;
    log::info!("registered {topic} webhook {}", created.webhook.id);
    Ok(created.webhook.id.to_string())
}

/// Deletes the webhook `state` names; one that is already gone is fine.
pub(crate) fn unsubscribe(ctx: &Context, state: &str) -> Result<(), Error> {
    let id: u64 = state.trim().parse().map_err(|_| {
        Error::invalid_input(format!("subscription state `{state}` is not a webhook id"))
    })?;
    let shop = Shop::new(ctx)?;
    let response = Request::delete(shop.url(&format!("/webhooks/{id}.json"))).send()?;
    if response.status == 404 {
        log::info!("webhook {id} was already deleted");
        return Ok(());
    }
    api::check(response)?;
    Ok(())
}

/// Verifies a delivery (by the host, with the secret `webhook_secret`) and
/// turns it into one event whose payload is the order. Shopify retries a
/// delivery with the same `X-Shopify-Event-Id` (older API versions only send
/// `X-Shopify-Webhook-Id`), so that is the event id the host drops repeats by.
pub(crate) fn handle_delivery(
    topic: &str,
    request: &WebhookRequest,
) -> Result<WebhookOutcome, Error> {
    request.verify(&Scheme::Shopify, "webhook_secret")?;
    if let Some(sent) = request.header("X-Shopify-Topic")
        && sent != topic
    {
        log::warn!("ignored a {sent} delivery sent to the {topic} trigger");
        return Ok(WebhookOutcome::new(Vec::new()));
    }
    let order: Value = request.json()?;
    let order_id = order.get("id").and_then(Value::as_u64).ok_or_else(|| {
        Error::invalid_input("the delivery is not an order: it has no numeric id")
    })?;
    let id = request
        .header("X-Shopify-Event-Id")
        .or_else(|| request.header("X-Shopify-Webhook-Id"))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{topic}:{order_id}"));
    Ok(WebhookOutcome::new(vec![Event::new(id, order)]))
}

#[derive(Deserialize)]
pub(crate) struct PollParams {
    #[serde(default)]
    include_existing: bool,
    #[serde(default = "default_page_size")]
    page_size: u32,
    #[serde(default = "default_max_pages")]
    max_pages: u32,
}

/// Requests one poll may make, pages of old orders included.
const MAX_REQUESTS: u32 = 50;

fn default_page_size() -> u32 {
    50
}

fn default_max_pages() -> u32 {
    10
}

/// Orders changed since the cursor, oldest first, at most `max_pages` pages.
///
/// The first poll starts from now (a flow does not get the shop's history)
/// unless `include_existing`. Orders are asked for in `updated_at` order, so
/// stopping after some pages loses nothing: the cursor is the newest change
/// returned (and the ids changed at that instant, since `updated_at_min` is
/// inclusive). If a later page fails with something worth retrying, the
/// pages already read are returned and the next poll goes on from there.
pub(crate) fn poll_orders(
    ctx: &Context,
    params: PollParams,
    cursor: Option<&str>,
) -> Result<PollResult, Error> {
    let mut mark = match cursor {
        Some(cursor) => Watermark::parse(cursor)?,
        None if params.include_existing => Watermark::beginning(),
        None => {
            let start = Watermark::now();
            log::info!("order-updated starts from {}", start.since().unwrap_or(""));
            return Ok(PollResult::new(Vec::new(), start.to_cursor()));
        }
    };
    let shop = Shop::new(ctx)?;
    let mut first = Request::get(shop.url("/orders.json"))
        .query("status", "any")
        .query("order", "updated_at asc")
        .query("limit", &params.page_size.clamp(1, 250).to_string());
    if let Some(since) = mark.since() {
        first = first.query("updated_at_min", since);
    }
    let mut next = Some(first.url);
    let mut events = Vec::new();
    let (mut pages, mut requests) = (0, 0);
    while let Some(url) = next.take() {
        if pages == params.max_pages.max(1) || requests == MAX_REQUESTS {
            log::info!("order-updated: read {requests} pages; the next poll goes on");
            break;
        }
        requests += 1;
        // The page URL is Shopify's own `Link`, followed exactly: adding
        // filters to a `page_info` request is refused.
        let response = match api::send(Request::get(url)) {
            Ok(response) => response,
            Err(e) if e.is_retryable() && !events.is_empty() => {
                log::warn!("order-updated: stopped after {} events: {e}", events.len());
                break;
            }
            Err(e) => return Err(e),
        };
        next = api::next_link(response.header("Link"));
        let mut news = false;
        for order in response.json::<Orders>()?.orders {
            let (Some(id), Some(updated_at)) = (
                order.get("id").and_then(Value::as_u64),
                order.get("updated_at").and_then(Value::as_str),
            ) else {
                return Err(Error::permanent(
                    "Shopify sent an order without id or updated_at",
                ));
            };
            let updated_at = updated_at.to_owned();
            if mark.advance(&id.to_string(), &updated_at)? {
                news = true;
                events.push(Event::new(format!("{id}:{updated_at}"), order));
            }
        }
        // A page of orders seen before (many changed in the same second as
        // the cursor) does not count, or such a second could never be passed.
        if news {
            pages += 1;
        }
    }
    log::debug!(
        "order-updated: {} events from {requests} pages",
        events.len()
    );
    Ok(PollResult::new(events, mark.to_cursor()))
}
