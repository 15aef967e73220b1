//! PLACEHOLDER: the avx2 backend is being written; until then it reports itself unsupported.

use super::{scalar::Scalar, WithSimd};

#[derive(Clone, Copy, Debug)]
pub struct Avx2(());

impl Avx2 {
    /// Returns the token if this CPU supports the instruction set.
    pub fn new() -> Option<Self> {
        None
    }

    /// Runs `job` compiled for this instruction set.
    pub fn run<W: WithSimd>(self, job: W) -> W::Output {
        job.with_simd(Scalar)
    }
}
