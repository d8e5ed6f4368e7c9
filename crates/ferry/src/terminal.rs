//! The terminal while a command runs: typed characters and `^C` are not echoed.
//!
//! Progress bars redraw themselves in place, counting the lines they drew. The terminal's echo
//! of Ctrl-C (`^C`) lands after a bar that fills the width, wraps to a new line, and the bar's
//! last clear then erases that line instead of the bar: a stale bar stayed on screen after
//! Ctrl-C. Anything typed during a transfer did the same. So while a command runs, echo is off
//! on the terminal the bars are drawn on (stderr), and the saved settings come back when the
//! guard is dropped — before the shell's next prompt, or before ferry exits.

/// The settings a [`NoEcho`] saved, for [`restore`] to put back from another thread.
#[cfg(unix)]
static SAVED: std::sync::Mutex<Option<rustix::termios::Termios>> = std::sync::Mutex::new(None);

/// Puts back the terminal settings a live [`NoEcho`] saved: before ferry exits at once (a
/// second Ctrl-C), without running the guard's destructor.
pub fn restore() {
    #[cfg(unix)]
    if let Some(saved) = SAVED.lock().ok().and_then(|s| s.clone()) {
        let _ = rustix::termios::tcsetattr(std::io::stderr(), rustix::termios::OptionalActions::Now, &saved);
    }
}

/// Echo off until dropped.
#[derive(Debug)]
pub struct NoEcho {
    #[cfg(unix)]
    saved: Option<rustix::termios::Termios>,
}

impl NoEcho {
    /// Turns echo off on stderr's terminal, if stderr is one; otherwise does nothing.
    pub fn new() -> Self {
        #[cfg(unix)]
        {
            use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
            let stderr = std::io::stderr();
            let saved = tcgetattr(&stderr).ok();
            if let Some(saved) = &saved {
                let mut quiet = saved.clone();
                quiet.local_modes.remove(LocalModes::ECHO | LocalModes::ECHOCTL);
                if tcsetattr(&stderr, OptionalActions::Now, &quiet).is_err() {
                    return Self { saved: None };
                }
                if let Ok(mut s) = SAVED.lock() {
                    *s = Some(saved.clone());
                }
            }
            Self { saved }
        }
        #[cfg(not(unix))]
        Self {}
    }
}

impl Default for NoEcho {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(saved) = &self.saved {
            use rustix::termios::{tcsetattr, OptionalActions};
            let _ = tcsetattr(std::io::stderr(), OptionalActions::Now, saved);
            if let Ok(mut s) = SAVED.lock() {
                *s = None;
            }
        }
    }
}
