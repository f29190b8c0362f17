/**
 * @file The Switchyard SDK for JavaScript: small helpers over the
 * componentize-js bindings of the connector world
 * (`switchyard:connector@0.1.0`; this package's version is the contract's).
 *
 * Plain JavaScript, no dependencies: HTTP through the host's `http.send`, the
 * connector-error kinds, JSON helpers and manifest builders; the JavaScript
 * counterpart of the Rust SDK's `Request`, `Response` and `Error`.
 * componentize-js reads a connector's files as they are and resolves only
 * relative imports (other specifiers are WIT imports): a connector's build
 * copies this module next to its sources (see `build.mjs` in the templates).
 *
 * WIT values in JavaScript (componentize-js / jco conventions): records are
 * objects with camelCase fields, variants `{ tag, val }`, enums strings,
 * `option` is `undefined` or the value, `list<u8>` a `Uint8Array`, `u64` a
 * `BigInt`. An export returns its `ok` value and throws for `err`: a thrown
 * object's `payload` is the error value.
 */

import { send as hostSend } from 'switchyard:connector/http@0.1.0';
import { log as hostLog } from 'switchyard:connector/log@0.1.0';
import { verify } from 'switchyard:connector/webhooks@0.1.0';

/** Retry-After the API did not state; the host still backs off on top. */
export const DEFAULT_RETRY_AFTER_MS = 1000;
/** How much of an error body goes into an error message. */
const BODY_SNIPPET_CHARS = 300;

// -- errors -------------------------------------------------------------------

/** A `connector-error` to throw from an export. */
export class ConnectorError extends Error {
  constructor(tag, val) {
    super(typeof val === 'string' ? val : val.message);
    /** The `connector-error` value the bindings return as `err`. */
    this.payload = { tag, val };
  }
}

/** Retry with backoff (timeouts, 5xx, dropped connections). */
export const transient = (message) => new ConnectorError('transient', message);
/** Retry after `retryAfterMs` (a 429 with Retry-After). */
export const rateLimited = (retryAfterMs, message) =>
  new ConnectorError('rate-limited', { retryAfterMs: BigInt(retryAfterMs), message });
/** The credentials are wrong or expired: the host pauses the connection. */
export const auth = (message) => new ConnectorError('auth', message);
/** The input cannot work; retrying will not help. */
export const invalidInput = (message) => new ConnectorError('invalid-input', message);
/** Any other failure that retrying will not fix. */
export const permanent = (message) => new ConnectorError('permanent', message);

// -- context ------------------------------------------------------------------

/** The connection's non-secret properties (secrets never reach the guest). */
export function properties(ctx) {
  return ctx.connection ? JSON.parse(ctx.connection.properties) : {};
}

export function stringProperty(ctx, key) {
  if (!ctx.connection) {
    throw invalidInput(`this call needs a connection (for the property \`${key}\`)`);
  }
  const value = properties(ctx)[key];
  if (typeof value !== 'string' || value === '') {
    throw invalidInput(`the connection has no text property \`${key}\``);
  }
  return value;
}

export function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw invalidInput(`${what} is not JSON: ${e.message}`);
  }
}

// -- HTTP -----------------------------------------------------------------------

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A response of `send`, with the usual status-to-error mapping. */
export class Response {
  constructor(method, url, raw) {
    this.method = method;
    this.url = url;
    this.status = raw.status;
    this.headers = raw.headers;
    this.body = raw.body;
  }

  header(name) {
    const wanted = name.toLowerCase();
    const found = this.headers.find((h) => h.name.toLowerCase() === wanted);
    return found ? found.value : undefined;
  }

  text() {
    return decoder.decode(this.body);
  }

  json() {
    try {
      return JSON.parse(this.text());
    } catch (e) {
      throw permanent(`${this.method} ${this.url} returned a body that is not JSON: ${e.message}`);
    }
  }

  /**
   * Throws the connector error for a status of 400 or more: 429 ->
   * rate-limited (Retry-After in seconds or as an HTTP date), 401/403 ->
   * auth, 408 and 5xx -> transient, other 4xx -> invalid-input.
   */
  errorForStatus() {
    const status = this.status;
    if (status < 400) {
      return this;
    }
    let text = this.text().trim();
    if (text.length > BODY_SNIPPET_CHARS) {
      text = `${text.slice(0, BODY_SNIPPET_CHARS)}...`;
    }
    const message = `${this.method} ${this.url} returned ${status}${text ? `: ${text}` : ''}`;
    if (status === 429) {
      throw rateLimited(retryAfterMs(this.header('retry-after')), message);
    }
    if (status === 401 || status === 403) {
      throw auth(message);
    }
    if (status === 408 || status >= 500) {
      throw transient(message);
    }
    throw invalidInput(message);
  }
}

/** Milliseconds to wait for a Retry-After value: delay-seconds or an HTTP date. */
export function retryAfterMs(value, now = Date.now()) {
  if (value === undefined) {
    return DEFAULT_RETRY_AFTER_MS;
  }
  const trimmed = value.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) {
    return Math.round(Number(trimmed) * 1000);
  }
  const when = Date.parse(trimmed);
  return Number.isNaN(when) ? DEFAULT_RETRY_AFTER_MS : Math.max(0, when - now);
}

/** `url` with `query` pairs appended, percent-encoded. */
export function withQuery(url, query) {
  const pairs = Object.entries(query)
    .filter(([, v]) => v !== undefined && v !== null)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`);
  if (pairs.length === 0) {
    return url;
  }
  return `${url}${url.includes('?') ? '&' : '?'}${pairs.join('&')}`;
}

/**
 * Sends one request through the host's sandbox. Sandbox refusals and
 * too-large bodies are permanent, timeouts and broken connections transient,
 * malformed requests invalid input.
 */
export function send(method, url, { headers = {}, json, timeoutMs } = {}) {
  const all = Object.entries(headers).map(([name, value]) => ({ name, value: String(value) }));
  let body = new Uint8Array();
  if (json !== undefined) {
    body = encoder.encode(JSON.stringify(json));
    all.push({ name: 'content-type', value: 'application/json' });
  }
  all.push({ name: 'accept', value: 'application/json' });
  let raw;
  try {
    raw = hostSend({ method, url, headers: all, body, timeoutMs });
  } catch (e) {
    const error = e.payload;
    if (!error) {
      throw e;
    }
    const where = `${method} ${url}`;
    switch (error.tag) {
      case 'denied':
        throw permanent(`${where}: request denied: ${error.val}`);
      case 'timeout':
        throw transient(`${where}: request timed out: ${error.val}`);
      case 'too-large':
        throw permanent(`${where}: too large: ${error.val}`);
      case 'connection':
        throw transient(`${where}: connection failed: ${error.val}`);
      default:
        throw invalidInput(`${where}: invalid request: ${error.val}`);
    }
  }
  return new Response(method, url, raw);
}

// -- webhooks -------------------------------------------------------------------

export function headerOf(headers, name) {
  const wanted = name.toLowerCase();
  const found = headers.find((h) => h.name.toLowerCase() === wanted);
  return found ? found.value : undefined;
}

export function bodyText(request) {
  return decoder.decode(request.body);
}

/**
 * Has the host check an HMAC-SHA256 signature of the body in `header`, with
 * the connection's secret property `secretProperty` (the host holds it, this
 * code names it). A bad signature is invalid input.
 */
export function verifyHmacSha256(request, secretProperty, header, encoding, prefix = '') {
  try {
    verify(
      { tag: 'hmac-sha256', val: { header, encoding, prefix } },
      secretProperty,
      request.headers,
      request.body,
    );
  } catch (e) {
    throw invalidInput(`webhook signature rejected: ${e.payload ?? e.message}`);
  }
}

// -- logging --------------------------------------------------------------------

export const debug = (message) => hostLog('debug', message);
export const info = (message) => hostLog('info', message);

// -- manifest builders ------------------------------------------------------------

export const schema = (value) => JSON.stringify(value);

export function prop(key, label, description, valueSchema, { required = false, secret = false } = {}) {
  return { key, label, description, required, secret, schema: schema(valueSchema) };
}

export function pollingTrigger(key, name, description, params, event, pollIntervalSecs) {
  return {
    key,
    name,
    description,
    kind: 'polling',
    paramsSchema: schema(params),
    eventSchema: schema(event),
    pollIntervalSecs,
  };
}

export function webhookTrigger(key, name, description, params, event) {
  return {
    key,
    name,
    description,
    kind: 'webhook',
    paramsSchema: schema(params),
    eventSchema: schema(event),
    pollIntervalSecs: undefined,
  };
}

export function action(key, name, description, kind, inputSchema, outputSchema) {
  return { key, name, description, kind, inputSchema: schema(inputSchema), outputSchema: schema(outputSchema) };
}

export function event(id, payload) {
  return { id, payload: JSON.stringify(payload) };
}
