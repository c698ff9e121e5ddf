//! Fetching media_url with an SSRF guard, a size cap and a timeout.
use std::time::Duration;

use crate::driver::Media;
use crate::error_code::ErrorCode;

#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct MediaError {
    pub code: ErrorCode,
    pub message: String,
}

pub struct MediaFetcher;

impl MediaFetcher {
    pub fn new(
        _allowed_hosts: Vec<String>,
        _max_bytes: u64,
        _timeout: Duration,
    ) -> anyhow::Result<Self> {
        Ok(MediaFetcher)
    }
    pub async fn fetch(&self, _url: &str, _mime_hint: Option<&str>) -> Result<Media, MediaError> {
        Err(MediaError {
            code: ErrorCode::MediaFetchFailed,
            message: "media fetching is not built yet".into(),
        })
    }
}

impl MediaFetcher {
    pub fn max_bytes(&self) -> u64 {
        u64::MAX
    }
}
