//! Hashes under way, by file version: whoever needs the digest of a version that is being hashed
//! waits for that hash instead of reading the file a second time.
//!
//! A waiter is woken through an [`event_listener::Event`], which a thread can block on and a
//! task can await: the blocking engine's connection threads wait, the async engine's tasks
//! await on the reactor, so no pool thread is ever parked on a lock or a condition variable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use event_listener::{Event, Listener};
use ferry_proto::Digest;

use super::FileKey;

/// The hashes under way.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<FileKey, Arc<Flight>>>,
}

/// One hash under way.
#[derive(Debug, Default)]
pub(crate) struct Flight {
    /// `None` while it runs; then the digest, or `None` inside if the hash failed or was stopped
    /// (a waiter then hashes the file itself).
    outcome: Mutex<Option<Option<Digest>>>,
    done: Event,
}

/// The right, and the duty, to hash one version: dropped without [`Lease::complete`], it
/// reports a failure, so that nobody waits for a hash that will not come.
#[derive(Debug)]
pub(crate) struct Lease {
    flights: Arc<Flights>,
    key: FileKey,
    flight: Arc<Flight>,
    completed: bool,
}

/// Whether a version was free to hash.
#[derive(Debug)]
pub(crate) enum Claim {
    Lead(Lease),
    Follow(Arc<Flight>),
}

impl Flights {
    /// Claims the hash of `key`: the caller hashes it, or someone already is.
    pub(crate) fn claim(self: &Arc<Self>, key: FileKey) -> Claim {
        let mut map = self.lock();
        if let Some(flight) = map.get(&key) {
            return Claim::Follow(flight.clone());
        }
        let flight = Arc::new(Flight::default());
        map.insert(key, flight.clone());
        Claim::Lead(Lease { flights: self.clone(), key, flight, completed: false })
    }

    /// How many hashes are under way.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<FileKey, Arc<Flight>>> {
        // Single inserts and removals: a panic cannot leave the map inconsistent.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Lease {
    /// Reports the outcome to every waiter and ends the flight. The digest must already be
    /// where a new claimant looks first (the cache): one that comes after the flight is gone
    /// finds it there.
    pub(crate) fn complete(mut self, digest: Option<Digest>) {
        self.finish(digest);
    }

    fn finish(&mut self, digest: Option<Digest>) {
        if std::mem::replace(&mut self.completed, true) {
            return;
        }
        *self.flight.outcome.lock().unwrap_or_else(PoisonError::into_inner) = Some(digest);
        self.flights.lock().remove(&self.key);
        self.flight.done.notify(usize::MAX);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.finish(None);
    }
}

impl Flight {
    fn outcome(&self) -> Option<Option<Digest>> {
        *self.outcome.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Blocks the calling thread until the hash ends; its digest, or `None` if it failed.
    pub(crate) fn wait(&self) -> Option<Digest> {
        loop {
            if let Some(outcome) = self.outcome() {
                return outcome;
            }
            let listener = self.done.listen();
            // The outcome may have been set between the check and the listen.
            if let Some(outcome) = self.outcome() {
                return outcome;
            }
            listener.wait();
        }
    }

    /// Waits, without blocking a thread, until the hash ends.
    pub(crate) async fn done(&self) -> Option<Digest> {
        loop {
            if let Some(outcome) = self.outcome() {
                return outcome;
            }
            let listener = self.done.listen();
            if let Some(outcome) = self.outcome() {
                return outcome;
            }
            listener.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ino: u64) -> FileKey {
        FileKey { dev: 1, ino, size: 10, mtime_ns: 0, ctime_ns: 0 }
    }

    #[test]
    fn one_leads_the_others_follow_and_all_learn_the_outcome() {
        let flights = Arc::new(Flights::default());
        let Claim::Lead(lease) = flights.claim(key(1)) else { panic!("the first claim leads") };
        let Claim::Follow(flight) = flights.claim(key(1)) else { panic!("the second follows") };
        assert!(matches!(flights.claim(key(2)), Claim::Lead(_)), "another version is free");
        let waiter = std::thread::spawn(move || flight.wait());
        lease.complete(Some(Digest::of(b"x")));
        assert_eq!(waiter.join().unwrap(), Some(Digest::of(b"x")));
        assert_eq!(flights.len(), 0, "the flight ended");
        assert!(matches!(flights.claim(key(1)), Claim::Lead(_)), "a new claim after the end leads");
    }

    #[test]
    fn a_lease_dropped_without_an_outcome_reports_a_failure() {
        let flights = Arc::new(Flights::default());
        let Claim::Lead(lease) = flights.claim(key(1)) else { panic!() };
        let Claim::Follow(flight) = flights.claim(key(1)) else { panic!() };
        drop(lease);
        assert_eq!(flight.wait(), None);
        assert_eq!(flights.len(), 0);
    }

    /// The async engine's wait: a task awaiting the flight is woken by the outcome, whether the
    /// hash ends well or fails.
    #[test]
    fn a_task_awaiting_a_flight_learns_its_outcome() {
        let flights = Arc::new(Flights::default());
        for outcome in [Some(Digest::of(b"y")), None] {
            let Claim::Lead(lease) = flights.claim(key(1)) else { panic!("the first claim leads") };
            let Claim::Follow(flight) = flights.claim(key(1)) else { panic!("the second follows") };
            let waiter = std::thread::spawn(move || crate::digests::block_on(flight.done()));
            match outcome {
                Some(digest) => lease.complete(Some(digest)),
                None => drop(lease),
            }
            assert_eq!(waiter.join().unwrap(), outcome);
            assert_eq!(flights.len(), 0);
        }
    }

    #[test]
    fn a_flight_ended_before_the_wait_answers_at_once() {
        let flights = Arc::new(Flights::default());
        let Claim::Lead(lease) = flights.claim(key(1)) else { panic!() };
        let Claim::Follow(flight) = flights.claim(key(1)) else { panic!() };
        assert_eq!(flights.len(), 1, "one hash under way");
        lease.complete(Some(Digest::of(b"z")));
        assert_eq!(flight.wait(), Some(Digest::of(b"z")));
        assert_eq!(crate::digests::block_on(flight.done()), Some(Digest::of(b"z")));
    }
}
