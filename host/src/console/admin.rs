//! People and tenants: the operator's tenants (create with the token shown
//! once, rotate, delete), an owner's users (invite with a link shown once,
//! change a role, remove) and the audit log.

use axum::{
    Extension, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
};

use super::{
    Member, PageError, PageResult, audit, done, field, fields, notice, overview::NoticeQuery,
    render,
};
use crate::{api::ApiState, tenants::Role};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/tenants", get(tenants).post(create_tenant))
        .route("/tenants/{id}/rotate", post(rotate))
        .route("/tenants/{id}/delete", post(delete_tenant))
        .route("/users", get(users).post(invite))
        .route("/users/{id}/role", post(change_role))
        .route("/users/{id}/remove", post(remove_user))
        .route("/audit", get(audit_log))
}

fn operator(member: &Member) -> Result<(), PageError> {
    if member.principal.is_operator() {
        Ok(())
    } else {
        Err(PageError::forbidden("Only the operator manages tenants."))
    }
}

fn owner(member: &Member) -> Result<(), PageError> {
    if member.principal.can_manage_users() {
        Ok(())
    } else {
        Err(PageError::forbidden("Only an owner manages users."))
    }
}

/// The tenants page; `shown` is a token to show once (after creating or
/// rotating), with whose it is.
fn tenants_page(
    state: &ApiState,
    member: &Member,
    notice: Option<&str>,
    shown: Option<(String, String)>,
    error: Option<String>,
    status: StatusCode,
) -> PageResult {
    let list: Vec<_> = state
        .tenants
        .list()?
        .into_iter()
        .map(|t| {
            let users = state.users.list(&t.id).map(|u| u.len()).unwrap_or(0);
            ctx! { id => t.id, name => t.name, created_at => t.created_at, users => users }
        })
        .collect();
    let html = render::page(
        member,
        "tenants",
        "tenants.html",
        ctx! {
            title => "Tenants",
            notice => notice,
            tenants => list,
            shown => shown.map(|(name, token)| ctx! { name => name, token => token }),
            error => error,
        },
    )?;
    Ok((status, html).into_response())
}

async fn tenants(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Query(query): Query<NoticeQuery>,
) -> PageResult {
    operator(&member)?;
    tenants_page(
        &state,
        &member,
        notice(query.notice.as_deref()),
        None,
        None,
        StatusCode::OK,
    )
}

async fn create_tenant(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    body: Bytes,
) -> PageResult {
    operator(&member)?;
    let name = field(&fields(&body), "name").unwrap_or("").to_string();
    match state.tenants.create(&name) {
        Ok((tenant, token)) => {
            state.users.audit_in(
                &tenant.id,
                &member.principal,
                "tenant.create",
                &tenant.id,
                &tenant.name,
            )?;
            tenants_page(
                &state,
                &member,
                Some("Tenant created."),
                Some((tenant.name, token)),
                None,
                StatusCode::CREATED,
            )
        }
        Err(e) => {
            let e = PageError::from(e);
            tenants_page(&state, &member, None, None, Some(e.message), e.status)
        }
    }
}

async fn rotate(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
) -> PageResult {
    operator(&member)?;
    let tenant = state.tenants.get(&id)?;
    let token = state.tenants.rotate_token(&id)?;
    state
        .users
        .audit_in(&id, &member.principal, "tenant.rotate", &id, "")?;
    tenants_page(
        &state,
        &member,
        Some("New token made; the old one no longer works."),
        Some((tenant.name, token)),
        None,
        StatusCode::OK,
    )
}

async fn delete_tenant(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
) -> PageResult {
    operator(&member)?;
    state.tenants.delete(&id)?;
    state.users.remove_tenant(&id)?;
    Ok(done("/tenants", "deleted"))
}

fn users_page(
    state: &ApiState,
    member: &Member,
    notice: Option<&str>,
    link: Option<(String, String)>,
    error: Option<String>,
    status: StatusCode,
) -> PageResult {
    let list: Vec<_> = state
        .users
        .list(member.principal.tenant())?
        .into_iter()
        .map(|u| ctx! { id => u.id, email => u.email, role => u.role.as_str(), created_at => u.created_at, invited_by => u.invited_by })
        .collect();
    let html = render::page(
        member,
        "users",
        "users.html",
        ctx! {
            title => "Users",
            notice => notice,
            users => list,
            roles => Role::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            invited => state.users.invitations(member.principal.tenant())?.iter().map(|i| ctx! { email => i.email, role => i.role.as_str(), expires_at => i.expires_at }).collect::<Vec<_>>(),
            link => link.map(|(email, path)| ctx! { email => email, path => path }),
            error => error,
        },
    )?;
    Ok((status, html).into_response())
}

async fn users(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Query(query): Query<NoticeQuery>,
) -> PageResult {
    owner(&member)?;
    users_page(
        &state,
        &member,
        notice(query.notice.as_deref()),
        None,
        None,
        StatusCode::OK,
    )
}

async fn invite(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> PageResult {
    owner(&member)?;
    let form = fields(&body);
    let email = field(&form, "email").unwrap_or("");
    let Some(role) = Role::parse(field(&form, "role").unwrap_or("")) else {
        return users_page(
            &state,
            &member,
            None,
            None,
            Some("Choose a role.".into()),
            StatusCode::BAD_REQUEST,
        );
    };
    match state.users.invite(
        member.principal.tenant(),
        email,
        role,
        &member.principal.actor(),
    ) {
        Ok((invitation, token)) => {
            audit(
                &state,
                &member,
                "user.invite",
                &invitation.email,
                role.as_str(),
            );
            users_page(
                &state,
                &member,
                Some("Invitation created."),
                Some((
                    invitation.email,
                    format!("{}/invite/{token}", super::base_url(&state, &headers)?),
                )),
                None,
                StatusCode::CREATED,
            )
        }
        Err(e) => {
            let e = PageError::from(e);
            users_page(&state, &member, None, None, Some(e.message), e.status)
        }
    }
}

async fn change_role(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
    body: Bytes,
) -> PageResult {
    owner(&member)?;
    let Some(role) = Role::parse(field(&fields(&body), "role").unwrap_or("")) else {
        return users_page(
            &state,
            &member,
            None,
            None,
            Some("Choose a role.".into()),
            StatusCode::BAD_REQUEST,
        );
    };
    match state.users.set_role(member.principal.tenant(), &id, role) {
        Ok(user) => {
            audit(&state, &member, "user.role", &user.email, role.as_str());
            Ok(done("/users", "role"))
        }
        Err(e) => {
            let e = PageError::from(e);
            users_page(&state, &member, None, None, Some(e.message), e.status)
        }
    }
}

async fn remove_user(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
) -> PageResult {
    owner(&member)?;
    let user = state.users.remove(member.principal.tenant(), &id)?;
    audit(&state, &member, "user.remove", &user.email, "");
    Ok(done("/users", "removed"))
}

async fn audit_log(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
) -> PageResult {
    let entries = state.users.audit_log(member.principal.tenant(), 500)?;
    Ok(render::page(
        &member,
        "audit",
        "audit.html",
        ctx! { title => "Audit log", entries => entries },
    )?
    .into_response())
}
