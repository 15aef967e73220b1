//! fastsoftmax: softmax, log-sum-exp and the cross-entropy family on rows of `f32`/`f64`, at the speed
//! of memory.
//!
//! The kernels work on row-major matrices given as slices (`rows × cols`, C order), are parallel over
//! rows (and within huge rows) with rayon, and vectorised with an instruction set chosen at run time
//! ([`simd::active`]). The Python bindings live in `src/python/` behind the `python` feature, so
//! `cargo test` and `cargo bench` build no Python.

pub mod convert;
pub mod error;
pub mod kernels;
pub mod parallel;
pub mod simd;

pub use error::KernelError;
pub use kernels::backward::{softmax_backward, Vjp, VjpBuf};
pub use kernels::cross_entropy::{cross_entropy, CeOptions, Logits, Reduction, Target};
pub use kernels::entropy::{entropy, Input as EntropyInput};
pub use kernels::logsumexp::{logsumexp, logsumexp_scaled, logsumexp_weighted};
pub use kernels::softmax::{softmax, softmax_scaled, Mode};
pub use kernels::Buf;
pub use simd::Backend;

#[cfg(feature = "python")]
mod python;
