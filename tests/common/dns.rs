//! DNS for the tests: an upstream server ([`DnsServer`], dnsmasq in the foreground inside the
//! test's host namespace), ringnet's `[dns]` config ([`dns_config`]) and the guest's client
//! ([`dig`], its output parsed into a [`Dig`]).
//!
//! dnsmasq runs with nothing of the machine's: `--conf-file=/dev/null --no-resolv --no-hosts
//! --no-poll`, bound to exactly the addresses given (`--bind-interfaces --listen-address`),
//! no pid file, its records from the command line (`--host-record`, `--address`,
//! `--txt-record`, `--cname`) with the TTL [`Dnsmasq::ttl`] (`--local-ttl`), and every query
//! logged (`--log-queries --log-facility=FILE`), so a test can tell which names reached it
//! ([`DnsServer::asked`]). It forks a child per TCP connection; all of them are in the
//! server's process group, which [`Bg`] kills on drop.

use std::thread;
use std::time::{Duration, Instant};

use super::bg::Bg;
use super::ns::Netns;
use super::process::{tail, Output, TempFile};

/// TXT strings of [`Dnsmasq::big_txt`]: 8 records of 200 bytes, an answer of ~1750 bytes —
/// over the 1232-byte EDNS size dig offers and dnsmasq's own UDP limit.
pub const BIG_TXT_RECORDS: usize = 8;
const BIG_TXT_LEN: usize = 200;

/// How long a dnsmasq may take to answer its first probe.
const DNS_READY: Duration = Duration::from_secs(10);

/// What a [`DnsServer`] is started with (builder).
#[derive(Clone, Debug)]
pub struct Dnsmasq {
    listen: Vec<String>,
    port: u16,
    ttl: Option<u32>,
    records: Vec<String>,
}

impl Dnsmasq {
    /// A server on `listen` (an address of the host namespace), port 53, no records.
    pub fn new(listen: &str) -> Dnsmasq {
        Dnsmasq {
            listen: vec![listen.to_string()],
            port: 53,
            ttl: None,
            records: Vec::new(),
        }
    }

    /// Also listen on `addr`.
    pub fn listen(mut self, addr: &str) -> Dnsmasq {
        self.listen.push(addr.to_string());
        self
    }

    pub fn port(mut self, port: u16) -> Dnsmasq {
        self.port = port;
        self
    }

    /// The TTL of every answer from the records given here (`--local-ttl`; dnsmasq's
    /// default is 0).
    pub fn ttl(mut self, secs: u32) -> Dnsmasq {
        self.ttl = Some(secs);
        self
    }

    /// `--host-record=NAME,ADDR…`: A/AAAA (and PTR) records.
    pub fn host(mut self, name: &str, addrs: &[&str]) -> Dnsmasq {
        self.records
            .push(format!("--host-record={name},{}", addrs.join(",")));
        self
    }

    /// `--address=/NAME/ADDR`: NAME and every subdomain answer ADDR.
    pub fn address(mut self, name: &str, addr: &str) -> Dnsmasq {
        self.records.push(format!("--address=/{name}/{addr}"));
        self
    }

    /// `--cname=ALIAS,TARGET` (TARGET must be one of this server's own records).
    pub fn cname(mut self, alias: &str, target: &str) -> Dnsmasq {
        self.records.push(format!("--cname={alias},{target}"));
        self
    }

    /// [`BIG_TXT_RECORDS`] TXT records for `name`, each one string starting with its
    /// index: an answer larger than 1232 bytes ([`big_txt_string`]).
    pub fn big_txt(mut self, name: &str) -> Dnsmasq {
        for i in 0..BIG_TXT_RECORDS {
            self.records
                .push(format!("--txt-record={name},{}", big_txt_string(i)));
        }
        self
    }

    /// Any other dnsmasq option, as one argument.
    pub fn arg(mut self, arg: &str) -> Dnsmasq {
        self.records.push(arg.to_string());
        self
    }

    /// Start dnsmasq inside `host` and wait (at most 10 s) until it answers a probe
    /// (`dig @ADDR -p PORT probe.test` from inside `host`) on every listen address.
    pub fn start(self, host: &Netns) -> DnsServer {
        let log = TempFile::new("dnsmasq.log");
        let mut args: Vec<String> = [
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            "--user=root",
            "--group=root",
            "--pid-file=",
            "--log-queries",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("--log-facility={}", log.path_str()));
        args.push(format!("--listen-address={}", self.listen.join(",")));
        args.push(format!("--port={}", self.port));
        if let Some(ttl) = self.ttl {
            args.push(format!("--local-ttl={ttl}"));
        }
        args.extend(self.records.iter().cloned());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut server = DnsServer {
            bg: host.spawn(&argv),
            listen: self.listen,
            port: self.port,
            log,
        };
        let deadline = Instant::now() + DNS_READY;
        for addr in server.listen.clone() {
            loop {
                server.bg.assert_alive();
                let probe = dig(
                    host,
                    &addr,
                    server.port,
                    &["probe.test"],
                    Duration::from_secs(2),
                );
                if probe.answered() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "dnsmasq on {addr}#{} not answering within {DNS_READY:?}: {}\n\
                     --- dnsmasq stderr ---\n{}\n--- log ---\n{}",
                    server.port,
                    probe.out,
                    server.bg.stderr(),
                    server.log()
                );
                thread::sleep(Duration::from_millis(100));
            }
        }
        server
    }
}

/// The TXT string `i` of [`Dnsmasq::big_txt`]: `"<i>xxx…"`, 200 bytes.
pub fn big_txt_string(i: usize) -> String {
    let head = i.to_string();
    format!("{head}{}", "x".repeat(BIG_TXT_LEN - head.len()))
}

/// A running dnsmasq (its process group killed on drop).
pub struct DnsServer {
    bg: Bg,
    listen: Vec<String>,
    port: u16,
    log: TempFile,
}

impl DnsServer {
    /// `ADDR:PORT` of the first listen address (`[ADDR]:PORT` for IPv6), as ringnet's
    /// `[dns] servers` takes it.
    pub fn server(&self) -> String {
        server_addr(&self.listen[0], self.port)
    }

    pub fn addr(&self) -> &str {
        &self.listen[0]
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// dnsmasq's log so far.
    pub fn log(&self) -> String {
        self.log.read()
    }

    /// The names queried so far (`query[TYPE] NAME from ADDR` lines), lowercased, in order.
    pub fn queries(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| {
                l.split_once("query[")?
                    .1
                    .split_once("] ")?
                    .1
                    .split(' ')
                    .next()
            })
            .map(str::to_ascii_lowercase)
            .collect()
    }

    /// True when `name` (or a subdomain of it) was queried.
    pub fn asked(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let sub = format!(".{name}");
        self.queries()
            .iter()
            .any(|q| *q == name || q.ends_with(&sub))
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        // `bg` (a field) kills dnsmasq's process group after this.
        if thread::panicking() {
            eprintln!("--- dnsmasq log ---\n{}", tail(&self.log(), 4000));
        }
    }
}

/// `ADDR:PORT`, bracketed for IPv6.
pub fn server_addr(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// ringnet's config: a `[dns]` table with `servers` and the further `key = value` lines
/// in `extra` (e.g. `timeout_ms = 1000`), then `tail` (more tables, e.g. `[dns.hosts]`).
pub fn dns_config(servers: &[&str], extra: &[&str], tail: &str) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("{s:?}")).collect();
    let mut t = format!("[dns]\nservers = [{}]\n", list.join(", "));
    for e in extra {
        t.push_str(e);
        t.push('\n');
    }
    t.push_str(tail);
    t
}

// ---------------------------------------------------------------------------------------
// dig
// ---------------------------------------------------------------------------------------

/// One answer record: `NAME TTL CLASS TYPE RDATA`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rr {
    pub name: String,
    pub ttl: u32,
    pub rtype: String,
    pub data: String,
}

/// A dig run, parsed. When dig retried over TCP after a truncated UDP answer, the fields
/// describe the last (TCP) answer.
#[derive(Debug)]
pub struct Dig {
    pub out: Output,
    /// `NOERROR`, `NXDOMAIN`, `FORMERR`, … (None: no answer at all).
    pub status: Option<String>,
    /// Header flags (`qr`, `aa`, `tc`, `rd`, `ra`, …).
    pub flags: Vec<String>,
    pub answers: Vec<Rr>,
    /// `UDP` or `TCP`, from `;; SERVER: … (UDP)`.
    pub transport: Option<String>,
    /// dig printed "Truncated, retrying in TCP mode."
    pub retried_tcp: bool,
}

impl Dig {
    /// A DNS answer came back (whatever its status).
    pub fn answered(&self) -> bool {
        self.status.is_some()
    }

    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// The RDATA of every answer of type `rtype` (`A`, `AAAA`, `TXT`, `CNAME`).
    pub fn data(&self, rtype: &str) -> Vec<String> {
        self.answers
            .iter()
            .filter(|r| r.rtype == rtype)
            .map(|r| r.data.clone())
            .collect()
    }

    /// Panics unless the status is `want`.
    pub fn expect_status(&self, want: &str) -> &Dig {
        assert_eq!(self.status.as_deref(), Some(want), "status of {}", self.out);
        self
    }
}

/// `dig @SERVER -p PORT +time=T +tries=1 <args…>` inside `ns`, deadline `timeout` (dig's
/// own per-try timeout is `timeout` minus 1 s, at least 1 s).
pub fn dig(ns: &Netns, server: &str, port: u16, args: &[&str], timeout: Duration) -> Dig {
    let at = format!("@{server}");
    let p = port.to_string();
    let time = format!("+time={}", timeout.as_secs().saturating_sub(1).max(1));
    let mut full = vec!["dig", &at, "-p", &p, &time, "+tries=1"];
    full.extend_from_slice(args);
    let out = ns.exec(&full, timeout + Duration::from_secs(5));
    parse_dig(out)
}

/// Parse dig's default output.
pub fn parse_dig(out: Output) -> Dig {
    let mut d = Dig {
        status: None,
        flags: Vec::new(),
        answers: Vec::new(),
        transport: None,
        retried_tcp: out.stdout.contains("Truncated, retrying in TCP mode"),
        out,
    };
    let stdout = d.out.stdout.clone();
    let mut in_answer = false;
    for line in stdout.lines() {
        if let Some(rest) = line.split_once("status: ") {
            // A later header (after a TCP retry) replaces the earlier one.
            d.status = rest.1.split(',').next().map(|s| s.trim().to_string());
            d.answers.clear();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            let flags = rest.split(';').next().unwrap_or("");
            d.flags = flags.split_whitespace().map(str::to_string).collect();
        } else if let Some(rest) = line.strip_prefix(";; SERVER: ") {
            d.transport = rest
                .rsplit_once('(')
                .map(|(_, t)| t.trim_end_matches(')').to_string());
        } else if line.starts_with(";; ANSWER SECTION:") {
            in_answer = true;
        } else if line.trim().is_empty() || line.starts_with(';') {
            in_answer = false;
        } else if in_answer {
            let mut f = line.split_whitespace();
            let (name, ttl, _class, rtype) = (f.next(), f.next(), f.next(), f.next());
            if let (Some(name), Some(ttl), Some(rtype)) = (name, ttl, rtype) {
                d.answers.push(Rr {
                    name: name.to_string(),
                    ttl: ttl.parse().unwrap_or(0),
                    rtype: rtype.to_string(),
                    data: f.collect::<Vec<_>>().join(" "),
                });
            }
        }
    }
    d
}
