//! Stateless DHCPv6 (RFC 8415 §6.1): DNS servers for a guest that configured its address
//! by SLAAC or statically.
//!
//! # Theory of operation
//!
//! Only INFORMATION-REQUEST (11) is answered, with a REPLY (7) carrying the request's
//! transaction id, the client's Client Identifier option copied back (§18.3.6), the
//! server's DUID-LL from the gateway's MAC (Server Identifier, §11.4) and the gateway's
//! address as DNS server (option 23, RFC 3646). Every other message type (SOLICIT,
//! REQUEST, … — the RA never sets the M flag, so a client has no reason to send them) is
//! ignored. The message is hand-parsed: a 4-byte header and type-length-value options,
//! each bounded by the bytes there are; no crate of this size is in the tree.

use crate::stack::Addrs;

const INFORMATION_REQUEST: u8 = 11;
const REPLY: u8 = 7;
const OPT_CLIENTID: u16 = 1;
const OPT_SERVERID: u16 = 2;
const OPT_DNS_SERVERS: u16 = 23;
/// Longest Client Identifier copied back (a DUID is at most 128 bytes, RFC 8415 §11.1).
const MAX_DUID: usize = 130;

/// Answer the DHCPv6 message `req` (the UDP payload) into `out`; the reply's length, or
/// `None` when nothing is to be sent.
pub fn answer(req: &[u8], addrs: &Addrs, out: &mut [u8]) -> Option<usize> {
    let gw6 = addrs.gw6?;
    if req.len() < 4 || req[0] != INFORMATION_REQUEST {
        return None;
    }
    let mut client_id: Option<&[u8]> = None;
    let mut opts = &req[4..];
    while !opts.is_empty() {
        if opts.len() < 4 {
            return None;
        }
        let code = u16::from_be_bytes([opts[0], opts[1]]);
        let len = usize::from(u16::from_be_bytes([opts[2], opts[3]]));
        let data = opts.get(4..4 + len)?;
        match code {
            OPT_CLIENTID if len <= MAX_DUID => client_id = Some(data),
            // RFC 8415 §16.12: an INFORMATION-REQUEST naming another server is not ours.
            OPT_SERVERID if data != &duid(addrs.gw_mac)[..] => return None,
            _ => {}
        }
        opts = &opts[4 + len..];
    }
    let mut w = Writer { out, at: 0 };
    w.put(&[REPLY, req[1], req[2], req[3]])?;
    if let Some(id) = client_id {
        w.option(OPT_CLIENTID, id)?;
    }
    w.option(OPT_SERVERID, &duid(addrs.gw_mac))?;
    w.option(OPT_DNS_SERVERS, &gw6.octets())?;
    Some(w.at)
}

/// DUID-LL (type 3) of Ethernet (hardware type 1) address `mac` (RFC 8415 §11.4).
fn duid(mac: [u8; 6]) -> [u8; 10] {
    let mut d = [0, 3, 0, 1, 0, 0, 0, 0, 0, 0];
    d[4..].copy_from_slice(&mac);
    d
}

struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, b: &[u8]) -> Option<()> {
        self.out
            .get_mut(self.at..self.at + b.len())?
            .copy_from_slice(b);
        self.at += b.len();
        Some(())
    }

    fn option(&mut self, code: u16, data: &[u8]) -> Option<()> {
        let len = u16::try_from(data.len()).ok()?;
        self.put(&code.to_be_bytes())?;
        self.put(&len.to_be_bytes())?;
        self.put(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> Addrs {
        Addrs::slot0(false, true)
    }

    /// An INFORMATION-REQUEST as dhclient -6 -S sends it: transaction id 0x123456, a
    /// Client Identifier (DUID-LL of the guest's MAC), Option Request (23, 24), Elapsed
    /// Time 0.
    const INFO_REQ: [u8; 32] = [
        11, 0x12, 0x34, 0x56, //
        0, 1, 0, 10, 0, 3, 0, 1, 2, 0x6d, 0x73, 0, 0, 2, //
        0, 6, 0, 4, 0, 23, 0, 24, //
        0, 8, 0, 2, 0, 0,
    ];

    #[test]
    fn information_request_gets_dns() {
        let mut out = [0xa5u8; 128];
        let n = answer(&INFO_REQ, &addrs(), &mut out).unwrap();
        let want: Vec<u8> = [
            &[7, 0x12, 0x34, 0x56][..],
            &[0, 1, 0, 10, 0, 3, 0, 1, 2, 0x6d, 0x73, 0, 0, 2],
            &[0, 2, 0, 10, 0, 3, 0, 1, 2, 0x6d, 0x73, 0, 0, 1],
            &[0, 23, 0, 16],
            &addrs().gw6.unwrap().octets(),
        ]
        .concat();
        assert_eq!(&out[..n], &want[..]);
    }

    #[test]
    fn other_messages_and_garbage_are_ignored() {
        let a = addrs();
        let mut out = [0u8; 128];
        let mut solicit = INFO_REQ;
        solicit[0] = 1;
        assert_eq!(answer(&solicit, &a, &mut out), None);
        // An option running past the end.
        assert_eq!(answer(&INFO_REQ[..30], &a, &mut out), None);
        assert_eq!(answer(&INFO_REQ[..3], &a, &mut out), None);
        // Another server's identifier.
        let mut other = INFO_REQ.to_vec();
        other.extend_from_slice(&[0, 2, 0, 10, 0, 3, 0, 1, 9, 9, 9, 9, 9, 9]);
        assert_eq!(answer(&other, &a, &mut out), None);
        // Ours is fine.
        let mut ours = INFO_REQ.to_vec();
        ours.extend_from_slice(&[0, 2, 0, 10, 0, 3, 0, 1, 2, 0x6d, 0x73, 0, 0, 1]);
        assert!(answer(&ours, &a, &mut out).is_some());
        // No room, no IPv6.
        assert_eq!(answer(&INFO_REQ, &a, &mut [0u8; 20]), None);
        let v4 = Addrs { gw6: None, ..a };
        assert_eq!(answer(&INFO_REQ, &v4, &mut out), None);
        // Every prefix of a valid request is either answered or ignored, never a panic.
        for i in 0..INFO_REQ.len() {
            let _ = answer(&INFO_REQ[..i], &a, &mut out);
        }
    }
}
