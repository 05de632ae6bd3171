//! Queries from the guest answered locally: static records, inactive families, errors,
//! drops, denied names, limits.

use super::*;

// --- from_guest: local answers ---------------------------------------------------------

#[test]
fn host_alias_a_and_aaaa() {
    let mut h = Harness::new();
    let (client, _, m) = reply_of(h.query(
        udp_client(),
        &query(1, "Host.RingNet.Internal.", RecordType::A),
    ));
    assert_eq!(client, udp_client());
    assert_eq!(m.metadata.id, 1);
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.recursion_desired);
    assert_eq!(addrs(&m), vec![IpAddr::V4(GW4)]);
    assert_eq!(m.answers[0].ttl, 60);
    // The guest's case is kept in the echoed question and the record.
    assert_eq!(m.queries[0].name().to_ascii(), "Host.RingNet.Internal.");
    let (_, _, m) = reply_of(h.query(TCP, &query(2, HOST_ALIAS, RecordType::AAAA)));
    assert_eq!(addrs(&m), vec![IpAddr::V6(GW6)]);
    assert_eq!(
        h.judge.pins,
        vec![
            (HOST_ALIAS.to_owned(), IpAddr::V4(GW4), 60, h.now),
            (HOST_ALIAS.to_owned(), IpAddr::V6(GW6), 60, h.now),
        ]
    );
    assert_eq!(count(&h.stats.dns_local), 2);
    assert_eq!(count(&h.stats.dns_answered), 2);
    assert_eq!(count(&h.stats.dns_queries), 2);
    assert_eq!(count(&h.stats.dns_forwarded), 0);
}

#[test]
fn gateway_addresses_resolve_in_reverse_to_the_alias() {
    let mut h = Harness::new();
    for (id, name) in [
        (1, "1.0.16.172.in-addr.arpa."),
        (
            2,
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.6.0.0.3.7.d.6.2.4.d.f.ip6.arpa.",
        ),
    ] {
        let (_, _, m) = reply_of(h.query(udp_client(), &query(id, name, RecordType::PTR)));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 1, "{name}");
        match &m.answers[0].data {
            RData::PTR(p) => assert_eq!(p.0.to_ascii(), format!("{HOST_ALIAS}.")),
            other => panic!("{other:?}"),
        }
    }
    // Another type for that name: empty, still local.
    let (_, _, m) = reply_of(h.query(
        udp_client(),
        &query(3, "1.0.16.172.in-addr.arpa.", RecordType::TXT),
    ));
    assert!(m.answers.is_empty());
    assert_eq!(count(&h.stats.dns_forwarded), 0);
    assert_eq!(count(&h.stats.dns_local), 3);
}

#[test]
fn host_alias_with_ipv6_inactive() {
    let mut h = Harness::with(ResolverConfig {
        gateway6: None,
        ..cfg()
    });
    let (_, _, m) = reply_of(h.query(udp_client(), &query(3, HOST_ALIAS, RecordType::AAAA)));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    // And any AAAA query is answered empty, never forwarded.
    let (_, _, m) = reply_of(h.query(udp_client(), &query(4, "example.com", RecordType::AAAA)));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.queries[0].query_type(), RecordType::AAAA);
    // A still goes upstream.
    h.forward(udp_client(), &query(5, "example.com", RecordType::A));
    assert_eq!(count(&h.stats.dns_local), 2);
    assert!(h.judge.pins.is_empty());
}

#[test]
fn a_query_with_ipv4_inactive() {
    let mut h = Harness::with(ResolverConfig {
        gateway4: None,
        ..cfg()
    });
    let (_, _, m) = reply_of(h.query(udp_client(), &query(6, "example.com", RecordType::A)));
    assert!(m.answers.is_empty());
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    let (_, _, m) = reply_of(h.query(udp_client(), &query(7, "db.internal", RecordType::A)));
    assert!(m.answers.is_empty());
    assert_eq!(h.r.pending(), 0);
}

#[test]
fn static_hosts_and_other_qtypes() {
    let mut h = Harness::new();
    let (_, _, m) = reply_of(h.query(udp_client(), &query(8, "DB.internal.", RecordType::A)));
    assert_eq!(
        addrs(&m),
        vec![
            IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
            IpAddr::V4(Ipv4Addr::new(10, 1, 2, 4))
        ]
    );
    assert!(m.metadata.authoritative);
    let (_, _, m) = reply_of(h.query(udp_client(), &query(9, "db.internal", RecordType::AAAA)));
    assert_eq!(addrs(&m), vec!["fd00::3".parse::<IpAddr>().unwrap()]);
    for qtype in [RecordType::MX, RecordType::TXT, RecordType::HTTPS] {
        let (_, _, m) = reply_of(h.query(udp_client(), &query(10, "db.internal", qtype)));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty(), "{qtype}");
    }
    assert_eq!(h.judge.pins.len(), 3);
    assert!(h
        .judge
        .pins
        .iter()
        .all(|p| p.0 == "db.internal" && p.2 == 60));
    assert_eq!(count(&h.stats.dns_local), 5);
    assert_eq!(count(&h.stats.dns_forwarded), 0);
}

#[test]
fn static_entry_in_hosts_normalized() {
    let mut h = Harness::with(ResolverConfig {
        hosts: vec![("Build.Cache.".to_owned(), vec!["10.9.9.9".parse().unwrap()])],
        ..cfg()
    });
    let (_, _, m) = reply_of(h.query(udp_client(), &query(11, "build.cache", RecordType::A)));
    assert_eq!(addrs(&m), vec!["10.9.9.9".parse::<IpAddr>().unwrap()]);
}

#[test]
fn static_answer_too_big_for_udp_is_truncated() {
    let many: Vec<IpAddr> = (0..40u16)
        .map(|i| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i)))
        .collect();
    let mut h = Harness::with(ResolverConfig {
        hosts: vec![("many.internal".to_owned(), many)],
        ..cfg()
    });
    let (_, bytes, m) =
        reply_of(h.query(udp_client(), &query(12, "many.internal", RecordType::AAAA)));
    assert!(bytes.len() <= 512);
    assert!(m.metadata.truncation);
    assert!(m.answers.is_empty());
    assert_eq!(count(&h.stats.dns_truncated), 1);
    // Over TCP it comes whole.
    let (_, _, m) = reply_of(h.query(TCP, &query(13, "many.internal", RecordType::AAAA)));
    assert_eq!(m.answers.len(), 40);
}

// --- from_guest: errors and drops -----------------------------------------------------

#[test]
fn formerr_for_zero_and_two_questions() {
    let mut h = Harness::new();
    let mut none = Message::new(0x1234, MessageType::Query, OpCode::Query);
    none.metadata.recursion_desired = true;
    let (_, _, m) = reply_of(h.query(udp_client(), &none.to_vec().unwrap()));
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(m.metadata.id, 0x1234);
    assert!(m.metadata.recursion_desired);
    assert!(m.queries.is_empty());

    let mut two = query_msg(0x4321, "a.example", RecordType::A);
    two.add_query(Query::query(
        Name::from_ascii("b.example").unwrap(),
        RecordType::A,
    ));
    two.metadata.recursion_desired = false;
    let (_, _, m) = reply_of(h.query(udp_client(), &two.to_vec().unwrap()));
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(m.metadata.id, 0x4321);
    assert!(!m.metadata.recursion_desired);
    assert_eq!(count(&h.stats.dns_formerr), 2);
    assert_eq!(count(&h.stats.dns_answered), 2);
    assert_eq!(h.r.pending(), 0);
}

#[test]
fn formerr_for_garbage_after_header() {
    let mut h = Harness::new();
    // ID 0xabcd, RD, one question whose name runs off the end.
    let raw = [0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f, b'x'];
    let (_, bytes, m) = reply_of(h.query(udp_client(), &raw));
    assert_eq!(&bytes[..2], &[0xab, 0xcd]);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert!(m.metadata.recursion_desired);
    // A count of 65535 questions with no bytes behind it.
    let raw = [0, 1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0];
    let (_, _, m) = reply_of(h.query(udp_client(), &raw));
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(count(&h.stats.dns_formerr), 2);
}

#[test]
fn too_short_and_responses_dropped() {
    let mut h = Harness::new();
    assert!(h.query(udp_client(), &[]).is_empty());
    assert!(h
        .query(udp_client(), &[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0])
        .is_empty());
    let mut resp = query_msg(5, "example.com", RecordType::A);
    resp.metadata.message_type = MessageType::Response;
    assert!(h.query(udp_client(), &resp.to_vec().unwrap()).is_empty());
    assert_eq!(count(&h.stats.dns_dropped), 3);
    assert_eq!(count(&h.stats.dns_queries), 3);
    assert_eq!(count(&h.stats.dns_answered), 0);
}

#[test]
fn notimp_for_other_opcodes() {
    let mut h = Harness::new();
    for op in [
        OpCode::Status,
        OpCode::Notify,
        OpCode::Update,
        OpCode::Unknown(9),
    ] {
        let mut m = query_msg(77, "example.com", RecordType::SOA);
        m.metadata.op_code = op;
        let (_, _, r) = reply_of(h.query(udp_client(), &m.to_vec().unwrap()));
        assert_eq!(r.metadata.response_code, ResponseCode::NotImp, "{op:?}");
        assert_eq!(r.metadata.op_code, op);
        assert_eq!(r.metadata.id, 77);
    }
    assert_eq!(count(&h.stats.dns_forwarded), 0);
}

#[test]
fn denied_name_nxdomain_never_forwarded() {
    let mut h = Harness::new();
    h.judge.deny = vec![(
        "evil.example".to_owned(),
        "deny name evil.example".to_owned(),
    )];
    let out = h.query(udp_client(), &query(9, "EVIL.example.", RecordType::A));
    assert!(!out
        .iter()
        .any(|o| matches!(o, Out::Udp { .. } | Out::Tcp { .. })));
    let (_, _, m) = reply_of(out);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.queries[0].name().to_ascii(), "EVIL.example.");
    assert!(m.answers.is_empty());
    assert_eq!(count(&h.stats.dns_denied), 1);
    assert_eq!(count(&h.stats.dns_local), 1);
    assert_eq!(h.r.pending(), 0);
    // Denial comes before static records too.
    h.judge.deny.push((HOST_ALIAS.to_owned(), "r".to_owned()));
    let (_, _, m) = reply_of(h.query(TCP, &query(10, HOST_ALIAS, RecordType::A)));
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(h.judge.pins.is_empty());
}

#[test]
fn no_servers_servfail_at_once() {
    let mut h = Harness::with(ResolverConfig {
        servers: Vec::new(),
        ..cfg()
    });
    let (_, _, m) = reply_of(h.query(udp_client(), &query(11, "example.com", RecordType::A)));
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(m.metadata.id, 11);
    assert_eq!(count(&h.stats.dns_servfail), 1);
    h.assert_clean();
}

#[test]
fn max_pending_drops() {
    let mut h = Harness::new();
    for i in 0..4 {
        h.forward(udp_client(), &query(i, "example.com", RecordType::A));
    }
    assert!(h
        .query(udp_client(), &query(9, "example.com", RecordType::A))
        .is_empty());
    assert_eq!(count(&h.stats.dns_dropped), 1);
    assert_eq!(h.r.pending(), 4);
    // The upstream IDs are distinct.
    let mut h = Harness::with(ResolverConfig {
        max_pending: 3000,
        ..cfg()
    });
    let mut ids = std::collections::HashSet::new();
    for i in 0..3000u16 {
        let (_, _, q) = h.forward(udp_client(), &query(i, "example.com", RecordType::A));
        assert!(ids.insert(u16::from_be_bytes([q[0], q[1]])));
    }
    assert_eq!(h.r.pending(), 3000);
}
