//! Unit tests of the security chain: listener policies, files per listener, reload, SCRAM.

use super::{Security, NO_LISTENER, NO_LISTENER_INDEX};
use crate::api::{Hooks, ReloadReport};
use crate::config::Config;
use std::path::PathBuf;
use std::sync::Arc;
use uringmq_auth::scram::METHOD as SCRAM_METHOD;
use uringmq_auth::{
    Access, AuthDecision, AuthStep, ClientInfo, DenyReason, EnhancedAuthenticator, PasswordFile,
};

fn security(toml: &str) -> Arc<Security> {
    let config = Config::from_toml_str(toml).unwrap();
    Security::new(&config, &Hooks::default(), Vec::new()).unwrap()
}

#[test]
fn loopback_only_needs_no_authenticator() {
    let s = security("");
    assert!(s.authenticator().is_none());
    assert!(s.authorizer().is_none());
}

#[test]
fn anonymous_is_decided_per_listener() {
    let s = security(
        "[[listener]]\nname = \"lan\"\nbind = \"0.0.0.0\"\nport = 1884\n\
         [[listener]]\nname = \"open\"\nbind = \"0.0.0.0\"\nport = 1885\nallow_anonymous = true\n",
    );
    let a = s
        .authenticator()
        .expect("a non-loopback listener refuses anonymous");
    let anon = |listener| a.authenticate(&ClientInfo::new("c", None, listener), None);
    assert_eq!(anon("lan"), AuthDecision::Deny(DenyReason::NotAuthorized));
    assert_eq!(
        anon("default"),
        AuthDecision::Deny(DenyReason::NotAuthorized)
    );
    assert_eq!(anon("open"), AuthDecision::Allow);
    // Without a password file any named client is let in, as Mosquitto does.
    let named = ClientInfo::new("c", Some("u"), "lan");
    assert_eq!(a.authenticate(&named, None), AuthDecision::Allow);
    assert!(!a.is_blocking());
}

#[test]
fn a_missing_file_is_a_start_error_naming_the_key() {
    let config = Config {
        acl_file: Some("/nonexistent/acl".into()),
        ..Config::default()
    };
    let err = Security::new(&config, &Hooks::default(), Vec::new())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("acl_file"), "{err}");
}

#[test]
fn a_missing_jwt_key_file_is_a_start_error_naming_its_key() {
    for (toml, key) in [
        (
            "jwt_public_key_file = \"/nonexistent/k.pem\"\n",
            "`jwt_public_key_file`",
        ),
        (
            "[[listener]]\nname = \"l\"\nport = 0\njwt_jwks_file = \"/nonexistent/jwks\"\n",
            "`listener.jwt_jwks_file`",
        ),
    ] {
        let config = Config::from_toml_str(toml).unwrap();
        let err = Security::new(&config, &Hooks::default(), Vec::new())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(key) && err.contains("/nonexistent/"), "{err}");
    }
}

#[test]
fn reload_swaps_the_acl_and_keeps_it_on_error() {
    let dir = std::env::temp_dir().join(format!("uringmq-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let acl = dir.join("acl");
    std::fs::write(&acl, "topic read a/#\n").unwrap();
    let config = Config {
        acl_file: Some(acl.clone()),
        ..Config::default()
    };
    let s = Security::new(&config, &Hooks::default(), Vec::new()).unwrap();
    let z = s.authorizer().unwrap();
    let anon = ClientInfo::new("c", None, "default");
    assert!(z.authorize(&anon, Access::Receive, "a/1"));
    assert!(!z.authorize(&anon, Access::Receive, "b/1"));

    std::fs::write(&acl, "topic read b/#\n").unwrap();
    let mut report = ReloadReport::default();
    s.reload(&mut report);
    assert_eq!(report.reloaded, vec!["acl_file".to_owned()]);
    assert!(!z.authorize(&anon, Access::Receive, "a/1"));
    assert!(z.authorize(&anon, Access::Receive, "b/1"));

    std::fs::write(&acl, "bogus line\n").unwrap();
    let mut report = ReloadReport::default();
    s.reload(&mut report);
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert!(
        z.authorize(&anon, Access::Receive, "b/1"),
        "previous ACL kept"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A scratch directory with these files in it.
fn files(tag: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("uringmq-auth-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir
}

fn listener_with(name: &str, password: Option<PathBuf>, acl: Option<PathBuf>) -> String {
    let key = |k: &str, p: Option<PathBuf>| {
        p.map(|p| format!("{k} = {:?}\n", p.display().to_string()))
            .unwrap_or_default()
    };
    format!(
        "[[listener]]\nname = \"{name}\"\nport = 0\n{}{}",
        key("password_file", password),
        key("acl_file", acl)
    )
}

#[test]
fn listeners_with_files_of_their_own_use_them_per_key() {
    let dir = files(
        "per-listener",
        &[
            ("acl-a", "user alice\ntopic readwrite a/#\n"),
            ("acl-g", "user alice\ntopic read g/#\n"),
        ],
    );
    let s = security(&format!(
        "acl_file = {:?}\n{}{}",
        dir.join("acl-g").display().to_string(),
        listener_with("a", None, Some(dir.join("acl-a"))),
        listener_with("b", None, None),
    ));
    let z = s.authorizer().unwrap();
    let alice = |listener| ClientInfo::new("c", Some("alice"), listener);
    // Listener a: its own ACL only.
    assert!(z.authorize(&alice("a"), Access::Publish, "a/1"));
    assert!(!z.authorize(&alice("a"), Access::Receive, "g/1"));
    // Listener b and the default one: the global ACL.
    for l in ["b", "default"] {
        assert!(!z.authorize(&alice(l), Access::Publish, "a/1"), "{l}");
        assert!(z.authorize(&alice(l), Access::Receive, "g/1"), "{l}");
    }
    // No listener (an in-process subscription): unknown ACL, denied.
    assert!(!z.authorize(&alice(NO_LISTENER), Access::Receive, "g/1"));
    // Offline sessions keep their listener as an index.
    for l in ["default", "a", "b"] {
        assert_eq!(s.listener_name(s.listener_index(l)), l);
    }
    assert_eq!(s.listener_index("gone"), NO_LISTENER_INDEX);
    assert_eq!(s.listener_name(NO_LISTENER_INDEX), NO_LISTENER);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_listener_password_file_replaces_the_global_one_on_that_listener_only() {
    let dir = files("per-listener-pw", &[]);
    let (a, b) = (dir.join("passwd-a"), dir.join("passwd-b"));
    for (path, user) in [(&a, "alice"), (&b, "bob")] {
        let mut f = PasswordFile::default();
        f.set(user, b"pw", uringmq_auth::Scheme::Pbkdf2Sha512)
            .unwrap();
        f.save_to(path).unwrap();
    }
    let s = security(&format!(
        "auth_failure_delay_ms = 0\n{}{}",
        listener_with("a", Some(a), None),
        listener_with("b", Some(b.clone()), None),
    ));
    let authn = s.authenticator().unwrap();
    assert!(authn.is_blocking(), "password hashes run off the cores");
    let login = |user, listener| {
        authn.authenticate(&ClientInfo::new("c", Some(user), listener), Some(b"pw"))
    };
    assert_eq!(login("alice", "a"), AuthDecision::Allow);
    assert_eq!(login("bob", "b"), AuthDecision::Allow);
    let refused = AuthDecision::Deny(DenyReason::BadCredentials);
    assert_eq!(login("alice", "b"), refused);
    assert_eq!(login("bob", "a"), refused);
    // No global password file: the default listener lets any named user in.
    assert_eq!(login("carol", "default"), AuthDecision::Allow);

    // A bad file on reload keeps the previous one and names the listener.
    std::fs::write(&b, "bob:not-a-hash\n").unwrap();
    let mut report = ReloadReport::default();
    s.reload(&mut report);
    assert_eq!(
        report.reloaded,
        vec!["password_file (listener a)".to_owned()]
    );
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert!(
        report.errors[0].starts_with("password_file (listener b)"),
        "{report:?}"
    );
    assert_eq!(login("bob", "b"), AuthDecision::Allow, "previous file kept");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The whole SCRAM-SHA-256 exchange against `a`; true if it succeeds and the client
/// verifies the server.
fn scram_login(a: &dyn EnhancedAuthenticator, info: &ClientInfo<'_>, pw: &[u8]) -> bool {
    let mut client = uringmq_auth::ScramClient::new("sam", pw);
    let (step, mut state) = a.start(info, Some(&client.client_first()));
    let AuthStep::Continue(server_first) = step else {
        return false;
    };
    let Ok(fin) = client.client_final(&server_first) else {
        return false;
    };
    match a.step(&mut state, Some(&fin)) {
        AuthStep::Success(Some(v)) => client.verify_server_final(&v).is_ok(),
        _ => false,
    }
}

#[test]
fn scram_from_the_password_file_is_offered_per_listener_and_reloaded() {
    let dir = files("scram", &[]);
    let passwd = dir.join("passwd");
    let mut f = PasswordFile::default();
    f.set("sam", b"pencil", uringmq_auth::Scheme::ScramSha256)
        .unwrap();
    f.save_to(&passwd).unwrap();
    let s = security(&format!(
        "password_file = {:?}\n[[listener]]\nname = \"s\"\nport = 0\nscram_sha256 = true\n",
        passwd.display().to_string()
    ));
    assert!(s.enhanced(SCRAM_METHOD, "default").is_none(), "not offered");
    assert!(s.enhanced("OTHER", "s").is_none());
    let a = s.enhanced(SCRAM_METHOD, "s").expect("offered on s");
    let sam = ClientInfo::new("c", Some("sam"), "s");
    assert!(scram_login(&*a, &sam, b"pencil"));
    assert!(!scram_login(&*a, &sam, b"wrong"));
    // The User Name is required (ACLs are keyed by it) and must name the SCRAM user.
    assert!(!scram_login(
        &*a,
        &ClientInfo::new("c", None, "s"),
        b"pencil"
    ));
    assert!(!scram_login(
        &*a,
        &ClientInfo::new("c", Some("bob"), "s"),
        b"pencil"
    ));
    // The entry also checks a plain CONNECT password.
    let plain = s.authenticator().unwrap();
    assert_eq!(
        plain.authenticate(&sam, Some(b"pencil")),
        AuthDecision::Allow
    );

    // SIGHUP: the new file's keys apply to the next exchange.
    f.set("sam", b"crayon", uringmq_auth::Scheme::ScramSha256)
        .unwrap();
    f.save_to(&passwd).unwrap();
    s.reload(&mut ReloadReport::default());
    assert!(!scram_login(&*a, &sam, b"pencil"));
    assert!(scram_login(&*a, &sam, b"crayon"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_listener_file_is_a_start_error_naming_the_key_and_listener() {
    let config =
        Config::from_toml_str(&listener_with("lan", None, Some("/nonexistent/acl".into())))
            .unwrap();
    let err = Security::new(&config, &Hooks::default(), Vec::new())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("listener.acl_file")
            && err.contains("lan")
            && err.contains("/nonexistent/acl"),
        "{err}"
    );
}
