//! The metrics handle as Prometheus text exposition (format 0.0.4), for a scrape endpoint.
//!
//! Every [`crate::metrics::Stats`] counter becomes `ringnet_<name>` (a gauge for the ones
//! that count what is open now, a counter with `_total` for the rest), the link's counters
//! `ringnet_{tx,rx}_{bytes,frames}_total`, drops `ringnet_drops_total{reason=…}`, open flows
//! `ringnet_flows_open{proto=…}`, and each latency histogram a summary in seconds
//! (`quantile` 0.5 and 0.99, `_sum`, `_count`) plus a `_max_seconds` gauge. Pure: building
//! the text reads the handle's atomics and summaries, nothing else.

use std::fmt::Write as _;

use super::{LatencySummary, Metrics};

/// Counters of [`crate::metrics::Stats`] that are levels, not totals.
const GAUGES: [&str; 3] = ["tcp_active", "tcp_connecting", "udp_active"];

/// The text exposition of `m`, labelled with `slot`.
pub fn render(m: &Metrics, slot: u32) -> String {
    let mut s = String::with_capacity(8 * 1024);
    let l = format!("slot=\"{slot}\"");
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(s, "# HELP ringnet_{name} {help}");
        let _ = writeln!(s, "# TYPE ringnet_{name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(s, "ringnet_{name}{{{l}{labels}}} {v}");
        }
    };
    let one = |v: u64| vec![(String::new(), v)];
    metric(
        "tx_bytes_total",
        "counter",
        "Bytes of Ethernet frames from the guest.",
        &one(m.tx_bytes()),
    );
    metric(
        "rx_bytes_total",
        "counter",
        "Bytes of Ethernet frames to the guest.",
        &one(m.rx_bytes()),
    );
    metric(
        "tx_frames_total",
        "counter",
        "Frames from the guest.",
        &one(m.tx_frames()),
    );
    metric(
        "rx_frames_total",
        "counter",
        "Frames to the guest.",
        &one(m.rx_frames()),
    );
    let d = m.drops();
    let drops = [
        ("from_guest_ring_full", d.from_guest_ring_full),
        ("from_guest_pool_empty", d.from_guest_pool_empty),
        ("to_guest_ring_full", d.to_guest_ring_full),
        ("to_guest_undelivered", d.to_guest_undelivered),
        ("malformed", d.malformed),
        ("unsupported", d.unsupported),
        ("filtered", d.filtered),
        ("policy", d.policy),
        ("limits", d.limits),
        ("datagrams", d.datagrams),
        ("events", d.events),
        ("capture", d.capture),
    ];
    let drops: Vec<(String, u64)> = drops
        .iter()
        .map(|(r, v)| (format!(",reason=\"{r}\""), *v))
        .collect();
    metric("drops_total", "counter", "Drops by reason.", &drops);
    let f = m.open_flows();
    metric(
        "flows_open",
        "gauge",
        "Flows open now (udp includes ICMP echo).",
        &[
            (",proto=\"tcp\"".into(), f.tcp),
            (",proto=\"udp\"".into(), f.udp),
        ],
    );
    metric(
        "host_connects_total",
        "counter",
        "Host TCP connects by result.",
        &[
            (",result=\"ok\"".into(), m.host_connects_ok()),
            (",result=\"failed\"".into(), m.host_connects_failed()),
        ],
    );
    metric(
        "dns_results_total",
        "counter",
        "DNS queries by result.",
        &[
            (",result=\"answered\"".into(), m.dns_answered()),
            (",result=\"failed\"".into(), m.dns_failed()),
        ],
    );
    for (name, value) in m.stats().snapshot() {
        if GAUGES.contains(&name) {
            metric(name, "gauge", "See ringnet's metrics::Stats.", &one(value));
        } else {
            let name = format!("{name}_total");
            metric(
                &name,
                "counter",
                "See ringnet's metrics::Stats.",
                &one(value),
            );
        }
    }
    summary(
        &mut s,
        &l,
        "host_connect",
        "Host TCP connect time.",
        m.connect_latency(),
    );
    summary(
        &mut s,
        &l,
        "dns_upstream",
        "DNS upstream answer time.",
        m.dns_latency(),
    );
    s
}

fn summary(s: &mut String, l: &str, name: &str, help: &str, v: LatencySummary) {
    let secs = |d: std::time::Duration| d.as_secs_f64();
    let _ = writeln!(s, "# HELP ringnet_{name}_seconds {help}");
    let _ = writeln!(s, "# TYPE ringnet_{name}_seconds summary");
    for (q, d) in [("0.5", v.p50), ("0.99", v.p99)] {
        let _ = writeln!(
            s,
            "ringnet_{name}_seconds{{{l},quantile=\"{q}\"}} {}",
            secs(d)
        );
    }
    let _ = writeln!(s, "ringnet_{name}_seconds_sum{{{l}}} {}", secs(v.sum));
    let _ = writeln!(s, "ringnet_{name}_seconds_count{{{l}}} {}", v.count);
    let _ = writeln!(
        s,
        "# HELP ringnet_{name}_max_seconds {help} Largest sample."
    );
    let _ = writeln!(s, "# TYPE ringnet_{name}_max_seconds gauge");
    let _ = writeln!(s, "ringnet_{name}_max_seconds{{{l}}} {}", secs(v.max));
}
