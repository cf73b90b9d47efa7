//! The webhook sink: `POST` of the alert's JSON to an `http://` URL.
//!
//! The request carries `Content-Type: application/json` and the alert's
//! id in `X-RVM-Alert-Id` (the same id as in the body: a receiver
//! de-duplicates on it). A 2xx status is delivered; anything else, or no
//! answer within the timeouts, is tried again later.

use std::time::Duration;

use crate::monitor::Alert;
use crate::net::http::{self, Timeouts};
use crate::net::url::HttpUrl;

pub const TIMEOUTS: Timeouts = Timeouts::new(Duration::from_secs(10), Duration::from_secs(30));

pub async fn send(url: &HttpUrl, alert: &Alert) -> Result<(), String> {
    let body = serde_json::to_vec(alert).map_err(|e| e.to_string())?;
    let code = http::request(
        url,
        "POST",
        &[
            ("Content-Type", "application/json"),
            ("X-RVM-Alert-Id", &alert.id),
        ],
        &body,
        TIMEOUTS,
    )
    .await?;
    if (200..300).contains(&code) {
        Ok(())
    } else {
        Err(format!("{url} answered HTTP {code}"))
    }
}
