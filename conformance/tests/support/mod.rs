//! Deliberately broken Ferry servers, to check that the conformance suite catches them.
//!
//! [`server::Server`] is a small, correct, threaded Ferry server on 127.0.0.1: ferry-proto's
//! [`ServerConnection`](ferry_proto::server::ServerConnection) driven over real sockets, with the
//! files in memory. Given a [`Fault`], it breaks exactly one requirement of PROTOCOL.md by a small
//! deviation — a hook in the host, or a rewrite of the bytes of one kind of reply — and is correct
//! in every other respect. The table below is the one place that lists the faults: each is named
//! after the requirement it breaks, and says how.
//!
//! Not here: a server with no handshake deadline (`[TIME-1]`) or no write deadline (`[TIME-5]`) at
//! all. Neither deadline is announced, so from the wire "none" looks like "longer than the case
//! may wait", and `limits.deadline.handshake` and `limits.deadline.stalled-reader` rightly answer
//! unsupported rather than fail.

pub mod server;

use std::time::Duration;

use ferry_proto::Role;

/// Declares the faults: `Name ["BROKEN-ID", "OTHER-ID"…];` — the first id is the requirement the
/// fault breaks; all of them select the cases run against it (for speed).
macro_rules! faults {
    ($( $(#[doc = $doc:literal])+ $name:ident [$broken:literal $(, $also:literal)*]; )+) => {
        /// One deliberate deviation from PROTOCOL.md.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Fault {
            $( $(#[doc = $doc])+ $name, )+
        }

        impl Fault {
            /// Every fault, in the table's order.
            pub const ALL: &'static [Fault] = &[$(Fault::$name),+];

            /// The variant's name.
            pub fn name(self) -> &'static str {
                match self { $(Fault::$name => stringify!($name),)+ }
            }

            /// The requirement it breaks.
            pub fn breaks(self) -> &'static str {
                match self { $(Fault::$name => $broken,)+ }
            }

            /// The requirements whose cases are run against it.
            pub fn select(self) -> &'static [&'static str] {
                match self { $(Fault::$name => &[$broken $(, $also)*],)+ }
            }

            /// What it does, in one line.
            pub fn doc(self) -> &'static str {
                match self { $(Fault::$name => concat!($($doc),+).trim(),)+ }
            }
        }
    };
}

faults! {
    /// GET replies announce the digest of other bytes than the file's.
    WrongDigest ["GET-1"];
    /// A resumed GET's digest covers only the bytes sent, not the whole file.
    TailDigest ["GET-2"];
    /// GET replies announce a size one byte larger than the file (and send the file).
    OffByOneSize ["GET-1"];
    /// GET sends the file from byte 0 whatever the offset (echoing the offset asked for).
    IgnoreOffset ["GET-1"];
    /// A GET offset past the end gets an empty frame instead of BAD_OFFSET.
    BadOffsetNotRefused ["GET-4"];
    /// A GET of a missing name gets INTERNAL instead of NOT_FOUND.
    WrongCodeNotFound ["GET-3", "ERR-6"];
    /// GET replies write the digest in uppercase hexadecimal.
    UppercaseDigest ["FRAME-3"];
    /// A PUT whose digest does not match is answered CHECKSUM_MISMATCH but published anyway.
    PublishOnMismatch ["PUT-3"];
    /// An upload cut off (disconnect, deadline) is published with the bytes that arrived.
    PublishPartial ["STORE-2"];
    /// A create-only PUT of an existing name replaces it.
    CreateOnlyOverwrites ["PUT-1"];
    /// The PUT outcome byte is inverted: "replaced" for a new file, "created" for a replacement.
    WrongPutOutcome ["PUT-2"];
    /// DELETE answers 0x85 but keeps the file.
    DeleteKeepsFile ["DEL-1"];
    /// Names are folded to lowercase: `Case` and `case` are one file.
    CaseInsensitiveNames ["NAME-8"];
    /// The name `..` is accepted (a PUT "succeeds", the others find nothing).
    AcceptDotDot ["NAME-5", "NAME-7"];
    /// Names containing `/` are accepted.
    AcceptSlash ["NAME-4", "NAME-7"];
    /// Names beginning with `.ferry` are accepted.
    AcceptReservedPrefix ["NAME-6", "NAME-7"];
    /// The connection is closed right after a NOT_FOUND, a recoverable error.
    DropAfterRecoverable ["ERR-4", "REQ-6"];
    /// After a fatal error the connection is left open (until the client closes it).
    KeepOpenAfterFatal ["REQ-5"];
    /// An unknown opcode gets UNSUPPORTED instead of MALFORMED.
    UnknownOpcodeNotMalformed ["REQ-2"];
    /// Pipelined replies go out in swapped pairs.
    ReorderReplies ["REQ-4"];
    /// Error messages are padded past ERROR_MESSAGE_MAX (1024 bytes).
    MessageTooLong ["ERR-1"];
    /// BYE closes the connection without its 0x88 reply.
    NoByeReply ["BYE-1"];
    /// The hello announces the client's max_version, not the highest version spoken (1).
    VersionNotNegotiated ["HELLO-4"];
    /// The hello sets a capability bit version 1 does not define.
    ExtraCapabilityBits ["HELLO-9"];
    /// An unknown token gets the anonymous role instead of UNAUTHORIZED.
    UnknownTokenFallsBack ["AUTH-1"];
    /// The hello announces the read role, but PUT and DELETE are allowed.
    ForbiddenIgnored ["ROLE-1"];
    /// LIST replies come in reverse order.
    UnsortedList ["LIST-2"];
    /// LIST shows a temporary upload file, `.ferry-tmp-upload`.
    ListShowsTemp ["LIST-1"];
    /// Connections beyond the announced max_clients are served instead of getting BUSY.
    IgnoreCapacity ["CAP-1"];
    /// A request that stops arriving (a truncated head or frame) holds the connection forever: no
    /// head or progress deadline.
    HangOnTruncated ["TIME-7", "TIME-9"];
    /// An idle connection is never closed: no idle deadline.
    IdleNeverTimesOut ["TIME-2"];
    /// A legacy refusal is sent as a version 1 error reply instead of "ERROR" and a message.
    LegacyWrongShape ["LEG-2"];
    /// A legacy connection stays open after its reply.
    LegacyStaysOpen ["LEG-3"];
    /// STAT replies announce a size one byte larger than the file.
    StatWrongSize ["STAT-1"];
    /// LIST entries carry the digest of other bytes than the file's.
    ListWrongDigest ["LIST-3"];
    /// STATUS leaves out the requesting connection.
    StatusMissingSelf ["STATUS-1"];
    /// The hello announces half the max_file_size enforced: a larger PUT is not refused.
    AnnouncedFileSizeNotEnforced ["LIM-1", "PUT-4"];
    /// Create-only PUTs check the name when their head arrives, not when they commit: concurrent
    /// ones all succeed.
    CreateOnlyRace ["STORE-6"];
    /// An upload's name shows an empty file while its data arrives (put back if it fails).
    VisibleDuringUpload ["STORE-1"];
    /// A SHUTDOWN refused with FORBIDDEN stops the server anyway.
    ShutdownForbiddenIgnored ["SHUT-2"];
    /// The help text starts with a byte that is not UTF-8.
    HelpNotUtf8 ["ENC-2"];
    /// A hello offering no version spoken gets MALFORMED instead of UNSUPPORTED_VERSION.
    WrongVersionError ["HELLO-5"];
    /// A read-only server refuses overwriting PUTs, but lets create-only PUTs and DELETE through.
    ReadOnlyLeaks ["ROLE-2"];
    /// Replies the socket does not take are queued in memory while the server reads on: a client
    /// that pipelines and reads nothing makes it hold any amount.
    UnboundedOutput ["RES-2"];
    /// Every reply is written under one server-wide lock, which a write to a client that does not
    /// read holds until the progress deadline: everyone else's hellos and replies wait.
    StalledReaderHoldsServer ["RES-5"];
    /// An overwrite's outcome is decided a moment before the file is published, outside the lock:
    /// concurrent uploads of a new name all say "created".
    RacyPutOutcome ["STORE-9"];
    /// A PUT above max_file_size is read to its end, its data dropped, and only then answered
    /// TOO_LARGE (the hello announces half the limit the machine enforces).
    TooLargeReadsData ["PUT-4"];
    /// A legacy request whose name length is above max_name_len is refused only once the whole
    /// name has arrived (or the handshake deadline passed).
    LegacyWaitsForName ["LEG-4"];
    /// Symbolic links in the root are looked through: links to files, inside the root or out of
    /// it, are listed and served.
    SymlinksFollowed ["NAME-10"];
    /// mtimes are rounded down to whole seconds.
    MtimeWholeSeconds ["LIST-4"];
    /// Digests are remembered by name, size and mtime: a file edited in place at the same size,
    /// its mtime set back, keeps its old digest.
    StaleDigestAfterEdit ["LIST-3"];
    /// An upload's temporary file is `NAME.part`, a valid name (listed while it is there).
    TempNotReserved ["STORE-7"];
    /// The temporary file of an upload cut off by a disconnect is left in the root.
    TempLeftAfterCut ["STORE-2"];
    /// A PUT in the trailing form whose trailer does not match is answered CHECKSUM_MISMATCH but
    /// published anyway.
    TrailerMismatchPublished ["TRL-5", "PUT-3"];
    /// A PUT in the trailing form is answered (and published) as soon as its data has arrived,
    /// before its trailer; the trailer is then read and ignored.
    ReplyBeforeTrailer ["TRL-5"];
    /// A PUT in the trailing form whose connection ends after its data, before the whole trailer,
    /// is published.
    PublishBeforeTrailer ["TRL-3", "STORE-2"];
    /// After a trailing PUT refused early with EXISTS, its data and trailer are discarded without
    /// a look at the trailer's digits: a byte that is no hexadecimal digit passes.
    RefusalTrailerUnchecked ["TRL-4"];
    /// A FETCH from an offset above 0 is answered with tag 0x8B and the whole file.
    TrailingFetchResumed ["TRL-6"];
    /// A FETCH answered with tag 0x8B ends with the digest of other bytes than those sent.
    WrongTrailer ["TRL-2"];
    /// A plain GET from offset 0 is answered with tag 0x8B, the trailing form only FETCH may get.
    TrailingGet ["TRL-8"];
    /// The hello does not announce TRAILER, yet PUT mode 0x80 and FETCH are served.
    TrailerUnannounced ["PUT-7", "REQ-2"];
    /// STAT replies announce sizes modulo 2^32 (a file of 4 GiB and 4099 bytes has 4099).
    StatSizeTruncated32 ["STAT-1"];
    /// GET offsets are taken modulo 2^32: a GET from above 4 GiB sends bytes from near the start
    /// (echoing the offset asked for).
    OffsetWrapped32 ["GET-1"];
}

/// How a server is configured: the same for a fault's broken server and its fault-free control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Setup {
    /// The role of clients without a token (the runs use none).
    pub anonymous: Role,
    pub max_clients: u32,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    /// Refuse every PUT and DELETE (`[ROLE-2]`).
    pub read_only: bool,
    /// Keep the files in a root directory on disk, which the runs are given (`--root`).
    pub disk: bool,
    /// Serve a file of 4 GiB and more that no one uploaded (the suite's large content).
    pub big_file: bool,
    /// Whether the server announces `TRAILER`, and how it answers a FETCH from 0 (§ 7.10).
    pub trailer: Trailer,
}

/// The server's `TRAILER` capability (PROTOCOL.md § 6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trailer {
    /// Not announced: PUT modes 0x80 and 0x81 and FETCH are malformed.
    Off,
    /// Announced; a FETCH is answered as GET (0x83), as a server that knows every digest should.
    Leading,
    /// Announced; a FETCH from 0 is answered in the trailing form (0x8B), as a server that hashes
    /// while it sends may (`[TRL-7]` is a SHOULD).
    Trailing,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            anonymous: Role::Write,
            max_clients: 64,
            handshake_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            read_only: false,
            disk: false,
            big_file: false,
            trailer: Trailer::Leading,
        }
    }
}

impl Fault {
    /// The configuration its cases need: a small capacity, short deadlines, a read-only role.
    pub fn setup(self) -> Setup {
        let short = Setup {
            idle_timeout: Duration::from_millis(1000),
            request_timeout: Duration::from_millis(1000),
            ..Setup::default()
        };
        match self {
            Self::IgnoreCapacity => Setup { max_clients: 4, ..Setup::default() },
            Self::HangOnTruncated | Self::IdleNeverTimesOut => short,
            Self::ForbiddenIgnored => Setup { anonymous: Role::Read, ..Setup::default() },
            Self::ReadOnlyLeaks => Setup { read_only: true, ..Setup::default() },
            Self::StatSizeTruncated32 | Self::OffsetWrapped32 => Setup { big_file: true, ..Setup::default() },
            Self::WrongTrailer => Setup { trailer: Trailer::Trailing, ..Setup::default() },
            Self::TrailerUnannounced => Setup { trailer: Trailer::Off, ..Setup::default() },
            Self::SymlinksFollowed
            | Self::MtimeWholeSeconds
            | Self::StaleDigestAfterEdit
            | Self::TempNotReserved
            | Self::TempLeftAfterCut => Setup { disk: true, ..Setup::default() },
            _ => Setup::default(),
        }
    }
}
