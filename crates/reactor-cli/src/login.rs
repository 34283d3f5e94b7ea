//! `reactor login`, `reactor logout`, `reactor whoami`.

use std::io::{BufRead, IsTerminal, Read};

use reactor_client::{Client, Credentials};
use reactor_manifest::resolve::TokenSource;

use crate::output::hinted;
use crate::session::{Credential, Session, StoredSession};

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The account's email address (asked for when omitted).
    #[arg(long)]
    email: Option<String>,
    /// Read the password from standard input instead of asking for it.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Debug, clap::Args)]
pub struct WhoamiArgs {
    #[arg(long)]
    json: bool,
}

/// Signs in to the current context's server and keeps the session (OS keychain, or the 0600
/// file) for later commands, which refresh it as needed. Nothing secret is printed.
pub async fn login(session: &Session, args: LoginArgs) -> anyhow::Result<()> {
    let mut config = session.config()?;
    let Some(selected) = session.select_context(&config) else {
        return Err(hinted(
            "no context selected",
            "add one with `reactor context add NAME --endpoint URL --key rk_pub_…`",
        ));
    };
    let context = config.context(&selected.name)?.clone();
    let Some(key) = context.key.clone() else {
        return Err(hinted(
            format!(
                "context `{}` has no project key to sign in with",
                selected.name
            ),
            format!(
                "add the project's rk_pub_ key: `reactor context set-key {} rk_pub_…`",
                selected.name
            ),
        ));
    };
    let stdin = std::io::stdin();
    let email = match args.email {
        Some(e) => e,
        None if stdin.is_terminal() => {
            eprint!("Email: ");
            let mut line = String::new();
            stdin.lock().read_line(&mut line)?;
            line.trim().to_string()
        }
        None => {
            return Err(hinted(
                "no email given",
                "pass --email when standard input is not a terminal",
            ));
        }
    };
    let password = if args.password_stdin {
        let mut text = String::new();
        stdin.lock().read_to_string(&mut text)?;
        text.trim_end_matches(['\n', '\r']).to_string()
    } else if stdin.is_terminal() {
        rpassword::prompt_password("Password: ")?
    } else {
        return Err(hinted(
            "no password given",
            "pipe it in with --password-stdin",
        ));
    };
    let client = Client::new(
        &context.endpoint,
        Credentials {
            apikey: Some(key),
            ..Credentials::default()
        },
    );
    let auth = client.password_grant(&email, &password).await?;
    let email = auth.user["email"].as_str().unwrap_or(&email).to_string();
    session.save_session(
        &mut config,
        &selected.name,
        &StoredSession::from_auth(auth, email.clone()),
    )?;
    eprintln!("signed in to `{}` as {email}", selected.name);
    Ok(())
}

/// Signs out on the server and forgets the stored session.
pub async fn logout(session: &Session) -> anyhow::Result<()> {
    let mut config = session.config()?;
    let Some(selected) = session.select_context(&config) else {
        return Err(hinted("no context selected", "name one with --context"));
    };
    let context = config.context(&selected.name)?.clone();
    let stored = session.resolve_token(&config, &selected.name)?;
    let Some((raw, source)) = stored else {
        eprintln!("not signed in to `{}`", selected.name);
        return Ok(());
    };
    if !matches!(source, TokenSource::Keychain | TokenSource::File) {
        return Err(hinted(
            format!("the credential comes from {source}, which `reactor logout` cannot forget"),
            "unset that variable or drop the flag",
        ));
    }
    if let Credential::User(user) = Credential::parse(raw) {
        let client = Client::new(
            &context.endpoint,
            Credentials {
                apikey: context.key.clone(),
                bearer: Some(user.access_token),
                org: None,
            },
        );
        // An expired or revoked session is already signed out on the server.
        if let Err(e) = client.logout().await {
            eprintln!(
                "note: the server did not confirm the sign-out ({e}); the local session is forgotten anyway"
            );
        }
    }
    if let Some(auth) = &context.auth {
        session.store().delete(&selected.name, auth)?;
    }
    config.set_auth(&selected.name, None)?;
    config.save()?;
    eprintln!("signed out of `{}`", selected.name);
    Ok(())
}

/// Who the current context acts as.
pub async fn whoami(session: &Session, args: WhoamiArgs) -> anyhow::Result<()> {
    let (selected, client) = session.client().await?;
    let info = client.info().await?;
    let email = if info.caller.user_id.is_some() {
        client.user().await?["email"].as_str().map(str::to_string)
    } else {
        None
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "context": selected.name,
                "endpoint": client.endpoint(),
                "tier": info.caller.tier,
                "user_id": info.caller.user_id,
                "email": email,
                "org_id": info.caller.org_id,
                "org_role": info.caller.org_role,
            }))?
        );
        return Ok(());
    }
    match (&email, &info.caller.user_id) {
        (Some(email), Some(id)) => println!("{email} ({id}) on `{}`", selected.name),
        _ => println!(
            "a {} key on `{}` (no user)",
            info.caller.tier, selected.name
        ),
    }
    if let (Some(org), Some(role)) = (&info.caller.org_id, &info.caller.org_role) {
        println!("org {org} as {role}");
    }
    Ok(())
}
