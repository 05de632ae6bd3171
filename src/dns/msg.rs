//! DNS messages, through hickory-proto only: what a guest query asks (`from_guest`), what an
//! upstream answer says (`from_host`), and the replies built locally (`to_guest`).
//!
//! Nothing here re-encodes a message that is passed along: forwarded queries and relayed
//! answers keep their bytes, only the 2-byte ID at offset 0 changes ([`set_id`]).

use std::net::IpAddr;

use hickory_proto::op::{
    Edns, Header, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::{Name, RData, Record};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// A DNS header's length; shorter messages are dropped.
pub(super) const HEADER_LEN: usize = 12;

/// The UDP payload size a guest without EDNS accepts (RFC 1035).
pub(super) const UDP_CLASSIC: usize = 512;

/// The size a TCP guest accepts (the 2-byte length prefix's limit).
pub(super) const TCP_MAX: usize = 65535;

/// The UDP payload size advertised in the OPT of local replies (the DNS flag day 2020 value).
const OUR_PAYLOAD: u16 = 1232;

/// TTL of static records, seconds.
pub(super) const STATIC_TTL: u32 = 60;

/// What a reply to the guest echoes of its query.
#[derive(Clone, Debug)]
pub(super) struct Asked {
    /// The guest's message ID.
    pub id: u16,
    /// Recursion desired, copied into replies.
    pub rd: bool,
    /// Checking disabled, copied into replies.
    pub cd: bool,
    /// The one question, as the guest wrote it (its case kept).
    pub query: Query,
    /// The guest sent an OPT: local replies carry one too.
    pub edns: bool,
    /// The largest reply the guest takes (UDP: its EDNS size, at least 512; TCP: 65535).
    pub max_size: usize,
}

impl Asked {
    /// The question's name, lowercase and without trailing dot.
    pub(super) fn name(&self) -> String {
        name_key(self.query.name())
    }
}

/// A guest message, judged.
#[derive(Debug)]
pub(super) enum FromGuest {
    /// Too short or a response: no reply.
    Drop,
    /// Answered at once with an error (`rcode` FORMERR or NOTIMP); `reply` is `None` only
    /// if hickory could not encode it.
    Error {
        rcode: ResponseCode,
        reply: Option<Vec<u8>>,
    },
    /// A well-formed standard query with one question.
    Query(Asked),
}

/// The header alone (no allocation beyond it), `None` below 12 bytes.
fn read_header(bytes: &[u8]) -> Option<Header> {
    if bytes.len() < HEADER_LEN {
        return None;
    }
    Header::read(&mut BinDecoder::new(bytes)).ok()
}

/// Judges a query from the guest; `tcp`: it came over TCP (no UDP size limit).
pub(super) fn from_guest(bytes: &[u8], tcp: bool) -> FromGuest {
    let Some(header) = read_header(bytes) else {
        return FromGuest::Drop;
    };
    let meta = header.metadata;
    if meta.message_type == MessageType::Response {
        return FromGuest::Drop;
    }
    if meta.op_code != OpCode::Query {
        let rcode = ResponseCode::NotImp;
        return FromGuest::Error {
            rcode,
            reply: header_reply(&meta, rcode),
        };
    }
    // Checked on the raw count first: a count of 65535 would make hickory reserve room for
    // that many questions before finding the bytes missing.
    let parsed = match header.counts.queries {
        1 => Message::from_vec(bytes).ok(),
        _ => None,
    };
    let Some(msg) = parsed else {
        let rcode = ResponseCode::FormErr;
        return FromGuest::Error {
            rcode,
            reply: header_reply(&meta, rcode),
        };
    };
    let max_size = if tcp {
        TCP_MAX
    } else {
        usize::from(msg.max_payload()).max(UDP_CLASSIC)
    };
    let edns = msg.edns.is_some();
    match msg.queries.into_iter().next() {
        Some(query) => FromGuest::Query(Asked {
            id: meta.id,
            rd: meta.recursion_desired,
            cd: meta.checking_disabled,
            query,
            edns,
            max_size,
        }),
        None => {
            let rcode = ResponseCode::FormErr;
            FromGuest::Error {
                rcode,
                reply: header_reply(&meta, rcode),
            }
        }
    }
}

/// An error reply echoing the ID, opcode, RD and CD of a raw header; no question.
fn header_reply(meta: &Metadata, rcode: ResponseCode) -> Option<Vec<u8>> {
    let mut msg = Message::error_msg(meta.id, meta.op_code, rcode);
    msg.metadata.recursion_desired = meta.recursion_desired;
    msg.metadata.checking_disabled = meta.checking_disabled;
    msg.metadata.recursion_available = true;
    msg.to_vec().ok()
}

/// The flags of a reply built locally that are not echoed from the query.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Flags {
    pub authoritative: bool,
    pub truncated: bool,
    pub authentic_data: bool,
}

/// A reply built locally: the guest's ID, RD, CD and question, `rcode`, `answers`, an OPT
/// if the guest sent one. `None` only if hickory could not encode it.
pub(super) fn to_guest(
    asked: &Asked,
    rcode: ResponseCode,
    answers: Vec<Record>,
    flags: Flags,
) -> Option<Vec<u8>> {
    let mut msg = Message::response(asked.id, OpCode::Query);
    let meta = &mut msg.metadata;
    meta.recursion_desired = asked.rd;
    meta.checking_disabled = asked.cd;
    meta.recursion_available = true;
    meta.authoritative = flags.authoritative;
    meta.truncation = flags.truncated;
    meta.authentic_data = flags.authentic_data;
    meta.response_code = rcode;
    msg.add_query(asked.query.clone());
    msg.insert_answers(answers);
    if asked.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(OUR_PAYLOAD);
        msg.set_edns(edns);
    }
    msg.to_vec().ok()
}

/// A static A or AAAA record answering `asked` with `ip`.
pub(super) fn static_record(asked: &Asked, ip: IpAddr) -> Record {
    Record::from_rdata(asked.query.name().clone(), STATIC_TTL, RData::from(ip))
}

/// Parses an upstream message: `None` unless it is a response with exactly one question
/// that hickory parses.
pub(super) fn from_host(bytes: &[u8]) -> Option<Message> {
    let header = read_header(bytes)?;
    if header.metadata.message_type != MessageType::Response || header.counts.queries != 1 {
        return None;
    }
    Message::from_vec(bytes).ok()
}

/// True when `answer` carries the question of `asked` (name case-insensitive, type, class).
pub(super) fn same_question(answer: &Message, asked: &Asked) -> bool {
    match answer.queries.as_slice() {
        [q] => {
            q.query_type() == asked.query.query_type()
                && q.query_class() == asked.query.query_class()
                && q.name() == asked.query.name()
        }
        _ => false,
    }
}

/// The addresses of the A and AAAA records of the answer section.
pub(super) fn addresses(answer: &Message) -> impl Iterator<Item = IpAddr> + '_ {
    answer.answers.iter().filter_map(|r| r.data.ip_addr())
}

/// One pin an answer implies: `name` has address `ip` for `ttl` seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Pin {
    pub name: String,
    pub ip: IpAddr,
    pub ttl: u32,
}

/// The pins of an answer to question `qname`: each A/AAAA record of the answer section
/// reached from `qname` through the CNAME chain pins its address to every name of the chain
/// up to its owner (`qname` included). Records the chain does not reach are not pinned
/// (stub resolvers ignore them too).
pub(super) fn pins(answer: &Message, qname: &Name) -> Vec<Pin> {
    // The chain: qname, then the target of the CNAME owned by the last name, and so on.
    // At most one step per CNAME record, so a loop ends.
    let mut chain: Vec<&Name> = vec![qname];
    let cnames = answer
        .answers
        .iter()
        .filter(|r| matches!(r.data, RData::CNAME(_)))
        .count();
    for _ in 0..cnames {
        let Some(last) = chain.last() else { break };
        let next = answer.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if r.name == **last => Some(&target.0),
            _ => None,
        });
        match next {
            Some(target) if !chain.contains(&target) => chain.push(target),
            _ => break,
        }
    }
    let keys: Vec<String> = chain.iter().map(|n| name_key(n)).collect();
    let mut out = Vec::new();
    for record in &answer.answers {
        let Some(ip) = record.data.ip_addr() else {
            continue;
        };
        let Some(at) = chain.iter().position(|n| **n == record.name) else {
            continue;
        };
        for name in keys.iter().take(at + 1) {
            out.push(Pin {
                name: name.clone(),
                ip,
                ttl: record.ttl,
            });
        }
    }
    out
}

/// `name` lowercase, as ASCII (escaped where needed), without its trailing dot.
pub(super) fn name_key(name: &Name) -> String {
    let mut s = name.to_lowercase().to_ascii();
    if s.ends_with('.') {
        s.pop();
    }
    s
}

/// Rewrites the message ID of `bytes` (no-op below 2 bytes).
pub(super) fn set_id(bytes: &mut [u8], id: u16) {
    if let Some(head) = bytes.get_mut(..2) {
        head.copy_from_slice(&id.to_be_bytes());
    }
}

/// The truncated reply for an answer `answer` too big for the guest: its flags and rcode,
/// the guest's question, no records, TC set.
pub(super) fn truncated(asked: &Asked, answer: &Message) -> Option<Vec<u8>> {
    let flags = Flags {
        authoritative: answer.metadata.authoritative,
        truncated: true,
        authentic_data: answer.metadata.authentic_data,
    };
    to_guest(asked, answer.metadata.response_code, Vec::new(), flags)
}
