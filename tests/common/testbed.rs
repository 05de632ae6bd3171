//! [`Testbed`]: a host namespace, a guest namespace and `ringnet attach` serving it, started
//! with [`Opts`] and torn down in the right order.

use super::attach::{Ringnet, Slot};
use super::ns::{HostNs, Netns};
use super::process::TempFile;

/// How to start ringnet for a test.
#[derive(Clone, Debug)]
pub struct Opts {
    pub mtu: u32,
    /// `--egress` value; None leaves the default.
    pub egress: Option<&'static str>,
    /// TOML written to a temp file and passed as `--config`.
    pub config: Option<String>,
    pub extra: Vec<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            mtu: 1500,
            egress: None,
            config: None,
            extra: Vec::new(),
        }
    }
}

impl Opts {
    pub fn mtu(mtu: u32) -> Opts {
        Opts {
            mtu,
            ..Opts::default()
        }
    }

    pub fn egress(mut self, driver: &'static str) -> Opts {
        self.egress = Some(driver);
        self
    }

    pub fn config(mut self, toml: &str) -> Opts {
        self.config = Some(toml.to_string());
        self
    }
}

/// Fields drop in declaration order: ringnet stops before the namespaces go.
pub struct Testbed {
    pub ringnet: Ringnet,
    pub guest: Netns,
    pub host: HostNs,
    pub opts: Opts,
    _config: Option<TempFile>,
}

impl Testbed {
    pub fn start(opts: Opts) -> Testbed {
        let host = HostNs::new();
        let guest = Netns::new("guest");
        let config = opts
            .config
            .as_deref()
            .map(|t| TempFile::with_contents("config.toml", t));
        let mtu = opts.mtu.to_string();
        let mut args: Vec<&str> = vec!["--mtu", &mtu];
        if let Some(e) = opts.egress {
            args.extend(["--egress", e]);
        }
        if let Some(c) = &config {
            args.extend(["--config", c.path_str()]);
        }
        args.extend(opts.extra.iter().map(String::as_str));
        let ringnet = Ringnet::attach(&host, &guest, &args);
        Testbed {
            ringnet,
            guest,
            host,
            opts,
            _config: config,
        }
    }

    pub fn slot(&self) -> Slot {
        self.ringnet.slot
    }
}
