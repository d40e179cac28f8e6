//! The onboarding commands a seller runs against the running server: `lockstep plan`
//! and `approve` (a channel's first sync, `propagate/first_sync.rs`) and `lockstep stock
//! import` (initial stock from a CSV of counts, or from a channel's current levels).

use std::path::Path;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::config::Config;
use crate::remote::call_running;

/// `lockstep plan`: for each channel asked for (by default every observing one), what
/// approving it would write, from the running server (it reads the channel's levels
/// through the channel's budget).
pub fn plan(config: &Config, channels: &[String], json: bool) -> anyhow::Result<()> {
    let listed = call_running(config, hyper::Method::GET, "/v1/channels", None)?;
    let all: Vec<&serde_json::Value> = listed["channels"]
        .as_array()
        .map(|c| c.iter().collect())
        .unwrap_or_default();
    let names: Vec<String> = if channels.is_empty() {
        all.iter()
            .filter(|c| c["sync"] == "observing")
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    } else {
        for name in channels {
            if !all.iter().any(|c| c["name"] == name.as_str()) {
                bail!("no channel named {name:?} is configured");
            }
        }
        channels.to_vec()
    };
    if names.is_empty() {
        println!("no channel is observing: every channel is pushed to (name one with --channel to plan it anyway)");
        return Ok(());
    }
    let mut plans = Vec::new();
    for name in &names {
        let path = format!("/v1/channels/{}/plan", encode_segment(name));
        plans.push(call_running(config, hyper::Method::GET, &path, None)?);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&plans)?);
        return Ok(());
    }
    for answer in &plans {
        print_plan(answer);
    }
    Ok(())
}

fn print_plan(answer: &serde_json::Value) {
    let name = answer["name"].as_str().unwrap_or("");
    let plan = &answer["plan"];
    let n = |field: &str| plan[field].as_u64().unwrap_or(0);
    println!(
        "{name} ({}): {}{}",
        answer["kind"].as_str().unwrap_or(""),
        answer["sync"].as_str().unwrap_or(""),
        answer["since"]
            .as_str()
            .map(|s| format!(" since {s}"))
            .unwrap_or_default()
    );
    println!(
        "  {} listings checked: {} would change, {} unchanged ({} not listed on the channel)",
        n("checked"),
        n("changes"),
        n("unchanged"),
        n("unlisted")
    );
    let line = |l: &serde_json::Value| {
        let shown = l["shown"]
            .as_i64()
            .map_or("not listed".to_string(), |s| s.to_string());
        format!(
            "{} {shown} -> {}",
            l["sku"].as_str().unwrap_or(""),
            l["target"]
        )
    };
    let lines = |field: &str| -> Vec<String> {
        plan[field]
            .as_array()
            .map(|ls| ls.iter().map(line).collect())
            .unwrap_or_default()
    };
    for (field, title) in [
        ("to_zero", "would go to 0 from above 0"),
        ("largest_decreases", "largest decreases"),
        ("largest_increases", "largest increases"),
    ] {
        let found = lines(field);
        if found.is_empty() {
            continue;
        }
        println!("  {title} ({}):", found.len());
        for l in found {
            println!("    {l}");
        }
    }
    if answer["sync"] == "observing" {
        println!("  nothing is written to {name} until: lockstep approve {name}");
    }
}

/// `lockstep approve CHANNEL`: lets lockstep write to an observing channel.
pub fn approve(config: &Config, channel: &str, by: &str) -> anyhow::Result<()> {
    let path = format!("/v1/channels/{}/approve", encode_segment(channel));
    let answer = call_running(
        config,
        hyper::Method::POST,
        &path,
        Some(serde_json::json!({ "by": by })),
    )?;
    if answer["approved"] == true {
        println!(
            "{channel}: approved by {by}; lockstep writes to it from now on ({} SKUs waiting in its outbox)",
            answer["outbox_skus"]
        );
    } else {
        println!("{channel} was pushing already: nothing changed");
    }
    Ok(())
}

fn encode_segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

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
        if sku.is_empty() {
            bail!("{} line {line}: sku is empty", file.display());
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
    let unlisted: Vec<&str> = report["unlisted"]
        .as_array()
        .map(|u| u.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
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
    Ok(())
}
