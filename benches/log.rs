//! One durable commit (the chunk's synchronous write to the log's tail, with the checkpoints it triggers) at
//! batch sizes 1, 64 and 1,024: the cost the shard pays per batch, and how group commit amortizes it.
//! As in the shard, each batch's keys are looked up before its commit (not timed).
//! `key_lookup`: what a duplicate costs against a fresh key, side by side: a key seen
//! before (its first result answered) and one never seen, in a store of 100 chunks of
//! 1,024 records, the shape a retry storm meets.
//! `cargo bench --bench log`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lockstep::clock::MICROS_PER_SECOND;
use lockstep::core::event::{Event, EventKind};
use lockstep::core::{apply, CoreConfig, Effects, Input, ShardState};
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
                    origin: None,
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
                    for new in &fx.first_results {
                        assert!(store
                            .lookup(&new.sku, &new.source, &new.key)
                            .unwrap()
                            .is_none());
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

fn key_lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(&dir.path().join("shard")).unwrap();
    let mut state = ShardState::default();
    let mut round = 0u64;
    let mut keys = Vec::new();
    for _ in 0..100 {
        let fx = effects(&mut state, 1_024, &mut round);
        keys.extend(
            fx.first_results
                .iter()
                .map(|new| (new.sku.clone(), new.source.clone(), new.key.clone())),
        );
        store.commit(&fx).unwrap();
    }
    store.checkpoint().unwrap();
    let mut group = c.benchmark_group("key_lookup");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function("duplicate", |b| {
        b.iter(|| {
            i = (i + 7_919) % keys.len();
            let (sku, source, key) = &keys[i];
            assert!(store
                .lookup(black_box(sku), black_box(source), black_box(key))
                .unwrap()
                .is_some());
        })
    });
    let fresh: Vec<(String, String, String)> = keys
        .iter()
        .map(|(sku, source, key)| (sku.clone(), source.clone(), format!("never-{key}")))
        .collect();
    group.bench_function("fresh", |b| {
        b.iter(|| {
            i = (i + 7_919) % fresh.len();
            let (sku, source, key) = &fresh[i];
            assert!(store
                .lookup(black_box(sku), black_box(source), black_box(key))
                .unwrap()
                .is_none());
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(5));
    targets = log, key_lookup
}
criterion_main!(benches);
