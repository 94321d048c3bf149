//! The client commands of `envstore` over the API's resources, one module
//! per resource, and `submit` with its waiting. Calls go through
//! `envstore-client`; what comes back is printed by [`output`].

pub(crate) mod builds;
pub(crate) mod env;
pub(crate) mod namespaces;
pub(crate) mod output;
pub(crate) mod submit;
pub(crate) mod tokens;

use std::collections::BTreeMap;

use envstore_client::Client;
/// The wire types, through the client that reads them.
use envstore_client::envstore_api_types as types;
use envstore_server::args::resources::ClientArgs;
use types::LockedPackage;

/// The client of the server and token the flags (or `ENVSTORE_URL`,
/// `ENVSTORE_TOKEN`) name.
fn client(args: &ClientArgs) -> anyhow::Result<Client> {
    Client::new(&args.server.server, args.server.token.clone())
}

/// `26 packages on linux-64`, or one count per platform of a lock.
fn packages_summary(packages: &BTreeMap<String, Vec<LockedPackage>>) -> String {
    let counts: Vec<String> = packages
        .iter()
        .map(|(platform, packages)| format!("{} packages on {platform}", packages.len()))
        .collect();
    if counts.is_empty() {
        "none".to_owned()
    } else {
        counts.join(", ")
    }
}
