//! `lockstep stock import`: initial stock, from a CSV of counts (`sku,on_hand`) or from a
//! channel's current levels (`--from CHANNEL`, `propagate/level_import.rs`), through the
//! running server, with idempotency keys: importing the same again changes nothing.

use std::path::Path;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::encode_segment;
use crate::channels::native::{check_sku, Field};
use crate::config::Config;
use crate::remote::call_running;

/// Most events per `POST /v1/events` (`channels::native::REQUEST_EVENTS_MAX`).
const IMPORT_BATCH: usize = 1_000;

/// The counts of a `sku,on_hand` file, checked whole before any is sent: a file with
/// one bad row changes nothing.
fn read_counts(file: &Path) -> anyhow::Result<Vec<(String, i64)>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let headers = reader.headers()?.clone();
    let column = |name: &str| headers.iter().position(|h| h == name);
    let (Some(sku_at), Some(on_hand_at)) = (column("sku"), column("on_hand")) else {
        bail!(
            "{}: the header must name the columns sku and on_hand (found: {})",
            file.display(),
            headers.iter().collect::<Vec<_>>().join(",")
        );
    };
    let mut counts = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (i, row) in reader.records().enumerate() {
        let line = i + 2;
        let row = row.with_context(|| format!("{} line {line}", file.display()))?;
        let sku = row.get(sku_at).unwrap_or("").to_string();
        // The server's own check, here: a row it would refuse, sent in a later request,
        // would leave the requests before it taken and the file half imported.
        if let Err(refused) = check_sku(&sku, Field::named("sku")) {
            bail!(
                "{} line {line}: sku {sku:?} {}; nothing was imported",
                file.display(),
                refused.message
            );
        }
        let text = row.get(on_hand_at).unwrap_or("");
        let on_hand: i64 = text
            .parse()
            .ok()
            .filter(|n| (0..=crate::core::event::QTY_MAX).contains(n))
            .with_context(|| {
                format!(
                    "{} line {line}: on_hand {text:?} is not a whole number from 0 to {}",
                    file.display(),
                    crate::core::event::QTY_MAX
                )
            })?;
        if let Some(first) = seen.insert(sku.clone(), line) {
            bail!(
                "{} line {line}: SKU {sku:?} is counted twice (first on line {first})",
                file.display()
            );
        }
        counts.push((sku, on_hand));
    }
    Ok(counts)
}

/// `lockstep stock import FILE`: each row a count of on_hand, through `POST /v1/events`.
/// The keys name the file's content (`stock-import/{hash}/{sku}`), so importing the same
/// file again is answered as duplicates and changes nothing; an edited file counts anew.
pub fn import_file(config: &Config, file: &Path) -> anyhow::Result<()> {
    let counts = read_counts(file)?;
    let bytes = std::fs::read(file)?;
    let content = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes));
    let (mut counted, mut duplicates) = (0, 0);
    for batch in counts.chunks(IMPORT_BATCH) {
        let events: Vec<Value> = batch
            .iter()
            .map(|(sku, on_hand)| {
                json!({
                    "sku": sku,
                    "kind": "counted",
                    "qty": on_hand,
                    "source": "import",
                    "idempotency_key": format!("stock-import/{content}/{sku}"),
                })
            })
            .collect();
        let answer = call_running(
            config,
            hyper::Method::POST,
            "/v1/events",
            Some(json!({ "events": events })),
        )?;
        for result in answer["results"].as_array().into_iter().flatten() {
            if result["outcome"] == "duplicate" {
                duplicates += 1;
            } else {
                counted += 1;
            }
        }
    }
    println!(
        "{}: {} counts: {counted} taken, {duplicates} already taken by an earlier import of this file",
        file.display(),
        counts.len()
    );
    Ok(())
}

/// `lockstep stock import --from CHANNEL`: the channel's current levels as counts.
pub fn import_from(config: &Config, channel: &str) -> anyhow::Result<()> {
    let path = format!("/v1/channels/{}/import-levels", encode_segment(channel));
    let answer = call_running(config, hyper::Method::POST, &path, None)?;
    let report = &answer["report"];
    let names = |field: &str| -> Vec<&str> {
        report[field]
            .as_array()
            .map(|u| u.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    };
    let (unlisted, out_of_range) = (names("unlisted"), names("out_of_range"));
    let below_zero = names("below_zero");
    println!(
        "{channel}: {} listings read: {} counts taken, {} already taken by an earlier import of the same levels, {} not listed{}",
        report["read"],
        report["counted"],
        report["duplicates"],
        unlisted.len(),
        if unlisted.is_empty() {
            String::new()
        } else {
            format!(" (left as they are: {})", unlisted.join(", "))
        }
    );
    if !out_of_range.is_empty() {
        println!(
            "  {} shown beyond any count lockstep takes, left as they are (correct them on the channel): {}",
            out_of_range.len(),
            out_of_range.join(", ")
        );
    }
    if !below_zero.is_empty() {
        println!(
            "  {} shown below zero (sold past their stock, or on backorder), left as they are (count them with `lockstep stock import FILE`): {}",
            below_zero.len(),
            below_zero.join(", ")
        );
    }
    let unread = names("unread");
    if !unread.is_empty() {
        println!(
            "  {} could not be read (the channel answered the others), left as they are: {} ({})",
            unread.len(),
            unread.join(", "),
            report["unread_reason"].as_str().unwrap_or("")
        );
    }
    Ok(())
}
