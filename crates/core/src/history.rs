//! The connection history that STATUS reports (PROTOCOL.md § 7.6): a bounded ring of the last N
//! connections, whose byte counts the engines update as they go.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use ferry_proto::ConnRecord;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One connection's live figures.
#[derive(Debug)]
pub struct ConnStats {
    pub id: u64,
    pub peer: String,
    pub connected_ms: i64,
    /// `i64::MIN` while open.
    disconnected_ms: AtomicI64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl ConnStats {
    pub fn add_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }

    /// Marks the connection closed, now.
    pub fn close(&self) {
        self.disconnected_ms.store(now_ms(), Ordering::Relaxed);
    }

    fn record(&self) -> ConnRecord {
        let d = self.disconnected_ms.load(Ordering::Relaxed);
        ConnRecord {
            id: self.id,
            peer: self.peer.clone(),
            connected_ms: self.connected_ms,
            disconnected_ms: (d != i64::MIN).then_some(d),
            bytes_in: self.bytes_in(),
            bytes_out: self.bytes_out(),
        }
    }
}

/// The last `capacity` connections, oldest first.
#[derive(Debug)]
pub struct History {
    ring: Mutex<VecDeque<Arc<ConnStats>>>,
    next_id: AtomicU64,
    capacity: usize,
}

impl History {
    pub fn new(capacity: usize) -> Self {
        Self { ring: Mutex::new(VecDeque::new()), next_id: AtomicU64::new(1), capacity: capacity.max(1) }
    }

    /// Records a new connection from `peer` and returns its live figures.
    pub fn open(&self, peer: &str) -> Arc<ConnStats> {
        // The id is taken under the ring's lock: taken before it, two connections opening at
        // once on two threads could be recorded out of id order (`[STATUS-1]`).
        let mut ring = self.ring.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let stats = Arc::new(ConnStats {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            peer: peer.to_owned(),
            connected_ms: now_ms(),
            disconnected_ms: AtomicI64::new(i64::MIN),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        });
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(stats.clone());
        stats
    }

    /// The records, oldest first (`[STATUS-1]`).
    pub fn snapshot(&self) -> Vec<ConnRecord> {
        self.ring.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().map(|s| s.record()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_n_in_order() {
        let h = History::new(2);
        let a = h.open("1.1.1.1:1");
        h.open("2.2.2.2:2");
        h.open("3.3.3.3:3");
        a.add_in(5);
        let s = h.snapshot();
        assert_eq!(s.iter().map(|r| r.id).collect::<Vec<_>>(), [2, 3]);
        assert!(s.iter().all(|r| r.disconnected_ms.is_none()));
    }

    /// `[STATUS-1]`: connections opened at once on many threads are still recorded in the order
    /// of their ids.
    #[test]
    fn concurrent_opens_stay_in_id_order() {
        let h = Arc::new(History::new(100_000));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        h.open("127.0.0.1:1");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let ids: Vec<u64> = h.snapshot().iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), 80_000);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "records out of id order");
    }
}
