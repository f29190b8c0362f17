//! One operation of a spec over HTTP: the request rendered from its
//! templates, sent through the host's `http.send` (the SDK's `Request`),
//! the response judged by the rules, the records selected and shaped, and
//! the pages followed until a stop rule, a cap or the call's end.

use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

use declarative_spec::{
    ErrorKind, Limits, Operation, Pagination, PaginationKind, Request, Rule, Spec, StopRule,
};
use serde_json::{Value, json};
use switchyard_sdk::{Error, http};

use crate::template::{Scope, Templates};

/// Pages one operation reads at most, whatever the spec says.
const HARD_MAX_PAGES: u32 = 1000;
/// Retry-After when a 429 gives none (as the SDK).
const DEFAULT_RETRY_AFTER_MS: u64 = 60_000;

/// Takes each record of a poll as it is read and says whether it is news:
/// a page without news does not count toward `max_pages` (many records
/// changed at the cursor's instant could otherwise never be passed).
pub(crate) type Sink<'s> = &'s mut dyn FnMut(&Value) -> Result<bool, Error>;

/// A spec with what every operation of one call shares.
pub(crate) struct Runner<'a> {
    pub(crate) spec: &'a Spec,
    pub(crate) limits: Limits,
    pub(crate) templates: Templates,
    /// `connection` and `env`, and what the call adds (`input`, `params`...).
    pub(crate) scope: Scope,
    base_url: Option<String>,
}

/// What an operation produced.
pub(crate) struct Fetched {
    /// Every record of every page, shaped.
    pub(crate) records: Vec<Value>,
    /// The last response, as templates see it.
    pub(crate) last: Value,
    /// A rule's output, which ends the operation.
    pub(crate) output: Option<Value>,
    /// Stopped before the end (a cap, or an error after some records).
    pub(crate) more: bool,
}

/// What a response rule decided.
enum Verdict {
    Continue,
    Output(Value),
}

impl<'a> Runner<'a> {
    pub(crate) fn new(spec: &'a Spec, limits: Limits, scope: Scope) -> Result<Self, Error> {
        let templates = Templates::new();
        let base_url = match &spec.base_url {
            Some(template) => Some(templates.text(template, &scope, "base_url")?.ok_or_else(
                || Error::invalid_input("base_url: the template's value is undefined"),
            )?),
            None => None,
        };
        Ok(Runner {
            spec,
            limits,
            templates,
            scope,
            base_url,
        })
    }

    /// An absolute URL: as it is, or joined to `base_url` with exactly one
    /// `/` (so a template in the path cannot run into the host part).
    pub(crate) fn join(&self, url: &str) -> Result<String, Error> {
        if url.starts_with("http://") || url.starts_with("https://") {
            return Ok(url.to_string());
        }
        let base = self.base_url.as_deref().ok_or_else(|| {
            Error::invalid_input(format!("`{url}` is relative and the spec has no base_url"))
        })?;
        if url.is_empty() {
            return Ok(base.to_string());
        }
        Ok(format!(
            "{}/{}",
            base.trim_end_matches('/'),
            url.trim_start_matches('/')
        ))
    }

    /// The request of `spec` in `scope`, with `extra` query parameters (a
    /// page's), or the exact `next` URL of a `Link` or `next_url` page.
    pub(crate) fn request(
        &self,
        spec: &Request,
        scope: &Scope,
        at: &str,
        extra: &[(String, String)],
        next: Option<&str>,
    ) -> Result<http::Request, Error> {
        let t = &self.templates;
        let mut request = match next {
            Some(url) => http::Request::new(spec.method.to_ascii_uppercase(), self.join(url)?),
            None => {
                let url = t
                    .text(&spec.url, scope, &format!("{at}.url"))?
                    .ok_or_else(|| Error::invalid_input(format!("{at}.url: undefined")))?;
                let mut request =
                    http::Request::new(spec.method.to_ascii_uppercase(), self.join(&url)?);
                for (name, value) in &spec.query {
                    let rendered = t.render(value, scope, &format!("{at}.query.{name}"))?;
                    for text in texts(rendered) {
                        request = request.query(name, &text);
                    }
                }
                for (name, value) in extra {
                    request = request.query(name, value);
                }
                request
            }
        };
        let headers = self.spec.headers.iter().chain(spec.headers.iter());
        for (name, value) in headers {
            if let Some(text) = texts(t.render(value, scope, &format!("{at}.headers.{name}"))?)
                .into_iter()
                .next()
            {
                request = request.header(name.clone(), text);
            }
        }
        if let Some(body) = &spec.json {
            let body = t
                .render(body, scope, &format!("{at}.json"))?
                .unwrap_or(Value::Null);
            request = request.json(&body);
        } else if let Some(form) = &spec.form {
            let mut pairs = Vec::new();
            for (name, value) in form {
                for text in texts(t.render(value, scope, &format!("{at}.form.{name}"))?) {
                    pairs.push(format!(
                        "{}={}",
                        http::percent_encode(name),
                        http::percent_encode(&text)
                    ));
                }
            }
            request = request
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(pairs.join("&"));
        } else if let Some(body) = &spec.body {
            let text = t
                .text(body, scope, &format!("{at}.body"))?
                .unwrap_or_default();
            request = request.body(text);
        }
        if let Some(ms) = spec.timeout_ms {
            request = request.timeout_ms(ms);
        }
        Ok(request)
    }

    /// Runs `op`: every page, the rules on every response. With
    /// `keep_partial`, a retryable failure after some records ends the
    /// operation with what was read (`more` set) instead of failing it.
    pub(crate) fn fetch(
        &self,
        op: &Operation,
        scope: &Scope,
        at: &str,
        keep_partial: bool,
        mut sink: Option<Sink<'_>>,
    ) -> Result<Fetched, Error> {
        let t = &self.templates;
        let pagination = op.pagination.as_ref();
        let max_pages = self.max_pages(pagination, scope, at)?;
        // Requests, pages without news included.
        let max_requests = match self.limits.max_pages {
            Some(cap) => cap.max(1),
            None => max_pages.saturating_mul(2).clamp(50, HARD_MAX_PAGES),
        };
        let mut counted = 0;
        let max_records = self.limits.max_records.map(|n| n as usize);
        let size = match pagination.and_then(|p| p.size.as_ref()) {
            Some(size) => number(&t.value(size, scope, &format!("{at}.pagination.size"))?),
            None => None,
        };
        let start = pagination.and_then(|p| p.start);
        let mut page_number = start.unwrap_or(1);
        let mut offset = start.unwrap_or(0);
        let mut cursor: Option<String> = None;
        let mut next_url: Option<String> = None;
        let mut seen = HashSet::new();
        let mut fetched = Fetched {
            records: Vec::new(),
            last: Value::Null,
            output: None,
            more: false,
        };
        let mut pages = 0;
        loop {
            let mut extra = Vec::new();
            if let Some(p) = pagination {
                match p.kind {
                    PaginationKind::PageNumber => {
                        extra.push((param(p, "page"), page_number.to_string()))
                    }
                    PaginationKind::Offset => extra.push((param(p, "offset"), offset.to_string())),
                    PaginationKind::Cursor => {
                        if let Some(c) = &cursor {
                            extra.push((param(p, "cursor"), c.clone()));
                        }
                    }
                    PaginationKind::Link | PaginationKind::NextUrl => {}
                }
                if let (Some(name), Some(size)) = (&p.size_param, size) {
                    extra.push((name.clone(), size.to_string()));
                } else if p.kind == PaginationKind::Offset
                    && let Some(size) = size
                {
                    extra.push(("limit".to_string(), size.to_string()));
                }
            }
            let page_scope = scope.with(
                "page",
                &json!({"number": page_number, "offset": offset, "cursor": cursor, "size": size}),
            );
            let request = self.request(
                &op.request,
                &page_scope,
                &format!("{at}.request"),
                &extra,
                next_url.as_deref(),
            )?;
            let response = match request.send() {
                Ok(response) => response,
                Err(e) if keep_partial && e.is_retryable() && !fetched.records.is_empty() => {
                    switchyard_sdk::log::warn!("{at}: stopped after {pages} pages: {e}");
                    fetched.more = true;
                    break;
                }
                Err(e) => return Err(e),
            };
            pages += 1;
            let view = view(&response);
            let response_scope = page_scope.with("response", &view);
            match self.judge(&op.responses, &response, &response_scope, at) {
                Ok(Verdict::Continue) => {}
                Ok(Verdict::Output(output)) => {
                    fetched.output = Some(output);
                    fetched.last = view;
                    return Ok(fetched);
                }
                Err(e) if keep_partial && e.is_retryable() && !fetched.records.is_empty() => {
                    switchyard_sdk::log::warn!("{at}: stopped after {pages} pages: {e}");
                    fetched.more = true;
                    break;
                }
                Err(e) => return Err(e),
            }
            let page_records = match &op.records {
                Some(path) => select(&view["body"], path)?,
                None => Vec::new(),
            };
            let count = page_records.len();
            let mut news = sink.is_none();
            for record in page_records {
                let shaped = match &op.record {
                    Some(shape) => t.value(
                        shape,
                        &response_scope.with("record", &record),
                        &format!("{at}.record"),
                    )?,
                    None => record,
                };
                if let Some(sink) = sink.as_mut() {
                    news |= sink(&shaped)?;
                }
                fetched.records.push(shaped);
            }
            if news {
                counted += 1;
            }
            fetched.last = view;
            if let Some(cap) = max_records
                && fetched.records.len() >= cap
            {
                fetched.records.truncate(cap);
                fetched.more = true;
                break;
            }
            let Some(p) = pagination else { break };
            // Where the next page is, if anywhere.
            let next = match p.kind {
                PaginationKind::PageNumber => {
                    if let Some(total) = &p.total_pages {
                        let total = t
                            .render(
                                &Value::String(total.clone()),
                                &response_scope,
                                &format!("{at}.pagination.total_pages"),
                            )?
                            .as_ref()
                            .and_then(number)
                            .unwrap_or(1);
                        if page_number as u64 >= total.max(1) {
                            break;
                        }
                    }
                    page_number += 1;
                    None
                }
                PaginationKind::Offset => {
                    offset += count as i64;
                    None
                }
                PaginationKind::Cursor => {
                    let template = p.cursor.as_deref().unwrap_or("");
                    match t.text(
                        template,
                        &response_scope,
                        &format!("{at}.pagination.cursor"),
                    )? {
                        Some(c) if !c.is_empty() => Some(c),
                        _ => break,
                    }
                }
                PaginationKind::Link => match next_link(response.header("link")) {
                    Some(url) => Some(url),
                    None => break,
                },
                PaginationKind::NextUrl => {
                    let template = p.url.as_deref().unwrap_or("");
                    match t.text(template, &response_scope, &format!("{at}.pagination.url"))? {
                        Some(u) if !u.is_empty() => Some(u),
                        _ => break,
                    }
                }
            };
            if let Some(next) = &next {
                // A cursor or URL seen before would loop for ever.
                if !seen.insert(next.clone()) {
                    break;
                }
                match p.kind {
                    PaginationKind::Cursor => cursor = Some(next.clone()),
                    _ => next_url = Some(next.clone()),
                }
            }
            if p.stop.contains(&StopRule::EmptyPage) && count == 0 {
                break;
            }
            if p.stop.contains(&StopRule::ShortPage)
                && let Some(size) = size
                && (count as u64) < size
            {
                break;
            }
            if counted >= max_pages || pages >= max_requests {
                fetched.more = true;
                break;
            }
        }
        Ok(fetched)
    }

    /// The spec's response rules and the defaults, on one response.
    pub(crate) fn check(&self, response: &http::Response, view: &Value) -> Result<(), Error> {
        let scope = self.scope.with("response", view);
        self.judge(&[], response, &scope, "custom-api-call")
            .map(|_| ())
    }

    fn max_pages(
        &self,
        pagination: Option<&Pagination>,
        scope: &Scope,
        at: &str,
    ) -> Result<u32, Error> {
        let mut max = HARD_MAX_PAGES;
        if let Some(value) = pagination.and_then(|p| p.max_pages.as_ref()) {
            let rendered =
                self.templates
                    .value(value, scope, &format!("{at}.pagination.max_pages"))?;
            if let Some(n) = number(&rendered) {
                max = max.min(n.clamp(1, u64::from(HARD_MAX_PAGES)) as u32);
            }
        }
        if let Some(cap) = self.limits.max_pages {
            max = max.min(cap.max(1));
        }
        Ok(max)
    }

    /// The operation's rules, then the spec's, then the defaults.
    fn judge(
        &self,
        own: &[Rule],
        response: &http::Response,
        scope: &Scope,
        at: &str,
    ) -> Result<Verdict, Error> {
        for (i, rule) in own.iter().chain(self.spec.responses.iter()).enumerate() {
            // Where the rule is written: the operation's, or the spec's.
            let place = match i.checked_sub(own.len()) {
                None => format!("{at}.responses[{i}]"),
                Some(j) => format!("responses[{j}]"),
            };
            let status_matches = rule.status.is_empty()
                || rule
                    .status
                    .iter()
                    .any(|[lo, hi]| (*lo..=*hi).contains(&response.status));
            if !status_matches {
                continue;
            }
            if let Some(when) = &rule.when
                && !self
                    .templates
                    .holds(when, scope, &format!("{place}.when"))?
            {
                continue;
            }
            if rule.ok {
                return Ok(Verdict::Continue);
            }
            if let Some(output) = &rule.output {
                let out = self
                    .templates
                    .value(output, scope, &format!("{place}.output"))?;
                return Ok(Verdict::Output(out));
            }
            if let Some(kind) = rule.error {
                let message = match &rule.message {
                    Some(m) => self
                        .templates
                        .text(m, scope, &format!("{place}.message"))?
                        .unwrap_or_default(),
                    None => default_message(response),
                };
                let error = match kind {
                    ErrorKind::Transient => Error::transient(message),
                    ErrorKind::Auth => Error::auth(message),
                    ErrorKind::InvalidInput => Error::invalid_input(message),
                    ErrorKind::Permanent => Error::permanent(message),
                    ErrorKind::RateLimited => {
                        let ms = match &rule.retry_after_ms {
                            Some(template) => self
                                .templates
                                .render(
                                    &Value::String(template.clone()),
                                    scope,
                                    &format!("{place}.retry_after_ms"),
                                )?
                                .as_ref()
                                .and_then(number),
                            None => None,
                        };
                        Error::rate_limited(ms.unwrap_or_else(|| retry_after(response)), message)
                    }
                };
                return Err(error);
            }
        }
        response.clone().error_for_status()?;
        Ok(Verdict::Continue)
    }
}

/// `param`, or the method's usual name.
fn param(p: &Pagination, default: &str) -> String {
    p.param.clone().unwrap_or_else(|| default.to_string())
}

/// The milliseconds a 429's `Retry-After` asks for.
fn retry_after(response: &http::Response) -> u64 {
    response
        .header("retry-after")
        .and_then(|v| http::retry_after_ms(v, SystemTime::now()))
        .unwrap_or(DEFAULT_RETRY_AFTER_MS)
}

/// The SDK's message for a status: `GET url returned 404: body...`.
fn default_message(response: &http::Response) -> String {
    match response.clone().error_for_status() {
        Err(e) => e.message().to_string(),
        Ok(_) => {
            let text = response.text();
            let snippet: String = text.trim().chars().take(200).collect();
            format!(
                "{} {} returned {}: {snippet}",
                response.method, response.url, response.status
            )
        }
    }
}

/// A response as templates see it: `status`, `headers` (lower-case names),
/// `body` (JSON when it parses, else text, null when empty) and `text`.
pub(crate) fn view(response: &http::Response) -> Value {
    let mut headers = BTreeMap::new();
    for (name, value) in &response.headers {
        headers
            .entry(name.to_ascii_lowercase())
            .or_insert_with(|| value.clone());
    }
    let text = response.text().into_owned();
    json!({
        "status": response.status,
        "headers": headers,
        "body": body_value(&text),
        "text": text,
    })
}

/// A body as JSON when it parses, else its text; null when empty.
pub(crate) fn body_value(text: &str) -> Value {
    if text.trim().is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// The records at `path` in `body`: a JSON pointer (`/data`, `""`) or a
/// dotted path (`data.items`). A list gives its items, an object itself,
/// nothing (or null) none.
pub(crate) fn select(body: &Value, path: &str) -> Result<Vec<Value>, Error> {
    let found = if path.is_empty() || path.starts_with('/') {
        body.pointer(path)
    } else {
        path.split('.').try_fold(body, |v, segment| match v {
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            Value::Object(map) => map.get(segment),
            _ => None,
        })
    };
    match found {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items.clone()),
        Some(object @ Value::Object(_)) => Ok(vec![object.clone()]),
        Some(other) => Err(Error::permanent(format!(
            "the records at `{path}` are not a list or an object: {other}"
        ))),
    }
}

/// A JSON value as the texts of a query parameter: none for null or
/// undefined, one per item of an array.
fn texts(value: Option<Value>) -> Vec<String> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items.into_iter().flat_map(|v| texts(Some(v))).collect(),
        Some(other) => vec![other.to_string()],
    }
}

/// A non-negative number from a JSON number or numeric text.
pub(crate) fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The `rel="next"` URL of a `Link` header.
pub(crate) fn next_link(header: Option<&str>) -> Option<String> {
    let header = header?;
    let mut rest = header;
    while let Some(open) = rest.find('<') {
        let close = open + rest[open..].find('>')?;
        let url = &rest[open + 1..close];
        let after = &rest[close + 1..];
        let params = &after[..after.find('<').unwrap_or(after.len())];
        let is_next = params.split(';').any(|p| {
            let p = p.trim().trim_end_matches(',').trim();
            p.strip_prefix("rel=")
                .map(|v| v.trim_matches('"').split_whitespace().any(|r| r == "next"))
                .unwrap_or(false)
        });
        if is_next {
            return Some(url.to_string());
        }
        rest = after;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links() {
        let header = r#"<https://s.test/o.json?page_info=a>; rel="previous", <https://s.test/o.json?page_info=b>; rel="next""#;
        assert_eq!(
            next_link(Some(header)).as_deref(),
            Some("https://s.test/o.json?page_info=b")
        );
        assert_eq!(next_link(Some(r#"<https://x>; rel="previous""#)), None);
        assert_eq!(next_link(None), None);
    }

    #[test]
    fn selections() {
        let body = json!({"data": [{"a": 1}, {"a": 2}], "one": {"b": 1}, "n": 3});
        assert_eq!(select(&body, "/data").unwrap().len(), 2);
        assert_eq!(select(&body, "data").unwrap().len(), 2);
        assert_eq!(select(&body, "one").unwrap(), vec![json!({"b": 1})]);
        assert!(select(&body, "/missing").unwrap().is_empty());
        assert!(select(&body, "n").is_err());
        assert_eq!(select(&json!([1, 2]), "").unwrap().len(), 2);
    }
}
