//! Shared pieces of the fuzz targets: the allocation meter, the input format, owned copies of
//! decoded items, and the hosts that drive ferry-proto's state machines under a schedule of reads,
//! blocked reads and writes, deadlines, shutdowns and EOF taken from the fuzz input.
//!
//! Input formats (fuzz/README.md; `make-corpus.py` writes seeds in them):
//!
//! | target           | bytes                                                                     |
//! |------------------|---------------------------------------------------------------------------|
//! | `c2s_stream`     | config, chunk size, then the client's bytes                               |
//! | `s2c_stream`     | config, chunk size, then the server's bytes                               |
//! | `server_machine` | config, host, faults, schedule length n, n ops, then the client's bytes    |
//! | `client_machine` | config, u16 request-section length, requests, n, n ops, the server's bytes |
//! | `legacy`         | config, n, n ops, then the client's bytes or a name and the server's bytes |
//! | `transcript`     | the text of a `.ft` file; its bytes also serve as received bytes           |

pub mod alloc;
pub mod client;
pub mod owned;
pub mod server;

/// Reads the fuzz input front to back; past the end everything is zero or empty, so every input
/// is valid.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// Chunk boundaries for delivering `len` bytes in pieces of `chunk` (0: whole).
pub fn chunk_boundaries(len: usize, chunk: u8) -> Vec<usize> {
    if chunk == 0 {
        return vec![len];
    }
    let step = usize::from(chunk);
    let mut v: Vec<usize> = (1..).map(|i| i * step).take_while(|&b| b < len).collect();
    v.push(len);
    v
}
