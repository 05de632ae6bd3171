use super::*;

const GUEST_MAC: [u8; 6] = [2, 0x6d, 0x73, 0, 0, 2];

fn addrs() -> Addrs {
    Addrs::slot0(true, false)
}

/// A BOOTREQUEST built by hand from RFC 2131 §2 / RFC 2132, laid out as busybox udhcpc
/// sends it: fixed header, magic cookie, then `options`, END, zero padding to 300 bytes.
pub(crate) fn request(msg: u8, ciaddr: [u8; 4], chaddr: [u8; 6], options: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 236];
    b[0] = 1; // BOOTREQUEST
    b[1] = 1; // Ethernet
    b[2] = 6;
    b[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]); // xid
    b[12..16].copy_from_slice(&ciaddr);
    b[28..34].copy_from_slice(&chaddr);
    b.extend_from_slice(&[0x63, 0x82, 0x53, 0x63]);
    b.extend_from_slice(&[53, 1, msg]);
    // Client identifier (type 1 + MAC), max message size 576, parameter request list.
    b.extend_from_slice(&[61, 7, 1]);
    b.extend_from_slice(&chaddr);
    b.extend_from_slice(&[57, 2, 0x02, 0x40]);
    b.extend_from_slice(&[55, 7, 1, 3, 6, 12, 15, 28, 42]);
    b.extend_from_slice(options);
    b.push(255);
    b.resize(b.len().max(300), 0);
    b
}

pub(crate) fn discover() -> Vec<u8> {
    request(1, [0; 4], GUEST_MAC, &[])
}

/// Options of a reply, by kind.
fn options(reply: &[u8]) -> std::collections::BTreeMap<u8, Vec<u8>> {
    let p = DhcpPacket::new_checked(reply).unwrap();
    p.options().map(|o| (o.kind, o.data.to_vec())).collect()
}

fn reply(req: &[u8], a: &Addrs) -> (Vec<u8>, Ipv4Addr, bool) {
    let mut out = [0xa5u8; 600];
    match answer(req, a, &mut out) {
        Outcome::Reply { len, dst, nak } => (out[..len].to_vec(), dst, nak),
        other => panic!("no reply: {other:?}"),
    }
}

#[test]
fn discover_gets_an_offer_with_every_option() {
    let (r, dst, nak) = reply(&discover(), &addrs());
    assert!(!nak);
    assert_eq!(dst, Ipv4Addr::BROADCAST);
    assert_eq!(r.len(), 300, "padded to the BOOTP minimum");
    // Fixed header: BOOTREPLY, xid echoed, yiaddr, chaddr, cookie.
    assert_eq!(r[0], 2);
    assert_eq!(&r[4..8], &[0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(&r[12..16], &[0; 4]);
    assert_eq!(&r[16..20], &[172, 16, 0, 2]);
    assert_eq!(&r[28..34], &GUEST_MAC);
    assert_eq!(&r[236..240], &[0x63, 0x82, 0x53, 0x63]);
    let o = options(&r);
    assert_eq!(o[&53], [2]); // OFFER
    assert_eq!(o[&54], [172, 16, 0, 1]); // server identifier
    assert_eq!(o[&1], [255, 255, 255, 252]);
    assert_eq!(o[&3], [172, 16, 0, 1]);
    assert_eq!(o[&6], [172, 16, 0, 1]);
    assert_eq!(o[&26], 1500u16.to_be_bytes());
    assert_eq!(o[&51], 86_400u32.to_be_bytes());
    assert_eq!(o[&58], 43_200u32.to_be_bytes());
    assert_eq!(o[&59], 75_600u32.to_be_bytes());
    // Round trip through smoltcp's repr.
    let p = DhcpPacket::new_checked(&r[..]).unwrap();
    let repr = DhcpRepr::parse(&p).unwrap();
    assert_eq!(repr.message_type, DhcpMessageType::Offer);
    assert_eq!(repr.your_ip, Ipv4Addr::new(172, 16, 0, 2));
    assert_eq!(repr.renew_duration, Some(43_200));
    assert_eq!(repr.rebind_duration, Some(75_600));
    assert_eq!(
        repr.dns_servers.unwrap().as_slice(),
        &[Ipv4Addr::new(172, 16, 0, 1)]
    );
}

#[test]
fn request_for_the_guest_address_is_acked_and_another_is_naked() {
    let a = addrs();
    // SELECTING: requested address + server identifier.
    let sel = request(
        3,
        [0; 4],
        GUEST_MAC,
        &[50, 4, 172, 16, 0, 2, 54, 4, 172, 16, 0, 1],
    );
    let (r, dst, nak) = reply(&sel, &a);
    assert!(!nak);
    assert_eq!(dst, Ipv4Addr::BROADCAST);
    assert_eq!(options(&r)[&53], [5]);
    assert_eq!(&r[16..20], &[172, 16, 0, 2]);
    // RENEWING: ciaddr set, no option 50: unicast to ciaddr.
    let renew = request(3, [172, 16, 0, 2], GUEST_MAC, &[]);
    let (r, dst, _) = reply(&renew, &a);
    assert_eq!(dst, Ipv4Addr::new(172, 16, 0, 2));
    assert_eq!(options(&r)[&53], [5]);
    // INIT-REBOOT with an address from another network: NAK, broadcast, no lease.
    let other = request(3, [0; 4], GUEST_MAC, &[50, 4, 10, 0, 0, 7]);
    let (r, dst, nak) = reply(&other, &a);
    assert!(nak);
    assert_eq!(dst, Ipv4Addr::BROADCAST);
    let o = options(&r);
    assert_eq!(o[&53], [6]);
    assert!(!o.contains_key(&51) && !o.contains_key(&3));
    assert_eq!(&r[16..20], &[0; 4]);
    // A REQUEST that chose another server: silence.
    let elsewhere = request(
        3,
        [0; 4],
        GUEST_MAC,
        &[50, 4, 10, 0, 0, 7, 54, 4, 10, 0, 0, 1],
    );
    assert_eq!(answer(&elsewhere, &a, &mut [0; 600]), Outcome::Ignored);
}

#[test]
fn inform_release_decline_and_strangers() {
    let a = addrs();
    let inform = request(8, [172, 16, 0, 2], GUEST_MAC, &[]);
    let (r, dst, _) = reply(&inform, &a);
    assert_eq!(dst, Ipv4Addr::new(172, 16, 0, 2));
    let o = options(&r);
    assert_eq!(o[&53], [5]);
    assert_eq!(o[&6], [172, 16, 0, 1]);
    assert!(!o.contains_key(&51), "no lease time in an ACK to INFORM");
    assert_eq!(&r[12..16], &[172, 16, 0, 2]);
    assert_eq!(&r[16..20], &[0; 4]);
    let mut out = [0u8; 600];
    for msg in [4, 7] {
        let req = request(msg, [172, 16, 0, 2], GUEST_MAC, &[50, 4, 172, 16, 0, 2]);
        assert_eq!(answer(&req, &a, &mut out), Outcome::Released);
    }
    // Another client hardware address, an OFFER from the guest, no IPv4, garbage.
    let stranger = request(1, [0; 4], [2, 0xde, 0xad, 0xbe, 0xef, 1], &[]);
    assert_eq!(answer(&stranger, &a, &mut out), Outcome::Ignored);
    let mut offer = discover();
    offer[0] = 2;
    offer[242] = 2;
    assert_eq!(answer(&offer, &a, &mut out), Outcome::Ignored);
    let v6 = Addrs {
        gw4: None,
        guest4: None,
        ..a
    };
    assert_eq!(answer(&discover(), &v6, &mut out), Outcome::Ignored);
    assert_eq!(answer(&discover(), &a, &mut [0u8; 100]), Outcome::Ignored);
    let d = discover();
    for i in 0..d.len() {
        let _ = answer(&d[..i], &a, &mut out);
    }
}
