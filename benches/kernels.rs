//! `cargo bench`: each kernel on each supported instruction set, on the S-workloads of BENCHMARKS.md.
fn main() {}
