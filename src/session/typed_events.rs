//! Writing a typed inbound event (a reaction, poll vote, edit or revoke from the other side):
//! once per session, kind and page key (`wa_event_typed_uq`), fenced on this runner owning the
//! session, with `message_id` pointing at our row when the target is a message we sent.

use crate::db::bounded;
use crate::driver::TypedEvent;
use crate::shared::Shared;

/// Records `ev`; a second report of the same key (the live hook and the backfill after a
/// reconnect both saw it) writes nothing. Ok(false) when the session is no longer ours.
pub(super) async fn record_typed(shared: &Shared, id: &str, ev: &TypedEvent) -> sqlx::Result<bool> {
    let ours = ev
        .target_is_ours()
        .then(|| crate::driver::bare_id(&ev.target).to_string());
    let owned: bool = bounded(
        sqlx::query_scalar(
            "with own as (select id from wa_session where id = $1 and runner_id = $2),
             target as (
               select m.id from wa_message m, own
               where $6::text is not null and m.session_id = own.id
                 and split_part(m.wa_message_id, '_', 3) = $6
               order by m.id limit 1),
             e as (insert into wa_event (session_id, kind, message_id, wa_message_id, payload)
                   select own.id, $3, (select id from target), $4, $5 from own
                   on conflict (session_id, kind, wa_message_id)
                     where kind in ('reaction', 'poll_vote', 'edit', 'revoke') do nothing
                   returning session_id),
             u as (update wa_session set last_active_at = now()
                   where id in (select session_id from e) returning id)
             select exists (select 1 from own)",
        )
        .bind(id)
        .bind(shared.id)
        .bind(ev.kind.as_str())
        .bind(&ev.key)
        .bind(ev.payload())
        .bind(ours)
        .fetch_one(&shared.pool),
    )
    .await?;
    Ok(owned)
}
