//! Configuration, host patterns and the agreement rule.

use std::path::PathBuf;

use serde::Deserialize;

use super::*;

#[derive(Deserialize)]
struct Doc {
    secrets: Vec<SecretSpec>,
}

fn specs(text: &str) -> Vec<SecretSpec> {
    toml::from_str::<Doc>(text).unwrap().secrets
}

fn load(text: &str) -> Result<Secrets, SecretsError> {
    Secrets::load(&specs(text))
}

fn err(text: &str) -> String {
    let e = load(text).unwrap_err().to_string();
    assert!(!e.contains("hunter2hunter2"), "value in error: {e}");
    e
}

fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringnet-secrets-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn an_entry_with_defaults() {
    let s = load(
        r#"
        [[secrets]]
        env_var = "GITHUB_TOKEN"
        value = "hunter2hunter2"
        hosts = ["API.github.com."]
        "#,
    )
    .unwrap();
    let g = &s.list()[0];
    assert_eq!(g.placeholder, "$RINGNET_SECRET_GITHUB_TOKEN");
    assert_eq!(g.value.expose(), b"hunter2hunter2");
    assert_eq!(g.hosts, vec![HostPattern::Exact("api.github.com".into())]);
    assert!(g.injects_in(Place::Headers));
    assert!(!g.injects_in(Place::Body));
    assert_eq!(g.on_violation, OnViolation::BlockAndLog);
    assert_eq!(
        s.guest_env_vars(),
        vec![(
            "GITHUB_TOKEN".to_owned(),
            "$RINGNET_SECRET_GITHUB_TOKEN".to_owned()
        )]
    );
}

#[test]
fn every_key() {
    let path = temp_file("every_key", b"from-a-file\r\n");
    std::env::set_var("RINGNET_TEST_SECRET_EVERY_KEY", "from-the-env");
    let s = load(&format!(
        r#"
        [[secrets]]
        env_var = "A"
        value_file = "{}"
        placeholder = "PLACEHOLDER_A"
        hosts = ["*.example.com", "example.com"]
        inject_in = ["headers", "basic_auth", "query", "body"]
        on_violation = "block-and-terminate"

        [[secrets]]
        env_var = "B"
        value_from_env = "RINGNET_TEST_SECRET_EVERY_KEY"
        hosts = ["any"]
        on_violation = "block"
        "#,
        path.display()
    ))
    .unwrap();
    let [a, b] = s.list() else { panic!() };
    assert_eq!(a.value.expose(), b"from-a-file");
    assert_eq!(a.placeholder, "PLACEHOLDER_A");
    assert!(Place::ALL.iter().all(|&p| a.injects_in(p)));
    assert_eq!(a.on_violation, OnViolation::BlockAndTerminate);
    assert_eq!(b.value.expose(), b"from-the-env");
    assert_eq!(b.hosts, vec![HostPattern::Any]);
    assert_eq!(b.on_violation, OnViolation::Block);
}

#[test]
fn values_never_print() {
    let s = load(
        r#"
        [[secrets]]
        env_var = "T"
        value = "hunter2hunter2"
        hosts = ["*"]
        "#,
    )
    .unwrap();
    let debug = format!("{s:?}");
    assert!(debug.contains("<redacted>"), "{debug}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert_eq!(s.list()[0].value.to_string(), "<redacted>");
    let spec = &specs(
        r#"
        [[secrets]]
        env_var = "T"
        value = "hunter2hunter2"
        hosts = ["*"]
        "#,
    )[0];
    assert!(!format!("{spec:?}").contains("hunter2"));
}

#[test]
fn an_inline_value_is_not_serialized() {
    let text = r#"
        [[secrets]]
        env_var = "T"
        value = "hunter2hunter2"
        hosts = ["*"]
    "#;
    let config = crate::NetworkConfig::from_toml_str(text).unwrap();
    let written = toml::to_string(&config).unwrap();
    assert!(!written.contains("hunter2"), "{written}");
    assert!(written.contains("env_var = \"T\""), "{written}");
}

#[test]
fn validation_errors_are_one_clear_line() {
    let cases: &[(&str, &str)] = &[
        (
            r#"env_var = "1X"
               value = "hunter2hunter2"
               hosts = ["*"]"#,
            "secret \"1X\": env_var is not a valid environment variable name",
        ),
        (
            r#"env_var = "X"
               hosts = ["*"]"#,
            "secret X: give exactly one of value, value_from_env, value_file (none given)",
        ),
        (
            r#"env_var = "X"
               value = "hunter2hunter2"
               value_file = "/x"
               hosts = ["*"]"#,
            "secret X: give exactly one of value, value_from_env, value_file (got value, value_file)",
        ),
        (
            r#"env_var = "X"
               value = ""
               hosts = ["*"]"#,
            "secret X: the value (value) is empty",
        ),
        (
            r#"env_var = "X"
               value = "hunter2hunter2"
               placeholder = "short"
               hosts = ["*"]"#,
            "secret X: placeholder \"short\" is shorter than 8 bytes",
        ),
        (
            r#"env_var = "X"
               value = "hunter2hunter2"
               placeholder = "has space"
               hosts = ["*"]"#,
            "secret X: placeholder \"has space\" must be printable ASCII without spaces (it travels in headers)",
        ),
        (
            r#"env_var = "X"
               value = "hunter2hunter2"
               hosts = []"#,
            "secret X: hosts is empty: name the hosts this secret may be sent to",
        ),
        (
            r#"env_var = "X"
               value = "hunter2hunter2"
               hosts = ["exa mple.com"]"#,
            "secret X: hosts entry \"exa mple.com\" is not a host name, *.suffix or * (or any)",
        ),
        (
            r#"env_var = "X"
               value = "hunter2hunter2"
               hosts = ["*"]
               inject_in = []"#,
            "secret X: inject_in is empty (expected some of headers, basic_auth, query, body)",
        ),
        (
            r#"env_var = "X"
               value = "hunter2$RINGNET_SECRET_Xhunter2"
               hosts = ["*"]"#,
            "secret X: the value (value) contains the placeholder of secret X (\"$RINGNET_SECRET_X\")",
        ),
    ];
    for (entry, want) in cases {
        let text = format!("[[secrets]]\n{entry}\n");
        assert_eq!(err(&text), *want, "{entry}");
    }
}

#[test]
fn errors_between_entries() {
    assert_eq!(
        err(r#"
            [[secrets]]
            env_var = "X"
            value = "hunter2hunter2"
            hosts = ["*"]
            [[secrets]]
            env_var = "X"
            value = "hunter2hunter2"
            hosts = ["*"]
        "#),
        "secret X: env_var is given twice"
    );
    assert_eq!(
        err(r#"
            [[secrets]]
            env_var = "X"
            value = "hunter2hunter2"
            placeholder = "PLACEHOLDER"
            hosts = ["*"]
            [[secrets]]
            env_var = "Y"
            value = "hunter2hunter2"
            placeholder = "PLACEHOLDER_Y"
            hosts = ["*"]
        "#),
        "secret Y: placeholder \"PLACEHOLDER_Y\" contains the placeholder of secret X (\"PLACEHOLDER\"); give one of them another placeholder"
    );
    // The default placeholders of X and X_2 overlap too.
    assert!(err(r#"
            [[secrets]]
            env_var = "X"
            value = "hunter2hunter2"
            hosts = ["*"]
            [[secrets]]
            env_var = "X_2"
            value = "hunter2hunter2"
            hosts = ["*"]
        "#)
    .starts_with("secret X_2: placeholder \"$RINGNET_SECRET_X_2\" contains"));
    assert!(err(r#"
            [[secrets]]
            env_var = "X"
            value = "PLACEHOLDER_Y plus"
            placeholder = "PLACEHOLDER_X"
            hosts = ["*"]
            [[secrets]]
            env_var = "Y"
            value = "hunter2hunter2"
            placeholder = "PLACEHOLDER_Y"
            hosts = ["*"]
        "#)
    .contains("contains the placeholder of secret Y"));
}

#[test]
fn sources_that_cannot_be_read_name_the_source_not_the_value() {
    assert_eq!(
        err(r#"
            [[secrets]]
            env_var = "GITHUB_TOKEN"
            value_file = "/nonexistent/ringnet/token"
            hosts = ["*"]
        "#),
        "secret GITHUB_TOKEN: value_file /nonexistent/ringnet/token: No such file or directory (os error 2)"
    );
    assert_eq!(
        err(r#"
            [[secrets]]
            env_var = "GITHUB_TOKEN"
            value_from_env = "RINGNET_TEST_SECRET_NEVER_SET"
            hosts = ["*"]
        "#),
        "secret GITHUB_TOKEN: value_from_env RINGNET_TEST_SECRET_NEVER_SET: the host environment variable is not set"
    );
    let empty = temp_file("empty", b"\n");
    assert_eq!(
        err(&format!(
            "[[secrets]]\nenv_var = \"T\"\nvalue_file = \"{}\"\nhosts = [\"*\"]\n",
            empty.display()
        )),
        format!(
            "secret T: the value (value_file {}) is empty",
            empty.display()
        )
    );
}

#[test]
fn validate_does_not_read_files_but_derive_does() {
    let text = r#"
        [[secrets]]
        env_var = "T"
        value_file = "/nonexistent/ringnet/token"
        hosts = ["*"]
    "#;
    let config = crate::NetworkConfig::from_toml_str(text).unwrap();
    let e = config
        .derive(0, crate::HostRoutes::default())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("secret T: value_file /nonexistent"), "{e}");
}

#[test]
fn host_patterns() {
    let p = |t: &str| HostPattern::parse(t).unwrap();
    assert!(p("Api.GitHub.com.").matches("api.github.com"));
    assert!(!p("api.github.com").matches("github.com"));
    let sub = p("*.example.com");
    assert!(sub.matches("a.example.com"));
    assert!(sub.matches("a.b.example.com"));
    assert!(!sub.matches("example.com"));
    assert!(!sub.matches("badexample.com"));
    assert!(p("*").matches("anything.at.all"));
    assert_eq!(p("ANY"), HostPattern::Any);
    for bad in ["", "*.", "a..b", "exa mple.com", "*x.com", "a.*.com", "x/y"] {
        assert_eq!(HostPattern::parse(bad), None, "{bad:?}");
    }
    assert_eq!(sub.to_string(), "*.example.com");
}

#[test]
fn host_header_names() {
    assert_eq!(host_header_name("API.github.com:443"), "api.github.com");
    assert_eq!(host_header_name("api.github.com."), "api.github.com");
    assert_eq!(host_header_name(" example.com "), "example.com");
    assert_eq!(host_header_name("[2001:db8::1]:8443"), "[2001:db8::1]");
}

fn ctx(sni: Option<&str>, pinned: &[&str]) -> FlowContext {
    FlowContext {
        sni: sni.map(str::to_owned),
        pinned: pinned.iter().map(|s| (*s).to_owned()).collect(),
    }
}

#[test]
fn the_agreement_rule() {
    let good = ctx(Some("api.github.com"), &["github.com", "API.github.com."]);
    assert_eq!(good.agree("api.github.com").unwrap(), "api.github.com");
    assert_eq!(good.agree("Api.Github.Com:443").unwrap(), "api.github.com");
    assert_eq!(
        good.agree("evil.example"),
        Err(ViolationReason::HostMismatch)
    );
    assert_eq!(
        ctx(None, &["api.github.com"]).agree("api.github.com"),
        Err(ViolationReason::NoSni)
    );
    assert_eq!(
        ctx(Some("api.github.com"), &[]).agree("api.github.com"),
        Err(ViolationReason::NotPinned)
    );
    assert_eq!(
        ctx(Some("api.github.com"), &["evil.example"]).agree("api.github.com"),
        Err(ViolationReason::NotPinned)
    );
}

#[test]
fn for_host_lists_the_secrets_allowed() {
    let s = load(
        r#"
        [[secrets]]
        env_var = "A"
        value = "hunter2hunter2"
        hosts = ["a.example.com"]
        [[secrets]]
        env_var = "B"
        value = "hunter2hunter2"
        hosts = ["*.example.com"]
        "#,
    )
    .unwrap();
    let names = |h| {
        s.for_host(h)
            .map(|s| s.env_var.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(names("a.example.com"), ["A", "B"]);
    assert_eq!(names("b.example.com"), ["B"]);
    assert!(names("example.com").is_empty());
}
