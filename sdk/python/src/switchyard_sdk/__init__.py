"""The Switchyard SDK for Python: small helpers over the componentize-py
bindings of the connector world (`switchyard:connector@0.1.0`; this package's
version is the contract's).

Plain Python, no dependencies: HTTP through the host's `http.send`, the
connector-error kinds as exceptions, JSON helpers and manifest builders; the
Python counterpart of the Rust SDK's `Request`, `Response` and `Error`.
componentize-py generates `wit_world` and `componentize_py_types` when it
builds a connector; `import switchyard_sdk` works inside that build (the
package's folder on its `-p` path or installed in its environment).

The host adds credentials to every request and checks webhook signatures with
secrets this code never sees.
"""

import json
from email.utils import parsedate_to_datetime
import time
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import quote, urlencode

from componentize_py_types import Err
from wit_world.imports import http, log as wit_log, manifest as m, types, webhooks

# Retry-After the API did not state; the host still backs off on top.
DEFAULT_RETRY_AFTER_MS = 1000
# How much of an error body goes into an error message.
BODY_SNIPPET_CHARS = 300


# -- errors -------------------------------------------------------------------
#
# Raising one of these from an export returns the matching `connector-error`
# variant: componentize-py turns `raise Err(value)` into `result::err(value)`.


def transient(message: str) -> Err:
    """Retry with backoff (timeouts, 5xx, dropped connections)."""
    return Err(types.ConnectorError_Transient(message))


def rate_limited(retry_after_ms: int, message: str) -> Err:
    """Retry after `retry_after_ms` (a 429 with Retry-After)."""
    return Err(types.ConnectorError_RateLimited(types.RateLimited(retry_after_ms, message)))


def auth(message: str) -> Err:
    """The credentials are wrong or expired: the host pauses the connection."""
    return Err(types.ConnectorError_Auth(message))


def invalid_input(message: str) -> Err:
    """The input cannot work; retrying will not help."""
    return Err(types.ConnectorError_InvalidInput(message))


def permanent(message: str) -> Err:
    """Any other failure that retrying will not fix."""
    return Err(types.ConnectorError_Permanent(message))


# -- context --------------------------------------------------------------------


def properties(ctx: types.Context) -> Dict[str, Any]:
    """The connection's non-secret properties (secrets never reach the guest)."""
    if ctx.connection is None:
        return {}
    return json.loads(ctx.connection.properties)


def string_property(ctx: types.Context, key: str) -> str:
    if ctx.connection is None:
        raise invalid_input(f"this call needs a connection (for the property `{key}`)")
    value = properties(ctx).get(key)
    if not isinstance(value, str) or not value:
        raise invalid_input(f"the connection has no text property `{key}`")
    return value


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise invalid_input(f"{what} is not JSON: {e}")


# -- HTTP -----------------------------------------------------------------------


class Response:
    """A response of `send`, with the usual status-to-error mapping."""

    def __init__(self, method: str, url: str, raw: http.Response):
        self.method = method
        self.url = url
        self.status = raw.status
        self.headers = [(h.name, h.value) for h in raw.headers]
        self.body = raw.body

    def header(self, name: str) -> Optional[str]:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise permanent(f"{self.method} {self.url} returned a body that is not JSON: {e}")

    def error_for_status(self) -> "Response":
        """Raises the connector error for a status of 400 or more.

        429 -> rate-limited (Retry-After in seconds or as an HTTP date),
        401/403 -> auth, 408 and 5xx -> transient, other 4xx -> invalid-input.
        """
        status = self.status
        if status < 400:
            return self
        text = self.text().strip()
        if len(text) > BODY_SNIPPET_CHARS:
            text = text[:BODY_SNIPPET_CHARS] + "..."
        message = f"{self.method} {self.url} returned {status}" + (f": {text}" if text else "")
        if status == 429:
            raise rate_limited(retry_after_ms(self.header("retry-after")), message)
        if status in (401, 403):
            raise auth(message)
        if status == 408 or status >= 500:
            raise transient(message)
        raise invalid_input(message)


def retry_after_ms(value: Optional[str], now: Optional[float] = None) -> int:
    """Milliseconds to wait for a Retry-After value: delay-seconds or an HTTP date."""
    if value is None:
        return DEFAULT_RETRY_AFTER_MS
    value = value.strip()
    try:
        return max(0, int(float(value) * 1000))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_MS
    now = time.time() if now is None else now
    return max(0, int((when - now) * 1000))


def send(
    method: str,
    url: str,
    query: Optional[List[Tuple[str, str]]] = None,
    headers: Optional[List[Tuple[str, str]]] = None,
    json_body: Any = None,
    timeout_ms: Optional[int] = None,
) -> Response:
    """Sends one request through the host's sandbox.

    Sandbox refusals and too-large bodies are permanent, timeouts and broken
    connections transient, malformed requests invalid input.
    """
    if query:
        url = url + ("&" if "?" in url else "?") + urlencode(query)
    all_headers = [types.Header(name, value) for name, value in (headers or [])]
    body = b""
    if json_body is not None:
        body = json.dumps(json_body).encode()
        all_headers.append(types.Header("content-type", "application/json"))
    all_headers.append(types.Header("accept", "application/json"))
    try:
        raw = http.send(http.Request(method, url, all_headers, body, timeout_ms))
    except Err as e:
        error = e.value
        where = f"{method} {url}"
        if isinstance(error, http.HttpError_Denied):
            raise permanent(f"{where}: request denied: {error.value}")
        if isinstance(error, http.HttpError_Timeout):
            raise transient(f"{where}: request timed out: {error.value}")
        if isinstance(error, http.HttpError_TooLarge):
            raise permanent(f"{where}: too large: {error.value}")
        if isinstance(error, http.HttpError_Connection):
            raise transient(f"{where}: connection failed: {error.value}")
        raise invalid_input(f"{where}: invalid request: {error.value}")
    return Response(method, url, raw)


def path_segment(value: str) -> str:
    """Percent-encodes one path segment (no `/` survives)."""
    return quote(value, safe="")


# -- webhooks -------------------------------------------------------------------


def header_of(request_headers: List[types.Header], name: str) -> Optional[str]:
    name = name.lower()
    for header in request_headers:
        if header.name.lower() == name:
            return header.value
    return None


def verify_hmac_sha256(
    headers: List[types.Header], body: bytes, secret_property: str, header: str, encoding: str, prefix: str = ""
) -> None:
    """Has the host check an HMAC-SHA256 signature of `body` in `header`.

    The secret is the connection's secret property `secret_property`: the host
    holds it, this code names it. A bad signature is invalid input.
    """
    scheme = webhooks.Scheme_HmacSha256(
        webhooks.GenericHmac(header, webhooks.Encoding.HEX if encoding == "hex" else webhooks.Encoding.BASE64, prefix)
    )
    try:
        webhooks.verify(scheme, secret_property, headers, body)
    except Err as e:
        raise invalid_input(f"webhook signature rejected: {e.value}")


# -- logging --------------------------------------------------------------------


def debug(message: str) -> None:
    wit_log.log(wit_log.Level.DEBUG, message)


def info(message: str) -> None:
    wit_log.log(wit_log.Level.INFO, message)


# -- manifest builders ------------------------------------------------------------


def schema(value: Dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def prop(key: str, label: str, description: str, value_schema: Dict[str, Any], required=False, secret=False):
    return m.Property(key, label, description, required, secret, schema(value_schema))


def polling_trigger(key, name, description, params, event, interval_secs: int):
    return m.Trigger(key, name, description, m.TriggerKind.POLLING, schema(params), schema(event), interval_secs)


def webhook_trigger(key, name, description, params, event):
    return m.Trigger(key, name, description, m.TriggerKind.WEBHOOK, schema(params), schema(event), None)


def action(key, name, description, kind: m.ActionKind, input_schema, output_schema):
    return m.Action(key, name, description, kind, schema(input_schema), schema(output_schema))


def event(event_id: str, payload: Any) -> types.Event:
    return types.Event(event_id, json.dumps(payload))
