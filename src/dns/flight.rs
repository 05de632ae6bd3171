//! The upstream tries in flight (`to_host`): one [`Try`] per guest query being resolved,
//! indexed by exchange, by upstream UDP ID, by deadline and by guest TCP connection.
//!
//! Every index holds exactly the tries of `tries`: [`Flights::start`] adds to all of them,
//! [`Flights::take`] removes from all of them, nothing else touches them.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use super::msg::Asked;
use super::{Client, Exchange};

/// How a try reaches its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Transport {
    Udp,
    Tcp,
}

/// One try of one server for one guest query.
#[derive(Debug)]
pub(super) struct Try {
    /// Who asked.
    pub client: Client,
    /// What the reply echoes.
    pub asked: Asked,
    /// The guest's query bytes, with `id` written over the guest's ID.
    pub query: Vec<u8>,
    /// The ID upstream sees.
    pub id: u16,
    /// Index into the configured servers.
    pub server: usize,
    pub transport: Transport,
    /// When this try has failed without an answer.
    pub deadline: Duration,
}

/// The tries in flight and their indexes.
#[derive(Debug)]
pub(super) struct Flights {
    tries: HashMap<Exchange, Try>,
    /// Upstream ID → its UDP try (IDs are unique among UDP tries, whatever the server).
    udp_ids: HashMap<u16, Exchange>,
    /// (deadline, exchange) of every try.
    deadlines: BTreeSet<(Duration, u32)>,
    /// (conn, exchange) of every try for a guest TCP connection.
    conns: BTreeSet<(u64, u32)>,
    /// The next exchange number to hand out (skipping those in use).
    next_exchange: u32,
    /// splitmix64 state for upstream IDs.
    rng: u64,
}

impl Flights {
    pub(super) fn new(seed: u64) -> Flights {
        Flights {
            tries: HashMap::new(),
            udp_ids: HashMap::new(),
            deadlines: BTreeSet::new(),
            conns: BTreeSet::new(),
            next_exchange: 1,
            rng: seed,
        }
    }

    /// Tries in flight.
    pub(super) fn len(&self) -> usize {
        self.tries.len()
    }

    /// splitmix64: a cheap, well-mixed sequence from any seed (IDs need no crypto strength:
    /// the upstream path is the host's, not the guest's).
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// An upstream ID no UDP try in flight uses; `None` when all 65536 are taken.
    pub(super) fn fresh_id(&mut self) -> Option<u16> {
        if self.udp_ids.len() > usize::from(u16::MAX) {
            return None;
        }
        // A few random draws nearly always hit a free ID; then a bounded linear probe.
        let start = (self.next_random() & 0xffff) as u16;
        for _ in 0..8 {
            let id = (self.next_random() & 0xffff) as u16;
            if !self.udp_ids.contains_key(&id) {
                return Some(id);
            }
        }
        (0..=u16::MAX)
            .map(|i| start.wrapping_add(i))
            .find(|id| !self.udp_ids.contains_key(id))
    }

    /// An exchange number not in use.
    fn fresh_exchange(&mut self) -> Exchange {
        // Terminates: fewer than 2^32 tries are in flight (each holds memory).
        loop {
            let ex = Exchange(self.next_exchange);
            self.next_exchange = self.next_exchange.wrapping_add(1);
            if !self.tries.contains_key(&ex) {
                return ex;
            }
        }
    }

    /// Puts `t` in flight under a fresh exchange. A UDP try's `id` must come from
    /// [`Flights::fresh_id`] (no other UDP try may use it).
    pub(super) fn start(&mut self, t: Try) -> Exchange {
        let ex = self.fresh_exchange();
        if t.transport == Transport::Udp {
            self.udp_ids.insert(t.id, ex);
        }
        self.deadlines.insert((t.deadline, ex.0));
        if let Client::Tcp { conn } = t.client {
            self.conns.insert((conn, ex.0));
        }
        self.tries.insert(ex, t);
        ex
    }

    /// The try of `ex`, still in flight.
    pub(super) fn get(&self, ex: Exchange) -> Option<&Try> {
        self.tries.get(&ex)
    }

    /// Ends `ex`: out of every index.
    pub(super) fn take(&mut self, ex: Exchange) -> Option<Try> {
        let t = self.tries.remove(&ex)?;
        if t.transport == Transport::Udp && self.udp_ids.get(&t.id) == Some(&ex) {
            self.udp_ids.remove(&t.id);
        }
        self.deadlines.remove(&(t.deadline, ex.0));
        if let Client::Tcp { conn } = t.client {
            self.conns.remove(&(conn, ex.0));
        }
        Some(t)
    }

    /// The UDP try to `server` waiting for upstream ID `id`.
    pub(super) fn udp_match(&self, server: usize, id: u16) -> Option<Exchange> {
        let ex = *self.udp_ids.get(&id)?;
        let t = self.tries.get(&ex)?;
        (t.server == server).then_some(ex)
    }

    /// The earliest deadline in flight.
    pub(super) fn earliest(&self) -> Option<Duration> {
        self.deadlines.first().map(|&(d, _)| d)
    }

    /// A try whose deadline is `now` or earlier.
    pub(super) fn expired(&self, now: Duration) -> Option<Exchange> {
        match self.deadlines.first() {
            Some(&(d, ex)) if d <= now => Some(Exchange(ex)),
            _ => None,
        }
    }

    /// The tries of guest TCP connection `conn`.
    pub(super) fn of_conn(&self, conn: u64) -> Vec<Exchange> {
        self.conns
            .range((conn, 0)..=(conn, u32::MAX))
            .map(|&(_, ex)| Exchange(ex))
            .collect()
    }

    /// Sizes of the indexes (tries, UDP IDs, deadlines, connections), for tests.
    #[cfg(test)]
    pub(super) fn sizes(&self) -> (usize, usize, usize, usize) {
        (
            self.tries.len(),
            self.udp_ids.len(),
            self.deadlines.len(),
            self.conns.len(),
        )
    }
}
