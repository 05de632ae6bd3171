//! Tables: rule matching, name denial, explicit allows, syntax errors, presets.

use super::syntax::{PolicyConfig, RuleConfig};
use super::*;

fn gw() -> Gateways {
    Gateways {
        v4: Some("172.16.0.1".parse().unwrap()),
        v6: Some("fd42:6d73:62::1".parse().unwrap()),
    }
}

fn policy(rules: &[&str], egress: Action) -> Policy {
    Policy {
        rules: rules
            .iter()
            .map(|r| Rule::parse_with_action(r).unwrap())
            .collect(),
        default_egress: egress,
        default_ingress: Action::Allow,
    }
}

fn flow(proto: Proto, ip: &str, port: u16) -> Flow {
    Flow {
        direction: Direction::Egress,
        proto,
        ip: ip.parse().unwrap(),
        port,
    }
}

/// (proto, ip, port, names) → (action, rule index).
type Case<'a> = (Proto, &'a str, u16, &'a [&'a str], Action, Option<usize>);

#[test]
fn first_match_wins_table() {
    let p = policy(
        &[
            "deny tcp 198.51.100.0/24 port 22",
            "allow tcp,udp 198.51.100.0/24 port 8000-8010,9000",
            "allow tcp allowed.test port 8080",
            "allow .suffix.test",
            "deny ingress any",
            "allow icmp 2001:db8::/64",
            "allow group:host",
            "deny group:private",
        ],
        Action::Deny,
    );
    use Action::*;
    use Proto::*;
    let table: &[Case] = &[
        (Tcp, "198.51.100.7", 22, &[], Deny, Some(0)),
        (Tcp, "198.51.100.7", 8000, &[], Allow, Some(1)),
        (Udp, "198.51.100.7", 8010, &[], Allow, Some(1)),
        (Tcp, "198.51.100.7", 8011, &[], Deny, None),
        (Tcp, "198.51.100.7", 9000, &[], Allow, Some(1)),
        (Icmp, "198.51.100.7", 0, &[], Deny, None),
        (Tcp, "::ffff:198.51.100.7", 22, &[], Deny, Some(0)),
        (Tcp, "198.51.100.8", 8080, &["allowed.test"], Allow, Some(2)),
        (Tcp, "198.51.100.8", 8081, &["allowed.test"], Deny, None),
        (Udp, "198.51.100.8", 8080, &["allowed.test"], Deny, None),
        (Tcp, "198.51.100.9", 8080, &[], Deny, None),
        (Tcp, "198.51.100.9", 8080, &["notallowed.test"], Deny, None),
        (Tcp, "203.0.113.1", 1, &["suffix.test"], Allow, Some(3)),
        (Udp, "203.0.113.1", 1, &["a.b.suffix.test"], Allow, Some(3)),
        (Tcp, "203.0.113.1", 1, &["xsuffix.test"], Deny, None),
        (Icmp, "2001:db8::7", 0, &[], Allow, Some(5)),
        (Tcp, "2001:db8::7", 80, &[], Deny, None),
        (Tcp, "172.16.0.1", 80, &[], Allow, Some(6)),
        (Tcp, "172.16.0.5", 80, &[], Deny, Some(7)),
        (Tcp, "::ffff:10.0.0.1", 80, &[], Deny, Some(7)),
    ];
    for &(proto, ip, port, names, action, rule) in table {
        let d = p.decide(&flow(proto, ip, port), names, &gw());
        assert_eq!(
            d,
            Decision { action, rule },
            "{proto:?} {ip}:{port} {names:?}"
        );
    }
    let ingress = Flow {
        direction: Direction::Ingress,
        ..flow(Tcp, "198.51.100.7", 22)
    };
    assert_eq!(p.decide(&ingress, &[], &gw()).rule, Some(4));
}

#[test]
fn names_are_denied_by_their_first_domain_rule() {
    let p = policy(
        &[
            "deny tcp .blocked.test port 25",
            "allow ok.blocked.test",
            "deny .blocked.test",
            "deny ingress evil.test",
        ],
        Action::Allow,
    );
    assert_eq!(p.deny_name("ok.blocked.test"), None);
    assert_eq!(p.deny_name("blocked.test"), Some(Some(2)));
    assert_eq!(p.deny_name("x.blocked.test"), Some(Some(2)));
    assert_eq!(
        p.deny_name("evil.test"),
        None,
        "an ingress rule says nothing of names"
    );
    assert_eq!(p.deny_name("other.test"), None);

    // Nothing reachable by address: every other name is denied by the default.
    let none = Preset::None.policy();
    assert_eq!(none.deny_name("any.test"), Some(None));
    let only_domains = policy(&["allow tcp allowed.test port 80"], Action::Deny);
    assert_eq!(only_domains.deny_name("allowed.test"), None);
    assert_eq!(only_domains.deny_name("other.test"), Some(None));
    let with_cidr = policy(&["allow 198.51.100.0/24"], Action::Deny);
    assert_eq!(with_cidr.deny_name("other.test"), None);
    assert_eq!(Preset::Safe.policy().deny_name("example.test"), None);
}

#[test]
fn explicit_allows_exempt_from_rebind_protection() {
    let p = policy(
        &[
            "deny 10.9.0.0/16",
            "allow 10.0.0.0/8",
            "allow group:link-local",
            "allow group:public",
        ],
        Action::Deny,
    );
    let ip = |s: &str| s.parse().unwrap();
    assert!(p.allows_explicitly(ip("10.1.2.3"), &gw()));
    assert!(!p.allows_explicitly(ip("10.9.2.3"), &gw()));
    assert!(p.allows_explicitly(ip("169.254.1.1"), &gw()));
    assert!(!p.allows_explicitly(ip("192.168.1.1"), &gw()));
    assert!(!policy(&["allow any"], Action::Allow).allows_explicitly(ip("10.1.2.3"), &gw()));
}

#[test]
fn syntax_round_trips_through_display() {
    for text in [
        "allow egress tcp 198.51.100.0/24 port 80",
        "deny egress tcp,udp any port 53,853",
        "allow ingress 2001:db8::7",
        "deny both icmp group:metadata",
        "allow egress udp .example.test port 1000-2000",
        "allow egress example.test",
    ] {
        let r = Rule::parse_with_action(text).unwrap();
        assert_eq!(r.to_string(), text);
        assert_eq!(Rule::parse_with_action(&r.to_string()).unwrap(), r);
    }
    // Domains spelled like keywords survive the round trip (fuzz: "allow udp.").
    for text in [
        "allow udp.",
        "deny tcp any.",
        "allow port. port 80",
        "allow in.",
        "deny tcp icmp.",
    ] {
        let r = Rule::parse_with_action(text).unwrap();
        assert!(matches!(r.dest, Dest::Domain(_)), "{text}: {r:?}");
        assert_eq!(
            Rule::parse_with_action(&r.to_string()).unwrap(),
            r,
            "{text}"
        );
    }
    // Defaults and spellings.
    let r = Rule::parse(Action::Deny, "TCP 10.0.0.0/8 ports 22").unwrap();
    assert_eq!(r.to_string(), "deny egress tcp 10.0.0.0/8 port 22");
    let r = Rule::parse(Action::Allow, "any Example.Test.").unwrap();
    assert_eq!(r.to_string(), "allow both example.test");
}

#[test]
fn syntax_errors_name_the_rule_and_the_problem() {
    let table: &[(&str, &str)] = &[
        ("tcp 10.0.0.0/33", "not an address or CIDR"),
        ("tcp example.test port 70000", "\"70000\" is not a port"),
        ("tcp example.test port 90-80", "port range 90-80 is empty"),
        ("tcp example.test port", "'port' without a port list"),
        ("tcp", "no destination"),
        ("a.test b.test", "more than one destination"),
        ("10.0.0.1/8", "host bits set"),
        ("group:intranet", "unknown group \"intranet\""),
        ("*.example.test", "write .example.test"),
        ("icmp any port 1", "ports given for icmp"),
        ("ex ample!.test", "more than one destination"),
        ("bad!name.test", "not a domain name"),
        ("egress ingress any", "more than one direction"),
        ("300.1.2.3", "not an address or CIDR"),
    ];
    for (text, want) in table {
        let e = Rule::parse(Action::Allow, text).unwrap_err().to_string();
        assert!(e.contains(want), "{text}: {e}");
        assert!(e.contains(text.trim()), "{text}: {e}");
    }
    let e = Rule::parse_with_action("permit any")
        .unwrap_err()
        .to_string();
    assert!(e.contains("must start with allow or deny"), "{e}");
}

#[test]
fn config_tables_and_presets_compile() {
    let cfg: PolicyConfig = toml::from_str(
        r#"
        preset = "safe"
        default_ingress = "deny"
        rules = [
          "allow tcp 10.1.0.0/16 port 443",
          { action = "deny", destination = "198.51.100.0/24", protocols = ["tcp"], ports = ["22", 8000] },
        ]
        "#,
    )
    .unwrap();
    let p = cfg.compile().unwrap();
    assert_eq!(p.rules.len(), 2 + Preset::Safe.policy().rules.len());
    assert_eq!(
        p.rules[1].to_string(),
        "deny egress tcp 198.51.100.0/24 port 22,8000"
    );
    assert_eq!(p.default_egress, Action::Deny);
    assert_eq!(p.default_ingress, Action::Deny);

    let bad = PolicyConfig {
        rules: vec![RuleConfig::Text("allow tcp 10.0.0.0/8 port x".into())],
        ..PolicyConfig::default()
    };
    let e = bad.compile().unwrap_err().to_string();
    assert!(
        e.contains("allow tcp 10.0.0.0/8 port x") && e.contains("not a port"),
        "{e}"
    );
    let e = PolicyConfig {
        preset: Some("strict".into()),
        ..PolicyConfig::default()
    }
    .compile()
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown policy preset \"strict\""), "{e}");
    assert!(PolicyConfig::default().compile().unwrap().allows_all());
}

#[test]
fn safe_preset_decisions() {
    let p = Preset::Safe.policy();
    use Action::*;
    let table: &[(Proto, &str, u16, Action)] = &[
        (Proto::Tcp, "198.51.100.7", 443, Allow),
        (Proto::Icmp, "2001:db8::7", 0, Allow),
        (Proto::Tcp, "172.16.0.1", 8080, Allow),
        (Proto::Tcp, "169.254.169.254", 80, Deny),
        (Proto::Tcp, "fd00:ec2::254", 80, Deny),
        (Proto::Udp, "198.51.100.7", 53, Deny),
        (Proto::Tcp, "198.51.100.7", 853, Deny),
        (Proto::Tcp, "127.0.0.1", 80, Deny),
        (Proto::Tcp, "0.0.0.0", 80, Deny),
        (Proto::Tcp, "10.0.0.1", 80, Deny),
        (Proto::Udp, "192.168.1.1", 5000, Deny),
        (Proto::Tcp, "fe80::1", 80, Deny),
        (Proto::Udp, "224.0.0.251", 5353, Deny),
    ];
    for &(proto, ip, port, action) in table {
        assert_eq!(
            p.decide(&flow(proto, ip, port), &[], &gw()).action,
            action,
            "{proto:?} {ip}:{port}"
        );
    }
    let d = p.decide(&flow(Proto::Tcp, "10.0.0.1", 80), &[], &gw());
    assert_eq!(
        p.describe(&d, Direction::Egress),
        "rule 5 (deny egress group:private)"
    );
    let none = Preset::None.policy();
    let d = none.decide(&flow(Proto::Tcp, "198.51.100.7", 80), &[], &gw());
    assert_eq!(
        none.describe(&d, Direction::Egress),
        "the egress default (deny)"
    );
}
