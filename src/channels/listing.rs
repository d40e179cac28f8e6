//! A channel's listings as its own API lists them, a page at a time, for
//! `lockstep catalog discover`: which of the channel's items carries which of the
//! seller's SKUs (its SKU field), and what it shows. Each kind's listing call, its
//! paging and its limits are cited in its own file beside its `listings`.

use std::time::Duration;

/// One sellable item of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The channel's SKU field, trimmed; `None` when empty.
    pub sku: Option<String>,
    /// The id lockstep writes stock to, as the catalog's `item_id` takes it.
    pub item_id: String,
    /// The catalog's `location_id`, where the kind has one per item.
    pub location_id: Option<String>,
    /// What it shows (`None`: not stocked, or not read by this listing call).
    pub level: Option<i64>,
    /// Why lockstep cannot write its stock, if it cannot (Shopify not tracking it, a
    /// WooCommerce variation whose stock is its parent's): listed for the seller, never
    /// linked.
    pub problem: Option<String>,
}

/// One page of a channel's listings.
#[derive(Debug, Default)]
pub struct ListingPage {
    pub listings: Vec<Listing>,
    /// Where the next page starts (an opaque cursor, saved to resume); `None`: the last.
    pub next: Option<String>,
    /// How long to wait before asking for the next page: what the channel's answer
    /// said its budget needs (Shopify's cost bucket), beyond the call's own pace.
    pub pause: Duration,
}

/// What `ChannelAdapter::listings` answers: a page, in time.
pub type Listings<'a> = super::BoxFuture<'a, Result<ListingPage, ListingError>>;

/// Why a page could not be read.
#[derive(Debug)]
pub enum ListingError {
    /// The channel's budget is spent: ask again for the same page after `wait`.
    Throttled { wait: Duration },
    /// Anything else, in words.
    Failed(String),
}

impl From<&str> for ListingError {
    fn from(reason: &str) -> ListingError {
        ListingError::Failed(reason.to_string())
    }
}

impl From<String> for ListingError {
    fn from(reason: String) -> ListingError {
        ListingError::Failed(reason)
    }
}

/// A channel SKU field as a catalog SKU: trimmed, `None` when empty. Channels allow an
/// empty SKU: Shopify's `ProductVariant.sku` is a nullable string
/// (https://shopify.dev/docs/api/admin-graphql/latest/objects/ProductVariant),
/// WooCommerce's `sku` may be "" (https://woocommerce.github.io/woocommerce-rest-api-docs/#product-properties),
/// TikTok's `seller_sku` is optional
/// (https://partner.tiktokshop.com/docv2/page/6502fc8da57708028b42b18a).
pub fn sku_field(text: Option<&str>) -> Option<String> {
    text.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl Listing {
    /// A listing whose SKU is also the id lockstep writes to (Amazon's and Walmart's
    /// seller SKUs).
    pub fn keyed_by_sku(sku: String, level: Option<i64>, problem: Option<String>) -> Listing {
        Listing {
            item_id: sku.clone(),
            sku: Some(sku),
            location_id: None,
            level,
            problem,
        }
    }
}

/// A cursor that is a page number (1 when there is none yet).
pub fn page_number(cursor: Option<&str>) -> Result<usize, ListingError> {
    match cursor {
        None => Ok(1),
        Some(text) => text
            .parse()
            .map_err(|_| ListingError::Failed(format!("bad cursor {text:?}"))),
    }
}
