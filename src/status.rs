//! `wa-outbox status`: runners, sessions and the queue, read from the inspection views, as a
//! table for people or `--json` for scripts. Everything shown is also a plain SQL query away.

use serde_json::Value;
use sqlx::PgPool;

use crate::config::Config;

const RUNNERS: &str = "select id, host, pid, version, capacity, sessions, connected, draining,
    round(extract(epoch from heartbeat_age)::numeric, 1) as heartbeat_age_s from wa_runner_overview order by host, id";
// wa_outbox_stats is read once (the `st` CTE) and feeds both the sessions and the queue totals:
// at 10 M rows its one aggregation is the cost of the whole command (bench/run.sh).
const SESSIONS: &str = "select o.id, o.status, o.desired_state, o.phone_number, coalesce(r.host, '') as runner,
    o.lease_live, o.queued, st.sending, st.sent + st.delivered + st.read + st.played as done, st.failed,
    round(extract(epoch from st.oldest_queued_age)::numeric, 1) as oldest_queued_s, o.error_code
    from wa_session_overview o join st on st.session_id = o.id
    left join wa_runner r on r.id = o.runner_id order by o.id";
const QUEUE: &str = "select v.status, v.messages from (
      select sum(queued) as queued, sum(sending) as sending, sum(sent) as sent, sum(delivered) as delivered,
        sum(read) as read, sum(played) as played, sum(failed) as failed, sum(cancelled) as cancelled from st) a
    cross join lateral (values ('cancelled', a.cancelled), ('delivered', a.delivered), ('failed', a.failed),
      ('played', a.played), ('queued', a.queued), ('read', a.read), ('sending', a.sending), ('sent', a.sent))
      v(status, messages)
    where v.messages > 0 order by v.status";

/// Everything `status` shows, in one statement (one snapshot), built as JSON by PostgreSQL.
pub async fn snapshot(pool: &PgPool) -> anyhow::Result<Value> {
    let list = |sql: &str| format!("(select coalesce(json_agg(t), '[]'::json) from ({sql}) t)");
    let sql = format!(
        "with st as materialized (select * from wa_outbox_stats)
         select json_build_object('runners', {}, 'sessions', {}, 'queue', {})",
        list(RUNNERS),
        list(SESSIONS),
        list(QUEUE)
    );
    Ok(sqlx::query_scalar(&sql).fetch_one(pool).await?)
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A plain aligned table of the given columns.
pub fn table(rows: &[Value], columns: &[&str]) -> String {
    let mut grid: Vec<Vec<String>> = vec![columns.iter().map(|c| c.to_string()).collect()];
    for r in rows {
        grid.push(columns.iter().map(|c| cell(&r[*c])).collect());
    }
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| grid.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in grid {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub fn render(snap: &Value) -> String {
    let empty = vec![];
    let get = |k: &str| snap[k].as_array().unwrap_or(&empty).clone();
    let mut out = String::new();
    let runners = get("runners");
    out.push_str(&format!("RUNNERS ({})\n", runners.len()));
    out.push_str(&table(
        &runners,
        &[
            "host",
            "pid",
            "version",
            "capacity",
            "sessions",
            "connected",
            "draining",
            "heartbeat_age_s",
        ],
    ));
    let sessions = get("sessions");
    out.push_str(&format!("\nSESSIONS ({})\n", sessions.len()));
    out.push_str(&table(
        &sessions,
        &[
            "id",
            "status",
            "desired_state",
            "phone_number",
            "runner",
            "queued",
            "sending",
            "done",
            "failed",
            "oldest_queued_s",
            "error_code",
        ],
    ));
    out.push_str("\nQUEUE\n");
    out.push_str(&table(&get("queue"), &["status", "messages"]));
    out
}

pub async fn status_command(config: &Config, json: bool) -> anyhow::Result<()> {
    let db = crate::db::resolve(config).await?;
    let pool = crate::db::connect(&db.url, 2).await?;
    crate::db::check_schema(&pool).await?;
    let snap = snapshot(&pool).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&snap)?);
    } else {
        print!("{}", render(&snap));
    }
    Ok(())
}
