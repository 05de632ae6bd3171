//! Packet capture at the guest boundary: every frame crossing either ring, written to a
//! pcap file (tcpdump's classic format) by a thread of its own.
//!
//! # Theory of operation
//!
//! This module does I/O (it writes a file) and runs a writer thread; the data path only
//! copies. A [`Capture`] is attached to both rings of a link ([`crate::ring::Ring::tap`]).
//! With none attached, a ring push costs one extra branch. With one attached, every frame
//! pushed successfully onto a ring (so: every frame that crossed the boundary, either
//! direction, whichever thread pushed it) is copied, with a wall-clock timestamp, into a
//! bounded lock-free queue ([`QUEUE_FRAMES`] records and [`QUEUE_BYTES`] bytes at most).
//! When the queue is full — the writer fell behind — the frame is left out of the capture
//! and counted ([`Capture::dropped`]); the data path never waits for the disk.
//!
//! The writer thread ([`Writer`]) pops records and writes them through a `BufWriter`:
//! the 24-byte global header (microsecond timestamps, link type Ethernet, snap length
//! [`SNAPLEN`]) first, then a 16-byte record header and the frame for each. Frames are
//! the bytes the guest sends or receives, without the virtio-net header: with offloads,
//! TCP frames may be up to 64 KiB "super-frames" with partial checksums, as a capture on a
//! TAP shows them. When the next record would take the file past its size cap, capture
//! stops for good with one log line. When the queue is empty the writer flushes and sleeps
//! [`IDLE`]; [`Writer::finish`] writes what is queued, flushes and joins.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_queue::ArrayQueue;

/// Records queued for the writer, at most.
pub const QUEUE_FRAMES: usize = 8192;
/// Bytes queued for the writer, at most.
pub const QUEUE_BYTES: usize = 64 << 20;
/// Snap length in the file header (frames are never longer).
pub const SNAPLEN: u32 = 262_144;
/// How long the writer sleeps when there is nothing to write.
pub const IDLE: Duration = Duration::from_millis(5);
/// Bytes of the global header and of each record header.
pub const GLOBAL_HEADER: usize = 24;
pub const RECORD_HEADER: usize = 16;

/// Errors starting a capture.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spawning the capture writer failed: {0}")]
    Spawn(std::io::Error),
    #[error("a capture is already attached to this network")]
    AlreadyCapturing,
}

struct Record {
    at: SystemTime,
    data: Box<[u8]>,
}

/// The tap's side of a capture: what the rings copy frames into.
pub struct Capture {
    queue: ArrayQueue<Record>,
    queued_bytes: AtomicUsize,
    on: AtomicBool,
    dropped: AtomicU64,
    written: AtomicU64,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("on", &self.on.load(Ordering::Relaxed))
            .field("written", &self.written())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Capture {
    fn new() -> Capture {
        Capture {
            queue: ArrayQueue::new(QUEUE_FRAMES),
            queued_bytes: AtomicUsize::new(0),
            on: AtomicBool::new(true),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
        }
    }

    /// Copy `frame` into the queue (the ring pushed it successfully); a full queue drops
    /// it from the capture and counts it.
    pub fn offer(&self, frame: &[u8]) {
        if self.is_on() {
            self.offer_owned(frame.to_vec());
        }
    }

    /// As [`Capture::offer`] with the copy made by the caller.
    pub fn offer_owned(&self, frame: Vec<u8>) {
        if !self.is_on() {
            return;
        }
        let len = frame.len();
        if self.queued_bytes.load(Ordering::Relaxed) + len > QUEUE_BYTES {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let rec = Record {
            at: SystemTime::now(),
            data: frame.into_boxed_slice(),
        };
        self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if self.queue.push(rec).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Frames left out because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Frames written to the file.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// False once the size cap was reached (or the file could not be written).
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    fn pop(&self) -> Option<Record> {
        let r = self.queue.pop()?;
        self.queued_bytes.fetch_sub(r.data.len(), Ordering::Relaxed);
        Some(r)
    }
}

/// The pcap global header: magic, version 2.4, UTC, snap length, link type 1 (Ethernet).
pub fn global_header() -> [u8; GLOBAL_HEADER] {
    let mut h = [0u8; GLOBAL_HEADER];
    h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h
}

/// A record header for a frame of `len` bytes taken at `at`.
pub fn record_header(at: SystemTime, len: usize) -> [u8; RECORD_HEADER] {
    let t = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    // pcap's 32-bit seconds last until 2106; frames are at most SLOT_BYTES long.
    let secs = u32::try_from(t.as_secs()).unwrap_or(u32::MAX);
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    let mut h = [0u8; RECORD_HEADER];
    h[0..4].copy_from_slice(&secs.to_le_bytes());
    h[4..8].copy_from_slice(&t.subsec_micros().to_le_bytes());
    h[8..12].copy_from_slice(&len.to_le_bytes());
    h[12..16].copy_from_slice(&len.to_le_bytes());
    h
}

/// The writer thread of a capture.
#[derive(Debug)]
pub struct Writer {
    capture: Arc<Capture>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Create `path` (mode 0600; an existing file is truncated), write the global header and start the writer thread;
    /// the file stops growing at `max_bytes` (headers included).
    pub fn start(path: &Path, max_bytes: u64) -> Result<Writer, PcapError> {
        Writer::start_with(path, max_bytes, &crate::sandbox::SandboxConfig::default())
    }

    /// As [`Writer::start`], the writer thread entering the sandbox as `sandbox` says
    /// ([`crate::sandbox::Role::Pcap`]) once the file is open.
    pub fn start_with(
        path: &Path,
        max_bytes: u64,
        sandbox: &crate::sandbox::SandboxConfig,
    ) -> Result<Writer, PcapError> {
        use std::os::unix::fs::OpenOptionsExt;
        // The capture holds the guest's traffic: readable by its owner only.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| PcapError::Create {
                path: path.into(),
                source,
            })?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&global_header())
            .map_err(|source| PcapError::Write {
                path: path.into(),
                source,
            })?;
        let capture = Arc::new(Capture::new());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s, p) = (capture.clone(), stop.clone(), path.to_path_buf());
        let thread = std::thread::Builder::new()
            .name("ringnet-pcap".into())
            .spawn({
                let sandbox = sandbox.clone();
                move || {
                    crate::sandbox::enter_or_warn(crate::sandbox::Role::Pcap, &sandbox);
                    write_loop(&c, &s, out, &p, max_bytes);
                }
            })
            .map_err(PcapError::Spawn)?;
        Ok(Writer {
            capture,
            stop,
            thread: Some(thread),
        })
    }

    /// The tap to attach to the rings.
    pub fn capture(&self) -> &Arc<Capture> {
        &self.capture
    }

    /// Write what is queued, flush, and stop the thread.
    pub fn finish(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::warn!("the pcap writer thread panicked");
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.finish();
    }
}

fn write_loop(c: &Capture, stop: &AtomicBool, mut out: BufWriter<File>, path: &Path, max: u64) {
    let mut size = GLOBAL_HEADER as u64;
    let mut failed = false;
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let Some(rec) = c.pop() else {
            if let Err(e) = out.flush() {
                fail(c, &mut failed, path, &e);
            }
            if stopping {
                return;
            }
            std::thread::sleep(IDLE);
            continue;
        };
        if failed || !c.is_on() {
            continue; // drain: capture has stopped
        }
        let len = (RECORD_HEADER + rec.data.len()) as u64;
        if size + len > max {
            c.on.store(false, Ordering::Relaxed);
            tracing::warn!(
                "pcap: {} reached its size cap of {max} bytes after {} frames; capture stopped",
                path.display(),
                c.written()
            );
            continue;
        }
        let r = out
            .write_all(&record_header(rec.at, rec.data.len()))
            .and_then(|()| out.write_all(&rec.data));
        match r {
            Ok(()) => {
                size += len;
                c.written.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => fail(c, &mut failed, path, &e),
        }
    }
}

fn fail(c: &Capture, failed: &mut bool, path: &Path, e: &std::io::Error) {
    if !*failed {
        *failed = true;
        c.on.store(false, Ordering::Relaxed);
        tracing::warn!(
            "pcap: writing {} failed: {e}; capture stopped",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_little_endian_pcap() {
        let g = global_header();
        assert_eq!(g[..4], [0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(g[4..8], [2, 0, 4, 0]);
        assert_eq!(g[20..24], [1, 0, 0, 0]);
        let at = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let r = record_header(at, 60);
        assert_eq!(
            u32::from_le_bytes(r[0..4].try_into().unwrap()),
            1_700_000_000
        );
        assert_eq!(u32::from_le_bytes(r[4..8].try_into().unwrap()), 123_456);
        assert_eq!(u32::from_le_bytes(r[8..12].try_into().unwrap()), 60);
        assert_eq!(u32::from_le_bytes(r[12..16].try_into().unwrap()), 60);
    }

    #[test]
    fn a_writer_that_falls_behind_loses_frames_counted() {
        // No writer at all: the queue fills, then every frame is left out and counted.
        let c = Capture::new();
        for _ in 0..QUEUE_FRAMES + 10 {
            c.offer(&[0; 60]);
        }
        assert_eq!(c.dropped(), 10);
        // The byte bound too: a frame that would pass QUEUE_BYTES is left out.
        let c = Capture::new();
        let big = vec![0u8; 65_000];
        let fits = QUEUE_BYTES / big.len();
        for _ in 0..fits + 3 {
            c.offer(&big);
        }
        assert_eq!(c.dropped(), 3);
        assert_eq!(c.queue.len(), fits);
    }

    #[test]
    fn writes_frames_then_stops_at_the_cap() {
        let dir = std::env::temp_dir().join(format!("ringnet-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cap.pcap");
        // Room for the header and exactly three 100-byte frames.
        let max = (GLOBAL_HEADER + 3 * (RECORD_HEADER + 100)) as u64;
        let mut w = Writer::start(&path, max).unwrap();
        for i in 0..5u8 {
            w.capture().offer(&[i; 100]);
        }
        w.finish();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, max);
        assert_eq!(w.capture().written(), 3);
        assert!(!w.capture().is_on());
        assert_eq!(w.capture().dropped(), 0);
        let third = GLOBAL_HEADER + 2 * (RECORD_HEADER + 100) + RECORD_HEADER;
        assert!(bytes[third..third + 100].iter().all(|&b| b == 2));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
