//! `signed_hooks`: the driver of `benches/peers.sh`'s signed-webhook line. Keeps
//! `--connections` HTTP/1.1 keep-alive connections busy for `--duration` seconds, each
//! request one Shopify `orders/create` webhook for one unit of a SKU drawn from
//! `--skus`, signed as Shopify signs it (`X-Shopify-Hmac-Sha256`: base64 of the
//! HMAC-SHA256 of the body with the app's secret,
//! https://shopify.dev/docs/apps/build/webhooks/subscribe/https#step-5-verify-the-webhook),
//! with its own order, line and event ids, so every request is a new event. wrk cannot
//! sign each request; this driver is pointed at bare hyper too, so the ratio compares the
//! same requests made the same way. Prints `Requests/sec: N` as wrk does (peers.sh reads
//! both alike) and the count of answers other than 200.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rand::Rng;

#[derive(Parser)]
#[command(
    name = "signed_hooks",
    about = "Signed Shopify orders/create webhooks, one event per request, as fast as answered"
)]
struct Args {
    /// Where to send them: `http://HOST:PORT/webhooks/NAME`.
    url: String,
    /// The Shopify app's secret the webhooks are signed with.
    #[arg(long)]
    secret: String,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    #[arg(long, default_value_t = 10_000)]
    skus: u64,
    /// Client threads (wrk's `-t`).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Ids start after this one: a second run against the same lockstep gives
    /// `--first-id` past the first run's, so its webhooks are new events, not duplicates.
    #[arg(long, default_value_t = 0)]
    first_id: u64,
}

/// Counts of a run, shared by the connections.
#[derive(Default)]
struct Counts {
    answered: AtomicU64,
    not_ok: AtomicU64,
    ids: AtomicU64,
}

/// One signed `orders/create` request: the REST Order resource's fields lockstep reads
/// (https://shopify.dev/docs/api/admin-rest/latest/resources/order).
fn request(
    args: &Args,
    authority: &str,
    path: &str,
    counts: &Counts,
) -> hyper::Request<Full<Bytes>> {
    let id = args.first_id + counts.ids.fetch_add(1, Ordering::Relaxed) + 1;
    let sku = rand::rng().random_range(1..=args.skus);
    let now = loadgen::market::rfc3339(loadgen::market::now_us());
    let body = serde_json::json!({
        "id": 5_000_000_000u64 + id,
        "admin_graphql_api_id": format!("gid://shopify/Order/{}", 5_000_000_000u64 + id),
        "created_at": now, "updated_at": now, "cancelled_at": null,
        "financial_status": "paid", "fulfillment_status": null,
        "line_items": [{"id": 9_000_000_000u64 + id, "sku": format!("PEER-{sku}"),
                        "quantity": 1, "current_quantity": 1, "fulfillable_quantity": 1,
                        "fulfillment_status": null}],
        "fulfillments": [], "refunds": [],
    });
    let bytes = serde_json::to_vec(&body).expect("json serializes");
    let signature = loadgen::signing::body_signature(&args.secret, &bytes);
    hyper::Request::post(path)
        .header("host", authority)
        .header("content-type", "application/json")
        .header("x-shopify-topic", "orders/create")
        .header("x-shopify-hmac-sha256", signature)
        .header("x-shopify-shop-domain", "lockstep-peers.myshopify.com")
        .header("x-shopify-api-version", "2026-04")
        .header("x-shopify-webhook-id", format!("wh-{id}"))
        .header("x-shopify-event-id", format!("evt-{id}"))
        .header("x-shopify-triggered-at", now)
        .body(Full::new(Bytes::from(bytes)))
        .expect("a valid request")
}

/// One connection, sending a request as soon as the last is answered until `end`.
async fn connection(args: Arc<Args>, counts: Arc<Counts>, end: Instant) -> anyhow::Result<()> {
    let uri: hyper::Uri = args.url.parse()?;
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow::anyhow!("no host in {}", args.url))?
        .to_string();
    let path = uri.path().to_string();
    let stream = tokio::net::TcpStream::connect(&authority).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    while Instant::now() < end {
        let answer = sender
            .send_request(request(&args, &authority, &path, &counts))
            .await?;
        let ok = answer.status() == hyper::StatusCode::OK;
        answer.into_body().collect().await?;
        counts.answered.fetch_add(1, Ordering::Relaxed);
        if !ok {
            counts.not_ok.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let end = started + Duration::from_secs(args.duration.max(1));
    runtime.block_on(async {
        let tasks: Vec<_> = (0..args.connections.max(1))
            .map(|_| tokio::spawn(connection(args.clone(), counts.clone(), end)))
            .collect();
        for task in tasks {
            if let Ok(Err(e)) = task.await {
                eprintln!("signed_hooks: a connection ended: {e:#}");
            }
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let answered = counts.answered.load(Ordering::Relaxed);
    println!(
        "{answered} requests in {seconds:.2}s, {} connections",
        args.connections
    );
    println!("Requests/sec: {:.2}", answered as f64 / seconds);
    let not_ok = counts.not_ok.load(Ordering::Relaxed);
    if not_ok > 0 {
        println!("Non-200 responses: {not_ok}");
    }
    Ok(())
}
