//! Every case of the suite.

pub mod transcripts;

use crate::case::Case;
use crate::spec;

/// All cases, in a stable order.
pub fn all() -> Vec<Case> {
    transcripts::cases(spec::TRANSCRIPTS)
}
