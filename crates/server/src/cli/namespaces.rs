//! `envstore namespaces`: list, create, delete, members, policy,
//! visibility, quota.

use std::collections::BTreeSet;
use std::path::Path;

use super::types::{NamespacesPage, PolicyView, Quota, QuotaView, Role};
use envstore_server::args::resources::{ClientArgs, Limit, NamespacesCommand, VisibilityArg};

use super::client;
use super::output::{self, Table};

pub(crate) async fn run(command: NamespacesCommand) -> anyhow::Result<()> {
    match command {
        NamespacesCommand::List { client } => list(client).await,
        NamespacesCommand::Create {
            name,
            public,
            client,
        } => create(&name, public, client).await,
        NamespacesCommand::Delete { name, client } => delete(&name, client).await,
        NamespacesCommand::Members {
            name,
            set,
            remove,
            client,
        } => members(&name, &set, &remove, client).await,
        NamespacesCommand::Policy { name, set, client } => {
            policy(&name, set.as_deref(), client).await
        }
        NamespacesCommand::Visibility {
            name,
            visibility,
            client,
        } => show_visibility(&name, visibility, client).await,
        NamespacesCommand::Quota {
            name,
            disk,
            builds,
            client,
        } => quota(&name, disk, builds, client).await,
    }
}

fn visibility_text(public_read: bool) -> &'static str {
    if public_read { "public" } else { "private" }
}

async fn list(args: ClientArgs) -> anyhow::Result<()> {
    let namespaces = client(&args)?.namespaces().await?;
    if args.json {
        return output::json(&NamespacesPage {
            namespaces,
            next_after: None,
        });
    }
    if namespaces.is_empty() {
        eprintln!("no namespaces you may see");
        return Ok(());
    }
    let mut table = Table::new(&["NAMESPACE", "VISIBILITY", "CREATED"]);
    for namespace in &namespaces {
        table.row(vec![
            namespace.name.clone(),
            visibility_text(namespace.public_read).to_owned(),
            output::when(namespace.created_at),
        ]);
    }
    table.print();
    Ok(())
}

async fn create(name: &str, public: bool, args: ClientArgs) -> anyhow::Result<()> {
    let created = client(&args)?.create_namespace(name, public).await?;
    if args.json {
        return output::json(&created);
    }
    println!(
        "created namespace {} ({})",
        created.name,
        visibility_text(created.public_read)
    );
    Ok(())
}

async fn delete(name: &str, args: ClientArgs) -> anyhow::Result<()> {
    let deleted = client(&args)?.delete_namespace(name).await?;
    if args.json {
        return output::json(&deleted);
    }
    println!(
        "deleted namespace {}: {} environments and {} builds hidden, {} builds stopped; {}",
        deleted.namespace,
        deleted.environments,
        deleted.builds,
        deleted.stopped_builds,
        deleted.cleanup
    );
    Ok(())
}

async fn members(
    name: &str,
    set: &[(String, Role)],
    remove: &[String],
    args: ClientArgs,
) -> anyhow::Result<()> {
    let client = client(&args)?;
    for (subject, role) in set {
        let member = client.set_member(name, subject, *role).await?;
        eprintln!(
            "{} is now {} of {}",
            member.subject, member.role, member.namespace
        );
    }
    for subject in remove {
        client.remove_member(name, subject).await?;
        eprintln!("{subject} has no role in {name} any more");
    }
    let members = client.members(name).await?;
    if args.json {
        return output::json(&members);
    }
    if members.members.is_empty() {
        eprintln!("{name} has no members (server admins may do everything)");
        return Ok(());
    }
    let mut table = Table::new(&["SUBJECT", "ROLE", "VIA"]);
    for member in &members.members {
        table.row(vec![
            member.subject.clone(),
            member.role.to_string(),
            member.via.as_str().to_owned(),
        ]);
    }
    table.print();
    Ok(())
}

async fn policy(name: &str, set: Option<&Path>, args: ClientArgs) -> anyhow::Result<()> {
    let client = client(&args)?;
    let view = match set {
        Some(file) => {
            let policy = envstore_client::read_policy_file(file)?;
            client.set_policy(name, &policy).await?
        }
        None => client.policy(name).await?,
    };
    if args.json {
        return output::json(&view);
    }
    print!("{}", policy_table(&view)?);
    Ok(())
}

/// Each setting either policy has, as the namespace set it and as it
/// applies.
fn policy_table(view: &PolicyView) -> anyhow::Result<String> {
    let own = serde_json::to_value(&view.policy)?;
    let effective = serde_json::to_value(&view.effective)?;
    let settings: BTreeSet<&String> = own
        .as_object()
        .into_iter()
        .chain(effective.as_object())
        .flat_map(|object| object.keys())
        .collect();
    if settings.is_empty() {
        return Ok(format!(
            "{}: no policy set, and the server's allows everything\n",
            view.namespace
        ));
    }
    let mut table = Table::new(&["SETTING", "NAMESPACE", "IN EFFECT"]);
    for setting in settings {
        let cell = |value: &serde_json::Value| match value.get(setting.as_str()) {
            Some(value) => value.to_string(),
            None => "-".to_owned(),
        };
        table.row(vec![setting.clone(), cell(&own), cell(&effective)]);
    }
    Ok(format!("policy of {}\n{}", view.namespace, table.render()))
}

async fn show_visibility(
    name: &str,
    visibility: Option<VisibilityArg>,
    args: ClientArgs,
) -> anyhow::Result<()> {
    let client = client(&args)?;
    let public_read = match visibility {
        Some(visibility) => {
            let set = client
                .set_visibility(name, visibility == VisibilityArg::Public)
                .await?;
            if args.json {
                return output::json(&set);
            }
            set.public_read
        }
        None => {
            let view = client.namespace(name).await?;
            if args.json {
                return output::json(&view);
            }
            view.public_read
        }
    };
    if public_read {
        println!("{name} is public: anyone may read it, without a token");
    } else {
        println!("{name} is private: only its members and server admins see it");
    }
    Ok(())
}

async fn quota(
    name: &str,
    disk: Option<Limit<bytesize::ByteSize>>,
    builds: Option<Limit<i64>>,
    args: ClientArgs,
) -> anyhow::Result<()> {
    let client = client(&args)?;
    let mut view = client.quota(name).await?;
    if disk.is_some() || builds.is_some() {
        // A limit not given keeps its value: the body replaces both.
        let mut quota = view.quota;
        match disk {
            Some(Limit::Default) => quota.max_disk_bytes = None,
            Some(Limit::Value(size)) => {
                quota.max_disk_bytes = Some(i64::try_from(size.as_u64()).unwrap_or(i64::MAX));
            }
            None => {}
        }
        match builds {
            Some(Limit::Default) => quota.max_concurrent_builds = None,
            Some(Limit::Value(builds)) => quota.max_concurrent_builds = Some(builds),
            None => {}
        }
        view = client.set_quota(name, &quota).await?;
    }
    if args.json {
        return output::json(&view);
    }
    print!("{}", quota_table(&view));
    Ok(())
}

/// One limit of a quota, as a cell (None: not set).
type LimitCell = fn(&Quota) -> Option<String>;

fn quota_table(view: &QuotaView) -> String {
    let mut table = Table::new(&["LIMIT", "NAMESPACE", "SERVER DEFAULT", "IN EFFECT"]);
    let rows: [(&str, LimitCell); 2] = [
        ("disk", |quota| quota.max_disk_bytes.map(output::size)),
        ("concurrent builds", |quota| {
            quota.max_concurrent_builds.map(|builds| builds.to_string())
        }),
    ];
    for (label, value) in rows {
        table.row(vec![
            label.to_owned(),
            value(&view.quota).unwrap_or_else(|| "default".to_owned()),
            value(&view.default).unwrap_or_else(|| "no limit".to_owned()),
            value(&view.effective).unwrap_or_else(|| "no limit".to_owned()),
        ]);
    }
    format!("quota of {}\n{}", view.namespace, table.render())
}
