//! `ringnet ctl PATH CMD`: the control socket's client. Human-readable tables by default,
//! the server's JSON lines as they are with `--json`.
//!
//! I/O by nature (a unix socket, stdout). `events` streams until the server goes away,
//! or until `--count N` events were shown.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::{json, Value};

/// `ringnet ctl` arguments.
#[derive(Args, Debug)]
pub struct CtlArgs {
    /// The control socket (`--control PATH` of `run` / `attach`).
    pub path: PathBuf,
    /// stats, flows, events (streams denials), publish PORT…, unpublish PORT… (PORT in the
    /// `-p` syntax: [BIND:]HOST_PORT[:GUEST_PORT][/udp]).
    pub cmd: String,
    /// The ports of publish / unpublish.
    pub args: Vec<String>,
    /// Print the server's JSON lines as they are.
    #[arg(long)]
    pub json: bool,
    /// events: exit after N events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

/// Run the client; `Err` is one line for stderr.
pub fn run(a: &CtlArgs) -> Result<ExitCode, String> {
    let mut s = UnixStream::connect(&a.path)
        .map_err(|e| format!("cannot connect to {}: {e}", a.path.display()))?;
    let req = json!({ "cmd": a.cmd, "args": a.args });
    writeln!(s, "{req}").map_err(|e| format!("sending to {}: {e}", a.path.display()))?;
    let reader = BufReader::new(s);
    let mut shown = 0u64;
    let stdout = std::io::stdout();
    for line in reader.lines() {
        let line = line.map_err(|e| format!("reading from {}: {e}", a.path.display()))?;
        let v: Value =
            serde_json::from_str(&line).map_err(|e| format!("bad answer {line:?}: {e}"))?;
        if let Some(e) = v["error"].as_str() {
            return Err(e.to_string());
        }
        let text = if a.json {
            line
        } else {
            match a.cmd.as_str() {
                "stats" => stats_table(&v),
                "flows" => flows_table(&v),
                "publish" | "unpublish" => {
                    let empty = Vec::new();
                    let ports = v[a.cmd.as_str()].as_array().unwrap_or(&empty);
                    let names: Vec<&str> = ports.iter().filter_map(|p| p.as_str()).collect();
                    format!("{}ed: {}", a.cmd, names.join(", "))
                }
                _ => event_line(&v),
            }
        };
        let mut out = stdout.lock();
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            return Ok(ExitCode::SUCCESS); // stdout closed (a pipe to head)
        }
        if a.cmd != "events" {
            return Ok(ExitCode::SUCCESS);
        }
        if v.get("event").is_some() {
            shown += 1;
        }
        if a.count.is_some_and(|n| shown >= n) {
            return Ok(ExitCode::SUCCESS);
        }
    }
    if a.cmd == "events" {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(format!("{} closed without an answer", a.path.display()))
    }
}

/// `name value` rows, aligned.
fn rows(rows: &[(String, String)]) -> String {
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let lines: Vec<String> = rows.iter().map(|(k, v)| format!("{k:<w$}  {v}")).collect();
    lines.join("\n")
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn stats_table(v: &Value) -> String {
    let mut r: Vec<(String, String)> = vec![
        (
            "tx (from guest)".into(),
            format!("{} bytes, {} frames", n(&v["tx_bytes"]), n(&v["tx_frames"])),
        ),
        (
            "rx (to guest)".into(),
            format!("{} bytes, {} frames", n(&v["rx_bytes"]), n(&v["rx_frames"])),
        ),
        (
            "flows open".into(),
            format!(
                "tcp {}, udp {}",
                n(&v["flows"]["tcp"]),
                n(&v["flows"]["udp"])
            ),
        ),
        (
            "host connects".into(),
            format!(
                "{} ok, {} failed",
                n(&v["host_connects"]["ok"]),
                n(&v["host_connects"]["failed"])
            ),
        ),
        (
            "dns".into(),
            format!(
                "{} answered, {} failed",
                n(&v["dns"]["answered"]),
                n(&v["dns"]["failed"])
            ),
        ),
    ];
    for (name, key) in [("connect time", "connect"), ("dns upstream", "dns")] {
        let l = &v["latency"][key];
        let ms = |x: &Value| n(x) as f64 / 1000.0;
        r.push((
            name.into(),
            format!(
                "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} samples)",
                ms(&l["p50_us"]),
                ms(&l["p99_us"]),
                ms(&l["max_us"]),
                n(&l["count"])
            ),
        ));
    }
    if let Some(drops) = v["drops"].as_object() {
        for (k, d) in drops.iter().filter(|(_, d)| n(d) > 0) {
            r.push((format!("drops {k}"), n(d).to_string()));
        }
    }
    rows(&r)
}

fn flows_table(v: &Value) -> String {
    let empty = Vec::new();
    let flows = v["flows"].as_array().unwrap_or(&empty);
    let head = [
        "PROTO",
        "GUEST",
        "HOST",
        "STATE",
        "FROM_GUEST",
        "TO_GUEST",
        "AGE",
        "IDLE",
        "RULE",
    ];
    let mut table: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
    let secs = |x: &Value| format!("{:.1}s", n(x) as f64 / 1000.0);
    for f in flows {
        let s = |k: &str| f[k].as_str().unwrap_or("-").to_string();
        table.push(vec![
            s("proto"),
            s("guest"),
            s("host"),
            s("state"),
            n(&f["from_guest_bytes"]).to_string(),
            n(&f["to_guest_bytes"]).to_string(),
            secs(&f["age_ms"]),
            secs(&f["idle_ms"]),
            s("rule"),
        ]);
    }
    let widths: Vec<usize> = (0..head.len())
        .map(|i| table.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut lines: Vec<String> = table
        .iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect();
    lines.push(format!("{} flows", flows.len()));
    lines.join("\n")
}

fn event_line(v: &Value) -> String {
    if let Some(d) = v["dropped"].as_u64() {
        return format!("({d} events dropped: nobody was reading)");
    }
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    let what = match v["name"].as_str() {
        Some(name) if v["dst"].is_null() => format!("name {name}"),
        Some(name) => format!("{} -> {} (server name {name})", s("guest"), s("dst")),
        None => format!("{} -> {}", s("guest"), s("dst")),
    };
    format!(
        "{} denied {} {what}: {} by {}",
        n(&v["at_ms"]),
        s("proto"),
        s("reason"),
        s("rule")
    )
}
