//! The operator console in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `.ci/run` installs; without them the test says so and
//! skips), driven over WebDriver: sign in with the admin token, see the channels of a
//! running engine with a simulated store, watch a channel's row change without a reload.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use loadgen::woo_sim::WooSim;
use serde_json::json;

const TOKEN: &str = "console-admin-token";
const SECRET: &str = "woo-webhook-secret";

/// chromedriver on a free port, killed when dropped.
struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromium() -> Option<Driver> {
    let found = |p: &str| std::path::Path::new(p).exists();
    if !found("/usr/bin/chromium") || !found("/usr/bin/chromedriver") {
        eprintln!("skipped: Debian's chromium and chromium-driver are not installed (.ci/run installs them)");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let ready = eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(ready, "chromedriver did not listen");
    Some(Driver(child, port))
}

#[test]
fn an_operator_signs_in_and_sees_the_channels_live() {
    let Some(driver) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let woo = WooSim::start(SECRET, WOO_KEY, WOO_SECRET, &[("C0", 500, None)]);
    // A second site, new to the data directory: it observes until approved.
    let woo2 = WooSim::start(SECRET, WOO_KEY, WOO_SECRET, &[("C0", 600, None)]);
    let extra = woo_channel("woo", &woo.url(), SECRET, "first_sync = \"push\"")
        + &woo_channel("woo2", &woo2.url(), SECRET, "# first_sync: its default")
        // An ERP that is down: nothing listens on the discard port.
        + &webhook_channel("erp", "http://127.0.0.1:9", WEBHOOK_SECRET, "")
        + &catalog(&data, &[("C0", "woo", "500"), ("C0", "woo2", "600")]);
    let server = Server::start_with(
        &data,
        &format!("admin_token = \"{TOKEN}\"\n{extra}"),
        Some(TOKEN),
    );
    woo.set_webhook_url(&server.url("/webhooks/woo"));
    // Every console answer carries the policy that lets it load only its own assets.
    let login = Server::client()
        .get(server.url("/console/login"))
        .send()
        .unwrap();
    let csp = login.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let browser = runtime.block_on(session(&driver, 800));
    let base = server.base.clone();
    let url = |path: &str| -> reqwest::Url { format!("{base}{path}").parse().unwrap() };
    runtime.block_on(async {
        // Not signed in: the console sends the browser to the login form.
        browser.goto(url("/console").as_str()).await.unwrap();
        browser.wait().for_url(url("/console/login")).await.unwrap();
        // A wrong token is refused on the page.
        type_into(&browser, "#token", "not-it").await;
        click(&browser, "#sign-in").await;
        let error = text(&browser, "#login-error").await;
        assert!(error.contains("not the admin token"), "{error}");
        type_into(&browser, "#name", "pat").await;
        type_into(&browser, "#token", TOKEN).await;
        click(&browser, "#sign-in").await;
        browser.wait().for_url(url("/console")).await.unwrap();
        // The session cookie is out of the page's reach and never sent cross-site.
        let cookie = browser.get_named_cookie("lockstep_session").await.unwrap();
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
        let row = text(&browser, "tr[data-channel=\"woo\"]").await;
        assert!(
            row.contains("woo") && row.contains("woocommerce") && row.contains("pushing"),
            "{row}"
        );
    });
    // A count pushed to the store: the row's push count rises without a reload.
    count(&server, "C0", 7);
    assert!(woo
        .wait_for(Duration::from_secs(10), |l| l["C0"] == 7)
        .is_some());
    runtime.block_on(async {
        let pushes = "tr[data-channel=\"woo\"] [data-field=\"count\"]";
        let shown = until(&browser, pushes, Duration::from_secs(5), |t| t != "0").await;
        assert_ne!(shown, "0", "the row never showed the push");
        // Propagation over the last five minutes, in the row and on its plot.
        let p99 = until(
            &browser,
            "tr[data-channel=\"woo\"] [data-field=\"p99\"]",
            Duration::from_secs(3),
            |t| t.ends_with(" ms"),
        )
        .await;
        assert!(p99.ends_with(" ms"), "{p99}");
        let plot = element(&browser, "svg[data-plot=\"woo\"]").await;
        let points = plot.attr("data-points").await.unwrap().unwrap_or_default();
        assert!(
            points.parse::<u32>().unwrap_or(0) >= 1,
            "the plot has no point: {points:?}"
        );
        // The ERP that is down says so, and why.
        let erp = "tr[data-channel=\"erp\"] [data-field=\"state\"]";
        let state = until(&browser, erp, Duration::from_secs(5), |t| t == "failing").await;
        assert_eq!(state, "failing");
        let detail = text(&browser, "tr[data-channel=\"erp\"] [data-field=\"detail\"]").await;
        assert!(
            detail.contains("failed in a row since") && detail.contains("onnection refused"),
            "{detail}"
        );
        // The engine's row: the count taken in the last 10 s.
        // (Whole seconds only: it shows once the second of the count has passed.)
        let events = "[data-engine] [data-field=\"events_per_second\"]";
        let rate = until(&browser, events, Duration::from_secs(3), |t| {
            !t.starts_with("0.0/s")
        })
        .await;
        assert!(!rate.starts_with("0.0/s"), "{rate}");
        assert_eq!(text(&browser, "#oversells-today").await, "0");
        screenshot(&browser, &dir, "console-overview.png").await;
        // Find the SKU by a part of its name, in either case, and open its page.
        click(&browser, "#nav-skus").await;
        element(&browser, "#match")
            .await
            .select_by_value("contains")
            .await
            .unwrap();
        type_into(&browser, "#q", "c0").await;
        click(&browser, "#find").await;
        browser
            .wait()
            .for_url(url("/console/skus?match=contains&q=c0"))
            .await
            .unwrap();
        click(&browser, "a[data-sku=\"C0\"]").await;
        browser
            .wait()
            .for_url(url("/console/skus/C0"))
            .await
            .unwrap();
        assert_eq!(text(&browser, "#sku-name").await, "C0");
        assert_eq!(text(&browser, "#available").await, "7");
    });
    // An order on the store: its record is on the SKU's page within a second, no reload.
    woo.place_order(&[("C0", 2)]);
    let placed = std::time::Instant::now();
    runtime.block_on(async {
        let rows = until(&browser, "#audit tbody", Duration::from_secs(1), |t| {
            t.contains("order_placed")
        })
        .await;
        assert!(
            rows.contains("order_placed"),
            "the order is not on the page {:?} after it was placed:\n{rows}",
            placed.elapsed()
        );
        assert_eq!(text(&browser, "#available").await, "5");
        // The channel table follows without a reload: the store's target is now 5.
        let target = "#sku-channels tr[data-channel=\"woo\"] [data-field=\"target\"]";
        let shown = until(&browser, target, Duration::from_secs(3), |t| t == "5").await;
        assert_eq!(shown, "5", "the channel table did not follow the order");
        screenshot(&browser, &dir, "console-sku.png").await;
        // Approve the observing site from the overview (the page asks first).
        browser.goto(url("/console").as_str()).await.unwrap();
        click(
            &browser,
            "button[data-action=\"approve\"][data-channel=\"woo2\"]",
        )
        .await;
        browser.accept_alert().await.unwrap();
        let done = text(&browser, "#done").await;
        assert_eq!(done, "woo2: approved by pat");
        let state = "tr[data-channel=\"woo2\"] [data-field=\"state\"]";
        assert_eq!(text(&browser, state).await, "pushing");
        // Pause the first; then a count from the SKU's page reaches only the second.
        click(
            &browser,
            "button[data-action=\"pause\"][data-channel=\"woo\"]",
        )
        .await;
        browser.accept_alert().await.unwrap();
        assert_eq!(text(&browser, "#done").await, "woo: paused by pat");
        browser
            .goto(url("/console/skus/C0").as_str())
            .await
            .unwrap();
        type_into(&browser, "#on-hand-input", "9").await;
        click(&browser, "#set-count").await;
        browser.accept_alert().await.unwrap();
        let done = text(&browser, "#done").await;
        assert_eq!(done, "C0: counted 9 on hand, by pat");
        let rows = text(&browser, "#audit tbody").await;
        assert!(
            rows.contains("counted") && rows.contains("console"),
            "{rows}"
        );
        // The live audit, filtered to adjustments.
        click(&browser, "#nav-audit").await;
        browser.wait().for_url(url("/console/audit")).await.unwrap();
        element(&browser, "#f-kind")
            .await
            .select_by_value("adjusted")
            .await
            .unwrap();
        click(&browser, "#filter").await;
        browser
            .wait()
            .for_url(url("/console/audit?channel=&kind=adjusted&outcome="))
            .await
            .unwrap();
        element(&browser, "#audit tbody").await;
    });
    let (status, _) = server.post_events(&json!({"events": [
        {"sku": "C0", "kind": "counted", "qty": 20, "idempotency_key": "c-20"},
        {"sku": "C0", "kind": "adjusted", "qty": -1, "idempotency_key": "a-1"},
    ]}));
    assert_eq!(status, 200);
    runtime.block_on(async {
        let rows = until(&browser, "#audit tbody", Duration::from_secs(2), |t| {
            t.contains("adjusted")
        })
        .await;
        assert!(rows.contains("adjusted") && rows.contains("C0"), "{rows}");
        assert!(
            !rows.contains("counted"),
            "the filter let a count through: {rows}"
        );
        browser.close().await.unwrap();
    });
    // 20 on hand less 1, 2 committed: the approved site shows 17; the paused one keeps
    // its 5.
    assert!(woo2
        .wait_for(Duration::from_secs(10), |l| l["C0"] == 17)
        .is_some());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(woo.level("C0"), Some(5));
}

/// The SKU search over HTTP (no browser needed): a substring in either case, paged in
/// SKU order across the shards, other SKUs left out; a prefix; an unknown match refused.
#[test]
fn a_search_by_substring_pages_in_sku_order() {
    let dir = tempfile::tempdir().unwrap();
    // No admin token, on loopback: the console is served without sign-in.
    let server = Server::start_with(&dir.path().join("data"), "", None);
    let mut events: Vec<serde_json::Value> = (0..130)
        .map(|i| event(&format!("i{i}"), &format!("Item-{i:03}"), "counted", 5))
        .collect();
    for other in ["Alpha-tem", "Item_000", "Zulu-1", "Box/1 A?"] {
        events.push(event(other, other, "counted", 1));
    }
    post_ok(&server, events);
    let skus_of = |query: &str| -> (Vec<String>, Option<String>) {
        let html = server.text(&format!("/console/skus?{query}"));
        let found = html
            .split("data-sku=\"")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap().to_string())
            .collect();
        let next = html
            .split("id=\"next\"")
            .next()
            .filter(|_| html.contains("id=\"next\""))
            .and_then(|before| before.rsplit("after=").next())
            .map(|after| after.split('"').next().unwrap().to_string());
        (found, next)
    };
    let names = |range: std::ops::Range<usize>| -> Vec<String> {
        range.map(|i| format!("Item-{i:03}")).collect()
    };
    // "TEM-" in any case: every Item- SKU and none of the others, 50 a page.
    let (first, next) = skus_of("match=contains&q=TEM-");
    assert_eq!(first, names(0..50));
    assert_eq!(next.as_deref(), Some("Item-049"));
    let (second, next) = skus_of("match=contains&q=TEM-&after=Item-049");
    assert_eq!(second, names(50..100));
    assert_eq!(next.as_deref(), Some("Item-099"));
    let (third, next) = skus_of("match=contains&q=TEM-&after=Item-099");
    assert_eq!(third, names(100..130));
    assert_eq!(next, None);
    // A prefix is case-sensitive, as SKUs are.
    assert_eq!(skus_of("match=prefix&q=Item-12").0, names(120..130));
    assert!(skus_of("q=item-12").0.is_empty());
    // A SKU with `/`, a space and `?` in it: its link, its page and its stream work (the
    // page escapes `/` as `&#x2f;`, which the browser reads back as `/`).
    let html = Server::client()
        .get(server.url("/console/skus?match=contains&q=box%2F"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let href = html
        .split("href=\"")
        .find(|rest| {
            rest.contains("data-sku=\"Box&#x2f;1 A?\"") && rest.starts_with("/console/skus/")
        })
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no link to Box/1 A? in {html}"))
        .to_string();
    let sku_page = Server::client().get(server.url(&href)).send().unwrap();
    assert_eq!(sku_page.status(), 200, "{href}");
    let sku_html = sku_page.text().unwrap();
    assert!(
        sku_html.contains("<h1 id=\"sku-name\">Box&#x2f;1 A?</h1>"),
        "{sku_html}"
    );
    let stream = sku_html
        .split("data-sku-stream=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    let opened = Server::client().get(server.url(&stream)).send().unwrap();
    assert_eq!(opened.status(), 200, "{stream}");
    assert_eq!(opened.headers()["content-type"], "text/event-stream");
    drop(opened);
    // A SKU never seen has no stream, and says so.
    let unknown = Server::client()
        .get(server.url("/console/stream/sku/Nope"))
        .send()
        .unwrap();
    assert_eq!(unknown.status(), 404);
    // Nothing matches: an empty page.
    assert!(skus_of("match=contains&q=nothing").0.is_empty());
    let refused = Server::client()
        .get(server.url("/console/skus?match=regex&q=x"))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused.text().unwrap().contains("`prefix` or `contains`"));
    let long = Server::client()
        .get(server.url(&format!(
            "/console/skus?match=contains&q={}",
            "x".repeat(5_000)
        )))
        .send()
        .unwrap();
    assert_eq!(long.status(), 400);
    assert!(long.text().unwrap().contains("q is 5000 bytes"));
}

/// A form or query that gives a field twice (`on_hand=5&on_hand=900`) is refused with
/// 400 naming it, and changes nothing: taking either value would act on something the
/// page never showed the operator as one value.
#[test]
fn a_field_given_twice_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // No admin token, on loopback: the console is served without sign-in.
    let server = Server::start_with(&dir.path().join("data"), "", None);
    post_ok(&server, vec![event("c1", "Twice", "counted", 7)]);
    let client = Server::no_redirects();
    let csrf = console_csrf(&server, "Twice");
    let count = |body: String| {
        client
            .post(server.url("/console/skus/Twice/count"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .unwrap()
    };
    let twice = count(format!("csrf={csrf}&on_hand=5&on_hand=900"));
    assert_eq!(twice.status(), 400);
    assert!(
        twice
            .text()
            .unwrap()
            .contains("on_hand: is given more than once"),
        "the answer names the field"
    );
    let not_utf8 = count(format!("csrf={csrf}&on_hand=%FF"));
    assert_eq!(not_utf8.status(), 400);
    assert_eq!(server.stock("Twice"), Some((7, 0, 7)), "nothing counted");
    // The same form with each field once is taken.
    let once = count(format!("csrf={csrf}&on_hand=5"));
    assert_eq!(once.status(), 303);
    assert_eq!(server.stock("Twice"), Some((5, 0, 5)));
    // A query too.
    let search = client
        .get(server.url("/console/skus?q=T&q=U"))
        .send()
        .unwrap();
    assert_eq!(search.status(), 400);
    assert!(search
        .text()
        .unwrap()
        .contains("q: is given more than once"));
}

/// The notice a page shows after an action (`?done=`) is signed by the server that did
/// it: a link made elsewhere, with words of its own for the operator's page ("token
/// rotated: paste it at ..."), shows nothing; the server's own redirect shows its notice.
#[test]
fn a_notice_the_server_did_not_sign_is_not_shown() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(&dir.path().join("data"), "", None);
    post_ok(&server, vec![event("c1", "Noted", "counted", 7)]);
    let client = Server::no_redirects();
    let forged = "Token rotated: paste the new one at evil.example";
    for path in ["/console", "/console/skus/Noted"] {
        let shown = server.text(&format!(
            "{path}?done=Token%20rotated%3A%20paste%20the%20new%20one%20at%20evil.example"
        ));
        assert!(!shown.contains(forged), "{path}: {shown}");
        let shown = server.text(&format!("{path}?done=Token%20rotated&sig=00"));
        assert!(!shown.contains("Token rotated"), "{path}: {shown}");
    }
    let csrf = console_csrf(&server, "Noted");
    let counted = client
        .post(server.url("/console/skus/Noted/count"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}&on_hand=5"))
        .send()
        .unwrap();
    assert_eq!(counted.status(), 303);
    let location = counted.headers()["location"].to_str().unwrap().to_string();
    assert!(
        server.text(&location).contains("Noted: counted 5 on hand"),
        "{location}"
    );
}

/// A headless Chromium session, `height` pixels tall.
async fn session(driver: &Driver, height: u32) -> Client {
    let caps = json!({"goog:chromeOptions": {
        "binary": "/usr/bin/chromium",
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", format!("--window-size=1280,{height}")],
    }});
    // Plain HTTP to chromedriver on loopback: no TLS stack to choose.
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps.as_object().unwrap().clone())
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("a WebDriver session")
}

/// The README's screenshots of a busy engine: `lockstep demo` (a Shopify store, a
/// WooCommerce site, Amazon and eBay, 40 orders a second with bursts) after 40 s of
/// trading. Not in the suite (it takes a minute and a release build is fairer to it):
/// `LOCKSTEP_SCREENSHOTS=docs cargo test --release --test console -- --ignored`.
#[test]
#[ignore = "a minute of the demo, for the README's screenshots"]
fn screenshots_of_the_demo() {
    use std::io::BufRead;
    let Some(driver) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Command::new(BIN)
        .args(["demo", "--duration", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the demo starts");
    let stdout = demo.stdout.take().unwrap();
    let (lines, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let console = loop {
        let line = said
            .recv_timeout(Duration::from_secs(120))
            .expect("the demo names its console");
        if let Some(url) = line.split("operator console: ").nth(1) {
            break url.trim().to_string();
        }
    };
    std::thread::sleep(Duration::from_secs(40));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let browser = session(&driver, 1000).await;
        browser.goto(&console).await.unwrap();
        // The plots and rows fill from the stream's first event.
        until(&browser, "#updated", Duration::from_secs(5), |t| {
            t.contains("updated")
        })
        .await;
        screenshot(&browser, &dir, "console-overview.png").await;
        browser
            .goto(&format!("{console}/skus/DEMO-007"))
            .await
            .unwrap();
        until(&browser, "#audit tbody", Duration::from_secs(5), |t| {
            t.contains("order_placed")
        })
        .await;
        screenshot(&browser, &dir, "console-sku.png").await;
        browser.close().await.unwrap();
    });
    let _ = demo.kill();
    let _ = demo.wait();
}

/// The README's screenshots: `LOCKSTEP_SCREENSHOTS=docs cargo test --test console`
/// writes them there; otherwise into the test's temporary directory.
async fn screenshot(browser: &Client, dir: &tempfile::TempDir, name: &str) {
    let shot = browser.screenshot().await.unwrap();
    let to = std::env::var("LOCKSTEP_SCREENSHOTS")
        .map_or_else(|_| dir.path().to_path_buf(), std::path::PathBuf::from);
    std::fs::write(to.join(name), shot).unwrap();
}

/// The element `css` names, once the page has it.
async fn element(browser: &Client, css: &str) -> fantoccini::elements::Element {
    let mut tries = 0;
    loop {
        match browser.wait().for_element(Locator::Css(css)).await {
            Ok(found) => return found,
            Err(e) if tries < 5 && page_moved(&e) => tries += 1,
            Err(e) => panic!("no {css}: {e}"),
        }
    }
}

/// Whether a command failed only because the page changed under it, so asking
/// again is the answer: a search sent while a form's answer loads is cut short
/// by Chromium ("aborted by navigation") rather than answered "no such
/// element", and an element the page's live refresh has just replaced is stale.
fn page_moved(e: &fantoccini::error::CmdError) -> bool {
    use fantoccini::error::{CmdError, ErrorStatus};
    match e {
        CmdError::Standard(w) => {
            w.error == ErrorStatus::StaleElementReference
                || w.to_string().contains("aborted by navigation")
        }
        CmdError::NotW3C(answer) => answer.as_str() == Some("aborted by navigation"),
        _ => false,
    }
}

/// The text of `css` as the page shows it now.
async fn text(browser: &Client, css: &str) -> String {
    let mut tries = 0;
    loop {
        match element(browser, css).await.text().await {
            Ok(text) => return text,
            Err(e) if tries < 5 && page_moved(&e) => tries += 1,
            Err(e) => panic!("reading {css}: {e}"),
        }
    }
}

async fn click(browser: &Client, css: &str) {
    element(browser, css).await.click().await.unwrap();
}

async fn type_into(browser: &Client, css: &str, keys: &str) {
    element(browser, css).await.send_keys(keys).await.unwrap();
}

/// The text of `css` once `done` holds of it, or as it is after `within`.
async fn until(
    browser: &Client,
    css: &str,
    within: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let started = std::time::Instant::now();
    loop {
        let now = text(browser, css).await;
        if done(&now) || started.elapsed() >= within {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
