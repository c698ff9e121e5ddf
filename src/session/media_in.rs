//! Incoming media (issue 13): an incoming message with a file has its bytes downloaded through
//! the session's page and stored in `wa_media`, in the same statement as its `message` event,
//! whose payload names the row (`media_id`).
//!
//! Exactly once: the event is unique per WhatsApp id and the media row per event, and a message
//! already recorded (or already waiting in the backlog) is not downloaded again when the backfill
//! after a reconnect hands it over a second time. A file over WA_INBOUND_MEDIA_MAX_BYTES or one
//! that cannot be downloaded is recorded without bytes, with its code: the message itself is never
//! held back or lost for its media.

use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::writes::PageWrite;
use super::Page;
use crate::db::bounded;
use crate::driver::inbound_media::{media_kind, MediaDownload};
use crate::driver::IncomingMessage;
use crate::error_code::ErrorCode;
use crate::shared::Shared;

/// What is stored about one incoming file.
#[derive(Debug, Clone)]
pub(super) struct InboundMedia {
    pub kind: &'static str,
    pub mime: Option<String>,
    pub filename: Option<String>,
    pub caption: Option<String>,
    /// Of `data` when stored, else as the page reported it.
    pub size: Option<u64>,
    pub data: Option<Bytes>,
    /// Why `data` is absent.
    pub error: Option<(ErrorCode, String)>,
}

/// The incoming message payload's `type`: the media kind for a file, `text` for a plain message,
/// else the page's own type.
pub(super) fn payload_type(page_type: &str) -> &str {
    match (media_kind(page_type), page_type) {
        (Some(k), _) => k,
        (None, "chat") => "text",
        (None, t) => t,
    }
}

fn extra_str(msg: &IncomingMessage, key: &str) -> Option<String> {
    msg.extra
        .get(key)
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl Page<'_> {
    /// An incoming message from the page (live or backfilled), queued for writing; a file is
    /// downloaded first unless this message is already recorded or queued.
    pub(super) async fn incoming(&mut self, msg: IncomingMessage) {
        let Some(kind) = media_kind(&msg.kind) else {
            self.push(PageWrite::Incoming(msg));
            return;
        };
        if self.already_has(&msg.wa_message_id).await {
            // Written again, it changes nothing but the backfill mark.
            self.push(PageWrite::Incoming(msg));
            return;
        }
        let media = self.fetch_media(kind, &msg).await;
        self.push(PageWrite::IncomingMedia(msg, Box::new(media)));
    }

    /// Recorded already, or waiting in the backlog. A database error answers no: the download is
    /// then wasted at worst, the row is still stored once.
    async fn already_has(&self, wa_message_id: &str) -> bool {
        let queued = self.backlog.queue.iter().any(|w| match w {
            PageWrite::Incoming(m) | PageWrite::IncomingMedia(m, _) => {
                m.wa_message_id == wa_message_id
            }
            _ => false,
        });
        if queued {
            return true;
        }
        bounded(
            sqlx::query_scalar::<_, bool>(
                "select exists (select 1 from wa_event
                   where session_id = $1 and kind = 'message' and wa_message_id = $2)",
            )
            .bind(self.id)
            .bind(wa_message_id)
            .fetch_one(&self.shared.pool),
        )
        .await
        .unwrap_or(false)
    }

    async fn fetch_media(&self, kind: &'static str, msg: &IncomingMessage) -> InboundMedia {
        let cfg = &self.shared.cfg;
        let reported = msg.extra.get("size").and_then(|v| v.as_u64());
        let mut media = InboundMedia {
            kind,
            mime: extra_str(msg, "mimetype"),
            filename: extra_str(msg, "filename"),
            caption: msg.body.clone().filter(|c| !c.is_empty()),
            size: reported,
            data: None,
            error: None,
        };
        let max = cfg.inbound_media_max_bytes;
        let too_large = |size: Option<u64>| {
            let shown = size
                .map(|s| format!("{s} bytes"))
                .unwrap_or_else(|| "it".into());
            (
                ErrorCode::MediaTooLarge,
                format!("{shown} is over WA_INBOUND_MEDIA_MAX_BYTES ({max}); not downloaded"),
            )
        };
        if max == 0 || reported.is_some_and(|s| s > max) {
            media.error = Some(too_large(reported));
            return media;
        }
        let timeout = cfg.inbound_media_timeout;
        // The driver bounds each of its calls; this bounds them all (the page's download, then
        // reading the bytes out in pieces, each a DevTools call).
        let whole = timeout * 2 + Duration::from_secs(30);
        let answer = tokio::time::timeout(
            whole,
            self.session
                .download_media(&msg.wa_message_id, max, timeout),
        )
        .await;
        match answer {
            Ok(Ok(MediaDownload::Stored {
                data,
                mime,
                filename,
            })) => {
                media.size = Some(data.len() as u64);
                media.mime = mime.or(media.mime);
                media.filename = filename.or(media.filename);
                media.data = Some(data);
            }
            Ok(Ok(MediaDownload::TooLarge { size })) => {
                media.size = size.or(reported);
                media.error = Some(too_large(media.size));
            }
            Ok(Err(e)) => {
                tracing::warn!(session = %self.id, error = %e, "incoming media: download failed; recorded without bytes");
                // The sentence without the code in front (the code has its own column).
                let text = e.to_string();
                let prefix = format!("{}: ", e.code());
                let text = text.strip_prefix(&prefix).unwrap_or(&text).to_string();
                media.error = Some((ErrorCode::MediaFetchFailed, text));
            }
            Err(_) => {
                tracing::warn!(session = %self.id, ?whole, "incoming media: download timed out; recorded without bytes");
                media.error = Some((
                    ErrorCode::MediaFetchFailed,
                    format!("downloading the media through the page took longer than {whole:?}"),
                ));
            }
        }
        media
    }
}

/// An incoming message with a file: its event and its `wa_media` row in one statement, once per
/// WhatsApp id (nothing is written when the event exists). Ok(false) when the session is no
/// longer ours.
pub(super) async fn record_incoming_media(
    shared: &Shared,
    id: &str,
    msg: &IncomingMessage,
    media: &InboundMedia,
) -> sqlx::Result<bool> {
    let mut payload = super::writes::message_payload(msg);
    if let Some(p) = payload.as_object_mut() {
        p.insert("type".into(), serde_json::json!(media.kind));
        p.insert("mimetype".into(), serde_json::json!(media.mime));
        p.insert("filename".into(), serde_json::json!(media.filename));
        p.insert("caption".into(), serde_json::json!(media.caption));
    }
    let sha256 = media.data.as_ref().map(|d| hex::encode(Sha256::digest(d)));
    let owned: bool = bounded(
        sqlx::query_scalar(
            "with own as (select id from wa_session where id = $1 and runner_id = $4),
             -- The media row's id, chosen first so that the event can name it.
             mid as (select nextval(pg_get_serial_sequence('wa_media', 'id')) as id from own),
             e as (insert into wa_event (session_id, kind, wa_message_id, payload)
                   select own.id, 'message', $2, $3 || jsonb_build_object('media_id', mid.id) from own, mid
                   on conflict (session_id, wa_message_id) where kind = 'message' do nothing
                   returning id, session_id),
             m as (insert into wa_media (id, session_id, event_id, wa_message_id, kind, mime, filename,
                                         caption, size, sha256, data, error_code, error)
                   select mid.id, e.session_id, e.id, $2, $6, $7, $8, $9, $10, $11, $12, $13, $14 from e, mid),
             u as (update wa_session set last_active_at = case when exists (select 1 from e) then now() else last_active_at end,
                     last_inbound_at = greatest(coalesce(last_inbound_at, to_timestamp($5)), to_timestamp($5))
                   where id in (select id from own) returning id)
             select exists (select 1 from own)",
        )
        .bind(id)
        .bind(&msg.wa_message_id)
        .bind(payload)
        .bind(shared.id)
        .bind(msg.timestamp as f64)
        .bind(media.kind)
        .bind(&media.mime)
        .bind(&media.filename)
        .bind(&media.caption)
        .bind(media.size.map(|s| s as i64))
        .bind(sha256)
        .bind(media.data.as_deref())
        .bind(media.error.as_ref().map(|(c, _)| c.as_str()))
        .bind(media.error.as_ref().map(|(_, m)| m.as_str()))
        .fetch_one(&shared.pool),
    )
    .await?;
    Ok(owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_types() {
        assert_eq!(payload_type("chat"), "text");
        assert_eq!(payload_type("ptt"), "voice");
        assert_eq!(payload_type("location"), "location");
    }
}
