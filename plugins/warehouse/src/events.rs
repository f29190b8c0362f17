//! The triggers: shipment status and stock changes by webhook, shipment updates by polling.

use serde::Deserialize;
use switchyard_sdk::cursor::Watermark;
use switchyard_sdk::http::{Request, percent_encode};
use switchyard_sdk::webhooks::Scheme;
use switchyard_sdk::{
    Context, Error, Event, PollResult, Value, WebhookOutcome, WebhookRequest, json, log,
};

use crate::url;

/// The warehouse's event type behind a webhook trigger.
pub(crate) fn event_type(trigger: &str) -> Result<&'static str, Error> {
    match trigger {
        "shipment-status" => Ok("shipment.status_changed"),
        "stock-changed" => Ok("stock.changed"),
        _ => Err(Error::unknown_trigger(trigger)),
    }
}

#[derive(Deserialize)]
struct EndpointBody {
    webhook: Endpoint,
}

#[derive(Deserialize)]
struct Endpoint {
    id: String,
}

/// Registers `target_url` for one event type; the state kept is the
/// endpoint's id. The warehouse answers a registration it already has with
/// that endpoint, so a retried activation does not register twice.
pub(crate) fn subscribe(
    ctx: &Context,
    event_type: &str,
    target_url: &str,
) -> Result<String, Error> {
    let created: EndpointBody = Request::post(url(ctx, "/webhooks")?)
        .json(&json!({ "url": target_url, "events": [event_type] }))
        .send()?
        .error_for_status()?
        .json()?;
    log::info!("registered {event_type} endpoint {}", created.webhook.id);
    Ok(created.webhook.id)
}

/// Deletes the endpoint `state` names; one already gone is fine.
pub(crate) fn unsubscribe(ctx: &Context, state: &str) -> Result<(), Error> {
    if state.trim().is_empty() {
        return Err(Error::invalid_input("empty subscription state"));
    }
    let response = Request::delete(url(
        ctx,
        &format!("/webhooks/{}", percent_encode(state.trim())),
    )?)
    .send()?;
    if response.status == 404 {
        log::info!("endpoint {state} was already deleted");
        return Ok(());
    }
    response.error_for_status()?;
    Ok(())
}

#[derive(Deserialize, Default)]
pub(crate) struct Filter {
    /// Shipment statuses that make events; all when absent.
    statuses: Option<Vec<String>>,
}

impl Filter {
    fn wants(&self, payload: &Value) -> bool {
        match (
            &self.statuses,
            payload.get("status").and_then(Value::as_str),
        ) {
            (None, _) => true,
            (Some(statuses), Some(status)) => statuses.iter().any(|s| s == status),
            (Some(_), None) => false,
        }
    }
}

/// A delivery: `{"type": "shipment.status_changed", "timestamp": "...", "data": {...}}`.
#[derive(Deserialize)]
struct Delivery {
    #[serde(rename = "type")]
    kind: String,
    data: Value,
}

/// Verifies a delivery (by the host: Standard Webhooks, five minutes
/// tolerance, with the secret `webhook_secret`) and turns it into at most one
/// event whose payload is the delivery's `data`. The event id is `webhook-id`,
/// which stays the same when the warehouse retries a delivery.
pub(crate) fn handle_delivery(
    event_type: &str,
    filter: Filter,
    request: &WebhookRequest,
) -> Result<WebhookOutcome, Error> {
    request.verify(&Scheme::StandardWebhooks, "webhook_secret")?;
    let delivery: Delivery = request.json()?;
    if delivery.kind != event_type {
        log::warn!(
            "ignored a {} delivery sent to the {event_type} trigger",
            delivery.kind
        );
        return Ok(WebhookOutcome::new(Vec::new()));
    }
    if !delivery.data.is_object() {
        return Err(Error::invalid_input("the delivery's data is not an object"));
    }
    if !filter.wants(&delivery.data) {
        return Ok(WebhookOutcome::new(Vec::new()));
    }
    // The host checked that the header is there; it is what was signed.
    let id = request
        .header("webhook-id")
        .ok_or_else(|| Error::invalid_input("missing webhook-id"))?;
    Ok(WebhookOutcome::new(vec![Event::new(id, delivery.data)]))
}

#[derive(Deserialize)]
pub(crate) struct PollParams {
    #[serde(flatten)]
    filter: Filter,
    #[serde(default)]
    include_existing: bool,
    #[serde(default = "default_page_size")]
    page_size: u32,
    #[serde(default = "default_max_pages")]
    max_pages: u32,
}

/// Requests one poll may make, pages of old shipments included.
const MAX_REQUESTS: u32 = 50;

fn default_page_size() -> u32 {
    50
}

fn default_max_pages() -> u32 {
    10
}

#[derive(Deserialize)]
struct Shipments {
    shipments: Vec<Value>,
    next_cursor: Option<String>,
}

/// Shipments changed since the cursor, oldest first (the API sorts by
/// `updated_at`), at most `max_pages` pages. The first poll starts from now
/// unless `include_existing`. Shipments the status filter leaves out still
/// move the cursor on.
pub(crate) fn poll_shipments(
    ctx: &Context,
    params: PollParams,
    cursor: Option<&str>,
) -> Result<PollResult, Error> {
    let mut mark = match cursor {
        Some(cursor) => Watermark::parse(cursor)?,
        None if params.include_existing => Watermark::beginning(),
        None => return Ok(PollResult::new(Vec::new(), Watermark::now().to_cursor())),
    };
    let mut first = Request::get(url(ctx, "/shipments")?)
        .query("limit", &params.page_size.clamp(1, 100).to_string());
    if let Some(since) = mark.since() {
        first = first.query("updated_since", since);
    }
    let mut events = Vec::new();
    let mut page_cursor: Option<String> = None;
    let (mut pages, mut requests) = (0, 0);
    loop {
        if pages == params.max_pages.max(1) || requests == MAX_REQUESTS {
            log::info!("shipment-updates: read {requests} pages; the next poll goes on");
            break;
        }
        let request = match &page_cursor {
            Some(c) => first.clone().query("cursor", c),
            None if requests == 0 => first.clone(),
            None => break,
        };
        requests += 1;
        let page: Shipments = match request.send().and_then(|r| r.error_for_status()) {
            Ok(response) => response.json()?,
            Err(e) if e.is_retryable() && !events.is_empty() => {
                log::warn!(
                    "shipment-updates: stopped after {} events: {e}",
                    events.len()
                );
                break;
            }
            Err(e) => return Err(e),
        };
        let mut news = false;
        for shipment in page.shipments {
            let (Some(id), Some(updated_at)) = (
                shipment.get("id").and_then(Value::as_str),
                shipment.get("updated_at").and_then(Value::as_str),
            ) else {
                return Err(Error::permanent(
                    "the warehouse sent a shipment without id or updated_at",
                ));
            };
            let event_id = format!("{id}:{updated_at}");
            if mark.advance(id, updated_at)? {
                news = true;
                if params.filter.wants(&shipment) {
                    events.push(Event::new(event_id, shipment));
                }
            }
        }
        // Pages of shipments seen before do not count (see the Shopify
        // connector: a busy second at the cursor must be passable).
        if news {
            pages += 1;
        }
        page_cursor = page.next_cursor.filter(|c| !c.is_empty());
    }
    Ok(PollResult::new(events, mark.to_cursor()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_filter() {
        let all = Filter::default();
        let delivered = Filter {
            statuses: Some(vec!["delivered".into()]),
        };
        assert!(all.wants(&json!({ "status": "packed" })));
        assert!(all.wants(&json!({})));
        assert!(delivered.wants(&json!({ "status": "delivered" })));
        assert!(!delivered.wants(&json!({ "status": "packed" })));
        assert!(!delivered.wants(&json!({})));
    }
}
