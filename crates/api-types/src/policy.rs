//! What a namespace allows. The policy itself is [`envstore_core::Policy`]:
//! `PUT …/policy` takes it as its body.

use envstore_core::Policy;
use serde::{Deserialize, Serialize};

/// A namespace's own policy and the one in effect (the server's, tightened by it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PolicyView {
    pub namespace: String,
    /// What the namespace set.
    pub policy: Policy,
    /// What applies: the server's policy tightened by the namespace's.
    pub effective: Policy,
}
