//! The termination hook: an embedder's callback that ends the sandbox, called exactly once
//! when a configured event happens; the network stops with it.
//!
//! # Theory of operation
//!
//! `State` lives in the link: the set of terminating events (a bit mask), the hook, and
//! which event fired (0 = none yet). `State::fire` is a compare-and-swap from 0, so
//! whatever thread and however many events race, exactly one caller wins. The winner sets
//! the network's stop flag and wakes the poll thread (which then tears down and exits its
//! loop cleanly), then runs the hook on a new thread inside `catch_unwind`: the hook may
//! block (killing a VM takes time) or panic without harming the poll thread. If no thread
//! can be spawned, the hook runs inline, still inside `catch_unwind`. With the sandbox on
//! ([`crate::sandbox`]) the thread is started before the poll thread, unfiltered, and
//! waits for the hook's call on a channel ([`start_runner`]). A hook set after the
//! event fired is never called.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::link::Link;

/// The embedder's callback.
pub type Hook = Arc<dyn Fn() + Send + Sync>;

/// An event that may end the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TermEvent {
    /// The policy denied a flow, a datagram, a DNS name or a TLS server name.
    PolicyDenial,
    /// The guest's port went away (a deleted TAP, a VMM that hung up).
    GuestGone,
    /// A secret was seen leaving (raised by the secrets filter).
    Secret,
}

impl TermEvent {
    pub const ALL: [TermEvent; 3] = [
        TermEvent::PolicyDenial,
        TermEvent::GuestGone,
        TermEvent::Secret,
    ];

    fn bit(self) -> u8 {
        match self {
            TermEvent::PolicyDenial => 1,
            TermEvent::GuestGone => 2,
            TermEvent::Secret => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TermEvent::PolicyDenial => "policy_denial",
            TermEvent::GuestGone => "guest_gone",
            TermEvent::Secret => "secret",
        }
    }
}

impl std::fmt::Display for TermEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Termination state of one link.
#[derive(Default)]
pub(crate) struct State {
    /// Bit set of the configured events.
    mask: AtomicU8,
    /// The bit of the event that fired, 0 while none has.
    fired: AtomicU8,
    hook: Mutex<Option<Hook>>,
    /// The hook's thread, started before the poll thread when the sandbox is on
    /// ([`start_runner`]).
    runner: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
}

/// The hook's call, as handed to the runner thread.
type Job = Box<dyn FnOnce() + Send>;

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("mask", &self.mask)
            .field("fired", &self.fired)
            .finish_non_exhaustive()
    }
}

impl State {
    pub(crate) fn set_events(&self, events: &[TermEvent]) {
        let mask = events.iter().fold(0, |m, e| m | e.bit());
        self.mask.store(mask, Ordering::Release);
    }

    /// Is `event` one that terminates? (A relaxed load: the poll thread asks on denials.)
    pub(crate) fn wants(&self, event: TermEvent) -> bool {
        self.mask.load(Ordering::Relaxed) & event.bit() != 0
    }

    fn fired(&self) -> Option<TermEvent> {
        let bit = self.fired.load(Ordering::Acquire);
        TermEvent::ALL.into_iter().find(|e| e.bit() == bit)
    }
}

/// Fire `event` on `link` if it is configured and nothing fired before: stop the network,
/// then call the hook once. True when this call fired.
pub(crate) fn fire(link: &Link, event: TermEvent) -> bool {
    link.observe.term.wants(event) && fire_now(link, event)
}

/// Fire `event` whether or not it is among the configured events (a secret whose
/// `on_violation` is `block-and-terminate` asks for it itself), if nothing fired before.
pub(crate) fn fire_now(link: &Link, event: TermEvent) -> bool {
    let st = &link.observe.term;
    if st
        .fired
        .compare_exchange(0, event.bit(), Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return false;
    }
    tracing::warn!("terminating: {event}");
    link.stop.store(true, Ordering::Release);
    link.stop_fd.notify();
    let hook = st.hook.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(hook) = hook {
        let run = move || {
            if catch_unwind(AssertUnwindSafe(|| hook())).is_err() {
                tracing::warn!("the termination hook panicked");
            }
        };
        let runner = st.runner.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let run: Job = Box::new(run);
        // The runner refuses only when its thread is gone (then spawn, as without it).
        let run = match runner {
            Some(r) => match r.send(run) {
                Ok(()) => return true,
                Err(std::sync::mpsc::SendError(run)) => run,
            },
            None => run,
        };
        let run = Arc::new(Mutex::new(Some(run)));
        let spawned = {
            let run = run.clone();
            std::thread::Builder::new()
                .name("ringnet-terminate".into())
                .spawn(move || take_and_run(&run))
        };
        if spawned.is_err() {
            take_and_run(&run);
        }
    }
    true
}

/// Start the thread that will run the hook: with the sandbox on, the threads that fire
/// (the poll thread, TLS workers) are filtered, and a thread they spawned would inherit
/// their filter and capabilities, so the hook runs on this one, started unfiltered
/// before them. It waits on a channel and ends when the link is dropped.
pub(crate) fn start_runner(link: &Link) -> std::io::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("ringnet-terminate".into())
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                job();
            }
        })?;
    *link
        .observe
        .term
        .runner
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(tx);
    Ok(())
}

/// Run the closure in `slot` once (whichever of the spawned thread or the fallback gets it).
fn take_and_run<F: FnOnce()>(slot: &Mutex<Option<F>>) {
    let f = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(f) = f {
        f();
    }
}

/// A cloneable handle on the network's termination: the hook and the events that call it.
/// Obtainable right after [`crate::Network::new`], before `start`.
#[derive(Clone)]
pub struct Termination {
    link: Arc<Link>,
}

impl std::fmt::Debug for Termination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Termination")
            .field("events", &self.events())
            .field("fired", &self.fired())
            .finish()
    }
}

impl Termination {
    pub(crate) fn new(link: Arc<Link>) -> Termination {
        Termination { link }
    }

    /// Set (or replace) the hook. It is called at most once, on a thread of ringnet's, after
    /// the network's stop was requested; a panic in it is caught and logged.
    pub fn set_hook(&self, hook: Hook) {
        *self
            .link
            .observe
            .term
            .hook
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    /// Replace the set of events that terminate (the configuration's
    /// `[observe] terminate_on`).
    pub fn terminate_on(&self, events: &[TermEvent]) {
        self.link.observe.term.set_events(events);
    }

    /// The events that terminate.
    pub fn events(&self) -> Vec<TermEvent> {
        let st = &self.link.observe.term;
        TermEvent::ALL
            .into_iter()
            .filter(|e| st.wants(*e))
            .collect()
    }

    /// Raise `event`: when it is one that terminates and nothing fired before, stop the
    /// network and call the hook. True when this call did.
    pub fn trigger(&self, event: TermEvent) -> bool {
        fire(&self.link, event)
    }

    /// The event that ended the network, if one did.
    pub fn fired(&self) -> Option<TermEvent> {
        self.link.observe.term.fired()
    }
}
