//! DNS pins: which names this guest resolved to which addresses, and until when.
//!
//! Every A/AAAA record the gateway's DNS hands the guest pins (name, address) for the
//! record's TTL, at least [`MIN_TTL`] and at most [`MAX_TTL`]. Domain rules match an
//! address only through a live pin. The table is bounded (`max` pins): at the bound, expired
//! pins are swept, and if that frees nothing the pin that expires first is dropped (the
//! caller counts it). Addresses are kept canonical (IPv4-mapped IPv6 as IPv4).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::groups::canonical;

/// Shortest pin, whatever the record's TTL (a TTL of 0 still admits the connect that
/// follows the lookup).
pub const MIN_TTL: Duration = Duration::from_secs(1);

/// Longest pin (a day), whatever the record's TTL.
pub const MAX_TTL: Duration = Duration::from_secs(86_400);

#[derive(Debug)]
struct Pin {
    name: Box<str>,
    until: Duration,
}

/// The pin table of one guest.
#[derive(Debug)]
pub struct Pins {
    by_ip: HashMap<IpAddr, Vec<Pin>>,
    len: usize,
    max: usize,
}

impl Pins {
    /// An empty table holding at most `max` pins (at least 1).
    pub fn new(max: usize) -> Pins {
        Pins {
            by_ip: HashMap::new(),
            len: 0,
            max: max.max(1),
        }
    }

    /// Pins held now (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Pin `name` to `ip` for `ttl` seconds from `now`. Returns true when a live pin had to
    /// be evicted to make room.
    pub fn insert(&mut self, name: &str, ip: IpAddr, ttl: u32, now: Duration) -> bool {
        let ip = canonical(ip);
        let until = now + Duration::from_secs(u64::from(ttl)).clamp(MIN_TTL, MAX_TTL);
        if let Some(p) = self
            .by_ip
            .get_mut(&ip)
            .and_then(|v| v.iter_mut().find(|p| &*p.name == name))
        {
            p.until = p.until.max(until);
            return false;
        }
        let mut evicted = false;
        if self.len >= self.max {
            self.sweep(now);
            if self.len >= self.max {
                self.evict_soonest();
                evicted = true;
            }
        }
        self.by_ip.entry(ip).or_default().push(Pin {
            name: name.into(),
            until,
        });
        self.len += 1;
        evicted
    }

    /// The names pinned to `ip` at `now`.
    pub fn names(&self, ip: IpAddr, now: Duration) -> Vec<&str> {
        self.by_ip
            .get(&canonical(ip))
            .map(|v| {
                v.iter()
                    .filter(|p| p.until > now)
                    .map(|p| &*p.name)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Drop every expired pin.
    pub fn sweep(&mut self, now: Duration) {
        let mut len = 0;
        self.by_ip.retain(|_, v| {
            v.retain(|p| p.until > now);
            len += v.len();
            !v.is_empty()
        });
        self.len = len;
    }

    fn evict_soonest(&mut self) {
        let soonest = self
            .by_ip
            .iter()
            .flat_map(|(ip, v)| v.iter().enumerate().map(move |(i, p)| (p.until, *ip, i)))
            .min();
        if let Some((_, ip, i)) = soonest {
            if let Some(v) = self.by_ip.get_mut(&ip) {
                v.swap_remove(i);
                self.len -= 1;
                if v.is_empty() {
                    self.by_ip.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn pins_expire_after_their_ttl_at_least_a_second() {
        let mut p = Pins::new(16);
        let ip: IpAddr = "198.51.100.8".parse().unwrap();
        p.insert("a.test", ip, 5, s(10));
        p.insert("b.test", ip, 0, s(10));
        assert_eq!(p.names(ip, s(10)), ["a.test", "b.test"]);
        assert_eq!(
            p.names(ip, Duration::from_millis(10_999)),
            ["a.test", "b.test"]
        );
        assert_eq!(p.names(ip, s(11)), ["a.test"]);
        assert_eq!(p.names(ip, s(15)), Vec::<&str>::new());
        // A mapped address finds the IPv4 pin.
        p.insert("c.test", ip, 60, s(20));
        assert_eq!(
            p.names("::ffff:198.51.100.8".parse().unwrap(), s(21)),
            ["c.test"]
        );
        // Refreshing extends, never shortens, and adds no entry.
        p.insert("c.test", ip, 1, s(21));
        assert_eq!(p.names(ip, s(70)), ["c.test"]);
        p.sweep(s(70));
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn a_full_table_sweeps_then_evicts_the_soonest_expiry() {
        let mut p = Pins::new(3);
        let ip = |i: u8| IpAddr::from([198, 51, 100, i]);
        assert!(!p.insert("a", ip(1), 100, s(0)));
        assert!(!p.insert("b", ip(2), 10, s(0)));
        assert!(!p.insert("c", ip(3), 50, s(0)));
        assert!(p.insert("d", ip(4), 100, s(1)));
        assert_eq!(p.len(), 3);
        assert!(p.names(ip(2), s(1)).is_empty(), "b expired soonest");
        // Expired pins go first, without an eviction.
        assert!(!p.insert("e", ip(5), 100, s(60)));
        assert!(p.names(ip(3), s(60)).is_empty());
        assert_eq!(p.len(), 3);
    }
}
