//! Per-slot subnets: a /30 from the IPv4 pool and a /64 from the IPv6 pool, derived from the
//! slot number or from an explicit guest address (see the address plan in [`super`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};

use super::{ConfigError, IPV4_SLOT_PREFIX, IPV6_SLOT_PREFIX};

/// A slot's IPv4 subnet: guest and gateway share a /30.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Ipv4Slot {
    pub guest: Ipv4Addr,
    pub gateway: Ipv4Addr,
    /// Always [`IPV4_SLOT_PREFIX`].
    pub prefix_len: u8,
}

impl Ipv4Slot {
    /// The subnet holding `guest` and `gateway`.
    #[must_use]
    pub fn subnet(&self) -> Ipv4Network {
        // `prefix_len` is a valid prefix (the slot's); the fallback only satisfies the type.
        Ipv4Network::new(self.guest, self.prefix_len)
            .and_then(|n| Ipv4Network::new(n.network(), n.prefix()))
            .unwrap_or_else(|_| Ipv4Network::from(self.guest))
    }
}

/// A slot's IPv6 subnet: guest and gateway share a /64.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Ipv6Slot {
    pub guest: Ipv6Addr,
    pub gateway: Ipv6Addr,
    /// Always [`IPV6_SLOT_PREFIX`].
    pub prefix_len: u8,
}

impl Ipv6Slot {
    /// The subnet holding `guest` and `gateway`.
    #[must_use]
    pub fn subnet(&self) -> Ipv6Network {
        // `prefix_len` is a valid prefix (the slot's); the fallback only satisfies the type.
        Ipv6Network::new(self.guest, self.prefix_len)
            .and_then(|n| Ipv6Network::new(n.network(), n.prefix()))
            .unwrap_or_else(|_| Ipv6Network::from(self.guest))
    }
}

/// How many `/block` subnets fit in a `/prefix` pool (0 when the pool is smaller than one).
/// `block ≤ 64` for both families, so the result fits a u128 even for a /0 pool.
fn block_capacity(prefix: u8, block: u8) -> u128 {
    match block.checked_sub(prefix) {
        Some(spare_bits) => 1u128 << spare_bits,
        None => 0,
    }
}

/// Slot `slot`'s /30 of `pool`: guest = base + 4·slot + 2, gateway = guest − 1.
pub(super) fn derive_ipv4(pool: Ipv4Network, slot: u32) -> Result<Ipv4Slot, ConfigError> {
    let capacity = block_capacity(pool.prefix(), IPV4_SLOT_PREFIX);
    let outside = || ConfigError::SlotOutsidePool {
        field: "interface.ipv4_pool",
        pool: pool.to_string(),
        capacity,
        block: IPV4_SLOT_PREFIX,
        slot,
    };
    if u128::from(slot) >= capacity {
        return Err(outside());
    }
    let guest = slot
        .checked_mul(4)
        .and_then(|offset| u32::from(pool.network()).checked_add(offset))
        .and_then(|block| block.checked_add(2))
        .ok_or_else(outside)?;
    Ok(Ipv4Slot {
        guest: Ipv4Addr::from(guest),
        gateway: Ipv4Addr::from(guest - 1),
        prefix_len: IPV4_SLOT_PREFIX,
    })
}

/// Slot `slot`'s /64 of `pool`: guest = base + (slot << 64) + 2, gateway = `::1` of that /64.
pub(super) fn derive_ipv6(pool: Ipv6Network, slot: u32) -> Result<Ipv6Slot, ConfigError> {
    let capacity = block_capacity(pool.prefix(), IPV6_SLOT_PREFIX);
    let outside = || ConfigError::SlotOutsidePool {
        field: "interface.ipv6_pool",
        pool: pool.to_string(),
        capacity,
        block: IPV6_SLOT_PREFIX,
        slot,
    };
    if u128::from(slot) >= capacity {
        return Err(outside());
    }
    // slot < capacity, so the slot's /64 lies inside the pool and `+ 2` cannot overflow.
    let network = u128::from(pool.network()) + (u128::from(slot) << 64);
    Ok(Ipv6Slot {
        guest: Ipv6Addr::from(network + 2),
        gateway: Ipv6Addr::from(network + 1),
        prefix_len: IPV6_SLOT_PREFIX,
    })
}

/// An explicit guest IPv4 address: the gateway is the other usable host of its /30.
pub(super) fn explicit_ipv4(addr: Ipv4Addr) -> Result<Ipv4Slot, ConfigError> {
    let bits = u32::from(addr);
    let network = bits & !3;
    let gateway = match bits & 3 {
        1 => network + 2,
        2 => network + 1,
        _ => {
            return Err(ConfigError::GuestAddress {
                field: "interface.ipv4_address",
                value: IpAddr::V4(addr),
                reason: "it is the network or broadcast address of its /30",
            })
        }
    };
    Ok(Ipv4Slot {
        guest: addr,
        gateway: Ipv4Addr::from(gateway),
        prefix_len: IPV4_SLOT_PREFIX,
    })
}

/// An explicit guest IPv6 address: the gateway is `::1` of its /64, or `::2` if the guest is `::1`.
pub(super) fn explicit_ipv6(addr: Ipv6Addr) -> Result<Ipv6Slot, ConfigError> {
    let bits = u128::from(addr);
    let network = bits & !u128::from(u64::MAX);
    let gateway = match bits - network {
        0 => {
            return Err(ConfigError::GuestAddress {
                field: "interface.ipv6_address",
                value: IpAddr::V6(addr),
                reason: "it is the Subnet-Router anycast address of its /64 (RFC 4291 §2.6.1)",
            })
        }
        1 => network + 2,
        _ => network + 1,
    };
    Ok(Ipv6Slot {
        guest: addr,
        gateway: Ipv6Addr::from(gateway),
        prefix_len: IPV6_SLOT_PREFIX,
    })
}
