//! Incoming media (issue 13): which incoming messages carry a file, and what downloading one
//! through the page gives back. The runner stores the answer in `wa_media` (src/session/media_in.rs).

use std::time::Duration;

use crate::error_code::ErrorCode;

/// What downloading an incoming message's media through the page gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaDownload {
    /// The decrypted bytes (at most the cap), with what the page says they are.
    Stored {
        data: bytes::Bytes,
        mime: Option<String>,
        filename: Option<String>,
    },
    /// Larger than the cap: reported by the page before downloading (nothing was fetched), or
    /// found once downloaded when the page did not say. `size` as known.
    TooLarge { size: Option<u64> },
}

/// The `wa_media.kind` of an incoming message of this page type, or `None` for a message
/// without a file. The page's types: `image`, `video` (also a GIF), `audio`, `ptt` (a voice
/// note), `document`, `sticker`.
pub fn media_kind(page_type: &str) -> Option<&'static str> {
    Some(match page_type {
        "image" => "image",
        "video" | "gif" => "video",
        "audio" => "audio",
        "ptt" => "voice",
        "document" => "document",
        "sticker" => "sticker",
        _ => return None,
    })
}

/// How many bytes travel per DevTools call when the runner reads downloaded media from the page
/// (base64, so about 1.4 MB a message): well under any WebSocket frame limit.
pub const CHUNK_BYTES: usize = 1 << 20;

/// The error a download that did not finish in `timeout` ends with.
pub fn timed_out(timeout: Duration) -> super::DriverError {
    super::DriverError::transient(
        ErrorCode::MediaFetchFailed,
        format!("downloading the media through the page took longer than {timeout:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_types_map_to_media_kinds() {
        assert_eq!(media_kind("ptt"), Some("voice"));
        assert_eq!(media_kind("image"), Some("image"));
        assert_eq!(media_kind("document"), Some("document"));
        assert_eq!(media_kind("sticker"), Some("sticker"));
        assert_eq!(media_kind("chat"), None);
        assert_eq!(media_kind("location"), None);
    }
}
