//! Runs a load: client threads, each an epoll loop over its share of the connections, and the
//! measured window they share.
//!
//! Timeline: connections open at once; replies during `warmup` are verified but not counted;
//! then the window of `duration` is measured (the caller's [`Window`] hooks sample the server
//! at its two edges); at its end no request is sent any more and the connections are closed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rustix::event::epoll::{self, CreateFlags};
use rustix::event::Timespec;

use super::conn::{Conn, Ctx, Picker, Step};
use super::files::FileSet;
use super::tally::Tally;
use super::wire::{Mode, Script, Verify};

/// After this many failures, failed connections are not reopened: the run is broken anyway,
/// and reconnecting in a tight loop would only flood the server.
const FAILURES_BEFORE_GIVING_UP: u64 = 100;

/// The longest an epoll wait sleeps, so that the end of the window and an interruption are
/// noticed promptly.
const TICK: Duration = Duration::from_millis(50);

/// What a load does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// A loopback address: load never leaves this machine.
    pub addr: SocketAddr,
    pub script: Arc<Script>,
    pub files: Arc<FileSet>,
    pub connections: usize,
    /// Requests in flight per persistent connection.
    pub depth: usize,
    /// Client threads the connections are spread over.
    pub threads: usize,
    pub verify: Verify,
    pub warmup: Duration,
    pub duration: Duration,
    /// Each file once, in order, instead of random names for `duration` (a priming pass).
    pub each_once: bool,
    pub seed: u64,
}

/// Hooks called at the edges of the measured window, from the thread that runs the load.
pub trait Window {
    fn begin(&mut self) -> Result<()>;
    fn end(&mut self) -> Result<()>;
}

/// A [`Window`] that measures nothing.
pub struct NoWindow;

impl Window for NoWindow {
    fn begin(&mut self) -> Result<()> {
        Ok(())
    }
    fn end(&mut self) -> Result<()> {
        Ok(())
    }
}

/// What a load counted, over a window of `window`.
#[derive(Debug)]
pub struct Outcome {
    pub tally: Tally,
    pub window: Duration,
}

/// Runs `plan`, calling `window`'s hooks at the window's edges. `stop` interrupts it (the load
/// then fails).
///
/// # Errors
/// The plan is impossible, a hook failed, or the load was interrupted.
pub fn run(plan: &Plan, window: &mut dyn Window, stop: &AtomicBool) -> Result<Outcome> {
    if !plan.addr.ip().is_loopback() {
        bail!("{} is not a loopback address: load stays on this machine", plan.addr);
    }
    if plan.files.is_empty() || plan.connections == 0 || plan.depth == 0 {
        bail!("nothing to do: {} files, {} connections, depth {}", plan.files.len(), plan.connections, plan.depth);
    }
    if plan.depth > 1 && plan.script.mode != Mode::Persistent {
        bail!("pipelining (--depth) needs persistent connections");
    }
    if plan.verify == Verify::Content && !plan.files.has_content() {
        bail!("--verify content holds files in memory, up to 1 MiB each: these are larger");
    }
    let threads = plan.threads.clamp(1, plan.connections);
    let t0 = Instant::now();
    let start = t0 + plan.warmup;
    let end = start + plan.duration;
    let tallies = std::thread::scope(|s| -> Result<Vec<Tally>> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                // Connections t, t + threads, t + 2 × threads...
                let share = (plan.connections - t).div_ceil(threads);
                std::thread::Builder::new()
                    .name(format!("load-{t}"))
                    .spawn_scoped(s, move || client_thread(plan, t as u64, share, (start, end), stop))
            })
            .collect::<std::io::Result<_>>()?;
        let edges = (|| -> Result<()> {
            if !plan.each_once {
                sleep_until(start, stop);
                window.begin()?;
                sleep_until(end, stop);
                window.end()?;
            }
            Ok(())
        })();
        let tallies: Vec<Tally> = handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("a client thread panicked")))
            .collect::<Result<_>>()?;
        edges?;
        Ok(tallies)
    })?;
    if stop.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    let mut tally = Tally::default();
    for t in tallies {
        tally.merge(t);
    }
    let window = if plan.each_once { t0.elapsed() } else { plan.duration };
    Ok(Outcome { tally, window })
}

fn sleep_until(t: Instant, stop: &AtomicBool) {
    loop {
        let now = Instant::now();
        if now >= t || stop.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep((t - now).min(TICK));
    }
}

/// One client thread: `count` connections on one epoll, until the window ends.
fn client_thread(plan: &Plan, thread: u64, count: usize, window: (Instant, Instant), stop: &AtomicBool) -> Tally {
    let mut tally = Tally::default();
    let ep = match epoll::create(CreateFlags::CLOEXEC) {
        Ok(ep) => ep,
        Err(e) => {
            tally.fail(format!("epoll_create: {e}"));
            return tally;
        }
    };
    let picker = if plan.each_once {
        Picker::EachOnce { next: 0 }
    } else {
        Picker::Random(fastrand::Rng::with_seed(plan.seed ^ thread.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
    };
    let mut ctx = Ctx {
        script: &plan.script,
        files: &plan.files,
        verify: plan.verify,
        depth: plan.depth,
        addr: plan.addr,
        epoll: &ep,
        picker,
        // A priming pass counts everything it receives.
        window: if plan.each_once { (Instant::now(), window.1 + Duration::from_secs(3600)) } else { window },
        stopping: false,
        tally,
    };
    let mut conns: Vec<Conn> = (0..count as u64).map(Conn::new).collect();
    let now = Instant::now();
    for c in &mut conns {
        if let Err(e) = c.open(&mut ctx, now) {
            ctx.tally.fail(e);
            c.close(&ctx);
        }
    }
    let mut events = Vec::with_capacity(count.max(16));
    loop {
        let now = Instant::now();
        ctx.stopping = stop.load(Ordering::Relaxed);
        if now >= window.1 || ctx.stopping {
            break;
        }
        if plan.each_once && conns.iter().all(Conn::is_idle) {
            break;
        }
        let wait = (window.1 - now).min(TICK);
        let timeout = Timespec { tv_sec: 0, tv_nsec: wait.as_nanos() as _ };
        events.clear();
        match epoll::wait(&ep, rustix::buffer::spare_capacity(&mut events), Some(&timeout)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                ctx.tally.fail(format!("epoll_wait: {e}"));
                break;
            }
        }
        for ev in &events {
            let c = &mut conns[ev.data.u64() as usize];
            let (close, reopen) = match c.handle(ev.flags, &mut ctx) {
                Ok(Step::Continue) => (false, false),
                Ok(Step::Done) => (true, true),
                Err(e) => {
                    ctx.tally.fail(e);
                    (true, ctx.tally.failures < FAILURES_BEFORE_GIVING_UP)
                }
            };
            if close {
                c.close(&ctx);
            }
            if reopen {
                if let Err(e) = c.open(&mut ctx, Instant::now()) {
                    ctx.tally.fail(e);
                    c.close(&ctx);
                }
            }
        }
    }
    for c in &mut conns {
        c.close(&ctx);
    }
    ctx.tally
}
