//! The web console: server-rendered pages (minijinja templates, htmx for
//! the parts that update in place) served by the host itself at `/`, with
//! every asset embedded in the binary. Pages take their data from the same
//! services the API's handlers take, through the same [`ApiState`], and act
//! for the same [`Principal`]: a tenant sees only its own data, a viewer
//! changes nothing, and every change is recorded in the audit log.
//!
//! Requests of a signed-in browser pass [`guard`]: the session cookie is
//! resolved to a [`Member`] (or the browser is sent to sign in), and a
//! request that changes anything must carry the session's CSRF token (the
//! `_csrf` form field, or the `X-CSRF-Token` header htmx sends). Every
//! response carries a Content-Security-Policy that allows scripts, styles
//! and connections only from this host, and no inline script or style.

/// A template context from `key => value` pairs, each value serialised
/// (any `Serialize`, taken by reference).
macro_rules! ctx {
    ($($key:ident => $value:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut map = std::collections::BTreeMap::<&'static str, minijinja::Value>::new();
        $( map.insert(stringify!($key), minijinja::Value::from(minijinja::value::Serde(&$value))); )*
        minijinja::Value::from(map)
    }};
}

mod admin;
mod assets;
mod auth;
mod builder;
mod changes;
mod connections;
mod connectors;
mod editor;
mod flows;
mod forms;
mod overview;
mod render;
mod runs;

use axum::{
    Router,
    body::{Body, Bytes, to_bytes},
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
};

use crate::{
    api::{ApiState, CSRF_HEADER, same_secret, session_cookie},
    error::ServiceError,
    tenants::Principal,
    users::sessions::Lookup,
};

/// The Content-Security-Policy of every console response: nothing inline,
/// nothing from another origin.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The console. Its routes sit beside the API's (`/v1/...`) on the same
/// listener.
pub fn router(state: ApiState) -> Router {
    let max_request = state.settings.max_request_bytes;
    let max_upload = state.settings.max_upload_bytes;
    let signed_in = Router::new()
        .route("/", get(overview::show))
        .merge(connectors::routes(max_upload))
        .merge(builder::routes())
        .merge(connections::routes())
        .merge(flows::routes())
        .merge(editor::routes())
        .merge(runs::routes())
        .merge(admin::routes())
        .merge(changes::routes())
        .route("/sign-out", axum::routing::post(auth::sign_out))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard));
    Router::new()
        .merge(auth::routes())
        .merge(signed_in)
        .route("/assets/{name}", get(assets::serve))
        .layer(DefaultBodyLimit::max(max_request))
        .layer(middleware::from_fn(headers))
        .with_state(state)
}

/// Who is signed in, as a page sees it.
#[derive(Debug, Clone)]
pub struct Member {
    pub principal: Principal,
    pub csrf: String,
    /// The tenant's name (the operator's is the host's default tenant).
    pub tenant_name: String,
}

/// A page that could not be shown: the status and a message for people.
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub title: String,
    pub message: String,
}

impl PageError {
    pub fn new(status: StatusCode, title: &str, message: impl Into<String>) -> Self {
        PageError {
            status,
            title: title.to_string(),
            message: message.into(),
        }
    }

    pub fn internal(detail: String) -> Self {
        tracing::error!("console: {detail}");
        PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The host could not show this page; its log says why.",
        )
    }

    pub fn forbidden(message: &str) -> Self {
        PageError::new(StatusCode::FORBIDDEN, "Not allowed", message)
    }
}

impl From<ServiceError> for PageError {
    fn from(e: ServiceError) -> Self {
        let api = crate::api::ApiError::from(e);
        let title = match api.status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::CONFLICT => "Not possible now",
            s if s.is_server_error() && api.code == "internal" => "Something went wrong",
            s if s.is_server_error() => "The third party did not answer as expected",
            _ => "That did not work",
        };
        let mut message = api.message;
        if api.status == StatusCode::NOT_FOUND {
            message.push_str(". It may have been deleted, or the link is wrong.");
        }
        PageError::new(api.status, title, message)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let html = render::fragment(
            "error.html",
            ctx! { status => self.status.as_u16(), title => self.title, message => self.message },
        )
        .map(|h| h.0)
        .unwrap_or_else(|_| "error".to_string());
        (self.status, Html(html)).into_response()
    }
}

pub type PageResult = Result<Response, PageError>;

/// Refuses a change to a viewer (the buttons are not shown to them; this
/// is for a crafted request).
pub(crate) fn writer(member: &Member) -> Result<(), PageError> {
    if member.principal.can_write() {
        Ok(())
    } else {
        Err(PageError::forbidden(
            "Viewers can look at everything but change nothing. Ask an owner for the editor role.",
        ))
    }
}

/// Records a change in the audit log (a failure to record is logged).
pub(crate) fn audit(state: &ApiState, member: &Member, action: &str, target: &str, detail: &str) {
    crate::api::audit(&state.users, &member.principal, action, target, detail);
}

/// A redirect after a change, with a notice (one of [`NOTICES`]) that the
/// next page shows.
pub(crate) fn done(path: &str, notice: &str) -> Response {
    let sep = if path.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{path}{sep}notice={}", urlencode(notice))).into_response()
}

/// What a page says after a change: by code, so a link cannot make a page
/// say something else.
const NOTICES: &[(&str, &str)] = &[
    ("created", "Created."),
    ("saved", "Saved."),
    ("deleted", "Deleted."),
    (
        "published",
        "Published. The flow runs this version from now on.",
    ),
    (
        "activated",
        "Activated: the flow now runs when its trigger fires.",
    ),
    ("deactivated", "Deactivated: the flow no longer runs."),
    ("replayed", "Queued again from the step that failed."),
    ("cancelled", "Cancelled."),
    (
        "resumed",
        "The connection is active again; runs waiting for it were queued.",
    ),
    (
        "flow-resumed",
        "Resumed: the flow runs again when its trigger fires.",
    ),
    ("connected", "The connection is authorized."),
    (
        "upgraded",
        "The flow now uses the newest matching plugin versions.",
    ),
    ("uploaded", "The plugin version is uploaded."),
    ("pushed", "Pushed: this version is published."),
    (
        "unchanged",
        "This version was already pushed with exactly this spec; nothing changed.",
    ),
    (
        "deprecated",
        "Deprecated: new flows will not pick this version.",
    ),
    ("undeprecated", "This version can be picked again."),
    ("env", "The environment variables are saved."),
    ("invited", "Invitation created."),
    ("role", "The role is changed."),
    ("removed", "Removed."),
    ("discarded", "The draft is discarded."),
];

/// The text of a notice code, if it is one.
pub(crate) fn notice(code: Option<&str>) -> Option<&'static str> {
    let code = code?;
    NOTICES.iter().find(|(c, _)| *c == code).map(|(_, t)| *t)
}

pub(crate) fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Whether the request came over https (directly or through a proxy that
/// says so): session cookies are `Secure` then.
fn is_https(state: &ApiState, headers: &HeaderMap) -> bool {
    let forwarded = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let public_https = state.settings.public_url.as_deref().is_some_and(|u| {
        u.starts_with("https://")
            && host.is_some_and(|h| u.trim_start_matches("https://").trim_end_matches('/') == h)
    });
    forwarded || public_https
}

/// The security headers of every console response.
async fn headers(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/assets/");
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !is_asset && !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Sends a browser without a valid session to sign in: a page load is
/// redirected, an htmx request told to go there.
fn to_sign_in(request: &Request, expired: bool) -> Response {
    let next = if request.method() == Method::GET {
        request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into())
    } else {
        "/".to_string()
    };
    let mut to = format!("/sign-in?next={}", urlencode(&next));
    if expired {
        to.push_str("&expired=1");
    }
    if request.headers().contains_key("hx-request") {
        let mut response = StatusCode::NO_CONTENT.into_response();
        if let Ok(v) = HeaderValue::from_str(&to) {
            response.headers_mut().insert("hx-redirect", v);
        }
        return response;
    }
    Redirect::to(&to).into_response()
}

/// Resolves the session and checks the CSRF token of anything that is not
/// a read; puts the [`Member`] into the request.
async fn guard(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let lookup = match session_cookie(request.headers()) {
        Some(id) => state.users.session(&state.tenants, id),
        None => Ok(Lookup::Unknown),
    };
    let active = match lookup {
        Ok(Lookup::Active(active)) => active,
        Ok(Lookup::Expired) => return to_sign_in(&request, true),
        Ok(Lookup::Unknown) => return to_sign_in(&request, false),
        Err(e) => return PageError::from(e).into_response(),
    };
    let tenant_name = match &active.principal {
        Principal::Operator => "Operator".to_string(),
        p => state
            .tenants
            .get(p.tenant())
            .map(|t| t.name)
            .unwrap_or_else(|_| p.tenant().to_string()),
    };
    let member = Member {
        principal: active.principal,
        csrf: active.csrf,
        tenant_name,
    };
    let request = if request.method().is_safe() {
        request
    } else {
        match checked(request, &member.csrf, state.settings.max_request_bytes).await {
            Ok(request) => request,
            Err(response) => return response,
        }
    };
    let mut request = request;
    request.extensions_mut().insert(member);
    next.run(request).await
}

/// The request again if it carries the session's CSRF token, in the header
/// or as the `_csrf` field of a form body (read here and put back).
async fn checked(request: Request, csrf: &str, limit: usize) -> Result<Request, Response> {
    let refused = || {
        PageError::new(
            StatusCode::FORBIDDEN,
            "This form has expired",
            "The form did not carry this session's security token (it was open from an earlier sign-in, or was sent from another site). Nothing was changed. Reload the page and try again.",
        )
        .into_response()
    };
    let header_ok = request
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| same_secret(v, csrf));
    if header_ok {
        return Ok(request);
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // A file upload (multipart) names the token in its URL: reading the
    // body here would hold a whole plugin in memory twice.
    if content_type.starts_with("multipart/form-data") {
        let in_query = request.uri().query().is_some_and(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .any(|(k, v)| k == "_csrf" && same_secret(&v, csrf))
        });
        return if in_query {
            Ok(request)
        } else {
            Err(refused())
        };
    }
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(refused());
    }
    let (parts, body) = request.into_parts();
    let bytes: Bytes = match to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return Err(PageError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too large",
                "The form was larger than this host accepts. Nothing was changed.",
            )
            .into_response());
        }
    };
    let sent = url::form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "_csrf")
        .map(|(_, v)| v.into_owned());
    if sent.is_some_and(|v| same_secret(&v, csrf)) {
        Ok(Request::from_parts(parts, Body::from(bytes)))
    } else {
        Err(refused())
    }
}

/// A form body as its fields, in order (repeated names kept).
pub(crate) fn fields(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .filter(|(k, _)| k != "_csrf")
        .collect()
}

/// The first value of a form field.
pub(crate) fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Where the host is reachable by browsers and third parties.
pub(crate) fn base_url(state: &ApiState, headers: &HeaderMap) -> Result<String, PageError> {
    crate::api::base_url(&state.settings, headers)
        .map_err(|e| PageError::new(e.status, "That did not work", e.message))
}
