//! Queries forwarded upstream: the rewritten ID, answer matching, relaying, truncation,
//! rebind protection, pins, failover; arbitrary bytes.

use super::*;

// --- to_host / from_host ----------------------------------------------------------------

#[test]
fn forward_rewrites_only_the_id() {
    let mut h = Harness::new();
    let q = query_edns(0x0102, "Example.COM", RecordType::A, 1232);
    let (server, _, sent) = h.forward(udp_client(), &q);
    assert_eq!(server, 0);
    assert_eq!(sent.len(), q.len());
    assert_eq!(&sent[2..], &q[2..]);
    assert_eq!(count(&h.stats.dns_forwarded), 1);
    assert_eq!(h.r.next_deadline(h.now), Some(TIMEOUT));
    assert_eq!(
        h.r.next_deadline(h.now + Duration::from_secs(5)),
        Some(Duration::ZERO)
    );
}

#[test]
fn answer_relayed_verbatim_with_id_restored() {
    let mut h = Harness::new();
    let q = query(0x0a0b, "Example.com", RecordType::A);
    let (_, _, sent) = h.forward(udp_client(), &q);
    // Upstream answers in its own case.
    let mut ans = answer(
        &sent,
        ResponseCode::NoError,
        vec![a("example.com.", PUBLIC4, 300)],
    );
    ans.queries[0].set_name(Name::from_ascii("EXAMPLE.com.").unwrap());
    let up = ans.to_vec().unwrap();
    let (client, bytes, m) = reply_of(h.udp_answer(0, &up));
    assert_eq!(client, udp_client());
    assert_eq!(&bytes[..2], &[0x0a, 0x0b]);
    assert_eq!(&bytes[2..], &up[2..]);
    assert_eq!(addrs(&m), vec![IpAddr::V4(PUBLIC4)]);
    assert_eq!(
        h.judge.pins,
        vec![("example.com".to_owned(), IpAddr::V4(PUBLIC4), 300, h.now)]
    );
    assert_eq!(count(&h.stats.dns_answered), 1);
    h.assert_clean();
    // A second copy matches nothing any more.
    assert!(h.udp_answer(0, &up).is_empty());
    assert_eq!(count(&h.stats.dns_upstream_bad), 1);
}

#[test]
fn wrong_id_server_or_question_ignored() {
    let mut h = Harness::new();
    let (_, _, sent) = h.forward(udp_client(), &query(1, "example.com", RecordType::A));
    let good = answer(
        &sent,
        ResponseCode::NoError,
        vec![a("example.com.", PUBLIC4, 60)],
    );
    let mut wrong_id = good.clone();
    wrong_id.metadata.id = good.metadata.id.wrapping_add(1);
    let mut wrong_name = good.clone();
    wrong_name.queries[0].set_name(Name::from_ascii("example.org.").unwrap());
    let mut wrong_type = good.clone();
    wrong_type.queries[0].set_query_type(RecordType::AAAA);
    let mut wrong_class = good.clone();
    wrong_class.queries[0].set_query_class(DNSClass::CH);
    let mut not_response = good.clone();
    not_response.metadata.message_type = MessageType::Query;
    for m in [
        &wrong_id,
        &wrong_name,
        &wrong_type,
        &wrong_class,
        &not_response,
    ] {
        assert!(h.udp_answer(0, &m.to_vec().unwrap()).is_empty());
    }
    // Right message, wrong server.
    assert!(h.udp_answer(1, &good.to_vec().unwrap()).is_empty());
    // Unparseable.
    assert!(h.udp_answer(0, &sent[..sent.len() - 3]).is_empty());
    assert_eq!(count(&h.stats.dns_upstream_bad), 7);
    assert_eq!(h.r.pending(), 1);
    let (_, _, m) = reply_of(h.udp_answer(0, &good.to_vec().unwrap()));
    assert_eq!(m.metadata.id, 1);
    h.assert_clean();
}

#[test]
fn truncated_answer_retried_over_tcp_for_tcp_client() {
    let mut h = Harness::new();
    let q = query(0x5555, "big.example", RecordType::TXT);
    let (_, udp_ex, sent) = h.forward(TCP, &q);
    let mut tc = answer(&sent, ResponseCode::NoError, Vec::new());
    tc.metadata.truncation = true;
    let (server, tcp_ex, tcp_query) = tcp_of(h.udp_answer(0, &tc.to_vec().unwrap()));
    assert_eq!(server, 0);
    assert_ne!(tcp_ex, udp_ex);
    assert_eq!(tcp_query, sent);
    assert_eq!(h.r.pending(), 1);
    assert_eq!(count(&h.stats.dns_forwarded), 2);
    // The TCP answer, big, goes whole to the TCP guest.
    let records: Vec<Record> = (0..60)
        .map(|i| a("big.example.", Ipv4Addr::new(8, 8, 0, i), 30))
        .collect();
    let up = answer(&sent, ResponseCode::NoError, records)
        .to_vec()
        .unwrap();
    assert!(up.len() > 512);
    // A UDP answer for the same question no longer matches (the UDP try is over).
    assert!(h.udp_answer(0, &up).is_empty());
    let (client, bytes, m) = reply_of(h.tcp_answer(tcp_ex, &up));
    assert_eq!(client, TCP);
    assert_eq!(&bytes[2..], &up[2..]);
    assert_eq!(m.metadata.id, 0x5555);
    assert_eq!(m.answers.len(), 60);
    assert_eq!(count(&h.stats.dns_truncated), 0);
    h.assert_clean();
}

#[test]
fn truncated_answer_passed_to_udp_client() {
    let mut h = Harness::new();
    let (_, _, sent) = h.forward(udp_client(), &query(0x77, "big.example", RecordType::TXT));
    let mut tc = answer(&sent, ResponseCode::NoError, Vec::new());
    tc.metadata.truncation = true;
    let up = tc.to_vec().unwrap();
    let (_, bytes, m) = reply_of(h.udp_answer(0, &up));
    assert!(m.metadata.truncation);
    assert_eq!(&bytes[2..], &up[2..]);
    h.assert_clean();
}

fn big_answer(sent: &[u8], n: u8) -> Vec<u8> {
    let records: Vec<Record> = (0..n)
        .map(|i| a("big.example.", Ipv4Addr::new(8, 8, 0, i), 30))
        .collect();
    answer(sent, ResponseCode::NoError, records)
        .to_vec()
        .unwrap()
}

#[test]
fn answer_over_512_without_edns_truncated() {
    let mut h = Harness::new();
    let (_, _, sent) = h.forward(udp_client(), &query(0x99, "big.example", RecordType::A));
    let up = big_answer(&sent, 40);
    assert!(up.len() > 512);
    let (_, bytes, m) = reply_of(h.udp_answer(0, &up));
    assert!(bytes.len() <= 512);
    assert!(m.metadata.truncation);
    assert!(m.answers.is_empty());
    assert_eq!(m.metadata.id, 0x99);
    assert_eq!(m.queries.len(), 1);
    assert_eq!(m.queries[0].name().to_ascii(), "big.example.");
    assert!(m.edns.is_none());
    assert_eq!(count(&h.stats.dns_truncated), 1);
    h.assert_clean();
}

#[test]
fn edns_1232_respected() {
    let mut h = Harness::new();
    let (_, _, sent) = h.forward(
        udp_client(),
        &query_edns(0x98, "big.example", RecordType::A, 1232),
    );
    // 40 records: over 512, under 1232: whole.
    let up = big_answer(&sent, 40);
    assert!(up.len() > 512 && up.len() <= 1232);
    let (_, bytes, _) = reply_of(h.udp_answer(0, &up));
    assert_eq!(&bytes[2..], &up[2..]);
    // 90 records: over 1232: truncated, with an OPT since the guest sent one.
    let (_, _, sent) = h.forward(
        udp_client(),
        &query_edns(0x97, "big.example", RecordType::A, 1232),
    );
    let up = big_answer(&sent, 90);
    assert!(up.len() > 1232);
    let (_, _, m) = reply_of(h.udp_answer(0, &up));
    assert!(m.metadata.truncation);
    assert!(m.edns.is_some());
    // A size below 512 counts as 512.
    let (_, _, sent) = h.forward(
        udp_client(),
        &query_edns(0x96, "big.example", RecordType::A, 100),
    );
    let up = big_answer(&sent, 20);
    assert!(up.len() > 100 && up.len() <= 512);
    let (_, bytes, _) = reply_of(h.udp_answer(0, &up));
    assert_eq!(&bytes[2..], &up[2..]);
    assert_eq!(count(&h.stats.dns_truncated), 1);
}

#[test]
fn rebind_blocked_unless_allowed_explicitly() {
    let mut h = Harness::new();
    let private = Ipv4Addr::new(192, 168, 1, 10);
    let (_, _, sent) = h.forward(udp_client(), &query(0x31, "Rebind.example", RecordType::A));
    let up = answer(
        &sent,
        ResponseCode::NoError,
        vec![
            a("rebind.example.", PUBLIC4, 60),
            a("rebind.example.", private, 60),
        ],
    );
    let (_, _, m) = reply_of(h.udp_answer(0, &up.to_vec().unwrap()));
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.metadata.id, 0x31);
    assert!(m.answers.is_empty());
    assert_eq!(m.queries[0].name().to_ascii(), "Rebind.example.");
    assert!(h.judge.pins.is_empty());
    assert_eq!(count(&h.stats.dns_rebind_blocked), 1);
    h.assert_clean();

    h.judge.explicit.push(IpAddr::V4(private));
    let (_, _, sent) = h.forward(udp_client(), &query(0x32, "rebind.example", RecordType::A));
    let up = answer(
        &sent,
        ResponseCode::NoError,
        vec![a("rebind.example.", private, 60)],
    );
    let (_, _, m) = reply_of(h.udp_answer(0, &up.to_vec().unwrap()));
    assert_eq!(addrs(&m), vec![IpAddr::V4(private)]);
    assert_eq!(h.judge.pins.len(), 1);
    assert_eq!(count(&h.stats.dns_rebind_blocked), 1);

    // Protection off: passed along.
    let mut h = Harness::with(ResolverConfig {
        rebind_protection: false,
        ..cfg()
    });
    let (_, _, sent) = h.forward(udp_client(), &query(0x33, "rebind.example", RecordType::A));
    let up = answer(
        &sent,
        ResponseCode::NoError,
        vec![a("rebind.example.", Ipv4Addr::LOCALHOST, 60)],
    );
    let (_, _, m) = reply_of(h.udp_answer(0, &up.to_vec().unwrap()));
    assert_eq!(addrs(&m), vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
}

#[test]
fn pins_follow_the_cname_chain() {
    let mut h = Harness::new();
    let (_, _, sent) = h.forward(
        udp_client(),
        &query(0x41, "WWW.Example.com.", RecordType::A),
    );
    let other = Ipv4Addr::new(203, 0, 113, 9);
    let up = answer(
        &sent,
        ResponseCode::NoError,
        vec![
            cname("www.example.com.", "Edge.CDN.net."),
            cname("edge.cdn.net.", "e1.cdn.net."),
            a("e1.cdn.net.", PUBLIC4, 20),
            // Reached by no chain: not pinned.
            a("unrelated.example.", other, 20),
        ],
    );
    reply_of(h.udp_answer(0, &up.to_vec().unwrap()));
    let pins: Vec<(String, IpAddr, u32)> = h
        .judge
        .pins
        .iter()
        .map(|p| (p.0.clone(), p.1, p.2))
        .collect();
    let ip = IpAddr::V4(PUBLIC4);
    assert_eq!(
        pins,
        vec![
            ("www.example.com".to_owned(), ip, 20),
            ("edge.cdn.net".to_owned(), ip, 20),
            ("e1.cdn.net".to_owned(), ip, 20),
        ]
    );
}

#[test]
fn cname_loop_ends() {
    let mut h = Harness::new();
    let (_, _, sent) = h.forward(udp_client(), &query(0x42, "a.example", RecordType::A));
    let up = answer(
        &sent,
        ResponseCode::NoError,
        vec![
            cname("a.example.", "b.example."),
            cname("b.example.", "a.example."),
            a("b.example.", PUBLIC4, 5),
        ],
    );
    reply_of(h.udp_answer(0, &up.to_vec().unwrap()));
    let names: Vec<&str> = h.judge.pins.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(names, vec!["a.example", "b.example"]);
}

#[test]
fn upstream_nxdomain_and_servfail_passed_along() {
    let mut h = Harness::new();
    for (i, rcode) in [
        ResponseCode::NXDomain,
        ResponseCode::ServFail,
        ResponseCode::Refused,
    ]
    .into_iter()
    .enumerate()
    {
        let (_, _, sent) = h.forward(
            udp_client(),
            &query(i as u16, "nope.example", RecordType::A),
        );
        let up = answer(&sent, rcode, Vec::new()).to_vec().unwrap();
        let (_, bytes, m) = reply_of(h.udp_answer(0, &up));
        assert_eq!(m.metadata.response_code, rcode);
        assert_eq!(&bytes[2..], &up[2..]);
    }
    assert_eq!(count(&h.stats.dns_upstream_failed), 0);
    assert_eq!(count(&h.stats.dns_servfail), 0);
    assert_eq!(count(&h.stats.dns_forwarded), 3);
    h.assert_clean();
}

// --- failover -----------------------------------------------------------------------------

#[test]
fn timeout_next_server_then_servfail() {
    let mut h = Harness::new();
    let (_, ex0, sent0) = h.forward(udp_client(), &query(0x61, "slow.example", RecordType::A));
    h.now += TIMEOUT - Duration::from_millis(1);
    assert!(h.expire().is_empty());
    h.now += Duration::from_millis(1);
    let (server, ex1, sent1) = udp_of(h.expire());
    assert_eq!(server, 1);
    assert_ne!(ex1, ex0);
    assert_eq!(&sent1[2..], &sent0[2..]);
    assert_eq!(count(&h.stats.dns_upstream_failed), 1);
    assert_eq!(h.r.next_deadline(h.now), Some(TIMEOUT));
    // The late answer of server 0 matches nothing.
    let late = answer(
        &sent0,
        ResponseCode::NoError,
        vec![a("slow.example.", PUBLIC4, 5)],
    );
    assert!(h.udp_answer(0, &late.to_vec().unwrap()).is_empty());
    h.now += TIMEOUT;
    let (_, _, m) = reply_of(h.expire());
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(m.metadata.id, 0x61);
    assert_eq!(count(&h.stats.dns_upstream_failed), 2);
    assert_eq!(count(&h.stats.dns_servfail), 1);
    assert_eq!(count(&h.stats.dns_forwarded), 2);
    h.assert_clean();
}

#[test]
fn failed_moves_to_next_server() {
    let mut h = Harness::new();
    let (_, ex0, _) = h.forward(udp_client(), &query(0x62, "x.example", RecordType::A));
    let (server, _, sent1) = udp_of(h.failed(ex0));
    assert_eq!(server, 1);
    // An unknown (already failed) exchange is ignored.
    assert!(h.failed(ex0).is_empty());
    let up = answer(
        &sent1,
        ResponseCode::NoError,
        vec![a("x.example.", PUBLIC4, 5)],
    );
    let (_, _, m) = reply_of(h.udp_answer(1, &up.to_vec().unwrap()));
    assert_eq!(m.metadata.id, 0x62);
    h.assert_clean();
}

#[test]
fn tcp_retry_stays_tcp_on_failover() {
    let mut h = Harness::new();
    let (_, _, sent) = h.forward(TCP, &query(0x63, "big.example", RecordType::A));
    let mut tc = answer(&sent, ResponseCode::NoError, Vec::new());
    tc.metadata.truncation = true;
    let (_, ex, _) = tcp_of(h.udp_answer(0, &tc.to_vec().unwrap()));
    let (server, ex2, _) = tcp_of(h.failed(ex));
    assert_eq!(server, 1);
    // Garbage on the TCP connection: the next server, none left: SERVFAIL.
    let (_, _, m) = reply_of(h.tcp_answer(ex2, b"\x00\x63garbage"));
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(count(&h.stats.dns_upstream_bad), 1);
    h.assert_clean();
}

#[test]
fn forget_conn_drops_its_queries() {
    let mut h = Harness::new();
    let (_, _, sent) = h.forward(TCP, &query(1, "a.example", RecordType::A));
    h.forward(
        Client::Tcp { conn: 8 },
        &query(2, "b.example", RecordType::A),
    );
    h.forward(udp_client(), &query(3, "c.example", RecordType::A));
    assert_eq!(h.r.pending(), 3);
    h.r.forget_conn(7);
    assert_eq!(h.r.pending(), 2);
    let up = answer(
        &sent,
        ResponseCode::NoError,
        vec![a("a.example.", PUBLIC4, 5)],
    );
    assert!(h.udp_answer(0, &up.to_vec().unwrap()).is_empty());
    h.r.forget_conn(8);
    assert_eq!(h.r.pending(), 1);
    h.now += TIMEOUT * 2;
    let out = h.expire();
    assert!(matches!(out.as_slice(), [Out::Udp { server: 1, .. }]));
    h.now += TIMEOUT * 2;
    let (client, _, _) = reply_of(h.expire());
    assert_eq!(client, udp_client());
    h.assert_clean();
}

#[test]
fn tcp_answer_for_unknown_or_udp_exchange_ignored() {
    let mut h = Harness::new();
    let (_, ex, sent) = h.forward(udp_client(), &query(1, "a.example", RecordType::A));
    let up = answer(&sent, ResponseCode::NoError, Vec::new())
        .to_vec()
        .unwrap();
    assert!(h.tcp_answer(ex, &up).is_empty());
    assert!(h.tcp_answer(Exchange(9999), &up).is_empty());
    assert_eq!(count(&h.stats.dns_upstream_bad), 2);
    assert_eq!(h.r.pending(), 1);
}

// --- arbitrary bytes ------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(
        steps in proptest::collection::vec(
            (0u8..6, proptest::collection::vec(any::<u8>(), 0..300), any::<u16>()),
            1..40,
        )
    ) {
        let mut h = Harness::with(ResolverConfig { max_pending: 3, ..cfg() });
        let mut exchanges = vec![Exchange(0)];
        let mut sent: Vec<Vec<u8>> = Vec::new();
        for (op, bytes, k) in steps {
            let pick = usize::from(k);
            let out = match op {
                0 => h.query(udp_client(), &bytes),
                1 => h.query(Client::Tcp { conn: u64::from(k % 3) }, &bytes),
                // An answer: arbitrary bytes, or a query sent upstream with a mutated tail.
                2 => {
                    let mut b = bytes.clone();
                    if let Some(q) = sent.get(pick % sent.len().max(1)) {
                        b = [q.as_slice(), &bytes].concat();
                        if let Some(byte) = b.get_mut(2) { *byte |= 0x80; }
                    }
                    h.udp_answer(pick % 3, &b)
                }
                3 => h.tcp_answer(exchanges[pick % exchanges.len()], &bytes),
                4 => h.failed(exchanges[pick % exchanges.len()]),
                _ => {
                    h.now += Duration::from_millis(u64::from(k));
                    h.expire()
                }
            };
            for o in out {
                match o {
                    Out::Udp { exchange, query, .. } | Out::Tcp { exchange, query, .. } => {
                        exchanges.push(exchange);
                        sent.push(query);
                    }
                    Out::Reply { .. } => {}
                }
            }
            prop_assert!(h.r.pending() <= 3);
            let (tries, ids, deadlines, _) = h.r.flights.sizes();
            prop_assert_eq!(tries, deadlines);
            prop_assert!(ids <= tries);
        }
        h.now += Duration::from_secs(3600);
        h.expire();
        h.now += Duration::from_secs(3600);
        h.expire();
        h.assert_clean();
    }
}
