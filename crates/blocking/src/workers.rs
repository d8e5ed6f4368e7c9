//! Connection threads, reused: a thread that has served a connection waits a while for the next
//! one instead of exiting, so that a server taking many short connections does not pay for a
//! thread's creation and teardown (clone, stack mapping, signal masks) on each.
//!
//! There is never a queue of connections waiting for a thread: a connection is handed to an idle
//! thread if there is one, else a new thread is started for it, exactly as without reuse. The
//! number of threads is thus bounded by the connections admitted (`max_clients`) plus the idle
//! ones, which exit after [`IDLE_KEEP`] without work.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

/// How long a thread with no connection waits for one before it exits.
pub(crate) const IDLE_KEEP: Duration = Duration::from_secs(30);

type Job = Box<dyn FnOnce() + Send>;

/// The connection threads.
#[derive(Clone, Default)]
pub(crate) struct Workers {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when a job is handed over.
    handed: Condvar,
}

#[derive(Default)]
struct State {
    /// Threads waiting for a job, not yet promised one.
    idle: usize,
    /// Jobs promised to idle threads, not yet taken: never more than the threads that will take
    /// them.
    handover: VecDeque<Job>,
}

impl Workers {
    /// Runs `job` on an idle thread, or on a new one.
    ///
    /// # Errors
    /// No idle thread, and a new one could not be started.
    pub(crate) fn run(&self, job: impl FnOnce() + Send + 'static) -> io::Result<()> {
        let job: Job = Box::new(job);
        {
            let mut state = self.lock();
            if state.idle > 0 {
                state.idle -= 1;
                state.handover.push_back(job);
                drop(state);
                self.shared.handed.notify_one();
                return Ok(());
            }
        }
        let shared = self.shared.clone();
        std::thread::Builder::new().name("ferry-conn".into()).spawn(move || {
            job();
            while let Some(next) = shared.next_job() {
                next();
            }
        })?;
        Ok(())
    }

    /// Threads waiting for a connection now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.lock().idle
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Shared {
    /// Waits up to [`IDLE_KEEP`] for a job; `None`: time to exit.
    fn next_job(&self) -> Option<Job> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.idle += 1;
        let (mut state, _) = self
            .handed
            .wait_timeout_while(state, IDLE_KEEP, |s| s.handover.is_empty())
            .unwrap_or_else(PoisonError::into_inner);
        match state.handover.pop_front() {
            // The job was promised to an idle thread: `run` already took this one off `idle`.
            Some(job) => Some(job),
            None => {
                state.idle -= 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn a_thread_that_finished_a_job_takes_the_next() {
        let workers = Workers::default();
        let (tx, rx) = mpsc::channel();
        let t = tx.clone();
        workers.run(move || t.send(std::thread::current().id()).unwrap()).unwrap();
        let first = rx.recv().unwrap();
        // Wait until that thread is idle again, then hand it a second job.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while workers.idle() == 0 {
            assert!(std::time::Instant::now() < deadline, "the thread never became idle");
            std::thread::yield_now();
        }
        workers.run(move || tx.send(std::thread::current().id()).unwrap()).unwrap();
        assert_eq!(rx.recv().unwrap(), first, "the same thread served both");
    }

    #[test]
    fn busy_threads_do_not_hold_up_a_new_job() {
        let workers = Workers::default();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let r = release_rx.clone();
        // The first job blocks until released; the second must run meanwhile, on another thread.
        workers
            .run(move || {
                let _ = r.lock().unwrap().recv();
            })
            .unwrap();
        let (tx, rx) = mpsc::channel();
        workers.run(move || tx.send(()).unwrap()).unwrap();
        assert!(rx.recv_timeout(Duration::from_secs(10)).is_ok(), "the second job ran while the first was busy");
        release_tx.send(()).unwrap();
    }
}
