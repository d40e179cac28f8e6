//! `Outbox::take` with 1,000 and with 1,000,000 SKUs waiting: one take of a push's worth
//! (250), their acknowledgement, and the offers that put them back, so the queue keeps its size. The shards offer
//! through the same lock, so what a take costs is what it holds them up; it should grow
//! with the log of the queue, not with the queue.
//! `cargo bench --bench outbox`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use lockstep::propagate::outbox::Outbox;

fn filled(skus: usize) -> Outbox {
    let outbox = Outbox::new("bench");
    for i in 0..skus {
        // Targets spread over 0..1,000, as a catalog's quantities are.
        outbox.offer(&format!("SKU-{i:07}"), (i % 1_000) as i64, None, 0);
    }
    outbox
}

fn take(c: &mut Criterion) {
    let mut group = c.benchmark_group("outbox_take_250");
    for skus in [1_000usize, 1_000_000] {
        let outbox = filled(skus);
        group.bench_function(format!("of_{skus}"), |b| {
            b.iter(|| {
                let items = outbox.take(250);
                outbox.finish(black_box(&items), &vec![true; items.len()]);
                for item in &items {
                    outbox.offer(&item.sku, item.quantity, None, 0);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, take);
criterion_main!(benches);
