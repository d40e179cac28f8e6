//! Reading a request body: lockstep's strict JSON reader (`channels::strict_json`, which
//! refuses a key twice in one object) against serde_json's own `Value`, on the same
//! bodies in the same run, so the check's cost is a ratio. `cargo bench --bench parse`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lockstep::channels::strict_json;

/// A native body of `events` order placements, as a channel or `wrk` sends them.
fn body(events: usize) -> Vec<u8> {
    let parts: Vec<String> = (0..events)
        .map(|i| {
            format!(
                r#"{{"sku":"PEER-{i}","kind":"order_placed","qty":1,"order_id":"r0-t1-{i}-1"}}"#
            )
        })
        .collect();
    format!(r#"{{"events":[{}]}}"#, parts.join(",")).into_bytes()
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for events in [1usize, 50] {
        let bytes = body(events);
        group.throughput(Throughput::Elements(events as u64));
        group.bench_function(format!("serde_json_value_{events}"), |b| {
            b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&bytes)).unwrap())
        });
        group.bench_function(format!("strict_{events}"), |b| {
            b.iter(|| strict_json::from_slice(black_box(&bytes)).unwrap())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = parse
}
criterion_main!(benches);
