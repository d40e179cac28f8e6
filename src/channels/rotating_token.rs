//! An OAuth grant whose refresh token rotates (TikTok Shop's, Etsy's): each refresh
//! answers a new access token and a new refresh token, and only the newest is sure to
//! work next time. So the grant lives in the data directory (`token-{channel}.json`,
//! written to a temp file, synced, renamed, the directory synced: never half written,
//! never lost by a crash after the channel rotated it), not in the config file, which
//! lockstep never rewrites. The config's `refresh_token` seeds it: the file records the
//! seed it grew from, so an operator who re-authorizes the shop and puts the new refresh
//! token in the config is taken at their word (a different seed starts over).
//!
//! The access token is refreshed ahead of its expiry: once less than half its lifetime,
//! or `AHEAD_MAX`, is left, whichever is shorter. A refresh that fails while the access
//! token still works keeps the old one (and says so in the log); a refresh token the
//! channel refuses is an error naming what the operator must do.

//!
//! Pages followed: TikTok Shop's token refresh, whose `access_token_expire_in` and
//! `refresh_token_expire_in` are Unix times and which answers a new refresh token
//! (https://partner.tiktokshop.com/docv2/page/authorization-overview-202407); Etsy's,
//! which answers `expires_in` seconds and a new refresh token
//! (https://developers.etsy.com/documentation/essentials/authentication). Each kind
//! reads its answer into a `Grant` (`ReadGrant`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::call::{json_answer, Caller};
use super::OutboundRequest;
use crate::clock::{now_micros, MICROS_PER_SECOND};

/// The most ahead of its expiry an access token is replaced.
const AHEAD_MAX: Duration = Duration::from_secs(3_600);
/// A refresh token this close to its expiry is warned about at every refresh.
const WARN_BEFORE: Duration = Duration::from_secs(7 * 24 * 3_600);
/// The longest an access token (a week for TikTok Shop, an hour for Etsy) or a refresh
/// token (a year for TikTok Shop; Etsy does not say) is believed to live, in seconds.
const ACCESS_LIFETIME_MAX_S: i64 = 30 * 24 * 3_600;
const REFRESH_LIFETIME_MAX_S: i64 = 2 * 365 * 24 * 3_600;

/// What the channel granted, as kept on disk. Times are Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub access_token: String,
    pub access_expires_at: i64,
    pub refresh_token: String,
    /// 0: the channel did not say.
    pub refresh_expires_at: i64,
    /// When the access token was obtained (its lifetime is measured from here).
    pub obtained_at: i64,
    /// The config's refresh token this grant grew from.
    pub seed: String,
}

/// Reads a refresh answer into a grant (the channel's own field names), less `seed` and
/// `obtained_at`, which `RotatingToken` fills in.
pub type ReadGrant = fn(&Value) -> Result<Grant, String>;

/// One channel's rotating grant.
pub struct RotatingToken {
    path: PathBuf,
    seed: String,
    /// Builds the refresh request from the refresh token to spend.
    request: Box<dyn Fn(&str) -> OutboundRequest + Send + Sync>,
    read: ReadGrant,
    grant: tokio::sync::Mutex<Option<Grant>>,
    /// Set when the channel answered that the access token expired: refresh next time.
    stale: AtomicBool,
    /// Set when the grant in memory could not be written: written at the next call.
    unsaved: AtomicBool,
}

/// The file that keeps a channel's grant.
pub fn grant_path(data_dir: &Path, channel: &str) -> PathBuf {
    data_dir.join(format!("token-{channel}.json"))
}

fn now_s() -> i64 {
    now_micros().div_euclid(MICROS_PER_SECOND)
}

impl RotatingToken {
    pub fn new(
        path: PathBuf,
        seed: &str,
        request: impl Fn(&str) -> OutboundRequest + Send + Sync + 'static,
        read: ReadGrant,
    ) -> RotatingToken {
        RotatingToken {
            path,
            seed: seed.to_string(),
            request: Box::new(request),
            read,
            grant: tokio::sync::Mutex::new(None),
            stale: AtomicBool::new(false),
            unsaved: AtomicBool::new(false),
        }
    }

    /// The channel said the access token is no longer valid: the next call refreshes.
    pub fn expire(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    /// The access token as the header `name`, after `prefix` (`Bearer `, or nothing).
    pub async fn header(
        &self,
        caller: &Caller,
        name: http::header::HeaderName,
        prefix: &str,
    ) -> Result<http::HeaderMap, String> {
        let token = self.access(caller).await?;
        let value = http::HeaderValue::from_str(&format!("{prefix}{token}"))
            .map_err(|_| "the access token is not a valid header value".to_string())?;
        let mut headers = http::HeaderMap::new();
        headers.insert(name, value);
        Ok(headers)
    }

    /// A valid access token, refreshed when due.
    pub async fn access(&self, caller: &Caller) -> Result<String, String> {
        let mut grant = self.grant.lock().await;
        if grant.is_none() {
            *grant = self.load()?;
        }
        if let Some(kept) = grant
            .as_ref()
            .filter(|_| self.unsaved.load(Ordering::Relaxed))
        {
            if self.store(kept).is_ok() {
                self.unsaved.store(false, Ordering::Relaxed);
            }
        }
        let now = now_s();
        let stale = self.stale.swap(false, Ordering::Relaxed);
        let due = match grant.as_ref() {
            None => true,
            Some(g) => {
                // Saturating: a stored grant's times are the channel's numbers.
                let lifetime = g.access_expires_at.saturating_sub(g.obtained_at).max(0);
                let ahead = (lifetime / 2).min(AHEAD_MAX.as_secs() as i64);
                stale || now >= g.access_expires_at.saturating_sub(ahead)
            }
        };
        if !due {
            return Ok(grant
                .as_ref()
                .map(|g| g.access_token.clone())
                .unwrap_or_default());
        }
        let spend = grant
            .as_ref()
            .map_or(self.seed.clone(), |g| g.refresh_token.clone());
        match self.refresh(caller, &spend).await {
            Ok(fresh) => {
                // The channel has rotated the refresh token: the new one is kept in memory
                // whatever the disk says, or the channel would be lost until the shop is
                // authorized again. A grant not written is tried again at every call.
                if let Err(e) = self.store(&fresh) {
                    tracing::error!(error = %e, "the rotated grant is not yet on disk: kept in memory and written at the next call; a restart before then needs the shop authorized again");
                    self.unsaved.store(true, Ordering::Relaxed);
                }
                let token = fresh.access_token.clone();
                *grant = Some(fresh);
                Ok(token)
            }
            // The old access token still works: keep it, and try again next call.
            Err(reason)
                if grant
                    .as_ref()
                    .is_some_and(|g| !stale && now < g.access_expires_at) =>
            {
                tracing::warn!(path = %self.path.display(), %reason, "token refresh failed; the current access token is still valid");
                Ok(grant
                    .as_ref()
                    .map(|g| g.access_token.clone())
                    .unwrap_or_default())
            }
            Err(reason) => Err(reason),
        }
    }

    async fn refresh(&self, caller: &Caller, refresh_token: &str) -> Result<Grant, String> {
        let answer = caller.call_now((self.request)(refresh_token)).await?;
        // 400 `invalid_grant` (Etsy) or 401: the refresh token itself is refused.
        if matches!(answer.0, 400 | 401) {
            return Err(format!(
                "the channel refused the refresh token (HTTP {}: {}); if it has expired, \
                 authorize the shop again and set the new refresh_token in the config",
                answer.0,
                super::excerpt(&answer.2)
            ));
        }
        let reply = json_answer(&answer).map_err(|e| format!("token refresh: {e}"))?;
        let mut grant = (self.read)(&reply).map_err(|e| {
            format!(
                "the channel refused the refresh token ({e}); if it has expired, authorize \
                 the shop again and set the new refresh_token in the config"
            )
        })?;
        grant.obtained_at = now_s();
        grant.seed = self.seed.clone();
        // The channel's expiry times, held to what a grant can mean before anything is
        // kept: refused here, after the channel has already rotated its refresh token,
        // the new one would be lost.
        grant.access_expires_at = grant
            .access_expires_at
            .clamp(grant.obtained_at, grant.obtained_at + ACCESS_LIFETIME_MAX_S);
        grant.refresh_expires_at = grant
            .refresh_expires_at
            .clamp(0, grant.obtained_at + REFRESH_LIFETIME_MAX_S);
        if grant.access_token.is_empty() || grant.refresh_token.is_empty() {
            return Err("the token refresh answered no access_token or refresh_token".into());
        }
        let left = grant.refresh_expires_at.saturating_sub(grant.obtained_at);
        if grant.refresh_expires_at > 0 && left < WARN_BEFORE.as_secs() as i64 {
            tracing::warn!(
                path = %self.path.display(),
                days_left = left / 86_400,
                "the refresh token expires soon: authorize the shop again before then"
            );
        }
        Ok(grant)
    }

    /// The stored grant, unless it grew from another seed (the operator re-authorized).
    fn load(&self) -> Result<Option<Grant>, String> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", self.path.display())),
        };
        let grant: Grant = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a stored grant: {e}", self.path.display()))?;
        Ok((grant.seed == self.seed).then_some(grant))
    }

    /// Writes the grant durably before anything uses it: the channel has already
    /// rotated the refresh token, and the old one may no longer work.
    fn store(&self, grant: &Grant) -> Result<(), String> {
        let text = serde_json::to_vec_pretty(grant).expect("a grant serializes");
        // Credentials: readable by the owner alone.
        crate::store::small_file::write_durably(&self.path, &text, true)
            .map_err(|e| format!("storing {}: {e}", self.path.display()))?;
        Ok(())
    }
}
