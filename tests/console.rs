//! The operator console in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `.ci/run` installs; without them the test says so and
//! skips), driven over WebDriver: sign in with the admin token, see the channels of a
//! running engine with a simulated store, watch a channel's row change without a reload.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fantoccini::{ClientBuilder, Locator};
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
    let extra = woo_channel("woo", &woo.url(), SECRET, "first_sync = \"push\"")
        + &catalog(&data, &[("C0", "woo", "500")]);
    let server = Server::start_with(
        &data,
        &format!("admin_token = \"{TOKEN}\"\n{extra}"),
        Some(TOKEN),
    );
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
    let browser = runtime.block_on(async {
        let caps = json!({"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800"],
        }});
        // Plain HTTP to chromedriver on loopback: no TLS stack to choose.
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.as_object().unwrap().clone())
            .connect(&format!("http://127.0.0.1:{}", driver.1))
            .await
            .expect("a WebDriver session")
    });
    let base = server.base.clone();
    runtime.block_on(async {
        // Not signed in: the console sends the browser to the login form.
        browser.goto(&format!("{base}/console")).await.unwrap();
        assert!(browser
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/console/login"));
        // A wrong token is refused on the page.
        browser
            .find(Locator::Id("token"))
            .await
            .unwrap()
            .send_keys("not-it")
            .await
            .unwrap();
        browser
            .find(Locator::Id("sign-in"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let error = browser
            .find(Locator::Id("login-error"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(error.contains("not the admin token"), "{error}");
        browser
            .find(Locator::Id("token"))
            .await
            .unwrap()
            .send_keys(TOKEN)
            .await
            .unwrap();
        browser
            .find(Locator::Id("sign-in"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert_eq!(browser.current_url().await.unwrap().path(), "/console");
        // The session cookie is out of the page's reach and never sent cross-site.
        let cookie = browser.get_named_cookie("lockstep_session").await.unwrap();
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
        let row = browser
            .find(Locator::Css("tr[data-channel=\"woo\"]"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
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
        let mut pushes = String::new();
        for _ in 0..50 {
            pushes = browser
                .find(Locator::Css(
                    "tr[data-channel=\"woo\"] [data-field=\"count\"]",
                ))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if pushes != "0" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_ne!(pushes, "0", "the row never showed the push");
        // The README's screenshot: `LOCKSTEP_SCREENSHOTS=docs cargo test --test console`.
        let shot = browser.screenshot().await.unwrap();
        let to = std::env::var("LOCKSTEP_SCREENSHOTS")
            .map_or_else(|_| dir.path().to_path_buf(), std::path::PathBuf::from);
        std::fs::write(to.join("console-overview.png"), shot).unwrap();
        browser.close().await.unwrap();
    });
}
