//! Counters: every limit and every drop has one.
//!
//! All counters are relaxed atomics written by the poll thread (and the VMM side for its
//! ring counters) and readable from any thread at any time.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Default)]
        pub struct $name {
            $($(#[$fm])* pub $field: AtomicU64,)*
        }

        impl $name {
            /// `(name, value)` of every counter, in declaration order.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($field), self.$field.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters!(
    /// Poll-thread counters.
    Stats {
        /// Guest frames that failed to parse (dropped).
        malformed,
        /// Guest frames whose virtio-net header claims an offload the guest did not
        /// negotiate (dropped).
        from_guest_bad_vnet,
        /// Times the guest behind the link was replaced (a VMM reconnected); the old
        /// guest's flows were closed.
        guest_resets,
        /// ARP not addressed to the gateway (dropped: ringnet answers only for itself).
        arp_filtered,
        /// NDP messages dropped (router solicitations, solicitations for other addresses).
        ndp_filtered,
        /// IP packets of other protocols or fragments (dropped).
        unsupported,
        /// TCP flows opened (host connect started).
        tcp_opened,
        /// TCP flows whose host connect failed (guest got RST).
        tcp_connect_failed,
        /// TCP host connects that succeeded.
        tcp_connected,
        /// TCP flows that reused a reaped flow's socket and buffers (no allocation).
        tcp_sockets_reused,
        /// SYNs refused because `max_connections` flows were open.
        tcp_refused_limit,
        /// TCP flows open now.
        tcp_active,
        /// TCP flows whose host connect is in progress now.
        tcp_connecting,
        /// Pending host connects given up at the `max_connecting` cap, oldest first (the
        /// guest got RST).
        tcp_connect_evicted,
        /// SYNs dropped (no RST: the guest retries) because `max_connecting` connects were
        /// pending and the eviction budget (`evictions_per_sec`) was spent, or because
        /// `failed_connects_per_sec` host connects failed lately: a connect flood.
        tcp_syn_shed,
        /// Retransmitted SYNs admitted over those budgets (a SYN shed before, sent again: a
        /// real TCP stack retrying), on a budget of their own.
        tcp_syn_retry_admitted,
        /// TCP flows the guest reset (in any state, including an abandoned connect).
        tcp_guest_reset,
        /// TCP flows reset because the host socket failed or was reset (the guest got RST).
        tcp_host_reset,
        /// TCP flows reset because the guest sent nothing for `tcp_guest_timeout_ms`
        /// (keep-alive probes or a SYN-ACK unanswered: the guest vanished).
        tcp_guest_timeout,
        /// UDP flows opened.
        udp_opened,
        /// UDP flows closed after being idle.
        udp_expired,
        /// UDP flows evicted (oldest first) at the flow limit.
        udp_evicted,
        /// Datagrams of new UDP/ICMP flows dropped because the flow table was full and the
        /// eviction budget (`evictions_per_sec`) was spent (a flood of new destinations),
        /// or because `failed_connects_per_sec` host sockets failed to open lately.
        udp_flow_shed,
        /// UDP datagrams dropped (host socket queue full, open failed, reply too large).
        udp_dropped,
        /// UDP flows open now.
        udp_active,
        /// ICMP echo requests relayed through ping sockets.
        icmp_relayed,
        /// ICMP echo requests dropped (ping sockets unavailable, queue full).
        icmp_dropped,
        /// Frames for the guest dropped: not built (pool empty, ring full) or not written
        /// (the guest's TAP down or gone).
        to_guest_dropped,
        /// Poll-loop iterations.
        polls,
        /// Times the io_uring egress driver found its submission queue full
        /// (`egress.uring_entries`) and submitted what was queued before adding more.
        uring_sq_full,
        /// Idle trims: times the poll thread gave memory back after `egress.idle_trim_ms`
        /// without traffic (free pool slots, spare socket buffers, the heap).
        idle_trims,
        /// Bytes of free frame-pool slots that were resident and were given back by idle
        /// trims (`mincore(2)` before `MADV_DONTNEED`), in total.
        idle_trim_pool_bytes,
        /// ARP/NDP frames naming a MAC other than the guest's (dropped: they would repoint
        /// the gateway's neighbour entry for the guest and cut it off).
        neigh_spoofed,
        /// UDP and ICMP echo flows whose host socket could not be opened (each of their
        /// datagrams is dropped and counted in `udp_dropped` / `icmp_dropped` too).
        udp_open_failed,
        /// Host sockets (TCP, UDP, ICMP echo) not opened for want of a file descriptor
        /// (`EMFILE`: raise `ulimit -n`; `ENFILE`: the system's file table is full).
        host_fd_exhausted,
        /// DNS queries from the guest to the gateway (UDP and TCP).
        dns_queries,
        /// DNS answers sent to the guest (forwarded, local or error answers).
        dns_answered,
        /// Queries answered by ringnet itself: static records, a disabled family, a denied
        /// name.
        dns_local,
        /// Upstream exchanges started (each try of each server counts).
        dns_forwarded,
        /// Upstream tries that timed out or failed in transport, then tried the next server.
        dns_upstream_failed,
        /// Queries answered SERVFAIL because no upstream answered (or none is configured).
        dns_servfail,
        /// Queries answered FORMERR (not exactly one question, unparseable after the header).
        dns_formerr,
        /// Guest DNS messages dropped: too short to answer, responses, or more queries in
        /// flight than `dns.max_pending`.
        dns_dropped,
        /// Guest queries dropped unparsed over `dns.queries_per_sec` (a query flood).
        dns_shed,
        /// Names answered NXDOMAIN because the policy denies them (never sent upstream).
        dns_denied,
        /// Upstream answers turned into NXDOMAIN by rebind protection.
        dns_rebind_blocked,
        /// UDP answers truncated (TC set) to the guest's size.
        dns_truncated,
        /// Upstream messages ignored: unparseable, or matching no query in flight.
        dns_upstream_bad,
        /// DNS pins evicted because the pin table was full (`dns.max_pins`).
        dns_pins_evicted,
        /// TCP flows refused by the policy (RST at once, no host connect).
        policy_denied_tcp,
        /// UDP datagrams dropped by the policy.
        policy_denied_udp,
        /// ICMP echo requests dropped by the policy.
        policy_denied_icmp,
        /// Flows refused by an explicit deny rule.
        policy_denied_rule,
        /// Flows refused by the direction's default (no rule matched).
        policy_denied_default,
        /// TCP flows to port 443 reset because the TLS ClientHello's SNI did not agree with
        /// the domain rule that admitted them.
        policy_sni_mismatch,
        /// Open flows reset (TCP) or closed (UDP) because a new policy denies them.
        policy_revoked,
        /// Secret placeholders replaced by real values in intercepted requests
        /// (`secrets::SecretStats::substitutions`).
        secret_substitutions,
        /// Real secret values replaced by placeholders in intercepted responses
        /// (`secrets::SecretStats::scrubbed`).
        secret_scrubbed,
        /// Requests stopped because a placeholder was found where its secret may not go
        /// (`secrets::SecretStats::violations`): the flow is closed.
        secret_violations,
        /// TLS interception leaf certificates issued (`tls::LeafStats::issued`).
        tls_leaf_issued,
        /// TLS interception leaf certificates evicted from the cache at `tls.leaf_cache`,
        /// least recently used first (`tls::LeafStats::evicted`).
        tls_leaf_evicted,
        /// TCP flows to an intercepted port handed to the TLS workers.
        tls_flows,
        /// Of those, decrypted and relayed (the server verified, the guest's handshake done).
        tls_intercepted,
        /// Of those, spliced untouched: no SNI, a `tls.bypass` name, or not TLS.
        tls_bypassed,
        /// Intercepted flows whose server certificate failed verification (the guest's
        /// handshake was refused with an alert).
        tls_upstream_untrusted,
        /// Intercepted flows ended by another TLS or rewriting error (a bad record, a
        /// handshake the guest refused, an oversized ClientHello, a rewriter bound).
        tls_failed,
        /// Intercepted flows refused at once: every TLS worker's queue was full, or a socket
        /// pair could not be made.
        tls_refused,
        /// UDP datagrams to an intercepted port dropped (QUIC is blocked while TLS
        /// interception is on, so clients fall back to TCP).
        tls_quic_blocked,
        /// Host clients of published TCP ports accepted (a flow to the guest started).
        inbound_accepted,
        /// Inbound TCP flows open now.
        inbound_active,
        /// Host clients reset at `max_inbound_connections` (or with no flow slot left).
        inbound_refused_limit,
        /// Inbound TCP flows the guest refused (RST): the host client was reset.
        inbound_guest_refused,
        /// Inbound TCP flows the guest did not answer within `connect_timeout_ms`: the host
        /// client was reset.
        inbound_guest_timeout,
        /// Host peers of published UDP ports mapped to a guest flow (each new one).
        udp_inbound_peers,
        /// Mapped UDP peers evicted at `max_udp_peers` (the oldest of the port).
        udp_inbound_evicted,
        /// accept(2) or recvfrom(2) on a published port failed (out of descriptors: the
        /// client waits in the kernel's queue).
        inbound_accept_failed,
        /// DHCPv4 OFFERs and ACKs sent to the guest.
        dhcp_replies,
        /// DHCPv4 NAKs sent (a REQUEST for an address other than the guest's).
        dhcp_naks,
        /// DHCPv4 DECLINE and RELEASE messages (accepted silently).
        dhcp_released,
        /// Autoconfiguration requests dropped: not from the guest's MAC, for an inactive
        /// family, unparseable, or not a message the gateway answers (DHCPv4 and DHCPv6).
        dhcp_ignored,
        /// Router advertisements sent (solicited and periodic).
        ra_sent,
        /// DHCPv6 REPLYs sent (to INFORMATION-REQUEST).
        dhcp6_replies,
        /// Connections accepted by a QEMU stream port in listen mode
        /// ([`crate::backend::stream`]).
        stream_connections,
        /// QEMU stream connections that ended (EOF, reset, a bad length); each one reset
        /// the guest (`guest_resets`) and dropped the frames queued to it.
        stream_disconnects,
        /// QEMU stream connections ended because a length prefix was out of range (0,
        /// below 14 or above the MTU + 14); also counted in `stream_disconnects`.
        stream_bad_length,
        /// vhost-user: VMM connections accepted on the socket (`ringnet vhost-user`).
        vhost_connections,
        /// vhost-user: guest TX descriptor chains dropped: shorter than the virtio-net
        /// header plus an Ethernet header, longer than a pool slot, with a device-writable
        /// descriptor, more than 1024 descriptors, or naming memory outside the guest's.
        vhost_tx_bad_chain,
        /// vhost-user: times guest TX stopped taking descriptors because `from_guest` was
        /// full or the pool empty (backpressure: the descriptors wait in the ring).
        vhost_tx_stalls,
        /// vhost-user: times a frame for the guest waited because its RX ring had no (or not
        /// enough) buffers; it is delivered once the guest adds some.
        vhost_rx_no_buffer,
        /// vhost-user: frames for the guest dropped because they fit no receive buffer
        /// (without mergeable buffers: one chain too small; with them: the whole ring).
        vhost_rx_too_big,
        /// vhost-user: guest RX descriptor chains returned unused: a device-readable
        /// descriptor, too small for the virtio-net header, or memory outside the guest's.
        vhost_rx_bad_chain,
        /// vhost-user: ring errors (an available index beyond the ring size, a used ring
        /// outside guest memory): the ring is skipped until the guest fixes it or resets.
        vhost_ring_errors,
    }
);

impl Stats {
    /// One `name value` line per non-zero counter.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (k, v) in self.snapshot() {
            if v != 0 {
                let _ = writeln!(s, "{k} {v}");
            }
        }
        s
    }

    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}
