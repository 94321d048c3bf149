//! What operators and orchestrators ask of a node.

use serde::{Deserialize, Serialize};

/// `GET /health` and `GET /api/v1/health`: `{"status": "ok"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Liveness {
    /// Always `ok`.
    pub status: String,
}

impl Liveness {
    pub fn ok() -> Self {
        Self {
            status: "ok".to_owned(),
        }
    }
}

/// `GET /ready` when every check passed; a failed check is a 503 problem
/// whose `failed` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Readiness {
    /// Always `ready`.
    pub status: String,
    pub checks: ReadinessChecks,
}

/// Each check's result: `ok`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReadinessChecks {
    pub database: String,
    pub store: String,
    pub data_folder: String,
}

impl Readiness {
    pub fn ready() -> Self {
        let ok = || "ok".to_owned();
        Self {
            status: "ready".to_owned(),
            checks: ReadinessChecks {
                database: ok(),
                store: ok(),
                data_folder: ok(),
            },
        }
    }
}
