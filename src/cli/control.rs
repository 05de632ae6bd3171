//! `--control PATH`: a unix socket speaking JSON lines.
//!
//! I/O by nature: a listener thread, one thread per client, and an event pump, all off the
//! poll thread. A client writes one request per line — `{"cmd":"stats"}`, `{"cmd":"flows"}`,
//! `{"cmd":"events"}` (a bare word works too) — and reads one JSON object per line back:
//!
//! - `stats`: the metrics handle (bytes, frames, drops by reason, open flows, connects, DNS,
//!   latency summaries in µs, every counter);
//! - `flows`: `{"flows":[…]}`, a snapshot of the flow table (one object per flow);
//! - `events`: from then on, one object per denial as it happens (the queued backlog
//!   first), until the client hangs up;
//! - `publish` / `unpublish` with `"args"` in the `-p` syntax (`[BIND:]HOST_PORT[:GUEST_PORT]
//!   [/udp]`, ranges too): `{"publish":[…]}` naming each port changed, or `{"error":…}`;
//! - anything else: `{"error":…}`.
//!
//! The socket is created under a temporary name, set to mode 0600, then renamed into
//! place, so it is never reachable with looser permissions; a stale socket at PATH is
//! replaced, any other file is refused. Limits: [`MAX_CLIENTS`] clients at once; an
//! events stream queues at most [`EVENT_BACKLOG`] lines (a client that does not read
//! loses the newest, counted in a `{"dropped":N}` line); a request line is at most 64 KiB
//! and must arrive within [`REQUEST_DEADLINE`]. The pump drains the denial queue only
//! while a client streams events; otherwise the library's queue keeps the newest 1,024.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

use ringnet::observe::{Denial, FlowInfo, LatencySummary, Observer, FLOWS_TIMEOUT};

use super::{unix_ms, CliError, TICK};

/// Clients connected at once, at most.
pub const MAX_CLIENTS: usize = 16;
/// Event lines queued for one streaming client, at most.
pub const EVENT_BACKLOG: usize = 1024;
/// How long a client may take to send a request line.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// How long a port change may take on the poll thread.
const PORT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request line.
const MAX_LINE: u64 = 64 * 1024;

/// Streaming clients: where the pump sends each event line, and whether the client is
/// still there (cleared when its stream ends, so the pump never drains the library's
/// queue into a client that is gone).
#[derive(Default)]
struct Hub {
    subs: Mutex<Vec<Sub>>,
}

/// A streaming client: alive flag and where its lines go.
type Sub = (Arc<AtomicBool>, SyncSender<Arc<str>>);

/// Clears a subscriber's flag when its stream ends, however it ends.
struct Alive(Arc<AtomicBool>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Bind PATH and start the listener and the event pump.
pub fn spawn(
    path: &Path,
    obs: Observer,
    stop: Arc<AtomicBool>,
    sandbox: &ringnet::sandbox::SandboxConfig,
) -> Result<Vec<JoinHandle<()>>, CliError> {
    let io = |source| CliError::Control {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(io)?,
        Ok(_) => return Err(CliError::NotASocket(path.to_path_buf())),
        Err(_) => {}
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(io)?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| listener.set_nonblocking(true));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    tracing::info!("control socket: {}", path.display());
    let hub = Arc::new(Hub::default());
    let pump = {
        let (hub, obs, stop) = (hub.clone(), obs.clone(), stop.clone());
        std::thread::Builder::new()
            .name("ringnet-events".into())
            .spawn({
                let sandbox = sandbox.clone();
                move || {
                    ringnet::sandbox::enter_or_warn(ringnet::sandbox::Role::Service, &sandbox);
                    pump(&hub, &obs, &stop);
                }
            })
            .map_err(CliError::Spawn)?
    };
    let accept = std::thread::Builder::new()
        .name("ringnet-control".into())
        .spawn({
            let sandbox = sandbox.clone();
            move || {
                // Its client threads inherit the filter.
                ringnet::sandbox::enter_or_warn(ringnet::sandbox::Role::Service, &sandbox);
                accept_loop(&listener, &obs, &hub, &stop);
            }
        })
        .map_err(CliError::Spawn)?;
    Ok(vec![pump, accept])
}

fn accept_loop(listener: &UnixListener, obs: &Observer, hub: &Arc<Hub>, stop: &Arc<AtomicBool>) {
    let clients = Arc::new(AtomicUsize::new(0));
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Acquire) {
        threads.retain(|t| !t.is_finished());
        let mut s = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(TICK);
                continue;
            }
            Err(e) => {
                tracing::debug!("control accept: {e}");
                std::thread::sleep(TICK);
                continue;
            }
        };
        if clients.load(Ordering::Acquire) >= MAX_CLIENTS {
            let _ = writeln!(s, "{}", json!({"error": "too many control clients"}));
            continue;
        }
        clients.fetch_add(1, Ordering::AcqRel);
        let (obs, hub, stop, clients) = (obs.clone(), hub.clone(), stop.clone(), clients.clone());
        let spawned = std::thread::Builder::new()
            .name("ringnet-ctl-client".into())
            .spawn(move || {
                if let Err(e) = client(s, &obs, &hub, &stop) {
                    tracing::debug!("control client: {e}");
                }
                clients.fetch_sub(1, Ordering::AcqRel);
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => tracing::warn!("control client thread: {e}"),
        }
    }
    for t in threads {
        let _ = t.join();
    }
}

/// One client: requests in, answers out, until it hangs up (or ringnet stops).
fn client(s: UnixStream, obs: &Observer, hub: &Hub, stop: &AtomicBool) -> std::io::Result<()> {
    s.set_read_timeout(Some(REQUEST_DEADLINE))?;
    let mut out = s.try_clone()?;
    let mut reader = BufReader::new(s.try_clone()?);
    loop {
        let mut line = String::new();
        if std::io::Read::take(&mut reader, MAX_LINE).read_line(&mut line)? == 0 {
            return Ok(());
        }
        let req = line.trim();
        if req.is_empty() {
            continue;
        }
        let cmd = match serde_json::from_str::<Value>(req) {
            Ok(v) => v["cmd"].as_str().unwrap_or("").to_string(),
            Err(_) => req.to_string(),
        };
        let answer = match cmd.as_str() {
            "stats" => stats(obs),
            "flows" => match obs.flows(FLOWS_TIMEOUT) {
                Ok(f) => json!({ "flows": f.iter().map(flow).collect::<Vec<_>>() }),
                Err(e) => json!({ "error": e.to_string() }),
            },
            "events" => return stream_events(&s, &mut out, hub, stop),
            "publish" | "unpublish" => {
                let args: Vec<String> = match serde_json::from_str::<Value>(req) {
                    Ok(v) => v["args"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default(),
                    Err(_) => Vec::new(),
                };
                change_ports(obs, cmd == "publish", &args)
            }
            other => {
                json!({ "error": format!(
                    "unknown command {other:?} (stats, flows, events, publish, unpublish)"
                ) })
            }
        };
        writeln!(out, "{answer}")?;
    }
}

/// Stream denial events to the client until it hangs up or ringnet stops.
fn stream_events(
    s: &UnixStream,
    out: &mut UnixStream,
    hub: &Hub,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let (tx, rx): (SyncSender<Arc<str>>, Receiver<Arc<str>>) = mpsc::sync_channel(EVENT_BACKLOG);
    let alive = Alive(Arc::new(AtomicBool::new(true)));
    let sub = (alive.0.clone(), tx);
    hub.subs.lock().unwrap_or_else(|e| e.into_inner()).push(sub);
    s.set_nonblocking(true)?;
    let mut probe = [0u8; 64];
    while !stop.load(Ordering::Acquire) {
        match rx.recv_timeout(TICK) {
            Ok(line) => {
                out.set_nonblocking(false)?;
                out.write_all(line.as_bytes())?;
                out.write_all(b"\n")?;
                out.set_nonblocking(true)?;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        }
        // A hang-up reads as end of file (anything else the client sends is ignored).
        match std::io::Read::read(&mut &*s, &mut probe) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Move denial events from the library's queue to every streaming client.
fn pump(hub: &Hub, obs: &Observer, stop: &AtomicBool) {
    let denials = obs.denials();
    let mut dropped_seen = denials.dropped();
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(TICK / 2);
        let mut subs = hub.subs.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|(alive, _)| alive.load(Ordering::Acquire));
        if subs.is_empty() {
            continue;
        }
        let dropped = denials.dropped();
        let mut lines: Vec<Arc<str>> = Vec::new();
        if dropped > dropped_seen {
            lines.push(
                json!({ "dropped": dropped - dropped_seen })
                    .to_string()
                    .into(),
            );
            dropped_seen = dropped;
        }
        lines.extend(denials.drain().iter().map(|d| event(d).to_string().into()));
        for line in lines {
            subs.retain(|(_, tx)| {
                !matches!(
                    tx.try_send(line.clone()),
                    Err(TrySendError::Disconnected(_))
                )
            });
        }
    }
}

/// Publish or unpublish every port the `-p` syntax `args` name, in order; stops at the
/// first failure (the ports before it stay changed, and the answer says which).
fn change_ports(obs: &Observer, publish: bool, args: &[String]) -> Value {
    let verb = if publish { "publish" } else { "unpublish" };
    if args.is_empty() {
        return json!({ "error": format!("{verb}: name a port ([BIND:]HOST_PORT[:GUEST_PORT][/udp])") });
    }
    let mut done = Vec::new();
    for arg in args {
        let specs = match ringnet::config::PortSpec::parse_list(arg) {
            Ok(s) => s,
            Err(e) => return json!({ "error": format!("{verb} {arg}: {e}"), "done": done }),
        };
        for spec in specs {
            let name = spec.to_string();
            if let Err(e) = obs.change_port(publish, spec, PORT_TIMEOUT) {
                return json!({ "error": format!("{verb} {name}: {e}"), "done": done });
            }
            done.push(name);
        }
    }
    json!({ verb: done })
}

/// A denial as JSON.
pub fn event(d: &Denial) -> Value {
    json!({
        "event": "denial",
        "at_ms": unix_ms(d.at),
        "proto": d.proto.name(),
        "guest": d.guest.map(|g| g.to_string()),
        "dst": d.dst.map(|a| a.to_string()),
        "name": d.name.as_deref(),
        "reason": d.reason.name(),
        "rule": &*d.rule,
    })
}

/// A flow as JSON.
pub fn flow(f: &FlowInfo) -> Value {
    json!({
        "proto": f.proto.name(),
        "guest": f.guest.to_string(),
        "host": f.host.to_string(),
        "state": f.state,
        "from_guest_bytes": f.from_guest_bytes,
        "to_guest_bytes": f.to_guest_bytes,
        "age_ms": u64::try_from(f.age.as_millis()).unwrap_or(u64::MAX),
        "idle_ms": u64::try_from(f.idle.as_millis()).unwrap_or(u64::MAX),
        "rule": f.rule.as_deref(),
    })
}

fn latency(l: LatencySummary) -> Value {
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    json!({ "count": l.count, "p50_us": us(l.p50), "p99_us": us(l.p99), "max_us": us(l.max) })
}

/// The metrics handle as JSON.
pub fn stats(obs: &Observer) -> Value {
    let m = obs.metrics();
    let counters: serde_json::Map<String, Value> = m
        .stats()
        .snapshot()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into()))
        .collect();
    json!({
        "tx_bytes": m.tx_bytes(),
        "rx_bytes": m.rx_bytes(),
        "tx_frames": m.tx_frames(),
        "rx_frames": m.rx_frames(),
        "drops": m.drops(),
        "flows": m.open_flows(),
        "host_connects": { "ok": m.host_connects_ok(), "failed": m.host_connects_failed() },
        "dns": { "answered": m.dns_answered(), "failed": m.dns_failed() },
        "latency": { "connect": latency(m.connect_latency()), "dns": latency(m.dns_latency()) },
        "snapshot_max_us": m.snapshot_max_us(),
        "counters": counters,
    })
}
