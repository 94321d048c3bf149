use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::{ApiError, AppState};

/// Answers when the database answers.
pub async fn health(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    app.db.ping().await?;
    Ok(Json(json!({ "status": "ok" })))
}
