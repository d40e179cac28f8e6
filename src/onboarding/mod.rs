//! The commands of a seller's first day, in the order they walk them: `lockstep catalog
//! discover` (`discover.rs`: each channel's listings linked to SKUs by the channel's SKU
//! field, into the catalog), `lockstep stock import` (`stock.rs`: initial stock from a
//! CSV of counts or from a channel's levels), and here `lockstep plan` and `approve` (a
//! channel's first sync, `propagate/sync_state.rs`), with `pause` and `resume`. All but discovery go through the
//! running server (`remote.rs`); discovery writes the catalog the server loads at start.

pub mod discover;
pub mod stock;

use anyhow::bail;

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
    if n("unread") > 0 {
        let named: Vec<&str> = plan["unread_skus"]
            .as_array()
            .map(|skus| skus.iter().filter_map(|s| s.as_str()).collect())
            .unwrap_or_default();
        let more = n("unread").saturating_sub(named.len() as u64);
        println!(
            "  {} listings could not be read and are not in this plan ({}{}): {}",
            n("unread"),
            named.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            },
            plan["unread_reason"].as_str().unwrap_or("")
        );
    }
    if answer["sync"] == "observing" {
        println!("  nothing is written to {name} until: lockstep approve {name}");
    }
}

/// An operator's action on a channel's state (`lockstep approve`, `pause`, `resume`),
/// through the running server; `verb` is the endpoint's (`approve`, `pause`, `resume`).
pub fn act(config: &Config, channel: &str, verb: &str, by: &str) -> anyhow::Result<()> {
    let path = format!("/v1/channels/{}/{verb}", encode_segment(channel));
    let answer = call_running(
        config,
        hyper::Method::POST,
        &path,
        Some(serde_json::json!({ "by": by })),
    )?;
    let state = answer["sync"].as_str().unwrap_or("");
    match (answer["changed"] == true, verb) {
        (true, "approve") => println!(
            "{channel}: approved by {by}; lockstep writes to it from now on ({} SKUs waiting in its outbox)",
            answer["outbox_skus"]
        ),
        (true, "pause") => println!(
            "{channel}: paused by {by}; nothing is written to it until: lockstep resume {channel}"
        ),
        (true, _) => println!(
            "{channel}: resumed by {by}; lockstep writes to it again ({} SKUs waiting in its outbox)",
            answer["outbox_skus"]
        ),
        (false, _) => println!("{channel} was {state} already: nothing changed"),
    }
    Ok(())
}

pub(crate) fn encode_segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}
