//! `/v1/tenants`: the operator creates tenants and hands each its API token.

use axum::{
    Extension, Json, Router,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
    routing::{delete, get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, operator_only};
use crate::tenants::Principal;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants", post(create).get(list))
        .route("/v1/tenants/{id}", delete(remove).get(show))
        .route("/v1/tenants/{id}/token", post(rotate))
        .route("/v1/whoami", get(whoami))
}

#[derive(Deserialize)]
struct CreateBody {
    name: String,
}

async fn create(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    operator_only(&principal, "create tenants")?;
    let Json(body) = body?;
    let (tenant, token) = app.tenants.create(&body.name)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"tenant": tenant.view(), "token": token})),
    ))
}

async fn list(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    operator_only(&principal, "list tenants")?;
    let tenants: Vec<Value> = app.tenants.list()?.iter().map(|t| t.view()).collect();
    Ok(Json(json!({"tenants": tenants})))
}

async fn show(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    operator_only(&principal, "read tenants")?;
    Ok(Json(app.tenants.get(&id)?.view()))
}

async fn remove(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    operator_only(&principal, "delete tenants")?;
    app.tenants.delete(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    operator_only(&principal, "rotate tenant tokens")?;
    Ok(Json(json!({"token": app.tenants.rotate_token(&id)?})))
}

/// Who the token belongs to.
async fn whoami(Extension(principal): Extension<Principal>) -> Json<Value> {
    match principal {
        Principal::Operator => Json(json!({"role": "operator"})),
        Principal::Tenant(id) => Json(json!({"role": "tenant", "tenant": id})),
    }
}
