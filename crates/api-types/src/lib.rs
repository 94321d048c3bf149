//! The request and response bodies of envstore's JSON API, in one place:
//! the server answers with them, the web UI and the CLI client read them,
//! and their `ToSchema` derives make the OpenAPI document's schemas (the
//! doc comments become the descriptions). Only serde, utoipa and the domain
//! types of `envstore-core`: no HTTP framework and no database, so every
//! client can depend on it.
//!
//! Field names, `skip_serializing_if` and enum spellings are the wire
//! format: changing one changes what clients read.

pub mod access;
pub mod builds;
pub mod diff;
pub mod environments;
pub mod health;
pub mod kernels;
pub mod locks;
pub mod namespaces;
pub mod packages;
pub mod policy;
pub mod prefixes;
pub mod problem;
pub mod usage;

pub use access::{
    AuditEntry, AuditPage, Member, MemberRole, MemberSet, Members, NewToken, RoleBinding,
    RoleBindingSet, RoleBindings, SetRoleBinding, TokenCreated, TokenView, Tokens, WhoAmI,
};
pub use builds::{
    BuildCancelled, BuildHistoryEntry, BuildSummary, BuildView, BuildsPage, LockedPackage,
    PhaseView, ReuseView,
};
pub use environments::{
    BuildQueued, CurrentBuild, CurrentBuildSet, EnvironmentDeleted, EnvironmentSummary,
    EnvironmentView, EnvironmentsPage,
};
pub use envstore_core::{BuildPhase, BuildStatus, CanonicalSpec, Grant, Policy, Role};
/// What a build's event stream (`GET /api/v1/builds/{id}/log` as
/// `text/event-stream`) sends as JSON.
pub use envstore_core::{PhaseState, ProgressEvent, ProgressRecord};
pub use health::{Liveness, Readiness, ReadinessChecks};
pub use kernels::{Kernel, KernelsPage};
pub use locks::{LockfileQuery, SolveQuery};
pub use namespaces::{
    NamespaceCreated, NamespaceDeleted, NamespaceSummary, NamespaceView, NamespacesPage,
    NewNamespace, Visibility, VisibilitySet,
};
pub use packages::{PackageMatch, PackagesPage};
pub use policy::PolicyView;
pub use problem::{PROBLEM_CONTENT_TYPE, Problem};
pub use usage::{NamespaceUsage, Prices, Quota, QuotaView, SharedPrefix, UsageFigures, UsageTable};
