//! Who may connect: the connection cap and the per-address cap (`[CAP-1]`), and the registry of
//! live connections the drain waits on and, after the grace period, closes.

use std::collections::HashMap;
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use ferry_core::Settings;

#[derive(Debug, Default)]
struct State {
    per_ip: HashMap<IpAddr, u32>,
    /// Each live connection's socket (shared, not duplicated: one descriptor per client), to
    /// close it when the grace period ends.
    live: HashMap<u64, Arc<TcpStream>>,
    next: u64,
    /// The drain has begun: nobody more is admitted, so the live set only shrinks.
    closed: bool,
}

/// The answer to a connection at the door.
#[derive(Debug)]
pub(crate) enum Admitted {
    Yes(Ticket),
    /// Over a cap: refuse it with `BUSY`.
    Busy,
    /// The server is draining: close it unanswered.
    Closed,
}

/// The admission registry.
#[derive(Debug)]
pub(crate) struct Admission {
    max_clients: u32,
    max_per_ip: u32,
    state: Mutex<State>,
    changed: Condvar,
}

/// A connection's place; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
    key: u64,
}

impl Admission {
    pub(crate) fn new(settings: &Settings) -> Self {
        Self {
            max_clients: settings.max_clients.max(1),
            max_per_ip: settings.max_per_ip.max(1),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place for a connection from `ip`, if the caps allow and the drain has not begun.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr, stream: &Arc<TcpStream>) -> Admitted {
        let ip = ferry_core::peer::group(ip);
        let mut s = self.lock();
        if s.closed {
            return Admitted::Closed;
        }
        if s.live.len() as u32 >= self.max_clients || s.per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip {
            return Admitted::Busy;
        }
        let handle = stream.clone();
        *s.per_ip.entry(ip).or_default() += 1;
        let key = s.next;
        s.next += 1;
        s.live.insert(key, handle);
        Admitted::Yes(Ticket { admission: self.clone(), ip, key })
    }

    /// Admits nobody from now on: once this returns, [`Self::wait_empty`] sees every connection
    /// that will ever be served.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.lock().live.len()
    }

    /// Waits until no connection is open, or `deadline`; returns whether none is.
    pub(crate) fn wait_empty(&self, deadline: Instant) -> bool {
        let mut s = self.lock();
        while !s.live.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = self.changed.wait_timeout(s, deadline - now).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
        true
    }

    /// Closes every open connection's socket: their threads see errors and end, discarding
    /// uploads in progress.
    pub(crate) fn close_all(&self) {
        for stream in self.lock().live.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = self.admission.lock();
        s.live.remove(&self.key);
        if let Some(n) = s.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                s.per_ip.remove(&self.ip);
            }
        }
        drop(s);
        self.admission.changed.notify_all();
    }
}
