//! Signing in and out, and accepting an invitation. A session cookie is
//! `HttpOnly`, `SameSite=Strict`, `Secure` when the browser came over
//! https, and lasts as long as the session. The sign-in form is guarded
//! against cross-site posting by a cookie of its own that the form repeats
//! (there is no session yet to hold a token).

use std::net::SocketAddr;

use axum::{
    Extension, Router,
    body::Bytes,
    extract::{Path, Query, State, connect_info::ConnectInfo},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect},
    routing::get,
};
use rand::RngCore;
use serde::Deserialize;

use super::{Member, PageError, PageResult, field, fields, is_https, render};
use crate::{
    api::{ApiState, SESSION_COOKIE, same_secret, session_cookie},
    users::SignIn,
};

/// The cookie the sign-in form repeats in a hidden field.
const SIGN_IN_COOKIE: &str = "sy_signin";

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/sign-in", get(sign_in_page).post(sign_in))
        .route("/invite/{token}", get(invite_page).post(accept))
}

#[derive(Deserialize, Default)]
pub(super) struct SignInQuery {
    next: Option<String>,
    expired: Option<String>,
    notice: Option<String>,
}

/// Only a path of this host may be where sign-in leads.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.to_string(),
        _ => "/".to_string(),
    }
}

fn cookie(name: &str, value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn sign_in_form(
    state: &ApiState,
    headers: &HeaderMap,
    status: StatusCode,
    next: &str,
    message: Option<String>,
    notice: Option<String>,
    email: &str,
) -> PageResult {
    let mut token = [0u8; 18];
    rand::rng().fill_bytes(&mut token);
    let token = hex::encode(token);
    let html = render::fragment(
        "sign_in.html",
        ctx! { csrf => token, next => next, error => message, notice => notice, email => email },
    )?;
    let mut response = (status, html).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie(SIGN_IN_COOKIE, &token, 3600, is_https(state, headers)),
    );
    Ok(response)
}

async fn sign_in_page(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<SignInQuery>,
) -> PageResult {
    let next = local_path(query.next.as_deref());
    let message = query
        .expired
        .map(|_| "Your session has expired. Sign in again to continue.".to_string());
    let notice = query
        .notice
        .filter(|n| n == "signed-out" || n == "welcome")
        .map(|n| match n.as_str() {
            "welcome" => "Your account is ready. Sign in with your email and password.",
            _ => "You have signed out.",
        });
    sign_in_form(
        &state,
        &headers,
        StatusCode::OK,
        &next,
        message,
        notice.map(str::to_string),
        "",
    )
}

fn sign_in_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SIGN_IN_COOKIE)
        .map(|(_, v)| v)
}

async fn sign_in(
    State(state): State<ApiState>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Bytes,
) -> PageResult {
    let form = fields(&body);
    let csrf = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "_csrf")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let next = local_path(field(&form, "next"));
    let email = field(&form, "email").unwrap_or("").trim().to_string();
    if !sign_in_cookie(&headers).is_some_and(|c| !csrf.is_empty() && same_secret(c, &csrf)) {
        return sign_in_form(
            &state,
            &headers,
            StatusCode::FORBIDDEN,
            &next,
            Some("The sign-in form had expired. Try again.".into()),
            None,
            &email,
        );
    }
    let token = field(&form, "token").unwrap_or("").trim().to_string();
    let password = field(&form, "password").unwrap_or("").to_string();
    let credentials = if !token.is_empty() {
        SignIn::Token(&token)
    } else if !email.is_empty() {
        SignIn::Password {
            email: &email,
            password: &password,
        }
    } else {
        return sign_in_form(
            &state,
            &headers,
            StatusCode::BAD_REQUEST,
            &next,
            Some("Enter your email and password, or an API token.".into()),
            None,
            "",
        );
    };
    let source = peer
        .map(|Extension(ConnectInfo(addr))| addr.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    match state.users.sign_in(&state.tenants, credentials, &source) {
        Ok((id, _)) => {
            let mut response = Redirect::to(&next).into_response();
            let secure = is_https(&state, &headers);
            let h = response.headers_mut();
            h.append(
                header::SET_COOKIE,
                cookie(SESSION_COOKIE, &id, state.users.session_secs(), secure),
            );
            h.append(header::SET_COOKIE, cookie(SIGN_IN_COOKIE, "", 0, secure));
            Ok(response)
        }
        Err(e) => {
            let e = PageError::from(e);
            sign_in_form(
                &state,
                &headers,
                e.status,
                &next,
                Some(e.message),
                None,
                &email,
            )
        }
    }
}

pub(super) async fn sign_out(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Extension(_member): Extension<Member>,
) -> PageResult {
    if let Some(id) = session_cookie(&headers) {
        state.users.sign_out(id)?;
    }
    let mut response = Redirect::to("/sign-in?notice=signed-out").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie(SESSION_COOKIE, "", 0, is_https(&state, &headers)),
    );
    Ok(response)
}

async fn invite_page(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> PageResult {
    let invitation = state.users.invitation(&token)?;
    let tenant = state
        .tenants
        .get(&invitation.tenant)
        .map(|t| t.name)
        .unwrap_or_default();
    invite_form(
        &state,
        &headers,
        &token,
        &invitation.email,
        invitation.role.as_str(),
        &tenant,
        None,
    )
}

fn invite_form(
    state: &ApiState,
    headers: &HeaderMap,
    token: &str,
    email: &str,
    role: &str,
    tenant: &str,
    error: Option<String>,
) -> PageResult {
    let mut csrf = [0u8; 18];
    rand::rng().fill_bytes(&mut csrf);
    let csrf = hex::encode(csrf);
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let html = render::fragment(
        "invite.html",
        ctx! { token => token, email => email, role => role, tenant => tenant, error => error, csrf => csrf },
    )?;
    let mut response = (status, html).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie(SIGN_IN_COOKIE, &csrf, 3600, is_https(state, headers)),
    );
    Ok(response)
}

async fn accept(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(token): Path<String>,
    body: Bytes,
) -> PageResult {
    let invitation = state.users.invitation(&token)?;
    let form = fields(&body);
    let csrf = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "_csrf")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let tenant = state
        .tenants
        .get(&invitation.tenant)
        .map(|t| t.name)
        .unwrap_or_default();
    let retry = |message: &str| {
        invite_form(
            &state,
            &headers,
            &token,
            &invitation.email,
            invitation.role.as_str(),
            &tenant,
            Some(message.to_string()),
        )
    };
    if !sign_in_cookie(&headers).is_some_and(|c| !csrf.is_empty() && same_secret(c, &csrf)) {
        return retry("The form had expired. Try again.");
    }
    let password = field(&form, "password").unwrap_or("");
    if field(&form, "confirm").unwrap_or("") != password {
        return retry("The two passwords are not the same.");
    }
    match state.users.accept(&token, password) {
        Ok(user) => {
            let principal = crate::tenants::Principal::Tenant {
                tenant: user.tenant.clone(),
                role: user.role,
                user: Some(user.email.clone()),
            };
            crate::api::audit(
                &state.users,
                &principal,
                "user.join",
                &user.email,
                user.role.as_str(),
            );
            Ok(Redirect::to("/sign-in?notice=welcome").into_response())
        }
        Err(e) => retry(&PageError::from(e).message),
    }
}
