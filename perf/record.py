#!/usr/bin/env python3
"""Normalise one raw measurement (iperf3 -J output or an rrbench JSON line)
plus CPU counters into one JSON line for results.jsonl.

   record.py --file RAW --test T --backend B ... (see compare.sh)
   record.py --line < results-line      prints a one-line progress summary
"""
import argparse
import json
import sys

IPERF_TESTS = ("tcp_up_1", "tcp_up_4", "tcp_down_1", "tcp_down_4", "udp_up", "udp_paced",
               "tcp_in_1", "tcp_in_1_lo")


def progress():
    r = json.loads(sys.stdin.readline())
    head = (f"  [{r['pin']:<8} mtu {r['mtu']:<5} run {r['run']}] "
            f"{r['backend']:<13} {r['test']:<10}")
    if r.get("error"):
        print(f"{head} FAILED: {r['error']}")
        return
    if r["test"] in IPERF_TESTS:
        s = f"{r['gbps']:8.2f} Gbit/s"
        if r.get("lost_pct") is not None:
            s += f" loss {r['lost_pct']:.1f}%"
        if r.get("retransmits"):
            s += f" retr {r['retransmits']}"
        if r.get("stalled_intervals"):
            s += f" STALLS {r['stalled_intervals']}"
    else:
        s = (f"{r['rate']:8.0f}/s p50 {r['p50_us']:.1f} p99 {r['p99_us']:.1f}"
             f" p99.9 {r['p999_us']:.1f} us")
        if r.get("lost"):
            s += f" lost {r['lost']}"
    s += f" | backend {r['backend_cpu_s']:.2f} cpu-s, machine {r['machine_cpu_s']:.2f} cpu-s"
    if r["pin"] == "pinned":
        s += f" (pinned cpu {r['pin_cpu_s']:.2f}, others {r['other_cpu_s']:.2f})"
    if r.get("steal_s", 0) > 0.05:
        s += f", steal {r['steal_s']:.2f}s"
    print(f"{head} {s}")


def main():
    if "--line" in sys.argv:
        return progress()
    ap = argparse.ArgumentParser()
    for a in ("file", "test", "backend", "run", "mtu", "pin", "rc", "clk",
              "bcpu0", "bcpu1", "sys0", "sys1", "t0", "t1", "alive", "load"):
        ap.add_argument("--" + a, required=True)
    a = ap.parse_args()
    clk = float(a.clk)
    b0, st0, p0 = (float(x) for x in a.sys0.split())
    b1, st1, p1 = (float(x) for x in a.sys1.split())
    bc0 = float(a.bcpu0) if a.bcpu0 not in ("", "-") else None
    bc1 = float(a.bcpu1) if a.bcpu1 not in ("", "-") else None
    r = {
        "test": a.test, "backend": a.backend, "run": int(a.run),
        "mtu": int(a.mtu), "pin": a.pin, "rc": int(a.rc),
        "wall_s": round(float(a.t1) - float(a.t0), 3),
        # veth has no backend process: the kernel does the work in the
        # senders' and receivers' context, so 0 is the honest number.
        "backend_cpu_s": (bc1 - bc0) / clk if bc0 is not None and bc1 is not None else 0.0,
        "machine_cpu_s": (b1 - b0) / clk,
        "steal_s": (st1 - st0) / clk,
        # busy time of the CPU used for pinning, and of all the others: when
        # pinned, everything measured runs on that CPU, so "other" is
        # foreign load (other jobs on the machine), a noise indicator
        "pin_cpu_s": (p1 - p0) / clk,
        "other_cpu_s": ((b1 - b0) - (p1 - p0)) / clk,
        "loadavg_1m": float(a.load),
        "backend_alive": a.alive == "1",
    }
    try:
        txt = open(a.file).read().strip()
        if a.test in IPERF_TESTS:
            d = json.loads(txt)
        else:
            d = json.loads(txt.splitlines()[-1])
    except Exception as e:  # noqa: BLE001
        r["error"] = f"no parsable output ({type(e).__name__}), rc={a.rc}"
        if not r["backend_alive"]:
            r["error"] += ", backend died"
        print(json.dumps(r))
        return

    if a.test in IPERF_TESTS:
        end = d.get("end", {})
        if d.get("error"):
            r["error"] = d["error"]
        if a.test in ("udp_up", "udp_paced"):
            rcv = end.get("sum_received")
            snt = end.get("sum_sent") or end.get("sum") or {}
            if rcv:
                bps, nbytes = rcv.get("bits_per_second", 0), rcv.get("bytes", 0)
                lost = rcv.get("lost_percent", snt.get("lost_percent"))
            else:  # iperf3 3.12: end.sum carries the server's loss count
                s = end.get("sum", {})
                lost = s.get("lost_percent")
                bps = s.get("bits_per_second", 0) * (1 - (lost or 0) / 100)
                nbytes = s.get("bytes", 0) * (1 - (lost or 0) / 100)
            r["lost_pct"] = lost
            r["sent_gbps"] = snt.get("bits_per_second", 0) / 1e9
        else:
            s = end.get("sum_received", {})
            bps, nbytes = s.get("bits_per_second", 0), s.get("bytes", 0)
            r["retransmits"] = end.get("sum_sent", {}).get("retransmits")
        r["gbps"] = bps / 1e9
        iv = [i["sum"]["bits_per_second"] / 1e9 for i in d.get("intervals", [])
              if i.get("sum", {}).get("seconds", 0) > 0.5]
        if iv:
            r["interval_gbps"] = [round(x, 3) for x in iv]
            r["stalled_intervals"] = sum(1 for x in iv if x < 0.1 * max(r["gbps"], 1e-9))
        gbit = nbytes * 8 / 1e9
        r["gbit"] = gbit
        if gbit > 0:
            r["backend_cpu_ms_per_gbit"] = r["backend_cpu_s"] * 1e3 / gbit
            r["machine_cpu_ms_per_gbit"] = r["machine_cpu_s"] * 1e3 / gbit
        if not bps and "error" not in r:
            r["error"] = f"no throughput, rc={a.rc}"
    else:
        for k in ("count", "errors", "lost", "rate", "p50_us", "p90_us",
                  "p99_us", "p999_us", "mean_us", "max_us", "seconds"):
            r[k] = d.get(k)
        if d.get("count"):
            r["backend_cpu_us_per_op"] = r["backend_cpu_s"] / d["count"] * 1e6
            r["machine_cpu_us_per_op"] = r["machine_cpu_s"] / d["count"] * 1e6
        else:
            r["error"] = f"no transactions, rc={a.rc}"
    if r.get("error") and not r["backend_alive"]:
        r["error"] += ", backend died"
    print(json.dumps(r))


if __name__ == "__main__":
    main()
