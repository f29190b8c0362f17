/**
 * @file WooCommerce orders connector, written in JavaScript.
 *
 * Built into a WebAssembly component with componentize-js against
 * `wit/connector@0.1.0` (world `connector`); see README.md. It talks to the
 * WooCommerce REST API v3 of the store at the connection's `base_url`:
 *
 * | call                            | request                                                  |
 * | ------------------------------- | -------------------------------------------------------- |
 * | test-connection                 | `GET /wp-json/wc/v3/orders?per_page=1`                   |
 * | action `get-order`              | `GET /orders/{id}` (404: not found) or `GET /orders?search=` |
 * | action `update-order-status`    | `PUT /orders/{id}` with `{"status": ...}`               |
 * | action `add-order-note`         | `POST /orders/{id}/notes`                                |
 * | polling trigger `order-updated` | `GET /orders?modified_after={cursor}&page=&per_page=`, pages from `X-WP-TotalPages` |
 * | webhook trigger `order-created` | deliveries signed with `X-WC-Webhook-Signature` (base64 HMAC-SHA256 of the body) |
 *
 * The host sends the consumer key and secret as HTTP Basic credentials and
 * checks webhook signatures with the secret `webhook_secret`: this code never
 * sees any of them.
 */

import * as kit from '@switchyard/sdk';

const VERSION = '0.1.0';
const API = '/wp-json/wc/v3';

/** Orders per page of the poll, and pages one poll reads at most. */
const PER_PAGE = 50;
const MAX_PAGES = 10;

/** Where the first poll starts when the store has no orders yet. */
const EPOCH = '1970-01-01T00:00:00';

const STATUSES = ['pending', 'processing', 'on-hold', 'completed', 'cancelled', 'refunded', 'failed'];

const ORDER_SCHEMA = {
  type: 'object',
  required: ['id', 'status'],
  properties: {
    id: { type: 'integer' },
    number: { type: 'string' },
    status: { type: 'string' },
    currency: { type: 'string' },
    total: { type: 'string' },
    date_created_gmt: { type: 'string' },
    date_modified_gmt: { type: 'string' },
    billing: { type: 'object' },
    shipping: { type: 'object' },
    line_items: { type: 'array' },
  },
  additionalProperties: true,
};

const ORDER_ID = { type: 'integer', minimum: 1, description: 'The order id' };

/** WooCommerce's own statuses, or a custom one (`delivered` from a plugin). */
const STATUS = { type: 'string', pattern: '^[a-z0-9-]+$', description: `${STATUSES.join(', ')} or a custom status` };

const STATUS_FILTER = {
  type: 'object',
  properties: {
    statuses: { type: 'array', items: STATUS, description: 'Only orders in these statuses; all when absent' },
  },
  additionalProperties: false,
};

function describe() {
  return {
    key: 'woocommerce',
    name: 'WooCommerce',
    description: 'Watches, reads and updates the orders of a WooCommerce store. Written in JavaScript.',
    version: VERSION,
    auth: { tag: 'basic' },
    connectionProperties: [
      kit.prop('base_url', 'Store URL', 'The WordPress site, for example https://shop.example.com', {
        type: 'string',
        format: 'uri',
      }, { required: true }),
      kit.prop('username', 'Consumer key', 'REST API consumer key (ck_...), sent by the host as the Basic user', {
        type: 'string',
        minLength: 1,
      }, { required: true, secret: true }),
      kit.prop('password', 'Consumer secret', 'REST API consumer secret (cs_...), sent by the host as the Basic password', {
        type: 'string',
        minLength: 1,
      }, { required: true, secret: true }),
      kit.prop('webhook_secret', 'Webhook secret', 'The secret set on the store\'s order.created webhook', {
        type: 'string',
        minLength: 1,
      }, { secret: true }),
    ],
    allowedHosts: ['{base_url}'],
    rateLimit: { requests: 10, periodMs: 1000, burst: 10 },
    triggers: [
      kit.pollingTrigger(
        'order-updated',
        'Order updated',
        'Orders created or changed since the last poll, oldest first',
        STATUS_FILTER,
        ORDER_SCHEMA,
        300,
      ),
      kit.webhookTrigger(
        'order-created',
        'Order created',
        'The store\'s order.created webhook (register the flow\'s URL in WooCommerce > Settings > Advanced > Webhooks)',
        { type: 'object', properties: {}, additionalProperties: false },
        ORDER_SCHEMA,
      ),
    ],
    actions: [
      kit.action(
        'get-order',
        'Find order',
        'By id, or the first order a search matches; `found` is false when there is none',
        'search',
        {
          type: 'object',
          properties: { id: ORDER_ID, search: { type: 'string', minLength: 1 } },
          anyOf: [{ required: ['id'] }, { required: ['search'] }],
          additionalProperties: false,
        },
        {
          type: 'object',
          required: ['found'],
          properties: { found: { type: 'boolean' }, order: ORDER_SCHEMA },
        },
      ),
      kit.action(
        'update-order-status',
        'Update order status',
        'Sets an order\'s status (PUT, so a retried step changes nothing more)',
        'update',
        {
          type: 'object',
          required: ['id', 'status'],
          properties: { id: ORDER_ID, status: STATUS },
          additionalProperties: false,
        },
        ORDER_SCHEMA,
      ),
      kit.action(
        'add-order-note',
        'Add order note',
        'Adds a private note, or one the customer sees',
        'create',
        {
          type: 'object',
          required: ['id', 'note'],
          properties: {
            id: ORDER_ID,
            note: { type: 'string', minLength: 1 },
            customer_note: { type: 'boolean', default: false },
          },
          additionalProperties: false,
        },
        {
          type: 'object',
          required: ['id', 'note'],
          properties: {
            id: { type: 'integer' },
            note: { type: 'string' },
            customer_note: { type: 'boolean' },
            date_created_gmt: { type: 'string' },
          },
        },
      ),
    ],
  };
}

function url(ctx, path) {
  return `${kit.stringProperty(ctx, 'base_url').replace(/\/+$/, '')}${API}${path}`;
}

function testConnection(ctx) {
  kit.send('GET', kit.withQuery(url(ctx, '/orders'), { per_page: 1 })).errorForStatus();
}

function perform(ctx, action, input, idempotencyKey) {
  const data = kit.parseJson(input, 'the input');
  // WooCommerce ignores the header; it is there for proxies and logs that
  // can use it, and lets a test tell a retried step from a new one.
  const headers = { 'Idempotency-Key': idempotencyKey };
  switch (action) {
    case 'get-order':
      return JSON.stringify(getOrder(ctx, data));
    case 'update-order-status': {
      const response = kit.send('PUT', url(ctx, `/orders/${data.id}`), { headers, json: { status: data.status } });
      return JSON.stringify(orderOrInvalid(response, data.id));
    }
    case 'add-order-note': {
      const response = kit.send('POST', url(ctx, `/orders/${data.id}/notes`), {
        headers,
        json: { note: data.note, customer_note: data.customer_note === true },
      });
      return JSON.stringify(orderOrInvalid(response, data.id));
    }
    default:
      throw kit.invalidInput(`unknown action \`${action}\``);
  }
}

function getOrder(ctx, data) {
  if (data.id !== undefined) {
    const response = kit.send('GET', url(ctx, `/orders/${data.id}`));
    if (response.status === 404) {
      return { found: false };
    }
    return { found: true, order: response.errorForStatus().json() };
  }
  const orders = kit
    .send('GET', kit.withQuery(url(ctx, '/orders'), { search: data.search, per_page: 1 }))
    .errorForStatus()
    .json();
  return orders.length > 0 ? { found: true, order: orders[0] } : { found: false };
}

/** The body of a response about order `id`; a 404 means the input names no order. */
function orderOrInvalid(response, id) {
  if (response.status === 404) {
    throw kit.invalidInput(`the store has no order ${id}`);
  }
  return response.errorForStatus().json();
}

function poll(ctx, trigger, params, cursor) {
  if (trigger !== 'order-updated') {
    throw kit.invalidInput(`unknown trigger \`${trigger}\``);
  }
  const wanted = statuses(params);
  const orders = url(ctx, '/orders');
  if (cursor === undefined) {
    // The first poll only remembers where "now" is, so that a new flow does
    // not replay the store's whole history.
    const newest = fetchPage(kit.withQuery(orders, { orderby: 'modified', order: 'desc', per_page: 1, dates_are_gmt: true }));
    const start = newest.orders.length > 0 ? newest.orders[0].date_modified_gmt : EPOCH;
    kit.debug(`order-updated: starting after ${start}`);
    return { events: [], cursor: start };
  }

  let records = [];
  let page = 1;
  for (;;) {
    const result = fetchPage(
      kit.withQuery(orders, {
        modified_after: cursor,
        dates_are_gmt: true,
        orderby: 'modified',
        order: 'asc',
        page,
        per_page: PER_PAGE,
      }),
    );
    records = records.concat(result.orders);
    if (page >= result.totalPages) {
      break;
    }
    if (page >= MAX_PAGES) {
      // More to come: stop before the last timestamp, whose orders may go on
      // in the next page, so the next poll starts cleanly.
      const last = records[records.length - 1].date_modified_gmt;
      const kept = records.filter((o) => o.date_modified_gmt !== last);
      if (kept.length > 0) {
        records = kept;
      }
      break;
    }
    page += 1;
  }

  kit.debug(`order-updated: ${records.length} changes after ${cursor} in ${page} page(s)`);
  if (records.length === 0) {
    return { events: [], cursor: undefined };
  }
  const events = records
    .filter((o) => wanted === undefined || wanted.has(o.status))
    // One event per change: the same change polled twice has one id.
    .map((o) => kit.event(`${o.id}:${o.date_modified_gmt}`, o));
  return { events, cursor: records[records.length - 1].date_modified_gmt };
}

function fetchPage(pageUrl) {
  const response = kit.send('GET', pageUrl).errorForStatus();
  const orders = response.json();
  if (!Array.isArray(orders) || orders.some((o) => typeof o !== 'object' || !o.id || !o.date_modified_gmt)) {
    throw kit.permanent('GET /orders returned something other than orders with `id` and `date_modified_gmt`');
  }
  const totalPages = Number.parseInt(response.header('x-wp-totalpages') ?? '1', 10);
  return { orders, totalPages: Number.isNaN(totalPages) ? 1 : totalPages };
}

function statuses(params) {
  const value = kit.parseJson(params || '{}', "the trigger's params");
  return Array.isArray(value.statuses) && value.statuses.length > 0 ? new Set(value.statuses) : undefined;
}

/**
 * WooCommerce's API can create webhooks, but it would then pick the signing
 * secret and show it to this code. So the store owner adds the webhook (topic
 * "Order created", the flow's URL, the connection's webhook secret) in the
 * store's settings, and there is nothing to register or keep.
 */
function subscribe(_ctx, trigger, _params, targetUrl) {
  if (trigger !== 'order-created') {
    throw kit.invalidInput(`unknown trigger \`${trigger}\``);
  }
  kit.info(`order-created: add a webhook for "Order created" delivering to ${targetUrl} in WooCommerce > Settings > Advanced > Webhooks, with the connection's webhook secret`);
  return '';
}

function unsubscribe(_ctx, trigger) {
  if (trigger !== 'order-created') {
    throw kit.invalidInput(`unknown trigger \`${trigger}\``);
  }
}

function handleWebhook(_ctx, trigger, _params, request) {
  if (trigger !== 'order-created') {
    throw kit.invalidInput(`unknown trigger \`${trigger}\``);
  }
  const text = kit.bodyText(request);
  const topic = kit.headerOf(request.headers, 'X-WC-Webhook-Topic');
  // Saving a webhook in WooCommerce sends a form-encoded `webhook_id=N` ping:
  // acknowledge it, it carries no order.
  if (topic === undefined && /^webhook_id=\d+$/.test(text.trim())) {
    kit.info(`order-created: webhook ping (${text.trim()})`);
    return { events: [], response: undefined };
  }
  kit.verifyHmacSha256(request, 'webhook_secret', 'X-WC-Webhook-Signature', 'base64');
  if (topic !== 'order.created') {
    kit.info(`order-created: ignoring a delivery of topic ${topic}`);
    return { events: [], response: undefined };
  }
  const order = kit.parseJson(text, 'the delivery');
  if (typeof order !== 'object' || order === null || !Number.isInteger(order.id)) {
    throw kit.invalidInput('an order.created delivery must be an order with an integer `id`');
  }
  // WooCommerce retries a delivery with the same id; the host drops repeats.
  const id = kit.headerOf(request.headers, 'X-WC-Webhook-Delivery-ID') ?? `${order.id}:created`;
  return { events: [kit.event(id, order)], response: undefined };
}

/** The exported `plugin` interface of the connector world. */
export const plugin = {
  describe,
  testConnection,
  perform,
  poll,
  subscribe,
  unsubscribe,
  handleWebhook,
};
