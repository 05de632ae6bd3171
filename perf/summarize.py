#!/usr/bin/env python3
"""Summarise perf/compare.sh results (.jsonl): medians over runs per
(pin mode, MTU, backend, test), ratios of ringnet against pasta and veth
(median over runs of the per-run ratio, both measured in the same run of
the same invocation), a markdown report, a CSV of medians and a PNG chart.

    summarize.py RESULTS.jsonl --md OUT.md --csv OUT.csv --png OUT.png [--env env.txt]
"""
import argparse
import csv
import json
import statistics
from collections import defaultdict

ORDER = ["veth", "pasta", "slirp4netns", "ringnet-uring", "ringnet-epoll",
         "ringnet-base-uring", "ringnet-base-epoll",
         "ringnet-policy-uring", "ringnet-policy-epoll",
         "ringnet-obs-uring", "ringnet-obs-epoll"]
RINGNETS = ["ringnet-uring", "ringnet-epoll"]
REFS = ["pasta", "veth"]

# (label, test, field, format, higher_is_better)
METRICS = [
    ("TCP guest→host, 1 stream, Gbit/s", "tcp_up_1", "gbps", "{:.2f}", True),
    ("TCP guest→host, 4 streams, Gbit/s", "tcp_up_4", "gbps", "{:.2f}", True),
    ("TCP host→guest, 1 stream, Gbit/s", "tcp_down_1", "gbps", "{:.2f}", True),
    ("TCP host→guest, 4 streams, Gbit/s", "tcp_down_4", "gbps", "{:.2f}", True),
    ("inbound TCP (published port), host client → guest server, 1 stream, Gbit/s "
     "(non-loopback client; pasta: tap path)", "tcp_in_1", "gbps", "{:.2f}", True),
    ("inbound TCP, 1 stream, loopback client, Gbit/s (pasta: splice)", "tcp_in_1_lo", "gbps",
     "{:.2f}", True),
    ("UDP guest→host, received Gbit/s", "udp_up", "gbps", "{:.2f}", True),
    ("UDP guest→host, loss %", "udp_up", "lost_pct", "{:.1f}", False),
    ("UDP guest→host paced: received Gbit/s at the highest rate with < 5 % loss",
     "udp_paced", "gbps", "{:.2f}", True),
    ("UDP guest→host paced: loss % at that rate", "udp_paced", "lost_pct", "{:.1f}", False),
    ("TCP RR p50 µs", "tcp_rr", "p50_us", "{:.1f}", False),
    ("TCP RR p99 µs", "tcp_rr", "p99_us", "{:.1f}", False),
    ("TCP RR p99.9 µs", "tcp_rr", "p999_us", "{:.1f}", False),
    ("TCP RR transactions/s", "tcp_rr", "rate", "{:.0f}", True),
    ("UDP RR p50 µs", "udp_rr", "p50_us", "{:.1f}", False),
    ("UDP RR p99 µs", "udp_rr", "p99_us", "{:.1f}", False),
    ("UDP RR p99.9 µs", "udp_rr", "p999_us", "{:.1f}", False),
    ("UDP RR transactions/s", "udp_rr", "rate", "{:.0f}", True),
    ("inbound TCP RR p50 µs (published port, non-loopback client; pasta: tap path)",
     "tcp_in_rr", "p50_us", "{:.1f}", False),
    ("inbound TCP RR p99 µs", "tcp_in_rr", "p99_us", "{:.1f}", False),
    ("inbound TCP RR transactions/s", "tcp_in_rr", "rate", "{:.0f}", True),
    ("inbound TCP RR p50 µs, loopback client (pasta: splice)", "tcp_in_rr_lo", "p50_us",
     "{:.1f}", False),
    ("inbound TCP RR p99 µs, loopback client", "tcp_in_rr_lo", "p99_us", "{:.1f}", False),
    ("TCP connect/request/close per s", "tcp_crr", "rate", "{:.0f}", True),
    ("TCP CRR p99 µs", "tcp_crr", "p99_us", "{:.0f}", False),
    ("backend CPU ms/Gbit, TCP up 1", "tcp_up_1", "backend_cpu_ms_per_gbit", "{:.0f}", False),
    ("backend CPU ms/Gbit, TCP down 1", "tcp_down_1", "backend_cpu_ms_per_gbit", "{:.0f}", False),
    ("backend CPU ms/Gbit, inbound TCP 1", "tcp_in_1", "backend_cpu_ms_per_gbit", "{:.0f}",
     False),
    ("machine CPU ms/Gbit, TCP up 1", "tcp_up_1", "machine_cpu_ms_per_gbit", "{:.0f}", False),
    ("machine CPU ms/Gbit, TCP down 1", "tcp_down_1", "machine_cpu_ms_per_gbit", "{:.0f}", False),
    ("backend CPU µs/transaction, TCP RR", "tcp_rr", "backend_cpu_us_per_op", "{:.1f}", False),
    ("backend CPU µs/connection, TCP CRR", "tcp_crr", "backend_cpu_us_per_op", "{:.1f}", False),
    ("machine CPU µs/connection, TCP CRR", "tcp_crr", "machine_cpu_us_per_op", "{:.1f}", False),
]
TEST_ORDER = ["tcp_up_1", "tcp_up_4", "tcp_down_1", "tcp_down_4", "udp_up", "udp_paced",
              "tcp_in_1", "tcp_in_1_lo", "tcp_rr", "udp_rr", "tcp_crr", "tcp_in_rr",
              "tcp_in_rr_lo"]


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class Data:
    def __init__(self, rows):
        self.rows = rows
        self.ok = defaultdict(dict)      # (pin, mtu, b, t) -> run -> row
        self.failed = defaultdict(list)  # (pin, mtu, b) -> [row]
        for r in rows:
            key = (r["pin"], r["mtu"], r["backend"], r["test"])
            if r.get("error"):
                self.failed[key[:3]].append(r)
            else:
                self.ok[key][r["run"]] = r
        self.configs = []
        for r in rows:
            c = (r["pin"], r["mtu"])
            if c not in self.configs:
                self.configs.append(c)
        seen = {r["backend"] for r in rows}
        self.backends = [b for b in ORDER if b in seen] + sorted(seen - set(ORDER))

    def values(self, c, b, t, k):
        return [r[k] for r in self.ok[(*c, b, t)].values() if r.get(k) is not None]

    def median(self, c, b, t, k):
        v = self.values(c, b, t, k)
        return statistics.median(v) if v else None

    def ratio(self, c, b, ref, t, k):
        rs = []
        for run, r in self.ok[(*c, b, t)].items():
            base = self.ok[(*c, ref, t)].get(run)
            if base and r.get(k) is not None and base.get(k):
                rs.append(r[k] / base[k])
        return statistics.median(rs) if rs else None


def fmt(v, f):
    return "–" if v is None else f.format(v)


def goals(d, c):
    """Issue #11's goals for published ports (judged pinned at MTU 65520): inbound bulk
    >= 1.0x pasta's tap path, inbound RR p50 <= pasta's."""
    if "pasta" not in d.backends:
        return []
    lines = []
    for b in RINGNETS:
        if b not in d.backends:
            continue
        parts = []
        for t, k, want, op in (("tcp_in_1", "gbps", lambda q: q >= 1.0, "≥ 1.0"),
                               ("tcp_in_rr", "p50_us", lambda q: q <= 1.0, "≤ 1.0")):
            q = d.ratio(c, b, "pasta", t, k)
            if q is not None:
                parts.append(f"{t} {k} {q:.2f}× pasta (want {op}: "
                             f"{'met' if want(q) else 'NOT met'})")
        if parts:
            lines.append(f"- issue #11 goal, {b}: " + "; ".join(parts))
    if lines:
        lines.append("")
    return lines


def report(d, env):
    out = ["# ringnet vs pasta, slirp4netns and veth", ""]
    if env:
        out += ["```", env.strip(), "```", ""]
    out += [
        "Each cell is the median over runs. Ratio columns: ringnet ÷ reference, the median over "
        "runs of the per-run ratio (same invocation, same run, backends measured back to back). "
        "↑ = higher is better, ↓ = lower is better (so for ↓ rows a ratio < 1 means ringnet is "
        "better). veth has no backend process (its work is done by the kernel in the "
        "senders'/receivers' context), so its backend CPU is 0. Machine CPU = busy time of all "
        "CPUs (clients, servers, backend, kernel). Up = guest→host, down = host→guest (-R). "
        "Inbound = a client in the host namespace reaching a server in the guest through the "
        "backend's port forwarding (ringnet -p, pasta -t, slirp4netns add_hostfwd; veth: the "
        "guest's address directly); its client connects from a non-loopback host address "
        "(pasta's tap path, what a VM gets), the _lo rows from loopback (pasta's splice).", ""]
    ratio_cols = [(b, ref) for b in RINGNETS if b in d.backends
                  for ref in REFS if ref in d.backends]
    # Before/after in one run: each driver against the same driver of the base build.
    ratio_cols += [(b, b.replace("ringnet-", "ringnet-base-")) for b in RINGNETS
                   if b in d.backends and b.replace("ringnet-", "ringnet-base-") in d.backends]
    ratio_cols += [(b.replace("ringnet-", "ringnet-policy-"), b) for b in RINGNETS
                   if b in d.backends and b.replace("ringnet-", "ringnet-policy-") in d.backends]
    # Observation on (control socket, metrics endpoint, read once a second) ÷ off.
    ratio_cols += [(b.replace("ringnet-", "ringnet-obs-"), b) for b in RINGNETS
                   if b in d.backends and b.replace("ringnet-", "ringnet-obs-") in d.backends]
    for c in d.configs:
        pin, mtu = c
        nruns = max((len(v) for k, v in d.ok.items() if k[:2] == c), default=0)
        out.append(f"## {pin}{' (everything on one CPU)' if pin == 'pinned' else ' (2 vCPUs)'}, "
                   f"MTU {mtu} — medians of {nruns} run(s)")
        out.append("")
        hdr = ["metric"] + d.backends + [f"{b.replace('ringnet-', '')}/{ref}"
                                          for b, ref in ratio_cols]
        out.append("| " + " | ".join(hdr) + " |")
        out.append("|" + "---|" * len(hdr))
        tests_present = {k[3] for k in d.ok if k[:2] == c} | {
            r["test"] for k, v in d.failed.items() if k[:2] == c for r in v}
        for label, t, k, f, hib in METRICS:
            if t not in tests_present:
                continue
            cells = [fmt(d.median(c, b, t, k), f) for b in d.backends]
            if all(x == "–" for x in cells):
                continue
            if k.startswith("backend_cpu") and "veth" in d.backends:
                cells[d.backends.index("veth")] = "0"
            rc = []
            for b, ref in ratio_cols:
                q = d.ratio(c, b, ref, t, k)
                rc.append("–" if q is None else f"{q:.2f}×")
            out.append(f"| {label} {'↑' if hib else '↓'} | " + " | ".join(cells + rc) + " |")
        # stalls and failures
        stalls = []
        for b in d.backends:
            n = sum(r.get("stalled_intervals") or 0
                    for k, v in d.ok.items() if k[:3] == (*c, b) for r in v.values())
            stalls.append(str(n))
        out.append("| iperf3 1-s intervals < 10 % of the mean (sum) | " + " | ".join(
            stalls + [""] * len(ratio_cols)) + " |")
        if pin == "pinned":
            oth = []
            for b in d.backends:
                v = [r["other_cpu_s"] / r["wall_s"] for k, rr in d.ok.items()
                     if k[:3] == (*c, b) for r in rr.values()
                     if r.get("other_cpu_s") is not None and r.get("wall_s")]
                oth.append(f"{statistics.median(v):.2f}" if v else "–")
            out.append("| foreign load: other CPUs busy, CPU-s/s (noise; ~0 on a quiet machine) | "
                       + " | ".join(oth + [""] * len(ratio_cols)) + " |")
        out.append("| failed measurements | " + " | ".join(
            [str(len(d.failed[(*c, b)])) for b in d.backends] + [""] * len(ratio_cols)) + " |")
        out.append("")
        out += goals(d, c)
        # CPU seconds per test
        tests = [t for t in TEST_ORDER if t in tests_present]
        out.append(f"CPU seconds during each test, backend / machine (medians; {pin}, MTU {mtu}):")
        out.append("")
        out.append("| test | " + " | ".join(d.backends) + " |")
        out.append("|" + "---|" * (len(d.backends) + 1))
        for t in tests:
            cells = []
            for b in d.backends:
                bc, mc = d.median(c, b, t, "backend_cpu_s"), d.median(c, b, t, "machine_cpu_s")
                cells.append("–" if mc is None else f"{bc:.2f} / {mc:.2f}")
            out.append(f"| {t} | " + " | ".join(cells) + " |")
        out.append("")
    fails = [r for v in d.failed.values() for r in v]
    if fails:
        out.append("## Failed measurements")
        out.append("")
        for r in fails:
            out.append(f"- {r['pin']} MTU {r['mtu']} run {r['run']} {r['backend']} "
                       f"{r['test']}: {r['error']}")
        out.append("")
    out.append("## Per-run values (throughput Gbit/s, or rate/s and p50 µs)")
    out.append("")
    runs = sorted({r["run"] for r in d.rows})
    out.append("| pin | MTU | backend | test | " + " | ".join(f"run {i}" for i in runs) + " |")
    out.append("|" + "---|" * (len(runs) + 4))
    for c in d.configs:
        for b in d.backends:
            for t in TEST_ORDER:
                runs_ok = d.ok.get((*c, b, t), {})
                if not runs_ok and not any(r["test"] == t for r in d.failed[(*c, b)]):
                    continue
                cells = []
                for i in runs:
                    r = runs_ok.get(i)
                    if r is None:
                        cells.append("FAIL")
                    elif "gbps" in r:
                        s = f"{r['gbps']:.2f}"
                        if r.get("stalled_intervals"):
                            s += f" ({r['stalled_intervals']} stalls)"
                        cells.append(s)
                    else:
                        cells.append(f"{r['rate']:.0f}/s {r['p50_us']:.0f}µs")
                out.append(f"| {c[0]} | {c[1]} | {b} | {t} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def write_csv(d, path):
    keys = ["gbps", "lost_pct", "retransmits", "stalled_intervals", "rate", "p50_us",
            "p99_us", "p999_us", "backend_cpu_s", "machine_cpu_s", "steal_s",
            "backend_cpu_ms_per_gbit", "machine_cpu_ms_per_gbit",
            "backend_cpu_us_per_op", "machine_cpu_us_per_op"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["pin", "mtu", "backend", "test", "runs_ok", "runs_failed"] +
                   [f"median_{k}" for k in keys] +
                   [f"{k}_vs_{ref}" for ref in REFS for k in ("gbps", "rate", "p50_us", "p99_us")])
        for c in d.configs:
            for b in d.backends:
                for t in TEST_ORDER:
                    okr = d.ok.get((*c, b, t), {})
                    nf = sum(1 for r in d.failed[(*c, b)] if r["test"] == t)
                    if not okr and not nf:
                        continue
                    row = [c[0], c[1], b, t, len(okr), nf]
                    for k in keys:
                        m = d.median(c, b, t, k)
                        row.append("" if m is None else round(m, 4))
                    for ref in REFS:
                        for k in ("gbps", "rate", "p50_us", "p99_us"):
                            q = d.ratio(c, b, ref, t, k) if b != ref else None
                            row.append("" if q is None else round(q, 4))
                    w.writerow(row)


def chart(d, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("summarize: matplotlib not available, no chart")
        return
    colors = {"veth": "#888888", "pasta": "#4c72b0", "slirp4netns": "#55a868",
              "ringnet-uring": "#c44e52", "ringnet-epoll": "#dd8452",
              "ringnet-base-uring": "#8172b3", "ringnet-base-epoll": "#937860",
              "ringnet-policy-uring": "#da8bc3", "ringnet-policy-epoll": "#8c8c8c",
              "ringnet-obs-uring": "#ccb974", "ringnet-obs-epoll": "#64b5cd"}
    tput = ["tcp_up_1", "tcp_up_4", "tcp_down_1", "tcp_down_4", "udp_up", "udp_paced",
            "tcp_in_1", "tcp_in_1_lo"]
    lat = [("tcp_rr", "p50_us"), ("tcp_rr", "p99_us"), ("udp_rr", "p50_us"),
           ("udp_rr", "p99_us"), ("tcp_crr", "p50_us"), ("tcp_in_rr", "p50_us"),
           ("tcp_in_rr", "p99_us"), ("tcp_in_rr_lo", "p50_us")]
    n = len(d.configs)
    fig, axes = plt.subplots(n, 2, figsize=(15, 3.6 * n), squeeze=False)
    w = 0.8 / max(1, len(d.backends))
    for i, c in enumerate(d.configs):
        for j, (items, ylabel, title) in enumerate([
                ([(t, "gbps") for t in tput], "Gbit/s (median, whiskers min–max)",
                 "throughput"),
                (lat, "µs (median, whiskers min–max)", "latency, lower is better")]):
            ax = axes[i][j]
            plotted = False
            for bi, b in enumerate(d.backends):
                xs, ys, lo, hi = [], [], [], []
                for xi, (t, k) in enumerate(items):
                    v = d.values(c, b, t, k)
                    if not v:
                        continue
                    m = statistics.median(v)
                    xs.append(xi + (bi - (len(d.backends) - 1) / 2) * w)
                    ys.append(m)
                    lo.append(m - min(v))
                    hi.append(max(v) - m)
                plotted |= any(y > 0 for y in ys)
                ax.bar(xs, ys, w, yerr=[lo, hi], capsize=2, label=b,
                       color=colors.get(b), error_kw={"elinewidth": 0.8})
            ax.set_xticks(range(len(items)))
            ax.set_xticklabels([t if j == 0 else f"{t} {k.replace('_us', '')}"
                                for t, k in items], fontsize=8)
            ax.set_ylabel(ylabel, fontsize=8)
            ax.set_title(f"{c[0]}, MTU {c[1]}: {title}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
            if j == 1 and plotted:  # a run without rr/crr tests has nothing to log-scale
                ax.set_yscale("log")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(d.backends), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (3.6 * n)))
    fig.savefig(path, dpi=90)
    print(f"summarize: chart {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--md")
    ap.add_argument("--csv")
    ap.add_argument("--png")
    ap.add_argument("--env")
    a = ap.parse_args()
    d = Data(load(a.results))
    env = open(a.env).read() if a.env else ""
    md = report(d, env)
    if a.md:
        open(a.md, "w").write(md)
    else:
        print(md)
    if a.csv:
        write_csv(d, a.csv)
    if a.png:
        chart(d, a.png)


if __name__ == "__main__":
    main()
