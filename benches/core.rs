//! The pure core alone: events applied per second by one shard, no I/O.
//! `cargo bench --bench core`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lockstep::clock::MICROS_PER_SECOND;
use lockstep::core::event::{Event, EventKind, LineRef};
use lockstep::core::{apply, CoreConfig, Input, ShardState};

const T0: i64 = 1_800_000_000 * MICROS_PER_SECOND;
const BATCH: usize = 1_024;

/// A batch like real traffic: mostly order placements, some shipments and receipts,
/// over `skus` SKUs, with fresh keys each call.
fn batch(skus: usize, round: &mut u64) -> Vec<Input> {
    (0..BATCH)
        .map(|i| {
            *round += 1;
            let n = *round;
            let sku = format!("SKU-{}", (n * 7919) % skus as u64);
            let (kind, qty) = match n % 10 {
                0 => (EventKind::Adjusted, 20),
                1 => (EventKind::OrderShipped, 1),
                _ => (EventKind::OrderPlaced, 1),
            };
            let order = n - (n % 10 == 1) as u64; // a shipment ships the order placed before it
            Input {
                event: Event {
                    sku,
                    kind,
                    qty,
                    source: "shop".into(),
                    source_ts: T0 + n as i64,
                    received_at: T0 + n as i64,
                    key: format!("k{n}-{i}"),
                    line: kind.is_order_line().then(|| LineRef {
                        order_id: format!("o{order}"),
                        line_id: "1".into(),
                    }),
                    origin: None,
                },
                prior: None,
            }
        })
        .collect()
}

fn core(c: &mut Criterion) {
    let mut group = c.benchmark_group("core_apply");
    group.throughput(Throughput::Elements(BATCH as u64));
    for skus in [1usize, 10_000] {
        let mut state = ShardState::default();
        let mut round = 0u64;
        let mut seq = 1u64;
        group.bench_function(format!("batch_{BATCH}_over_{skus}_skus"), |b| {
            b.iter_batched(
                || batch(skus, &mut round),
                |inputs| {
                    let effects = apply(
                        &mut state,
                        &inputs,
                        T0 + 3_600 * MICROS_PER_SECOND,
                        seq,
                        &CoreConfig::default(),
                    );
                    seq += BATCH as u64;
                    black_box(effects)
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(4));
    targets = core
}
criterion_main!(benches);
