//! Incoming media read out of the page (issue 13): media_download.js has the page download and
//! decrypt the file with its own modules and keep the bytes under a token; the runner then reads
//! them in pieces of [`CHUNK_BYTES`], each a bounded DevTools call, so no single message carries
//! more than about 1.4 MB whatever the cap.

use std::time::Duration;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use chromiumoxide::Page;
use serde::Deserialize;

use super::scripts::{call_function, CallError, FN_MEDIA_CHUNK, FN_MEDIA_DOWNLOAD};
use crate::driver::inbound_media::{timed_out, MediaDownload, CHUNK_BYTES};
use crate::driver::DriverError;
use crate::error_code::ErrorCode;

#[derive(Debug, Deserialize)]
struct Downloaded {
    status: String,
    mimetype: Option<String>,
    filename: Option<String>,
    size: Option<u64>,
    token: Option<String>,
}

fn failed(what: &str, e: CallError) -> DriverError {
    let m = match e {
        CallError::Timeout => format!("{what} timed out"),
        CallError::Js(m) | CallError::Cdp(m) => format!("{what}: {m}"),
    };
    DriverError::transient(ErrorCode::MediaFetchFailed, m)
}

/// Downloads `id`'s media through the page: at most `max_bytes`, the page's work within
/// `timeout`, each piece read within `cdp`.
pub(super) async fn download(
    page: &Page,
    id: &str,
    max_bytes: u64,
    timeout: Duration,
    cdp: Duration,
) -> Result<MediaDownload, DriverError> {
    let timeout_ms = timeout.as_millis() as u64;
    let v = call_function(
        page,
        &FN_MEDIA_DOWNLOAD,
        vec![
            serde_json::json!(id),
            // Above 2^53 JSON numbers lose precision; no cap is that large in practice.
            serde_json::json!(max_bytes.min(1 << 52)),
            serde_json::json!(timeout_ms),
        ],
        // The page aborts its own download at `timeout`; a little more for it to say so.
        timeout + cdp.min(Duration::from_secs(5)),
    )
    .await
    .map_err(|e| match e {
        CallError::Timeout => timed_out(timeout),
        e => failed("downloading the media through the page", e),
    })?;
    let d: Downloaded = serde_json::from_value(v).map_err(|e| {
        DriverError::transient(
            ErrorCode::MediaFetchFailed,
            format!("downloading the media: unexpected answer from the page: {e}"),
        )
    })?;
    match d.status.as_str() {
        "too_large" => return Ok(MediaDownload::TooLarge { size: d.size }),
        "ok" => {}
        other => {
            return Err(DriverError::transient(
                ErrorCode::MediaFetchFailed,
                format!("downloading the media: the page answered {other:?}"),
            ))
        }
    }
    let (Some(token), Some(size)) = (d.token, d.size) else {
        return Err(DriverError::transient(
            ErrorCode::MediaFetchFailed,
            "downloading the media: the page kept no bytes",
        ));
    };
    if size > max_bytes {
        release(page, &token, cdp).await;
        return Ok(MediaDownload::TooLarge { size: Some(size) });
    }
    match read(page, &token, size as usize, cdp).await {
        Ok(data) => Ok(MediaDownload::Stored {
            data,
            mime: d.mimetype.filter(|m| !m.is_empty()),
            filename: d.filename.filter(|f| !f.is_empty()),
        }),
        Err(e) => {
            release(page, &token, cdp).await;
            Err(e)
        }
    }
}

async fn read(page: &Page, token: &str, size: usize, cdp: Duration) -> Result<Bytes, DriverError> {
    let mut out = BytesMut::with_capacity(size);
    let b64 = base64::engine::general_purpose::STANDARD;
    while out.len() < size {
        let len = CHUNK_BYTES.min(size - out.len());
        let v = call_function(
            page,
            &FN_MEDIA_CHUNK,
            vec![
                serde_json::json!(token),
                serde_json::json!(out.len()),
                serde_json::json!(len),
            ],
            cdp,
        )
        .await
        .map_err(|e| failed("reading the downloaded media from the page", e))?;
        let piece = v
            .as_str()
            .and_then(|s| b64.decode(s).ok())
            .filter(|p| p.len() == len)
            .ok_or_else(|| {
                DriverError::transient(
                    ErrorCode::MediaFetchFailed,
                    "reading the downloaded media: the page answered a piece of the wrong size",
                )
            })?;
        out.extend_from_slice(&piece);
    }
    Ok(out.freeze())
}

/// Forgets bytes left in the page (best effort: the page drops them by itself later).
async fn release(page: &Page, token: &str, cdp: Duration) {
    let _ = call_function(
        page,
        &FN_MEDIA_CHUNK,
        vec![
            serde_json::json!(token),
            serde_json::json!(0),
            serde_json::json!(0),
        ],
        cdp,
    )
    .await;
}
