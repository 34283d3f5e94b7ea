//! The global config, the credential fallback and both precedence orders.

use std::collections::HashMap;

use reactor_manifest::resolve::{
    ContextSource, TokenSource, context_token_var, resolve_token, select_context,
};
use reactor_manifest::{AuthConfig, ConfigError, CredentialStore, GlobalConfig};

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn context_precedence_is_flag_env_project_config() {
    let project = Some(("proj", std::path::PathBuf::from("/p/reactor.toml")));
    let all = env(&[("REACTOR_CONTEXT", "from-env")]);
    let pick =
        |flag,
         e: &dyn Fn(&str) -> Option<String>,
         proj: Option<(&str, std::path::PathBuf)>,
         cfg| { select_context(flag, e, proj, cfg).map(|s| (s.name, s.source)) };
    assert_eq!(
        pick(Some("flag"), &all, project.clone(), Some("cfg")),
        Some(("flag".into(), ContextSource::Flag))
    );
    assert_eq!(
        pick(None, &all, project.clone(), Some("cfg")),
        Some(("from-env".into(), ContextSource::Env))
    );
    let none = env(&[]);
    assert_eq!(
        pick(None, &none, project.clone(), Some("cfg")),
        Some((
            "proj".into(),
            ContextSource::Project("/p/reactor.toml".into())
        ))
    );
    assert_eq!(
        pick(None, &none, None, Some("cfg")),
        Some(("cfg".into(), ContextSource::ConfigDefault))
    );
    assert_eq!(pick(None, &none, None, None), None);
    // An empty variable is unset.
    let empty = env(&[]);
    assert_eq!(
        pick(Some(""), &empty, None, Some("cfg")).map(|p| p.1),
        Some(ContextSource::ConfigDefault)
    );
}

#[test]
fn token_precedence_is_flag_env_context_env_store() {
    let home = tempfile::tempdir().expect("tempdir");
    let store = CredentialStore::with_keychain(home.path(), false);
    let (auth, notice) = store.save("my-prod", "rk_svc_stored").expect("save");
    assert_eq!(auth, AuthConfig::File);
    assert!(notice.is_some_and(|n| n.contains("credentials.toml")));
    // Said once only.
    assert_eq!(store.save("other", "x").expect("save").1, None);

    assert_eq!(context_token_var("my-prod"), "REACTOR_TOKEN_MY_PROD");
    let ctx = Some(("my-prod", Some(&auth)));
    let full = env(&[
        ("REACTOR_TOKEN", "env"),
        ("REACTOR_TOKEN_MY_PROD", "ctx-env"),
    ]);
    let r = |flag, e: &dyn Fn(&str) -> Option<String>| {
        resolve_token(flag, e, ctx, &store).expect("resolve")
    };
    assert_eq!(
        r(Some("flag"), &full),
        Some(("flag".into(), TokenSource::Flag))
    );
    assert_eq!(r(None, &full), Some(("env".into(), TokenSource::Env)));
    let ctx_only = env(&[("REACTOR_TOKEN_MY_PROD", "ctx-env")]);
    assert_eq!(
        r(None, &ctx_only),
        Some((
            "ctx-env".into(),
            TokenSource::ContextEnv("REACTOR_TOKEN_MY_PROD".into())
        ))
    );
    assert_eq!(
        r(None, &env(&[])),
        Some(("rk_svc_stored".into(), TokenSource::File))
    );
    // The other context's variable does not leak into this one.
    let wrong = env(&[("REACTOR_TOKEN_OTHER", "nope")]);
    assert_eq!(r(None, &wrong).map(|t| t.1), Some(TokenSource::File));

    store.delete("my-prod", &auth).expect("delete");
    assert_eq!(r(None, &env(&[])), None);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.path().join("credentials.toml"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn config_round_trips_and_keeps_comments() {
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::write(home.path().join("config.toml"), "# my contexts\n").expect("write");
    let mut cfg = GlobalConfig::load(home.path()).expect("load");
    cfg.add_context("staging", "https://staging.example.com/", Some("acme"))
        .expect("add");
    cfg.add_context("local", "http://127.0.0.1:8080", None)
        .expect("add");
    assert!(matches!(
        cfg.add_context("local", "http://x.example", None),
        Err(ConfigError::ContextExists(_))
    ));
    assert!(matches!(
        cfg.add_context("bad name", "http://x.example", None),
        Err(ConfigError::InvalidContextName(_))
    ));
    assert!(matches!(
        cfg.add_context("ftp", "ftp://x.example", None),
        Err(ConfigError::InvalidEndpoint(_))
    ));
    cfg.use_context("staging").expect("use");
    cfg.set_auth(
        "staging",
        Some(&AuthConfig::Keychain {
            service: "reactor".into(),
            account: "staging".into(),
        }),
    )
    .expect("auth");
    cfg.save().expect("save");

    let text = std::fs::read_to_string(home.path().join("config.toml")).expect("read");
    assert!(text.contains("# my contexts"), "{text}");
    let again = GlobalConfig::load(home.path()).expect("reload");
    assert_eq!(again.default_context(), Some("staging"));
    let staging = again.context("staging").expect("staging");
    assert_eq!(staging.endpoint, "https://staging.example.com");
    assert_eq!(staging.org.as_deref(), Some("acme"));
    assert!(matches!(staging.auth, Some(AuthConfig::Keychain { .. })));
    match again.context("stagin") {
        Err(e @ ConfigError::UnknownContext { .. }) => {
            assert!(e.to_string().contains("did you mean `staging`?"))
        }
        other => panic!("expected UnknownContext, got {other:?}"),
    }

    let mut again = again;
    again.remove_context("staging").expect("remove");
    assert_eq!(again.default_context(), None);
    assert_eq!(again.contexts().len(), 1);
}

#[test]
fn broken_config_is_located() {
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        home.path().join("config.toml"),
        "default = \"x\"\n[contexts.a]\nendpoint = 3\n",
    )
    .expect("write");
    let e = GlobalConfig::load(home.path()).expect_err("invalid");
    let shown = e.to_string();
    assert!(shown.contains("config.toml:3:12"), "{shown}");
}
