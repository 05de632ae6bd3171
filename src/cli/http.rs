//! `--metrics-addr ADDR:PORT`: the metrics handle as Prometheus text on a plain HTTP
//! endpoint (`GET /metrics`; `GET /` answers the same).
//!
//! I/O by nature: a TCP listener on a thread of its own, one request per connection
//! (`Connection: close`), served one at a time with a 2 s deadline to read the request
//! head (at most 8 KiB): a slow or silent client delays the next scrape by at most that,
//! and never the data path. A bare `PORT` binds 127.0.0.1; any other address is bound as
//! asked, with a warning when it is not a loopback address (the counters name the
//! guest's activity).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ringnet::observe::{prometheus, Observer};

use super::{CliError, TICK};

/// The request head, at most.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
const READ_DEADLINE: Duration = Duration::from_secs(2);

/// `PORT` (loopback) or `ADDR:PORT`.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    s.parse::<SocketAddr>()
        .map_err(|_| "expected PORT, IPv4:PORT or [IPv6]:PORT".to_string())
}

/// Bind and start serving.
pub fn spawn(
    addr: &str,
    obs: Observer,
    slot: u32,
    stop: Arc<AtomicBool>,
    sandbox: &ringnet::sandbox::SandboxConfig,
) -> Result<JoinHandle<()>, CliError> {
    let err = |why: String| CliError::MetricsAddr {
        addr: addr.to_string(),
        why,
    };
    let sa = parse_addr(addr).map_err(err)?;
    let listener = TcpListener::bind(sa).map_err(|e| err(e.to_string()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| err(e.to_string()))?;
    let bound = listener.local_addr().map_err(|e| err(e.to_string()))?;
    if !sa.ip().is_loopback() {
        tracing::warn!(
            "metrics endpoint on {bound}, not a loopback address: whoever reaches it reads \
             the guest's counters"
        );
    }
    tracing::info!("metrics: http://{bound}/metrics");
    std::thread::Builder::new()
        .name("ringnet-metrics".into())
        .spawn({
            let sandbox = sandbox.clone();
            move || {
                ringnet::sandbox::enter_or_warn(ringnet::sandbox::Role::Service, &sandbox);
                serve(&listener, &obs, slot, &stop);
            }
        })
        .map_err(CliError::Spawn)
}

fn serve(listener: &TcpListener, obs: &Observer, slot: u32, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((s, _)) => {
                if let Err(e) = answer(s, obs, slot) {
                    tracing::debug!("metrics request: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(TICK),
            Err(e) => {
                tracing::debug!("metrics accept: {e}");
                std::thread::sleep(TICK);
            }
        }
    }
}

fn answer(mut s: TcpStream, obs: &Observer, slot: u32) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(READ_DEADLINE))?;
    s.set_write_timeout(Some(READ_DEADLINE))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next(), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        (Some("GET"), "/metrics" | "/") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            prometheus::render(&obs.metrics(), slot),
        ),
        (Some("GET"), _) => ("404 Not Found", "text/plain", "not found\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    s.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("9187").unwrap().to_string(), "127.0.0.1:9187");
        assert_eq!(parse_addr("0.0.0.0:80").unwrap().to_string(), "0.0.0.0:80");
        assert_eq!(parse_addr("[::1]:80").unwrap().to_string(), "[::1]:80");
        assert!(parse_addr("localhost:80").is_err());
        assert!(parse_addr("1.2.3.4").is_err());
    }
}
