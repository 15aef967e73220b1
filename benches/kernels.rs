//! `cargo bench`: each kernel on each instruction set this CPU supports, on the benchmark workloads
//! S1–S5 and S1d (long LLM-vocabulary rows, medium rows, tiny rows, one tiny call, a few huge rows,
//! and S1 in float64; the shapes are in `workloads` below). Throughput is reported in bytes moved
//! (each input read once, each output written once), so criterion's GB/s compares directly with the
//! memory ceiling.
//!
//! `cargo bench -- S3` runs one workload; `FASTSOFTMAX_BENCH_QUICK=1` shrinks the big ones.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fastsoftmax::kernels::cross_entropy::Logits;
use fastsoftmax::{cross_entropy, logsumexp, softmax, Backend, Buf, CeOptions, Mode, Target};
use std::time::Duration;

fn workloads() -> Vec<(&'static str, usize, usize, bool)> {
    let quick = std::env::var_os("FASTSOFTMAX_BENCH_QUICK").is_some();
    let s = |r: usize| if quick { (r / 16).max(4) } else { r };
    vec![
        ("S1", s(2048), 32000, false),
        ("S2", s(32768), 1000, false),
        ("S3", s(1_000_000), 10, false),
        ("S4", 64, 10, false),
        ("S5", 4, 1_048_576, false),
        ("S1d", s(2048), 32000, true),
    ]
}

fn data<T: From<f32> + Copy>(n: usize) -> Vec<T> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            T::from(((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8.0)
        })
        .collect()
}

macro_rules! bench_type {
    ($c:expr, $name:expr, $rows:expr, $cols:expr, $t:ty) => {{
        let (rows, cols) = ($rows, $cols);
        let n = rows * cols;
        let x: Vec<$t> = data(n);
        let mut out = vec![0 as $t; n];
        let mut lse = vec![0 as $t; rows];
        let labels: Vec<i64> = (0..rows as i64).map(|i| (i * 7919) % cols as i64).collect();
        let bytes = (n * std::mem::size_of::<$t>()) as u64;
        let mut g = $c.benchmark_group($name);
        g.sample_size(10)
            .measurement_time(Duration::from_secs(2))
            .warm_up_time(Duration::from_millis(300));
        for b in Backend::supported() {
            g.throughput(Throughput::Bytes(2 * bytes));
            g.bench_function(BenchmarkId::new("softmax", b.name()), |bn| {
                bn.iter(|| {
                    softmax(
                        b,
                        Buf::Separate {
                            x: &x,
                            out: &mut out,
                        },
                        cols,
                        1.0,
                        Mode::Softmax,
                    )
                    .unwrap()
                })
            });
            g.bench_function(BenchmarkId::new("log_softmax", b.name()), |bn| {
                bn.iter(|| {
                    softmax(
                        b,
                        Buf::Separate {
                            x: &x,
                            out: &mut out,
                        },
                        cols,
                        1.0,
                        Mode::LogSoftmax,
                    )
                    .unwrap()
                })
            });
            g.bench_function(
                BenchmarkId::new("cross_entropy_with_grad", b.name()),
                |bn| {
                    let opts = CeOptions::default();
                    bn.iter(|| {
                        cross_entropy(
                            b,
                            Logits::Grad(Buf::Separate {
                                x: &x,
                                out: &mut out,
                            }),
                            rows,
                            cols,
                            Target::Hard(&labels),
                            &opts,
                            None,
                        )
                        .unwrap()
                    })
                },
            );
            g.throughput(Throughput::Bytes(bytes));
            g.bench_function(BenchmarkId::new("logsumexp", b.name()), |bn| {
                bn.iter(|| logsumexp(b, &x, cols, 1.0, &mut lse).unwrap())
            });
            g.bench_function(BenchmarkId::new("cross_entropy", b.name()), |bn| {
                let opts = CeOptions::default();
                bn.iter(|| {
                    cross_entropy(
                        b,
                        Logits::Read(&x),
                        rows,
                        cols,
                        Target::Hard(&labels),
                        &opts,
                        None,
                    )
                    .unwrap()
                })
            });
        }
        g.finish();
    }};
}

fn kernels(c: &mut Criterion) {
    for (name, rows, cols, double) in workloads() {
        if double {
            bench_type!(c, name, rows, cols, f64);
        } else {
            bench_type!(c, name, rows, cols, f32);
        }
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
