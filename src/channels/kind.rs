//! The registry of channel kinds: for each kind, its own `[[channels]]` keys and their
//! checks, the form of its catalog ids, and how its adapter is made. The keys every
//! kind shares (`name`, `base_url`, `buffer`, ...) are `config::ChannelConfig`'s; a
//! kind's own keys arrive in `ChannelConfig::settings` and are read here into that kind's
//! `Settings` (declared in its file, beside the adapter that uses them).
//!
//! Adding a kind: its adapter file implementing `Kind`, its name in `config.rs`'s
//! `channel_kinds!` list (which declares `ChannelKind` and `ChannelKind::ALL` together),
//! and one line in `entry` below (an exhaustive match: a kind without it does not
//! compile).

use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::{amazon, bigcommerce, ebay, etsy, shopify, tiktok, walmart, webhook, woocommerce};
use super::{Catalog, ChannelAdapter};
use crate::config::{check_base_url, CatalogRow, ChannelConfig, ChannelKind, Config, ConfigError};
use crate::core::ByChannel;

/// A problem with one key of a channel's block: the key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub reason: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Problem {
        Problem {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// What a channel kind's file gives beside its adapter.
pub trait Kind: ChannelAdapter + Sized {
    /// The kind's own keys of `[[channels]]` (credentials, ids, its limits). Declared
    /// with `#[serde(deny_unknown_fields)]`: a key no kind takes is refused by name.
    type Settings: DeserializeOwned;
    /// Checks what the types alone cannot: required keys, their forms. `channel` holds
    /// the shared keys (some kinds require `webhook_secret`).
    fn check(channel: &ChannelConfig, settings: &Self::Settings) -> Result<(), Problem>;
    /// Checks the form of a catalog `item_id` of this kind (by default any text: kinds
    /// that name items by the seller's SKU).
    fn check_item_id(_id: &str) -> Result<(), &'static str> {
        Ok(())
    }
    /// Makes the adapter. `data_dir` keeps what a channel rotates (TikTok Shop's refresh
    /// token); only `open` may touch it, never `check`.
    fn open(
        channel: &ChannelConfig,
        settings: Self::Settings,
        catalog: Catalog,
        data_dir: &Path,
    ) -> Self;
}

/// An adapter made from a channel's block, or the key that stopped it.
type Opened = Result<Arc<dyn ChannelAdapter>, Problem>;

/// One kind's entry: its functions, with the kind's types erased.
struct Entry {
    check: fn(&ChannelConfig) -> Result<(), Problem>,
    takes: fn(&str) -> bool,
    item_id: fn(&str) -> Result<(), &'static str>,
    open: fn(&ChannelConfig, Catalog, &Path) -> Opened,
}

const fn of<K: Kind>() -> Entry {
    Entry {
        check: check_settings::<K>,
        takes: takes::<K>,
        item_id: K::check_item_id,
        open: open_kind::<K>,
    }
}

/// The registry: one line per kind (the match is exhaustive, so a new
/// `ChannelKind` without its line does not compile).
fn entry(kind: ChannelKind) -> Entry {
    match kind {
        ChannelKind::Shopify => of::<shopify::Shopify>(),
        ChannelKind::Woocommerce => of::<woocommerce::WooCommerce>(),
        ChannelKind::Bigcommerce => of::<bigcommerce::BigCommerce>(),
        ChannelKind::Amazon => of::<amazon::Amazon>(),
        ChannelKind::Ebay => of::<ebay::Ebay>(),
        ChannelKind::Walmart => of::<walmart::Walmart>(),
        ChannelKind::Etsy => of::<etsy::Etsy>(),
        ChannelKind::Tiktok => of::<tiktok::TikTok>(),
        ChannelKind::Webhook => of::<webhook::Webhook>(),
    }
}

/// Reads a channel's own keys into its kind's `Settings`.
fn settings<K: Kind>(channel: &ChannelConfig) -> Result<K::Settings, Problem> {
    toml::Value::Table(channel.settings.clone())
        .try_into::<K::Settings>()
        .map_err(|e| {
            let message = e.message().trim().to_string();
            // serde names an unknown key in backticks: the problem is that key.
            let key = message
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split('`').next())
                .unwrap_or_default()
                .to_string();
            let reason = if key.is_empty() {
                message
            } else {
                let takers: Vec<String> = ChannelKind::ALL
                    .iter()
                    .filter(|k| (entry(**k).takes)(&key))
                    .map(|k| k.name())
                    .collect();
                if takers.is_empty() {
                    // The shared keys are `ChannelConfig`'s fields: README "Configuration".
                    format!(
                        "not a key of [[channels]] nor of any kind (kind {}'s own: {message})",
                        format!("{:?}", channel.kind).to_lowercase()
                    )
                } else {
                    format!(
                        "only for kind {}, not {}",
                        takers.join(", "),
                        format!("{:?}", channel.kind).to_lowercase()
                    )
                }
            };
            Problem { key, reason }
        })
}

/// Whether kind `K` takes `key` at all (whatever its value): a key given to the wrong
/// kind is refused naming the kinds that take it.
fn takes<K: Kind>(key: &str) -> bool {
    let mut table = toml::Table::new();
    table.insert(key.to_string(), toml::Value::Boolean(true));
    match toml::Value::Table(table).try_into::<K::Settings>() {
        Ok(_) => true,
        Err(e) => !e.message().starts_with("unknown field"),
    }
}

fn check_settings<K: Kind>(channel: &ChannelConfig) -> Result<(), Problem> {
    K::check(channel, &settings::<K>(channel)?)
}

/// Reads and checks a channel's own keys, then makes its adapter of kind `K`.
pub fn open<K: Kind>(
    channel: &ChannelConfig,
    catalog: Catalog,
    data_dir: &Path,
) -> Result<K, Problem> {
    let settings = settings::<K>(channel)?;
    K::check(channel, &settings)?;
    Ok(K::open(channel, settings, catalog, data_dir))
}

fn open_kind<K: Kind>(channel: &ChannelConfig, catalog: Catalog, data_dir: &Path) -> Opened {
    Ok(Arc::new(open::<K>(channel, catalog, data_dir)?))
}

fn at(i: usize, problem: Problem) -> ConfigError {
    let field = if problem.key.is_empty() {
        format!("channels[{i}]")
    } else {
        format!("channels[{i}].{}", problem.key)
    };
    ConfigError {
        field,
        reason: problem.reason,
    }
}

/// Checks every channel's own keys and the catalog's ids against their kinds: what
/// `Config::validate` cannot, since the kinds live above it. No I/O but reading the
/// catalog.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    for (i, channel) in config.channels.iter().enumerate() {
        (entry(channel.kind).check)(channel).map_err(|p| at(i, p))?;
    }
    config.catalog_rows_checked(|kind, id| (entry(kind).item_id)(id))?;
    Ok(())
}

/// Builds the adapter of every configured channel, by its id. `catalog` is the whole
/// `[catalog]`; each adapter keeps its own channel's rows. `data_dir` keeps what a
/// channel rotates (TikTok Shop's refresh token).
pub fn build(
    config: &Config,
    catalog: &[CatalogRow],
    data_dir: &Path,
) -> Result<ByChannel<Arc<dyn ChannelAdapter>>, ConfigError> {
    config.registry().try_table(|id, _| {
        let channel = config.channel(id);
        let rows = Catalog::of(&channel.name, catalog);
        (entry(channel.kind).open)(channel, rows, data_dir).map_err(|p| at(id.index(), p))
    })
}

// Helpers for the kinds' `check`.

/// Items one push may carry: the channel's `batch_max` (`default` when unset), at most
/// the kind's own limit `max`.
pub fn batch_max(channel: &ChannelConfig, default: usize, max: usize) -> usize {
    channel.batch_max.unwrap_or(default).clamp(1, max)
}

/// Refuses `batch_max` for a kind whose calls carry what its API fixes (`why`): a value
/// nothing reads would look like it was honoured.
pub fn no_batch_max(channel: &ChannelConfig, why: &str) -> Result<(), Problem> {
    match channel.batch_max {
        Some(_) => Err(Problem::new(
            "batch_max",
            format!("not used by this kind: {why}"),
        )),
        None => Ok(()),
    }
}

/// A key the kind cannot work without (blank counts as missing).
pub fn required<'a>(
    value: &'a Option<String>,
    key: &str,
    kind: ChannelKind,
) -> Result<&'a str, Problem> {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(Problem::new(key, format!("required for kind {kind:?}"))),
    }
}

/// An optional URL key (a token endpoint, a queue), checked when set.
pub fn optional_url(value: &Option<String>, key: &str) -> Result<(), Problem> {
    match value {
        Some(url) => check_base_url(url).map_err(|reason| Problem::new(key, reason)),
        None => Ok(()),
    }
}

/// The shared header some kinds authenticate with, as `Name: value`.
pub fn shared_header(value: &Option<String>, key: &str) -> Result<(), Problem> {
    let ok = value.as_deref().is_none_or(|header| {
        header
            .split_once(':')
            .is_some_and(|(n, v)| !n.trim().is_empty() && !v.trim().is_empty())
    });
    if ok {
        Ok(())
    } else {
        Err(Problem::new(key, "the shared header as \"Name: value\""))
    }
}

/// A catalog id of two numbers, `a/b` (a listing and its offer, product and SKU).
pub fn two_numbers(id: &str) -> bool {
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    id.split_once('/')
        .is_some_and(|(a, b)| number(a) && number(b))
}

/// A catalog id that is one number.
pub fn one_number(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())
}

/// The inbound HMAC keys of a channel: its `webhook_secret`, then the previous one still
/// accepted during a rotation.
pub fn secrets(channel: &ChannelConfig) -> impl Iterator<Item = &str> {
    [&channel.webhook_secret, &channel.previous_webhook_secret]
        .into_iter()
        .flatten()
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EXAMPLE;

    #[test]
    fn marketplace_settings_are_checked() {
        let walmart = "\n[[channels]]\nname = \"wm\"\nkind = \"walmart\"\nbase_url = \"https://m.example\"\nclient_id = \"i\"\nclient_secret = \"s\"\n";
        let field = |extra: &str| {
            checked(&format!("{EXAMPLE}{walmart}{extra}"))
                .err()
                .map(|e| e.field)
        };
        assert_eq!(field(""), None);
        assert_eq!(
            field("auth_header = \"WM-Sig: x\""),
            Some("channels[3].auth_header".into())
        );
        assert_eq!(
            field("webhook_auth = \"oauth\""),
            Some("channels[3].webhook_auth".into())
        );
        assert_eq!(
            field("webhook_auth = \"basic\""),
            Some("channels[3].webhook_secret".into())
        );
        assert_eq!(
            field("token_url = \"nope\""),
            Some("channels[3].token_url".into())
        );
        assert_eq!(
            field("revision_day_utc_offset_h = 20"),
            Some("channels[3].revision_day_utc_offset_h".into())
        );
        assert_eq!(field("feeds_per_hour = 0\nurgent_at_or_below = 25"), None);
        assert_eq!(
            field("feeds_per_hour = 100000"),
            Some("channels[3].feeds_per_hour".into())
        );
        assert_eq!(
            field("urgent_at_or_below = -1"),
            Some("channels[3].urgent_at_or_below".into())
        );
        // The feed keys are Walmart's alone.
        let woo = EXAMPLE.replacen(
            "kind = \"woocommerce\"",
            "kind = \"woocommerce\"\nfeeds_per_hour = 5",
            1,
        );
        let err = checked(&woo).unwrap_err();
        assert!(err.reason.contains("only for kind walmart"), "{err}");
        let amazon = "\n[[channels]]\nname = \"az\"\nkind = \"amazon\"\nbase_url = \"https://sp.example\"\nclient_id = \"i\"\nclient_secret = \"s\"\nrefresh_token = \"r\"\nseller_id = \"A\"\nmarketplace_id = \"M\"\nauth_header = \"no-colon\"\nsqs_queue_url = \"https://sqs.eu-west-1.amazonaws.com/1/q\"\naws_access_key_id = \"AK\"\naws_secret_access_key = \"SK\"\n";
        let err = checked(&format!("{EXAMPLE}{amazon}")).unwrap_err();
        assert_eq!(err.field, "channels[3].auth_header");
    }

    #[test]
    fn the_sqs_region_comes_from_the_queue_url_or_aws_region() {
        let amazon = "\n[[channels]]\nname = \"az\"\nkind = \"amazon\"\nbase_url = \"https://sp.example\"\nclient_id = \"i\"\nclient_secret = \"s\"\nrefresh_token = \"r\"\nseller_id = \"A\"\nmarketplace_id = \"M\"\nauth_header = \"k: v\"\naws_access_key_id = \"AK\"\naws_secret_access_key = \"SK\"\n";
        let parse = |extra: &str| checked(&format!("{EXAMPLE}{amazon}{extra}"));
        let missing = parse("").unwrap_err();
        assert_eq!(missing.field, "channels[3].sqs_queue_url");
        let aws = parse("sqs_queue_url = \"https://sqs.eu-west-1.amazonaws.com/1/q\"");
        assert!(aws.is_ok());
        assert_eq!(sqs_region(&aws.unwrap()).as_deref(), Some("eu-west-1"));
        let local = parse("sqs_queue_url = \"http://127.0.0.1:9/1/q\"");
        assert_eq!(local.unwrap_err().field, "channels[3].aws_region");
        let named = parse("sqs_queue_url = \"http://127.0.0.1:9/1/q\"\naws_region = \"us-east-2\"");
        assert!(named.is_ok());
        assert_eq!(sqs_region(&named.unwrap()).as_deref(), Some("us-east-2"));
    }

    #[test]
    fn etsy_needs_its_shared_secret_in_a_header_safe_form() {
        let etsy = "\n[[channels]]\nname = \"et\"\nkind = \"etsy\"\nbase_url = \"https://e.example\"\nwebhook_secret = \"w\"\nclient_id = \"key\"\nrefresh_token = \"r\"\nshop_id = \"1\"\n";
        let field = |extra: &str| {
            checked(&format!("{EXAMPLE}{etsy}{extra}"))
                .err()
                .map(|e| e.field)
        };
        assert_eq!(field(""), Some("channels[3].shared_secret".into()));
        assert_eq!(field("shared_secret = \"s3cret\""), None);
        assert_eq!(
            field("shared_secret = \"has space\""),
            Some("channels[3].shared_secret".into())
        );
    }

    /// A config as every command reads it: parsed, validated, its kinds' keys checked.
    fn checked(text: &str) -> Result<Config, ConfigError> {
        let config = Config::parse(text)?;
        config.validate()?;
        check(&config)?;
        Ok(config)
    }

    fn sqs_region(config: &Config) -> Option<String> {
        settings::<amazon::Amazon>(&config.channels[3])
            .unwrap()
            .sqs_region()
    }

    #[test]
    fn each_kind_checks_its_own_keys_and_names_the_field() {
        let missing = EXAMPLE.replace("consumer_secret = \"cs_x\"", "");
        let err = checked(&missing).unwrap_err();
        assert_eq!(err.field, "channels[1].consumer_secret");

        let bad_secret = EXAMPLE.replace("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "plain");
        assert_eq!(
            checked(&bad_secret).unwrap_err().field,
            "channels[2].webhook_secret"
        );

        // A key no kind takes is refused by name (serde cannot deny unknown fields
        // beside the flattened table, so the kind's `Settings` does).
        let typo = EXAMPLE.replace("access_token = \"shpat_x\"", "acess_token = \"shpat_x\"");
        let err = checked(&typo).unwrap_err();
        assert_eq!(err.field, "channels[0].acess_token", "{err}");
        assert!(err.reason.contains("nor of any kind"), "{err}");
    }

    #[test]
    fn batch_max_is_honoured_up_to_the_kind_s_limit_or_refused_where_the_api_fixes_it() {
        let bigcommerce = "[[channels]]\nname = \"bc\"\nkind = \"bigcommerce\"\nbase_url = \"https://api.bigcommerce.example\"\nstore_hash = \"abc123\"\naccess_token = \"t\"\nwebhook_secret = \"s\"\n";
        let ebay = "[[channels]]\nname = \"ebay\"\nkind = \"ebay\"\nbase_url = \"https://api.ebay.example\"\nclient_id = \"i\"\nclient_secret = \"s\"\nrefresh_token = \"r\"\n";
        let shown = |block: &str, batch_max: Option<usize>| {
            let text = match batch_max {
                Some(n) => format!("{block}batch_max = {n}\n"),
                None => block.to_string(),
            };
            let config = checked(&text).unwrap();
            let dir = tempfile::tempdir().unwrap();
            build(&config, &[], dir.path()).unwrap()
                [config.registry().id_of(&config.channels[0].name).unwrap()]
            .batch_max()
        };
        // Unset: the kind's own; set: honoured, never past the kind's limit.
        assert_eq!(shown(bigcommerce, None), bigcommerce::BATCH_MAX);
        assert_eq!(shown(bigcommerce, Some(7)), 7);
        assert_eq!(shown(bigcommerce, Some(1_000_000)), bigcommerce::BATCH_MAX);
        assert_eq!(shown(ebay, None), ebay::BATCH_MAX);
        assert_eq!(shown(ebay, Some(3)), 3);
        assert_eq!(shown(ebay, Some(26)), ebay::BATCH_MAX);
        let shopify = EXAMPLE.replace("buffer = 2", "buffer = 2\nbatch_max = 9");
        let config = checked(&shopify).unwrap();
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            build(&config, &[], dir.path()).unwrap()[config.registry().id_of("shop").unwrap()]
                .batch_max(),
            9
        );

        // Where the API fixes what a call carries, a batch_max nothing would read is
        // refused by name rather than ignored.
        let amazon = "\n[[channels]]\nname = \"az\"\nkind = \"amazon\"\nbase_url = \"https://sp.example\"\nclient_id = \"i\"\nclient_secret = \"s\"\nrefresh_token = \"r\"\nseller_id = \"A\"\nmarketplace_id = \"M\"\nauth_header = \"k: v\"\nsqs_queue_url = \"https://sqs.eu-west-1.amazonaws.com/1/q\"\naws_access_key_id = \"AK\"\naws_secret_access_key = \"SK\"\n";
        let walmart = "\n[[channels]]\nname = \"wm\"\nkind = \"walmart\"\nbase_url = \"https://wm.example\"\nclient_id = \"i\"\nclient_secret = \"s\"\nwebhook_secret = \"w\"\n";
        let etsy = "\n[[channels]]\nname = \"et\"\nkind = \"etsy\"\nbase_url = \"https://e.example\"\nwebhook_secret = \"w\"\nclient_id = \"key\"\nrefresh_token = \"r\"\nshop_id = \"1\"\nshared_secret = \"s3cret\"\n";
        let tiktok = "\n[[channels]]\nname = \"tt\"\nkind = \"tiktok\"\nbase_url = \"https://tt.example\"\napp_key = \"k\"\napp_secret = \"s\"\nrefresh_token = \"r\"\nshop_cipher = \"c\"\n";
        for block in [amazon, walmart, etsy, tiktok] {
            checked(&format!("{EXAMPLE}{block}")).unwrap_or_else(|e| panic!("{block}: {e}"));
            let err = checked(&format!("{EXAMPLE}{block}batch_max = 10\n")).unwrap_err();
            assert_eq!(err.field, "channels[3].batch_max", "{err}");
            assert!(err.reason.contains("not used by this kind"), "{err}");
        }
    }

    #[test]
    fn every_kind_has_an_entry_that_refuses_an_unknown_key() {
        for &kind in ChannelKind::ALL {
            let mut table = toml::Table::new();
            table.insert("no_such_key".into(), toml::Value::Boolean(true));
            let channel = ChannelConfig {
                kind,
                settings: table,
                ..Config::parse("[[channels]]\nname = \"x\"\nkind = \"webhook\"\nbase_url = \"http://a.example\"\n")
                    .unwrap()
                    .channels
                    .remove(0)
            };
            let problem = (entry(kind).check)(&channel).unwrap_err();
            assert_eq!(problem.key, "no_such_key", "{kind:?}");
        }
    }
}
