//! `/v1/tenants`: the operator creates tenants and hands each its API token.

use std::sync::Arc;

use axum::{
    Extension, Router,
    extract::State,
    http::StatusCode,
    routing::{delete, get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ApiError, ApiState,
    extract::{Json, Path},
    operator_only,
};
use crate::{
    tenants::{Principal, Tenants},
    users::Users,
};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/tenants", post(create).get(list))
        .route("/v1/tenants/{id}", delete(remove).get(show))
        .route("/v1/tenants/{id}/token", post(rotate))
        .route("/v1/whoami", get(whoami))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct CreateBody {
    name: String,
}

async fn create(
    State(tenants): State<Arc<Tenants>>,
    Extension(principal): Extension<Principal>,
    Json(body): Json<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    operator_only(&principal, "create tenants")?;
    let (tenant, token) = tenants.create(&body.name)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"tenant": tenant.view(), "token": token})),
    ))
}

async fn list(
    State(tenants): State<Arc<Tenants>>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    operator_only(&principal, "list tenants")?;
    let tenants: Vec<Value> = tenants.list()?.iter().map(|t| t.view()).collect();
    Ok(Json(json!({"tenants": tenants})))
}

async fn show(
    State(tenants): State<Arc<Tenants>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    operator_only(&principal, "read tenants")?;
    Ok(Json(tenants.get(&id)?.view()))
}

async fn remove(
    State(tenants): State<Arc<Tenants>>,
    State(users): State<Arc<Users>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    operator_only(&principal, "delete tenants")?;
    tenants.delete(&id)?;
    users.remove_tenant(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate(
    State(tenants): State<Arc<Tenants>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    operator_only(&principal, "rotate tenant tokens")?;
    Ok(Json(json!({"token": tenants.rotate_token(&id)?})))
}

/// Who the token belongs to.
async fn whoami(Extension(principal): Extension<Principal>) -> Json<Value> {
    match principal {
        Principal::Operator => Json(json!({"role": "operator"})),
        Principal::Tenant { tenant, role, user } => Json(json!({
            "role": "tenant",
            "tenant": tenant,
            "member_role": role,
            "user": user,
        })),
    }
}
