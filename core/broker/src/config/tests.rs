//! Unit tests of the configuration: defaults, the example file, errors naming their key.

use super::*;

#[test]
fn bind_takes_localhost_and_names_a_host_name() {
    let c = Config::from_toml_str(
        "bind = \"localhost\"\n[[listener]]\nbind = \"LOCALHOST\"\nport = 0\n",
    )
    .unwrap();
    assert_eq!(c.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(c.listeners[0].bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let e = Config::from_toml_str("bind = \"broker.lan\"").unwrap_err();
    assert!(e.to_string().contains("not an IP address"), "{e}");
}

#[test]
fn a_files_relative_paths_and_errors_name_its_folder() {
    let dir = std::env::temp_dir().join(format!("uringmq-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("b.toml");
    std::fs::write(&file, "acl_file = \"acl\"\npassword_file = \"/abs/p\"\njwt_secret_file = \"s\"\n[[listener]]\nport = 0\nname = \"l\"\ncert_file = \"tls/c.pem\"\njwt_jwks_file = \"j.json\"\n").unwrap();
    let c = Config::from_file(&file).unwrap();
    assert_eq!(c.jwt_secret_file, Some(dir.join("s")));
    assert_eq!(c.listeners[0].jwt_jwks_file, Some(dir.join("j.json")));
    assert_eq!(c.acl_file, Some(dir.join("acl")));
    assert_eq!(c.password_file, Some(PathBuf::from("/abs/p")));
    assert_eq!(c.listeners[0].cert_file, Some(dir.join("tls/c.pem")));
    std::fs::write(&file, "port = 1\n\n\n\nmax_inflihgt = 3\n").unwrap();
    let e = Config::from_file(&file).unwrap_err().to_string();
    assert!(
        e.contains(&file.display().to_string()) && e.contains("line 5"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_example_config_is_the_default_and_documents_every_key() {
    let text = include_str!("../../../../uringmq.example.toml");
    assert_eq!(Config::from_toml_str(text).unwrap(), Config::default());
    let uncommented: String = text
        .lines()
        .map(|l| l.trim_start_matches("# "))
        .collect::<Vec<_>>()
        .join("\n");
    for line in Config::default().to_toml_string().lines() {
        if let Some((key, _)) = line.split_once(" = ") {
            let documented = uncommented.contains(&format!("{key} = "))
                || uncommented.contains(&format!("[[{key}]]"));
            assert!(documented, "{key} is not documented");
        }
    }
    // Every key of a `[[listener]]` table too (each optional one set, so none is skipped).
    let every = ListenerConfig {
        name: Some("lan".into()),
        cert_file: Some("c".into()),
        key_file: Some("k".into()),
        ca_file: Some("ca".into()),
        allow_anonymous: Some(true),
        password_file: Some("p".into()),
        acl_file: Some("a".into()),
        scram_sha256: Some(true),
        max_publish_rate: Some(1),
        max_publish_bytes_rate: Some(1),
        max_connection_rate: Some(1),
        max_connection_rate_per_source: Some(1),
        jwt_secret_file: Some("s".into()),
        jwt_public_key_file: Some("k".into()),
        jwt_jwks_file: Some("j".into()),
        jwt_username_claim: Some("sub".into()),
        jwt_acl_claim: Some("acl".into()),
        ..ListenerConfig::new(Transport::Tcp, 1884)
    };
    for line in toml::to_string(&every).unwrap_or_default().lines() {
        if let Some((key, _)) = line.split_once(" = ") {
            let documented = uncommented.contains(&format!("\n{key} = "));
            assert!(documented, "listener key {key} is not documented");
        }
    }
}

#[test]
fn empty_document_is_the_default() {
    assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
}

#[test]
fn unknown_key_is_named() {
    let err = Config::from_toml_str("max_inflihgt = 3")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_inflihgt"), "{err}");
}

#[test]
fn out_of_range_value_is_named() {
    let err = Config::from_toml_str("max_qos = 3")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_qos"), "{err}");
}

#[test]
fn round_trips_through_toml() {
    let mut c = Config {
        port: 0,
        ..Config::default()
    };
    c.listeners.push(ListenerConfig::new(Transport::Ws, 9001));
    assert_eq!(Config::from_toml_str(&c.to_toml_string()).unwrap(), c);
}

#[test]
fn per_listener_files_need_a_unique_listener_name() {
    let table = |name: &str| {
        format!("[[listener]]\nname = \"{name}\"\nport = 0\nacl_file = \"/etc/acl\"\n")
    };
    let c = Config::from_toml_str(&(table("a") + &table("b"))).unwrap();
    assert_eq!(c.listeners[0].acl_file, Some(PathBuf::from("/etc/acl")));
    assert_eq!(c.listeners[1].password_file, None);
    for clash in [table("a") + &table("a"), table("default")] {
        let err = Config::from_toml_str(&clash).unwrap_err().to_string();
        assert!(err.contains("listener.name"), "{err}");
    }
    // Two unnamed listeners on port 0 are both `tcp:0`.
    let unnamed = "[[listener]]\nport = 0\n[[listener]]\nport = 0\npassword_file = \"p\"\n";
    assert!(Config::from_toml_str(unnamed).is_err());
}

#[test]
fn scram_needs_a_password_file_in_force_on_its_listener() {
    let err = Config::from_toml_str("scram_sha256 = true").unwrap_err();
    assert!(err.to_string().contains("`scram_sha256`"), "{err}");
    let table = "[[listener]]\nname = \"s\"\nport = 0\nscram_sha256 = true\n";
    let err = Config::from_toml_str(table).unwrap_err().to_string();
    assert!(
        err.contains("listener.scram_sha256") && err.contains("`s`"),
        "{err}"
    );
    let own = format!("{table}password_file = \"/etc/p\"\n");
    let c = Config::from_toml_str(&own).unwrap();
    assert!(c.scram_enabled(Some(&c.listeners[0])) && !c.scram_enabled(None));
    // Global on, one listener opting out; the global file serves the others.
    let global = "password_file = \"/etc/p\"\nscram_sha256 = true\n\
                  [[listener]]\nport = 0\nscram_sha256 = false\n";
    let c = Config::from_toml_str(global).unwrap();
    assert!(c.scram_enabled(None) && !c.scram_enabled(Some(&c.listeners[0])));
}

#[test]
fn listener_rates_override_the_global_ones() {
    let text = "max_publish_rate = 10\nmax_connection_rate = 5\n\
                [[listener]]\nport = 0\nmax_publish_bytes_rate = 100\nmax_connection_rate = 0\n";
    let c = Config::from_toml_str(text).unwrap();
    assert_eq!(c.publish_rates(None), (10, 0));
    assert_eq!(c.publish_rates(Some(&c.listeners[0])), (10, 100));
    assert_eq!(c.connection_rate(None), 5);
    assert_eq!(c.connection_rate(Some(&c.listeners[0])), 0);
    assert_eq!(c.connection_rate_per_source(None), 0);
}

#[test]
fn anonymous_defaults_follow_exposure() {
    let mut c = Config::default();
    assert!(c.anonymous_allowed(None));
    c.bind = "0.0.0.0".parse().unwrap();
    assert!(!c.anonymous_allowed(None));
    c.allow_anonymous = Some(true);
    assert!(c.anonymous_allowed(None));
}

#[test]
fn a_session_store_needs_the_nodes_own_store() {
    let cluster = "[cluster]\nname = \"a\"\nsecret = \"0123456789abcdef\"\n\
                   session_store = \"redis://127.0.0.1:6379/0\"\n";
    let e = Config::from_toml_str(cluster).unwrap_err().to_string();
    assert!(
        e.contains("cluster.session_store") && e.contains("persistence_dir"),
        "{e}"
    );
    Config::from_toml_str(&format!("persistence_dir = \"/tmp/x\"\n{cluster}")).unwrap();
}
