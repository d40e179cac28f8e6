//! Log append + journal fdatasync (one durable commit, with the checkpoints it triggers) at
//! batch sizes 1, 64 and 1,024: the cost the shard pays per batch, and how group commit amortizes it.
//! As in the shard, each batch's keys are looked up before its commit (not timed).
//! `cargo bench --bench log`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lockstep::clock::MICROS_PER_SECOND;
use lockstep::engine::core::{apply, CoreConfig, Effects, Input, ShardState};
use lockstep::engine::event::{Event, EventKind};
use lockstep::store::{DiskStore, ShardStore};

const T0: i64 = 1_800_000_000 * MICROS_PER_SECOND;

fn effects(state: &mut ShardState, size: usize, round: &mut u64) -> Effects {
    let inputs: Vec<Input> = (0..size)
        .map(|_| {
            *round += 1;
            let n = *round;
            Input {
                event: Event {
                    sku: format!("SKU-{}", n % 5_000),
                    kind: EventKind::Adjusted,
                    qty: 1,
                    source: "bench".into(),
                    source_ts: T0 + n as i64,
                    received_at: T0 + n as i64,
                    key: format!("key-{n}"),
                    line: None,
                },
                prior: None,
            }
        })
        .collect();
    apply(
        state,
        &inputs,
        T0 + 3_600 * MICROS_PER_SECOND,
        *round,
        &CoreConfig::default(),
    )
}

fn log(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(&dir.path().join("shard")).unwrap();
    let mut state = ShardState::default();
    let mut round = 0u64;
    let mut group = c.benchmark_group("log_commit");
    for size in [1usize, 64, 1_024] {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(format!("batch_{size}"), |b| {
            b.iter_batched(
                || {
                    let fx = effects(&mut state, size, &mut round);
                    // The shard looks every key up before it commits (untimed here).
                    for (sku, key, _) in &fx.first_results {
                        assert!(store.lookup(sku, key).unwrap().is_none());
                    }
                    fx
                },
                |fx| store.commit(black_box(&fx)).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(5));
    targets = log
}
criterion_main!(benches);
