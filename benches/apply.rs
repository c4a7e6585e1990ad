//! Regenerate-and-apply throughput on a SmolLM2-135M-sized accumulator
//! (134.5 M parameters), in parameter-updates per second, with same-run
//! baselines: a plain i32 read-modify-write pass and raw ChaCha8 output.
//!
//! Run: `cargo bench --bench apply` (set `RAYON_NUM_THREADS=1` for per-core figures).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use seedswarm::crdt::replica::{apply_gaussian, apply_rademacher};
use seedswarm::zo::perturb::{self, Kind};
use seedswarm::zo::seed::{derive, Origin, RunId, Seed};
use std::hint::black_box;

const PARAMS: usize = 134_515_008;

fn seeds(k: usize) -> Vec<Seed> {
    (0..k as u64)
        .map(|s| derive(&RunId([1; 32]), &Origin([2; 32]), s))
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut delta = vec![0i32; PARAMS];
    let mut g = c.benchmark_group("smollm2-135m");
    g.sample_size(10);
    g.measurement_time(std::time::Duration::from_secs(8));

    g.throughput(Throughput::Elements(PARAMS as u64));
    g.bench_function("baseline/i32-rmw-pass", |b| {
        b.iter(|| {
            for d in delta.iter_mut() {
                *d = d.wrapping_add(1);
            }
            black_box(&delta);
        })
    });
    g.bench_function("baseline/chacha8-signs", |b| {
        let mut words = vec![0u32; PARAMS / 32];
        b.iter(|| {
            let mut rng = perturb::stream(&seeds(1)[0], 0, 0);
            perturb::fill_words(&mut rng, &mut words);
            black_box(&words);
        })
    });
    for k in [1usize, 16, 64] {
        let items: Vec<(Seed, i32)> = seeds(k).into_iter().map(|s| (s, 300)).collect();
        g.throughput(Throughput::Elements((PARAMS * k) as u64));
        g.bench_function(format!("rademacher/fused-{k}"), |b| {
            b.iter(|| apply_rademacher(black_box(&mut delta), None, 0, &items))
        });
    }
    let items: Vec<(Seed, f64)> = seeds(1).into_iter().map(|s| (s, 300.0)).collect();
    g.throughput(Throughput::Elements(PARAMS as u64));
    g.bench_function("gaussian/1", |b| {
        b.iter(|| apply_gaussian(black_box(&mut delta), None, 0, &items))
    });
    let mut z = vec![0f32; 1 << 20];
    g.throughput(Throughput::Elements(z.len() as u64));
    g.bench_function("regenerate/rademacher-f32", |b| {
        b.iter(|| perturb::fill(Kind::Rademacher, &seeds(1)[0], 0, 0, black_box(&mut z)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
