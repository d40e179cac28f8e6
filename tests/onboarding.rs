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
    let extra = fixed_listen()
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

/// A `listen` line on a free loopback port: the commands find the server by it.
fn fixed_listen() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("listen = \"127.0.0.1:{port}\"\n")
}

/// Runs `lockstep ARGS --config CONFIG`: (success, stdout, stderr).
fn lockstep(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `lockstep`, expected to succeed: its stdout.
fn command_at(config: &std::path::Path, args: &[&str]) -> String {
    let (ok, stdout, stderr) = lockstep(config, args);
    assert!(ok, "lockstep {args:?} failed: {stdout}{stderr}");
    stdout
}

/// A command against the rig's config; its stdout, or a panic with its stderr.
fn command(rig: &Rig, args: &[&str]) -> String {
    command_at(&rig.config, args)
}

/// A command against the rig's config, expected to fail; its stderr.
fn command_fails(rig: &Rig, args: &[&str]) -> String {
    let (ok, _, stderr) = lockstep(&rig.config, args);
    assert!(!ok, "lockstep {args:?} succeeded");
    stderr
}

/// `POST /v1/reconcile?channel=woo`, which must be refused with 409: its error code.
fn reconcile_refusal(rig: &Rig) -> String {
    let response = Server::client()
        .post(rig.server.url("/v1/reconcile?channel=woo"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 409);
    let body: Value = response.json().unwrap();
    body["error"].as_str().unwrap_or_default().to_string()
}

fn channel_state(server: &Server) -> Value {
    server.first_channel()
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
    assert_eq!(reconcile_refusal(&rig), "channel_observing");

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
    // A SKU the server refuses (200 bytes, past 128) after a full request's worth of
    // good rows: refused before any is sent (the first 1,000 were taken, then the rest
    // refused, the file half imported).
    let rows: String = (0..1_000).map(|i| format!("X{i},1\n")).collect();
    let long = "L".repeat(200);
    std::fs::write(&file, format!("sku,on_hand\n{rows}{long},1\n")).unwrap();
    let error = command_fails(&rig, &["stock", "import", file.to_str().unwrap()]);
    assert!(
        error.contains("line 1002: sku") && error.contains("at most 128"),
        "{error}"
    );
    assert_eq!(rig.server.stock("X0"), None, "nothing imported");

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

    // A level beyond any count (a typo of billions) is named and left as it is; the rest
    // of its page is taken (it once failed the whole page, and the import).
    rig.woo.set_level("W3", 5_000_000_000);
    rig.woo.set_level("W2", 9);
    let odd = command(&rig, &["stock", "import", "--from", "woo"]);
    assert!(odd.contains("1 counts taken, 2 already"), "{odd}");
    assert!(
        odd.contains("beyond any count") && odd.contains("W3"),
        "{odd}"
    );
    assert_eq!(rig.server.stock("W2").unwrap().2, 9);
    assert_eq!(rig.server.stock("W3").unwrap().2, 3);
    // A level below zero (the store sold past its stock) is named as such and left as
    // it is: it once passed for a SKU the store does not list.
    rig.woo.set_level("W1", -2);
    let short = command(&rig, &["stock", "import", "--from", "woo"]);
    assert!(short.contains("0 not listed"), "{short}");
    assert!(
        short.contains("1 shown below zero") && short.contains(": W1"),
        "{short}"
    );
    assert_eq!(rig.server.stock("W1").unwrap().2, 5);
}

/// One unit of `sku` ordered through the API.
fn count_order(server: &Server, sku: &str) {
    let (status, body) = server.post_events(&json!({"events": [{
        "sku": sku, "kind": "order_placed", "qty": 1, "order_id": "o-1"
    }]}));
    assert_eq!(status, 200, "{body}");
}

/// A Shopify store of `n` listings (`S0000`.. on inventory items 1000..) and three
/// variants beside them: one without a SKU, one carrying `S0007` again, one untracked.
fn shopify_store(n: usize) -> loadgen::shopify_sim::ShopifySim {
    let names: Vec<String> = (0..n).map(|i| format!("S{i:04}")).collect();
    let items: Vec<(&str, u64)> = names
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), 1000 + i as u64))
        .collect();
    let shop = loadgen::shopify_sim::ShopifySim::start("shop-secret", SHOPIFY_TOKEN, &items);
    shop.add_variant(9000, None, true);
    shop.add_variant(9001, Some("S0007"), true);
    shop.add_variant(9002, Some("UNTRACKED-1"), false);
    shop
}

/// Runs `lockstep catalog discover` on `config`; (success, stdout, stderr).
fn discover(config: &std::path::Path, extra_args: &[&str]) -> (bool, String, String) {
    let args: Vec<&str> = ["catalog", "discover"]
        .into_iter()
        .chain(extra_args.iter().copied())
        .collect();
    lockstep(config, &args)
}

#[test]
fn discovery_links_listings_by_sku_reports_the_rest_and_merges_into_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Shopify: 600 listings, three pages of 250 (on a plan that restores 500 points a
    // second: the third page waits one second, not five).
    let shop = shopify_store(600);
    shop.set_plan(1_000.0, 500.0);
    // WooCommerce: 150 simple products (two pages of 100) and a variable product of
    // two variations, and beside them a product without a SKU, one carrying P0003
    // again, and a variation whose stock is its parent's.
    let names: Vec<String> = (0..150).map(|i| format!("P{i:04}")).collect();
    let mut products: Vec<(&str, u64, Option<u64>)> = names
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), 2000 + i as u64, None))
        .collect();
    products.push(("V0", 3000, Some(1999)));
    products.push(("V1", 3001, Some(1999)));
    let woo = WooSim::start(SECRET, WOO_KEY, WOO_SECRET, &products);
    woo.add_product(2500, None, "", json!(true));
    woo.add_product(2501, None, "P0003", json!(true));
    woo.add_product(3002, Some(1999), "V-SHARED", json!("parent"));
    // The seller's catalog so far: S0001 mapped by hand to another item (it wins), and
    // a row for a SKU no channel lists.
    let catalog_path = dir.path().join("catalog.csv");
    std::fs::write(
        &catalog_path,
        "sku,channel,item_id,location_id\nS0001,shop,999999,\nMANUAL-ONLY,woo,42,\n",
    )
    .unwrap();
    let extra = shopify_channel("shop", &shop.url(), "shop-secret", "2026-04", "")
        + &woo_channel("woo", &woo.url(), SECRET, "")
        + &format!(
            "\n[catalog]\npath = {:?}\n",
            catalog_path.display().to_string()
        );
    let config = write_config(&data, &extra);

    let (ok, stdout, stderr) = discover(&config, &[]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("shop: 603 listings: 598 linked, 1 already in the catalog, 1 without a SKU, 1 SKUs on two or more listings, 1 that cannot be linked"), "{stdout}");
    assert!(
        stdout.contains("SKU \"S0007\" is on 2 listings (1007, 9001)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("item 9002 (UNTRACKED-1) not linked: Shopify does not track"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("SKU \"S0001\": the catalog maps item 999999, the channel lists it on 1001"),
        "{stdout}"
    );
    assert!(stdout.contains("woo: 155 listings: 151 linked, 1 already in the catalog, 1 without a SKU, 1 SKUs on two or more listings, 1 that cannot be linked"), "{stdout}");
    assert!(
        stdout.contains("item 1999/3002 (V-SHARED) not linked: its stock is its parent product's"),
        "{stdout}"
    );
    assert!(
        stdout.contains("catalog SKUs no discovered channel lists: MANUAL-ONLY"),
        "{stdout}"
    );
    // Not a terminal: plain progress lines, a page each.
    assert!(stdout.contains("shop: page 3: 603 listings"), "{stdout}");

    let written = std::fs::read_to_string(&catalog_path).unwrap();
    let has = |row: &str| written.lines().any(|l| l == row);
    assert!(
        has("S0001,shop,999999,"),
        "the seller's row was replaced:\n{written}"
    );
    assert!(has("MANUAL-ONLY,woo,42,"), "{written}");
    assert!(
        has("S0000,shop,1000,") && has("S0599,shop,1599,"),
        "{written}"
    );
    assert!(
        has("P0149,woo,2149,") && has("V1,woo,1999/3001,"),
        "{written}"
    );
    assert!(
        !written.contains("S0007,") && !written.contains("P0003,"),
        "a duplicate was linked:\n{written}"
    );
    assert_eq!(written.lines().count(), 1 + 2 + 598 + 151, "{written}");
    // The catalog it wrote is one lockstep takes.
    let check = Command::new(BIN)
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    // Run again: nothing new, nothing lost.
    let (ok, again, stderr) = discover(&config, &["--channel", "woo"]);
    assert!(ok, "{again}{stderr}");
    assert!(
        again.contains("woo: 155 listings: 0 linked, 152 already in the catalog"),
        "{again}"
    );
    assert_eq!(std::fs::read_to_string(&catalog_path).unwrap(), written);
}

#[test]
fn discovery_stopped_midway_continues_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // 1,500 listings: six pages of about 500 points; at 500 points/s (Plus restores
    // 1,000), a page a second once the first thousand points are spent.
    let shop = shopify_store(1500);
    shop.set_plan(1_000.0, 500.0);
    let out = dir.path().join("catalog.csv");
    let config = write_config(
        &data,
        &shopify_channel("shop", &shop.url(), "shop-secret", "2026-04", ""),
    );
    let mut child = Command::new(BIN)
        .args(["catalog", "discover", "--out"])
        .arg(&out)
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let progress = dir.path().join("catalog.csv.discover");
    let saved = eventually(WAIT, || {
        std::fs::read(&progress)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|v| v["channels"]["shop"]["pages"].as_u64() >= Some(2))
    });
    assert!(saved, "no progress saved");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !out.exists(),
        "a catalog was written before discovery finished"
    );

    let (ok, stdout, stderr) = discover(&config, &["--out", out.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("shop: resuming after"), "{stdout}");
    assert!(
        stdout.contains("shop: 1503 listings: 1499 linked"),
        "{stdout}"
    );
    assert!(!progress.exists(), "the progress file outlived the run");
    let written = std::fs::read_to_string(&out).unwrap();
    assert_eq!(written.lines().count(), 1 + 1499, "{written}");
}

#[test]
fn discovery_reads_every_kind_of_channel_into_the_catalog_it_would_be_given_by_hand() {
    use loadgen::fleet::Fleet;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fleet = Fleet::start("D", 30);
    // Beside each store's 30 listings, what a real store also has.
    let bc = fleet.get::<loadgen::bigcommerce_sim::BigCommerceSim>();
    bc.add_variant(999_990, "");
    bc.add_variant(999_991, "D3");
    fleet
        .get::<loadgen::amazon_sim::AmazonSim>()
        .add_fba_listing("FBA-1");
    let ebay = fleet.get::<loadgen::ebay_sim::EbaySim>();
    ebay.add_offer("D4", Some("119999"), "599999");
    ebay.add_offer("D5", None, "599998");
    ebay.add_item("D-UNOFFERED");
    fleet
        .get::<loadgen::walmart_sim::WalmartSim>()
        .add_item("WM-EXTRA");
    let etsy = fleet.get::<loadgen::etsy_sim::EtsySim>();
    etsy.add_product("4000", "");
    etsy.add_product("4000", "D1");
    let tiktok = fleet.get::<loadgen::tiktok_sim::TikTokSim>();
    tiktok.add_sku("170", "99990", "");
    tiktok.add_sku("170", "99991", "D2");
    // And enough more that every list with pages under 250 takes two or more.
    for k in 0..250 {
        bc.add_variant(800_000 + k, &format!("BCX{k}"));
    }
    for k in 0..100 {
        etsy.add_product(&format!("5{k:03}"), &format!("ETX{k}"));
        tiktok.add_sku(&format!("9{k:03}"), "1", &format!("TTX{k}"));
    }
    for k in 0..40 {
        fleet
            .get::<loadgen::walmart_sim::WalmartSim>()
            .add_item(&format!("WMX{k}"));
    }
    let out = dir.path().join("catalog.csv");
    let config = write_config(&data, &fleet.channels_config(|_| String::new()));

    let (ok, stdout, stderr) = discover(&config, &["--out", out.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    for line in [
        "shop: 30 listings: 30 linked, 0 already in the catalog, 0 without a SKU, 0 SKUs on two or more listings, 0 that cannot be linked",
        "woo: 30 listings: 30 linked,",
        "bc: 282 listings: 279 linked, 0 already in the catalog, 1 without a SKU, 1 SKUs on two or more listings, 0 that cannot",
        "amazon: 31 listings: 30 linked, 0 already in the catalog, 0 without a SKU, 0 SKUs on two or more listings, 1 that cannot",
        "ebay: 33 listings: 29 linked, 0 already in the catalog, 0 without a SKU, 1 SKUs on two or more listings, 2 that cannot",
        "walmart: 71 listings: 71 linked,",
        "etsy: 134 listings: 131 linked, 0 already in the catalog, 1 without a SKU, 1 SKUs on two or more listings, 0 that cannot",
        "tiktok: 132 listings: 129 linked, 0 already in the catalog, 1 without a SKU, 1 SKUs on two or more listings, 0 that cannot",
        "erp: takes lockstep's SKUs as they are: nothing to discover",
        "item FBA-1 (FBA-1) not linked: fulfilled by Amazon",
        "item unpublished/599998 (D5) not linked: offer 599998 is not published",
        "item D-UNOFFERED (D-UNOFFERED) not linked: the inventory item has no offer",
        "SKU \"D4\" is on 2 listings (1104/5004, 119999/599999)",
        // Pages: 250 variants, 20 listings, 50 items, 100 listings and 100 products a page
        // (Etsy's third call is the next state's).
        "bc: page 2:",
        "amazon: page 2:",
        "walmart: page 2:",
        "etsy: page 3:",
        "tiktok: page 2:",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    // Every row the fleet's hand-written catalog has, discovery wrote, except the SKUs
    // left for the seller to choose; Amazon and Walmart list the seller's own SKUs.
    let written = std::fs::read_to_string(&out).unwrap();
    let rows: std::collections::BTreeSet<&str> = written.lines().collect();
    let left = ["D3,bc,", "D4,ebay,", "D1,etsy,", "D2,tiktok,"];
    for row in fleet.catalog_csv().lines().skip(1) {
        let row = match row.split(',').collect::<Vec<_>>().as_slice() {
            [_, channel @ ("amazon" | "walmart"), id, _] => format!("{id},{channel},{id},"),
            _ => row.to_string(),
        };
        if left.iter().any(|l| row.starts_with(l)) {
            assert!(!rows.contains(row.as_str()), "{row} was linked");
        } else {
            assert!(
                rows.contains(row.as_str()),
                "{row} missing from:\n{written}"
            );
        }
    }
    assert!(rows.contains("WM-EXTRA,walmart,WM-EXTRA,"), "{written}");
}

#[test]
fn every_step_of_the_first_day_works_on_every_kind_of_channel() {
    use loadgen::fleet::Fleet;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fleet = Fleet::start("E", 10);
    let out = dir.path().join("catalog.csv");
    let (ok, stdout, stderr) = discover(
        &write_config(&data, &fleet.channels_config(|_| String::new())),
        &["--out", out.to_str().unwrap()],
    );
    assert!(ok, "{stdout}{stderr}");
    // With the catalog just written: all of them observing, each store's levels taken
    // as counts, a plan of each, each approved.
    let extra = fixed_listen()
        + &fleet.channels_config(|_| "# first_sync: its default".into())
        + &format!("\n[catalog]\npath = {:?}\n", out.display().to_string());
    let server = Server::start_with(&data, &extra, None);
    let config = data.with_extension("toml");
    let lockstep = |args: &[&str]| command_at(&config, args);
    let native = [
        "shop", "woo", "bc", "amazon", "ebay", "walmart", "etsy", "tiktok",
    ];
    for channel in native {
        let taken = lockstep(&["stock", "import", "--from", channel]);
        // Every one of the ten SKUs read (Etsy's store has one listing more).
        let read: usize = taken
            .strip_prefix(&format!("{channel}: "))
            .and_then(|rest| rest.split_once(" listings read"))
            .and_then(|(n, _)| n.parse().ok())
            .unwrap_or(0);
        assert!(
            read >= 10 && !taken.contains("could not be read"),
            "{taken}"
        );
    }
    let plan = lockstep(&["plan"]);
    for channel in native {
        assert!(
            plan.contains(&format!("{channel} (")),
            "no plan of {channel}:\n{plan}"
        );
    }
    for channel in native.iter().chain(&["erp"]) {
        let approved = lockstep(&["approve", channel]);
        assert!(approved.contains("approved by"), "{approved}");
    }
    let (_, channels) = server.get("/v1/channels");
    let all = channels["channels"].as_array().unwrap();
    assert!(all.iter().all(|c| c["sync"] == "pushing"), "{channels}");
}

#[test]
fn a_plan_waits_out_a_channel_that_answers_429() {
    let rig = rig("# first_sync: its default");
    count(&rig.server, "W0", 4);
    // The host allows one call every two seconds: the second plan's read is a 429 at
    // first, and is asked again after its Retry-After instead of failing the plan.
    rig.woo.set_rate_limit(0.5, 1);
    for _ in 0..2 {
        let (status, plan) = rig.server.get("/v1/channels/woo/plan");
        assert_eq!(status, 200, "{plan}");
        assert_eq!(plan["plan"]["checked"], 1, "{plan}");
    }
}

#[test]
fn a_paused_channel_is_written_nothing_across_a_restart_and_catches_up_when_resumed() {
    let rig = rig("first_sync = \"push\"");
    count(&rig.server, "W0", 10);
    assert!(rig.woo.wait_for(WAIT, |l| l["W0"] == 10).is_some());
    let paused = command(&rig, &["pause", "woo", "--by", "ops"]);
    assert!(paused.contains("woo: paused by ops"), "{paused}");
    let writes = rig.woo.calls().len();
    count(&rig.server, "W0", 3);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rig.woo.calls().len(), writes, "{:?}", rig.woo.calls());
    assert_eq!(rig.woo.level("W0"), Some(10));
    let waiting = "lockstep_outbox_skus{channel=\"woo\"}";
    assert_eq!(rig.server.metric(waiting), 1.0, "W0 waits");
    // A reconciliation would write: refused, naming the pause.
    assert_eq!(reconcile_refusal(&rig), "channel_paused");
    // Approving it is no way round the pause.
    let refused = command_fails(&rig, &["approve", "woo"]);
    assert!(
        refused.contains("was approved and is paused: resume it"),
        "{refused}"
    );

    let rig = Rig {
        server: kill9_and_restart(rig.server),
        ..rig
    };
    assert_eq!(channel_state(&rig.server)["sync"], "paused");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(rig.woo.level("W0"), Some(10));
    // The backlog the restart found is shown, not a 0 until the outbox next changes.
    assert_eq!(rig.server.metric(waiting), 1.0, "W0 still waits");
    let resumed = command(&rig, &["resume", "woo", "--by", "ops"]);
    assert!(resumed.contains("woo: resumed by ops"), "{resumed}");
    assert!(rig.woo.wait_for(WAIT, |l| l["W0"] == 3).is_some());
    let (_, audit) = rig.server.get("/v1/audit?sku=W0");
    let said: Vec<(&str, &str)> = audit["sync_changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["state"].as_str().unwrap(), c["by"].as_str().unwrap()))
        .collect();
    assert_eq!(
        said,
        [("pushing", "config"), ("paused", "ops"), ("pushing", "ops")],
        "{audit}"
    );
}

/// An ERP (the `webhook` kind) observed, its SKUs mapped to it in the catalog, reading two
/// SKUs a call, lockstep and the ERP each holding 10 of every SKU; lockstep on a fixed
/// port, for the commands.
fn observed_erp(skus: &[&str]) -> (loadgen::webhook_sim::WebhookSim, Server, tempfile::TempDir) {
    const ERP_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let erp = loadgen::webhook_sim::WebhookSim::start(ERP_SECRET);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rows: Vec<(&str, &str, &str)> = skus.iter().map(|sku| (*sku, "erp", *sku)).collect();
    let extra = fixed_listen()
        + &webhook_channel(
            "erp",
            &erp.url(),
            ERP_SECRET,
            "batch_max = 2\nfirst_sync = \"observe\"",
        )
        + &catalog(&data, &rows);
    let server = Server::start_with(&data, &extra, None);
    for sku in skus {
        assert_eq!(server.put_sku(sku, &json!({"on_hand": 10})).0, 200);
        erp.set_level(sku, 10);
    }
    (erp, server, dir)
}

/// A store that answers none of a plan's or an import's reads, one or two of them (fewer
/// than the three failures that stop a reader none of whose reads worked; a wrong token
/// looks like this): both fail, rather than pass for a store with nothing to say.
#[test]
fn a_plan_and_an_import_that_no_read_answered_fail() {
    let (erp, server, _dir) = observed_erp(&["A", "B", "C", "D"]);
    erp.fail_reads_naming(&["A", "C"], u32::MAX);
    for (verb, path) in [
        ("GET", "/v1/channels/erp/plan"),
        ("POST", "/v1/channels/erp/import-levels"),
    ] {
        let request = Server::client().request(verb.parse().unwrap(), server.url(path));
        let (status, answer) = status_json(request.send().unwrap());
        assert_eq!(status, 502, "{path}: {answer}");
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|m| m.contains("2 reads failed, none having worked: HTTP 503")),
            "{path}: {answer}"
        );
    }
}

/// A store whose first answer to a plan and to an import is a blip (one 503, then
/// answers as it should): the first read is tried again and both take every listing.
/// With no read yet that worked, that first read's listings were counted refused, out of
/// the plan and out of the import, until each was run again.
#[test]
fn a_plan_and_an_import_read_again_a_first_read_the_store_failed_once() {
    let (erp, server, _dir) = observed_erp(&["A", "B", "C", "D"]);
    erp.set_level("D", 15);
    erp.fail_reads_naming(&["A"], 1);
    let (status, answer) = server.get("/v1/channels/erp/plan");
    assert_eq!(status, 200, "{answer}");
    let plan = &answer["plan"];
    assert_eq!(
        (&plan["checked"], &plan["changes"], &plan["unread"]),
        (&json!(4), &json!(1), &json!(0)),
        "{answer}"
    );
    erp.fail_reads_naming(&["A"], 1);
    let (status, answer) = status_json(
        Server::client()
            .post(server.url("/v1/channels/erp/import-levels"))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["report"]["read"], &answer["report"]["unread"]),
        (&json!(4), &json!([])),
        "{answer}"
    );
    assert_eq!(server.stock("D"), Some((15, 0, 15)));
    // Each blip cost one read more, no more: A and B read twice per reader.
    let reads_of_a = erp
        .reads()
        .iter()
        .filter(|r| r.skus.contains(&"A".to_string()))
        .count();
    assert_eq!(reads_of_a, 4, "{:?}", erp.reads());
}

/// A listing the store refuses to read while it answers the others (deleted, unmapped)
/// is left out of the plan and out of a stock import, and named; the rest is planned and
/// imported whole. A store that is down fails both.
#[test]
fn a_plan_and_an_import_name_the_listings_the_channel_refuses_and_take_the_rest() {
    let (erp, server, _dir) = observed_erp(&["A", "B", "C", "D", "E", "F"]);
    let data = server.data_dir.clone();
    erp.set_level("F", 15);
    // Every read naming C fails; the store answers the others (C and D are one read).
    erp.fail_reads_naming(&["C"], u32::MAX);
    let (status, answer) = server.get("/v1/channels/erp/plan");
    assert_eq!(status, 200, "{answer}");
    let plan = &answer["plan"];
    assert_eq!(
        (
            &plan["checked"],
            &plan["changes"],
            &plan["unread"],
            &plan["unread_skus"]
        ),
        (&json!(4), &json!(1), &json!(2), &json!(["C", "D"])),
        "{answer}"
    );
    assert_eq!(
        plan["largest_decreases"],
        json!([{"sku": "F", "shown": 15, "target": 10}]),
        "{answer}"
    );
    assert!(
        plan["unread_reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("503")),
        "{answer}"
    );
    let printed = command_at(&data.with_extension("toml"), &["plan"]);
    assert!(
        printed.contains("2 listings could not be read and are not in this plan (C, D): "),
        "{printed}"
    );
    let imported = command_at(
        &data.with_extension("toml"),
        &["stock", "import", "--from", "erp"],
    );
    assert!(
        imported.contains("erp: 4 listings read: 4 counts taken")
            && imported.contains(
                "2 could not be read (the channel answered the others), left as they are: C, D (HTTP 503"
            ),
        "{imported}"
    );
    assert_eq!(server.stock("F"), Some((15, 0, 15)));
    // Down after A and B: the plan's read of them is tried again and fails too; the
    // import after it has no read that worked to try again, and stops at three failures.
    erp.go_down_after_reading("B");
    for (verb, path, why) in [
        (
            "GET",
            "/v1/channels/erp/plan",
            "the channel is down: HTTP 503",
        ),
        (
            "POST",
            "/v1/channels/erp/import-levels",
            "3 reads failed in a row, none having worked: HTTP 503",
        ),
    ] {
        let request = Server::client().request(verb.parse().unwrap(), server.url(path));
        let (status, answer) = status_json(request.send().unwrap());
        assert_eq!(status, 502, "{path}: {answer}");
        assert!(
            answer["message"].as_str().is_some_and(|m| m.contains(why)),
            "{path}: {answer}"
        );
    }
}

/// A WooCommerce store of more simple products than one read answers (`per_page` is at
/// most 100): the import reads every one. It once sent the ids of a whole page of 1,000
/// SKUs in one read, and the products past the first 100 came back "not listed".
#[test]
fn an_import_from_a_store_of_more_products_than_one_read_answers_takes_them_all() {
    let names: Vec<String> = (0..150).map(|i| format!("P{i:03}")).collect();
    let ids: Vec<String> = (0..150).map(|i| (1_000 + i).to_string()).collect();
    let products: Vec<(&str, u64, Option<u64>)> = names
        .iter()
        .zip(&ids)
        .map(|(sku, id)| (sku.as_str(), id.parse().unwrap(), None))
        .collect();
    let woo = WooSim::start(SECRET, WOO_KEY, WOO_SECRET, &products);
    for sku in &names {
        woo.set_level(sku, 7);
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rows: Vec<(&str, &str, &str)> = names
        .iter()
        .zip(&ids)
        .map(|(sku, id)| (sku.as_str(), "woo", id.as_str()))
        .collect();
    let extra =
        fixed_listen() + &woo_channel("woo", &woo.url(), SECRET, "") + &catalog(&data, &rows);
    let server = Server::start_with(&data, &extra, None);
    let taken = command_at(
        &data.with_extension("toml"),
        &["stock", "import", "--from", "woo"],
    );
    assert!(
        taken.contains("woo: 150 listings read: 150 counts taken, 0 already taken by an earlier import of the same levels, 0 not listed"),
        "{taken}"
    );
    assert_eq!(server.stock("P149"), Some((7, 0, 7)));
}
