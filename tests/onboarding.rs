//! A seller's first day, against the simulated WooCommerce site and the real binary.
//! A channel new to the data directory observes (its levels are read for a plan,
//! nothing is written), `lockstep plan` says what approving it would write, `lockstep
//! approve` starts the pushes and the store converges, the audit names who approved,
//! and each state survives a restart; `first_sync = "push"` skips observing. Initial
//! stock comes from a CSV of counts or from the store's own levels, and importing the
//! same again changes nothing.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use loadgen::woo_sim::WooSim;
use serde_json::{json, Value};

const SECRET: &str = "woo-webhook-secret";
const WAIT: Duration = Duration::from_secs(20);

struct Rig {
    server: Server,
    woo: WooSim,
    config: std::path::PathBuf,
    dir: tempfile::TempDir,
}

/// A site whose four products show 12, 5, 7 and 3 today, and lockstep on a fixed
/// loopback port (the commands find the server by the config's `listen`), connected to
/// it with `channel_extra`.
fn rig(channel_extra: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let names = ["W0", "W1", "W2", "W3"];
    let products: Vec<(&str, u64, Option<u64>)> = names
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, 300 + i as u64, None))
        .collect();
    let woo = WooSim::start(SECRET, WOO_KEY, WOO_SECRET, &products);
    for (sku, level) in names.iter().zip([12, 5, 7, 3]) {
        woo.set_level(sku, level);
    }
    let ids: Vec<String> = (0..4).map(|i| (300 + i).to_string()).collect();
    let rows: Vec<(&str, &str, &str)> = names
        .iter()
        .zip(&ids)
        .map(|(s, id)| (*s, "woo", id.as_str()))
        .collect();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let extra = format!("listen = \"127.0.0.1:{port}\"\n")
        + &woo_channel("woo", &woo.url(), SECRET, channel_extra)
        + &catalog(&data, &rows);
    let server = Server::start_with(&data, &extra, None);
    woo.set_webhook_url(&server.url("/webhooks/woo"));
    Rig {
        config: data.with_extension("toml"),
        server,
        woo,
        dir,
    }
}

/// Runs a `lockstep` command against the rig's config; its stdout, or a panic with
/// its stderr.
fn command(rig: &Rig, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(&rig.config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "lockstep {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs a `lockstep` command expected to fail; its stderr.
fn command_fails(rig: &Rig, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(&rig.config)
        .output()
        .unwrap();
    assert!(!out.status.success(), "lockstep {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn channel_state(server: &Server) -> Value {
    let (status, body) = server.get("/v1/channels");
    assert_eq!(status, 200, "{body}");
    body["channels"][0].clone()
}

#[test]
fn a_new_channel_writes_nothing_until_approved_then_converges() {
    // Left to its default: the fleet's blocks push from the start unless told.
    let rig = rig("# first_sync: its default");
    assert_eq!(channel_state(&rig.server)["sync"], "observing");
    // Our counts: W0 as the site shows it, W1 sold out, W2 more, W3 fewer.
    let counts = [("W0", 12), ("W1", 0), ("W2", 20), ("W3", 1)];
    for (sku, on_hand) in counts {
        count(&rig.server, sku, on_hand);
    }
    // Long enough for a push of the WooCommerce pace (seconds, not minutes).
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        rig.woo.calls().is_empty(),
        "an observing channel was written: {:?}",
        rig.woo.calls()
    );
    assert_eq!(rig.woo.level("W1"), Some(5));
    // Reconciling it now would write: refused, with what to do instead.
    let response = Server::client()
        .post(rig.server.url("/v1/reconcile?channel=woo"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 409);
    let body: Value = response.json().unwrap();
    assert_eq!(body["error"], "channel_observing", "{body}");

    // The plan: three listings would change, W1 would go to 0.
    let (status, plan) = rig.server.get("/v1/channels/woo/plan");
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["plan"]["checked"], 4, "{plan}");
    assert_eq!(plan["plan"]["changes"], 3, "{plan}");
    assert_eq!(
        plan["plan"]["to_zero"],
        json!([{"sku": "W1", "shown": 5, "target": 0}]),
        "{plan}"
    );
    assert_eq!(plan["plan"]["largest_increases"][0]["sku"], "W2", "{plan}");
    assert_eq!(plan["plan"]["largest_decreases"][0]["sku"], "W1", "{plan}");
    let printed = command(&rig, &["plan"]);
    assert!(printed.contains("3 would change"), "{printed}");
    assert!(
        printed.contains("would go to 0 from above 0 (1):\n    W1 5 -> 0"),
        "{printed}"
    );
    assert!(
        rig.woo.calls().is_empty(),
        "the plan wrote: {:?}",
        rig.woo.calls()
    );

    let approved = command(&rig, &["approve", "woo", "--by", "pat"]);
    assert!(approved.contains("approved by pat"), "{approved}");
    let converged = rig.woo.wait_for(WAIT, |levels| {
        counts.iter().all(|(sku, n)| levels[*sku] == *n)
    });
    assert!(
        converged.is_some(),
        "never converged: {:?}",
        rig.woo.levels()
    );
    let again = command(&rig, &["approve", "woo"]);
    assert!(again.contains("pushing already"), "{again}");

    // The audit names who approved, by HTTP and in `lockstep audit`.
    let (_, audit) = rig.server.get("/v1/audit?sku=W1");
    let changes = audit["sync_changes"].as_array().unwrap();
    let last = changes.last().unwrap();
    assert_eq!(
        (&last["state"], &last["by"]),
        (&json!("pushing"), &json!("pat")),
        "{audit}"
    );
    let printed = command(&rig, &["audit", "W1"]);
    assert!(
        printed.contains("channel woo: pushing (approved, by pat)"),
        "{printed}"
    );

    // Approved stays approved across a kill -9.
    let server = kill9_and_restart(rig.server);
    assert_eq!(channel_state(&server)["sync"], "pushing");
    drop(rig.dir);
}

#[test]
fn observing_survives_a_restart_and_first_sync_push_approves() {
    let rig = rig("# first_sync: its default");
    count(&rig.server, "W1", 0);
    let data = rig.server.data_dir.clone();
    let server = kill9_and_restart(rig.server);
    assert_eq!(channel_state(&server)["sync"], "observing");
    std::thread::sleep(Duration::from_secs(2));
    assert!(rig.woo.calls().is_empty(), "{:?}", rig.woo.calls());
    // The same channel, now told to push: approved by the config at the start.
    server.stop();
    let config = std::fs::read_to_string(data.with_extension("toml"))
        .unwrap()
        .replace("# first_sync: its default", "first_sync = \"push\"");
    std::fs::write(data.with_extension("toml"), &config).unwrap();
    let extra = config.split_once("shards = 2\n").unwrap().1.to_string();
    let server = Server::start_with(&data, &extra, None);
    let state = channel_state(&server);
    assert_eq!(
        (&state["sync"], &state["by"]),
        (&json!("pushing"), &json!("config")),
        "{state}"
    );
    assert!(rig.woo.wait_for(WAIT, |l| l["W1"] == 0).is_some());
    // A data directory from before first syncs were recorded: its channels (named in
    // its settings history) go on pushing, whatever `first_sync` says.
    server.stop();
    std::fs::remove_file(data.join("lockstep.sync")).unwrap();
    let extra = extra.replace("first_sync = \"push\"", "first_sync = \"observe\"");
    let server = Server::start_with(&data, &extra, None);
    let state = channel_state(&server);
    assert_eq!(
        (&state["sync"], &state["by"]),
        (&json!("pushing"), &json!("lockstep")),
        "{state}"
    );
    drop(rig.dir);
}

#[test]
fn stock_comes_from_a_file_or_from_the_store_and_a_second_import_changes_nothing() {
    let rig = rig("# first_sync: its default");
    // A file with a bad row changes nothing, and says which row.
    let file = rig.dir.path().join("counts.csv");
    std::fs::write(&file, "sku,on_hand\nW0,4\nW1,lots\n").unwrap();
    let error = command_fails(&rig, &["stock", "import", file.to_str().unwrap()]);
    assert!(error.contains("line 3: on_hand \"lots\""), "{error}");
    std::fs::write(&file, "sku,on_hand\nW0,4\nW1,2\nW0,1\n").unwrap();
    let error = command_fails(&rig, &["stock", "import", file.to_str().unwrap()]);
    assert!(error.contains("counted twice (first on line 2)"), "{error}");
    assert_eq!(rig.server.stock("W0"), None);

    std::fs::write(&file, "sku,on_hand\nW0,4\nW1,2\n").unwrap();
    let first = command(&rig, &["stock", "import", file.to_str().unwrap()]);
    assert!(first.contains("2 counts: 2 taken, 0 already"), "{first}");
    // An order in between: the second import of the same file must not undo it.
    count_order(&rig.server, "W0");
    let second = command(&rig, &["stock", "import", file.to_str().unwrap()]);
    assert!(second.contains("2 counts: 0 taken, 2 already"), "{second}");
    assert_eq!(rig.server.stock("W0"), Some((4, 1, 3)));
    assert_eq!(rig.server.stock("W1"), Some((2, 0, 2)));

    // The store is the truth: its levels (12, 5, 7, 3) become what is available.
    let taken = command(&rig, &["stock", "import", "--from", "woo"]);
    assert!(taken.contains("4 listings read: 4 counts taken"), "{taken}");
    let again = command(&rig, &["stock", "import", "--from", "woo"]);
    assert!(again.contains("0 counts taken, 4 already"), "{again}");
    for (sku, level) in [("W0", 12), ("W1", 5), ("W2", 7), ("W3", 3)] {
        assert_eq!(rig.server.stock(sku).unwrap().2, level, "{sku}");
    }
    // So approving it would write nothing, and reading wrote nothing.
    let (_, plan) = rig.server.get("/v1/channels/woo/plan");
    assert_eq!(plan["plan"]["changes"], 0, "{plan}");
    assert!(rig.woo.calls().is_empty(), "{:?}", rig.woo.calls());
}

/// One unit of `sku` ordered through the API.
fn count_order(server: &Server, sku: &str) {
    let (status, body) = server.post_events(&json!({"events": [{
        "sku": sku, "kind": "order_placed", "qty": 1, "order_id": "o-1"
    }]}));
    assert_eq!(status, 200, "{body}");
}
