//! `/v1/users`: a tenant's people (an owner invites, changes roles,
//! removes) and `/v1/audit`, the tenant's audit log.

use std::sync::Arc;

use axum::{
    Extension, Router,
    extract::State,
    http::StatusCode,
    routing::{get, patch, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ApiError, ApiState, audit,
    extract::{Json, Path, Query},
    owner,
};
use crate::{
    tenants::{Principal, Role},
    users::{User, Users},
};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/users", get(list))
        .route("/v1/users/invitations", post(invite))
        .route("/v1/users/{id}", patch(change).delete(remove))
        .route("/v1/audit", get(audit_log))
}

/// A user as the API shows it (never the password hash).
pub(crate) fn view(user: &User) -> Value {
    json!({
        "id": user.id,
        "email": user.email,
        "role": user.role,
        "created_at": user.created_at,
        "invited_by": user.invited_by,
    })
}

fn role(text: &str) -> Result<Role, ApiError> {
    Role::parse(text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "`{text}` is not a role (one of owner, editor, viewer)"
        ))
    })
}

async fn list(
    State(users): State<Arc<Users>>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let list: Vec<Value> = users.list(principal.tenant())?.iter().map(view).collect();
    Ok(Json(json!({"users": list})))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct InviteBody {
    email: String,
    role: String,
}

/// Invites someone: the answer holds the invitation's path (the token in
/// it is shown only now), which they open to choose a password.
async fn invite(
    State(users): State<Arc<Users>>,
    Extension(principal): Extension<Principal>,
    Json(body): Json<InviteBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    owner(&principal)?;
    let role = role(&body.role)?;
    let (invitation, token) =
        users.invite(principal.tenant(), &body.email, role, &principal.actor())?;
    audit(
        &users,
        &principal,
        "user.invite",
        &invitation.email,
        role.as_str(),
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "email": invitation.email,
            "role": invitation.role,
            "expires_at": invitation.expires_at,
            "path": format!("/invite/{token}"),
        })),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct ChangeBody {
    role: String,
}

async fn change(
    State(users): State<Arc<Users>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<ChangeBody>,
) -> Result<Json<Value>, ApiError> {
    owner(&principal)?;
    let user = users.set_role(principal.tenant(), &id, role(&body.role)?)?;
    audit(
        &users,
        &principal,
        "user.role",
        &user.email,
        user.role.as_str(),
    );
    Ok(Json(view(&user)))
}

async fn remove(
    State(users): State<Arc<Users>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    owner(&principal)?;
    let user = users.remove(principal.tenant(), &id)?;
    audit(&users, &principal, "user.remove", &user.email, "");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<usize>,
}

async fn audit_log(
    State(users): State<Arc<Users>>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(100).min(1000);
    Ok(Json(
        json!({"entries": users.audit_log(principal.tenant(), limit)?}),
    ))
}
