//! `envstore tokens` (create, list, revoke) and `envstore whoami`.

use envstore_server::args::resources::{ClientArgs, TokensCommand};

use super::client;
use super::output::{self, Table};
use super::types::{Grant, NewToken, TokenView};

pub(crate) async fn run(command: TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::Create {
            name,
            subject,
            expires_in_days,
            scopes,
            server_admin,
            client,
        } => {
            let token = NewToken {
                name,
                subject,
                expires_in_days,
                scopes: (!scopes.is_empty()).then_some(scopes),
                server_admin,
            };
            create(&token, client).await
        }
        TokensCommand::List { all, client } => list(all, client).await,
        TokensCommand::Revoke { id, client } => revoke(&id, client).await,
    }
}

/// `team=developer, lab-*=viewer`, or what no scopes mean.
fn scopes_text(scopes: Option<&[Grant]>) -> String {
    match scopes {
        None => "the subject's roles".to_owned(),
        Some([]) => "nothing".to_owned(),
        Some(scopes) => scopes
            .iter()
            .map(|grant| format!("{}={}", grant.namespace.as_str(), grant.role))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

async fn create(token: &NewToken, args: ClientArgs) -> anyhow::Result<()> {
    let created = client(&args)?.create_token(token).await?;
    if args.json {
        return output::json(&created);
    }
    let record = &created.record;
    // The value alone on standard output, for `$(envstore tokens create …)`.
    println!("{}", created.token);
    eprintln!(
        "token {} ({}) for {}: {}{}, expires {}; its value is shown only this once",
        record.id,
        record.name,
        record.subject,
        scopes_text(record.scopes.as_deref()),
        if record.server_admin {
            ", server admin"
        } else {
            ""
        },
        record
            .expires_at
            .map_or_else(|| "never".to_owned(), output::iso)
    );
    Ok(())
}

fn state(token: &TokenView, now: i64) -> String {
    match (token.revoked_at, token.expires_at) {
        (Some(revoked), _) => format!("revoked {}", output::when(revoked)),
        (None, Some(expires)) if expires <= now => format!("expired {}", output::when(expires)),
        (None, Some(expires)) => format!("expires {}", output::when(expires)),
        (None, None) => "never expires".to_owned(),
    }
}

async fn list(all: bool, args: ClientArgs) -> anyhow::Result<()> {
    let tokens = client(&args)?.tokens(all).await?;
    if args.json {
        return output::json(&tokens);
    }
    if tokens.tokens.is_empty() {
        eprintln!("you have no tokens (`envstore tokens create NAME` makes one)");
        return Ok(());
    }
    let now = output::now_ms();
    let mut table = Table::new(&["ID", "NAME", "SUBJECT", "SCOPES", "CREATED", "STATE"]);
    for token in &tokens.tokens {
        let mut scopes = scopes_text(token.scopes.as_deref());
        if token.server_admin {
            scopes.push_str(" + server admin");
        }
        table.row(vec![
            token.id.clone(),
            token.name.clone(),
            token.subject.clone(),
            scopes,
            output::when(token.created_at),
            state(token, now),
        ]);
    }
    table.print();
    Ok(())
}

async fn revoke(id: &str, args: ClientArgs) -> anyhow::Result<()> {
    client(&args)?.revoke_token(id).await?;
    if args.json {
        return output::json(&serde_json::json!({ "revoked": id }));
    }
    println!("revoked token {id} (and the tokens minted with it)");
    Ok(())
}

pub(crate) async fn whoami(args: ClientArgs) -> anyhow::Result<()> {
    let me = client(&args)?.whoami().await?;
    if args.json {
        return output::json(&me);
    }
    let Some(subject) = &me.subject else {
        println!(
            "anonymous: no token was sent (set ENVSTORE_TOKEN or pass --token); only public namespaces are visible"
        );
        return Ok(());
    };
    let mut fields = vec![
        ("subject", subject.clone()),
        (
            "server admin",
            if me.server_admin { "yes" } else { "no" }.to_owned(),
        ),
        ("token", output::or_dash(me.token_id.as_deref())),
        (
            "expires",
            me.expires_at.map_or_else(
                || "never".to_owned(),
                |at| format!("{} ({})", output::when(at), output::iso(at)),
            ),
        ),
    ];
    if me.scopes.is_some() {
        fields.push(("narrowed to", scopes_text(me.scopes.as_deref())));
    }
    print!("{}", output::fields(&fields));
    if !me.bindings.is_empty() {
        println!();
        let mut table = Table::new(&["NAMESPACE", "ROLE"]);
        for grant in &me.bindings {
            table.row(vec![
                grant.namespace.as_str().to_owned(),
                grant.role.to_string(),
            ]);
        }
        table.print();
    }
    Ok(())
}
