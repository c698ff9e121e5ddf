//! The `sticker` kind (issue 13): an image, from a URL or the row's bytes, goes out as WhatsApp's
//! 512x512 WebP sticker, converted by the page's own WAWebImageUtils.toWebpSticker; bad images
//! end with `media_invalid`, a caption with `invalid_options`.

use serde_json::{json, Value};
use sqlx::PgPool;
use wa_outbox::dispatcher::bare_id;
use wa_outbox::testing::{test_db, wait_for};

use crate::*;

async fn sticker_row(
    p: &PgPool,
    session: &str,
    url: Option<&str>,
    data: Option<(&[u8], &str)>,
    body: Option<&str>,
    options: Value,
) -> i64 {
    sqlx::query_scalar(
        "insert into wa_message (session_id, recipient, kind, media_url, media_data, media_mime, body, options)
         values ($1, '15550810104', 'sticker', $2, $3, $4, $5, $6) returning id",
    )
    .bind(session)
    .bind(url)
    .bind(data.map(|d| d.0.to_vec()))
    .bind(data.map(|d| d.1))
    .bind(body)
    .bind(options)
    .fetch_one(p)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stickers_go_out_once_as_512_webp_and_bad_images_fail_with_a_code() {
    let db = test_db().await;
    let (r, _) = start_runner(&db).await;
    let p = &db.pool;
    let (s, me) = ("e2e_sticker", "15550800104");
    link(p, s, me).await;
    let (media, png) = media_server().await;

    let from_url = sticker_row(
        p,
        s,
        Some(&format!("{media}/pic.png")),
        None,
        None,
        json!({}),
    )
    .await;
    let from_bytes = sticker_row(p, s, None, Some((&png, "image/png")), None, json!({})).await;
    // Not an image at all, whatever the mime says: refused before the page.
    let not_image = sticker_row(
        p,
        s,
        None,
        Some((b"plain text, not a picture", "image/png")),
        None,
        json!({}),
    )
    .await;
    // A PNG signature with nothing after it: only the page finds out it cannot draw it.
    let broken = sticker_row(p, s, None, Some((&png[..16], "image/png")), None, json!({})).await;
    let captioned = sticker_row(
        p,
        s,
        None,
        Some((&png, "image/png")),
        Some("no captions"),
        json!({}),
    )
    .await;
    let preview = sticker_row(
        p,
        s,
        None,
        Some((&png, "image/png")),
        None,
        json!({"link_preview": true}),
    )
    .await;
    let no_media = sticker_row(p, s, None, None, None, json!({})).await;

    let all = [
        from_url, from_bytes, not_image, broken, captioned, preview, no_media,
    ];
    wait_for("every sticker row finished", STEP, || async {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from wa_message where id = any($1) and status not in ('queued', 'sending')",
        )
        .bind(&all[..])
        .fetch_one(p)
        .await
        .unwrap();
        (n == all.len() as i64).then_some(())
    })
    .await;
    for (id, code) in [
        (not_image, "media_invalid"),
        (broken, "media_invalid"),
        (captioned, "invalid_options"),
        (preview, "invalid_options"),
        (no_media, "media_missing"),
    ] {
        let (status, got, _) = msg(p, id).await;
        assert_eq!(
            (status.as_str(), got.as_deref()),
            ("failed", Some(code)),
            "row {id}"
        );
        let error: Option<String> =
            sqlx::query_scalar("select error from wa_message where id = $1")
                .bind(id)
                .fetch_one(p)
                .await
                .unwrap();
        assert!(error.is_some_and(|e| !e.is_empty()), "row {id} says why");
    }
    let sent = sim().await.sent_by(me).await;
    for id in [from_url, from_bytes] {
        let (status, code, wa_id) = msg(p, id).await;
        assert_ne!(status, "failed", "row {id}: {code:?}");
        let wa_id = wa_id.expect("wa_message_id");
        let hits: Vec<&Value> = sent.iter().filter(|m| m["id"] == bare_id(&wa_id)).collect();
        assert_eq!(hits.len(), 1, "sent once: {sent:?}");
        let m = hits[0];
        assert_eq!(m["kind"], "sticker", "{m}");
        assert_eq!(m["to"], "15550810104@c.us");
        assert_eq!(m["media"]["mime"], "image/webp", "{m}");
        assert_eq!(m["sticker"], json!({"width": 512, "height": 512}), "{m}");
        assert!(m.get("caption").is_none_or(Value::is_null), "{m}");
    }
    // Nothing of the refused rows reached the server.
    let stickers = sent.iter().filter(|m| m["kind"] == "sticker").count();
    assert_eq!(stickers, 2, "{sent:?}");
    r.shutdown().await.unwrap();
}
