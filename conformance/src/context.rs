//! What a running case can use: the target, the server's hello, a name prefix of its own.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ferry_proto::{ErrorCode, Name, Request, ServerHello};

use crate::case::{Ending, Failure, Target};
use crate::wire::{BusyFlag, Conn, Problem, Raw, Reply};

/// A case's view of the run.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub target: Target,
    /// The hello the server gave the runner's probe (version 1 runs only).
    pub server: Option<ServerHello>,
    /// Names this case creates start with this; they are deleted after the case.
    pub prefix: String,
    /// When the case must be done (the runner gives up then).
    pub deadline: Instant,
    /// Raised when one of the case's connections met a full server (`BUSY`): the runner then
    /// does not take a failure at its word, and runs the case again, alone.
    pub busy: BusyFlag,
}

impl Ctx {
    /// A valid name under this case's prefix.
    pub fn name(&self, suffix: &str) -> Name {
        Name::parse(&format!("{}{suffix}", self.prefix)).expect("prefix and suffix make a valid name")
    }

    /// A new version 1 connection, past the handshake, with the run's token.
    ///
    /// # Errors
    /// The server refused or broke the protocol.
    pub fn conn(&self) -> Result<Conn, Problem> {
        self.conn_as(self.target.token.as_deref())
    }

    /// A new version 1 connection, past the handshake, with `token` (`None`: the anonymous
    /// role). A `BUSY` refusal is retried until the wait's deadline: a server at capacity
    /// because of parallel cases is not what a case checks (`limits.capacity.*` uses
    /// [`Conn::open`] directly). A refusal that outlasts the retries raises [`Ctx::busy`].
    ///
    /// # Errors
    /// The server refused or broke the protocol.
    pub fn conn_as(&self, token: Option<&str>) -> Result<Conn, Problem> {
        let deadline = self.io_deadline();
        loop {
            match Conn::open(self.target.addr, token, self.target.io_timeout) {
                Err(Problem::Ended(Ending::ErrorReply { code, .. }))
                    if code == ErrorCode::BUSY.0 && Instant::now() + Duration::from_millis(50) < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(p @ Problem::Ended(Ending::ErrorReply { code, .. })) if code == ErrorCode::BUSY.0 => {
                    self.busy.raise();
                    return Err(p);
                }
                other => return other,
            }
        }
    }

    /// A new raw connection. A `BUSY` refusal as its first bytes raises [`Ctx::busy`] (a case
    /// that expects one uses [`Raw::connect`] directly).
    ///
    /// # Errors
    /// The connection cannot be made.
    pub fn raw(&self) -> std::io::Result<Raw> {
        Ok(Raw::connect(self.target.addr, self.target.io_timeout)?.watch_busy(&self.busy))
    }

    /// The address the server sees for the connection of `stream`, as its `STATUS` records show
    /// it (`[STATUS-1]`): the stream's own, or in a run over TLS the relay's side of it.
    ///
    /// # Errors
    /// The socket has no address, or the relay has not reached the server for it within the
    /// wait's deadline (or the connection is over).
    pub fn seen_by_server(&self, stream: &TcpStream) -> std::io::Result<SocketAddr> {
        let own = stream.local_addr()?;
        match self.target.tls.as_ref().and_then(|t| t.relayed.as_ref()) {
            None => Ok(own),
            Some(relayed) => relayed.directory.seen_as(own, self.io_deadline()).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("the TLS relay carries no connection from {own} to the server"),
                )
            }),
        }
    }

    /// The server's plain listener: [`Target::addr`], except in a run over TLS, where it is the
    /// one the run was given, if any.
    pub fn plain_addr(&self) -> Option<SocketAddr> {
        match self.target.tls.as_ref().and_then(|t| t.relayed.as_ref()) {
            None => Some(self.target.addr),
            Some(relayed) => relayed.plain,
        }
    }

    /// The deadline for one network wait.
    pub fn io_deadline(&self) -> Instant {
        (Instant::now() + self.target.io_timeout).min(self.deadline)
    }

    /// Deletes every file whose name starts with this case's prefix (best effort). It has a
    /// deadline of its own: a case that used all of its time still leaves nothing behind.
    pub fn cleanup(&self) {
        let after =
            Self { deadline: Instant::now() + self.target.io_timeout, busy: BusyFlag::default(), ..self.clone() };
        let Ok(mut conn) = after.conn() else { return };
        if let Ok(Reply::List(entries)) = conn.call(&Request::List) {
            for e in entries.into_iter().filter(|e| e.name.as_str().starts_with(&self.prefix)) {
                let _ = conn.call(&Request::Delete(e.name));
            }
        }
    }
}

/// Turns a problem talking to the server into a failure of `requirement`.
pub fn broke(requirement: &str, what: &str, p: &Problem) -> Failure {
    let mut f = Failure::new(requirement, format!("{what}: {p}"));
    if let Problem::Ended(e) = p {
        f.ending = Some(e.clone());
    }
    f
}
