//! Deployment on a real PostgreSQL: the HTTP endpoints (health, readiness, metrics), the KEDA
//! ScaledObject's query, the least-privilege roles of deploy/sql/roles.sql, and the manifests'
//! numbers agreeing with each other. deploy/validate.sh checks the manifests' schemas.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{oneshot, watch};
use wa_outbox::child::DieWithParent as _;
use wa_outbox::http::{self, Metrics};
use wa_outbox::testing::test_db;

/// DESIGN.md §7: one browser per session costs about 210 MB (PSS, 8 browsers side by side).
const MB_PER_SESSION: u64 = 210 * 1_000_000;

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn yaml(rel: &str) -> serde_yaml::Value {
    let text = std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn str_at<'a>(v: &'a serde_yaml::Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for key in path {
        cur = match key.parse::<usize>() {
            Ok(i) => &cur[i],
            Err(_) => &cur[*key],
        };
    }
    cur.as_str()
        .unwrap_or_else(|| panic!("{} is not a string: {cur:?}", path.join(".")))
}

/// The query KEDA runs, read from the ScaledObject itself so the test checks what is deployed.
fn keda_query() -> String {
    let so = yaml("deploy/k8s/scaledobject.yaml");
    assert_eq!(
        str_at(&so, &["spec", "triggers", "0", "type"]),
        "postgresql"
    );
    str_at(&so, &["spec", "triggers", "0", "metadata", "query"]).to_string()
}

async fn apply_roles(pool: &PgPool) {
    let sql = std::fs::read_to_string(repo_file("deploy/sql/roles.sql")).unwrap();
    sqlx::raw_sql(&sql)
        .execute(pool)
        .await
        .expect("roles.sql applies");
}

fn insufficient_privilege<T>(r: Result<T, sqlx::Error>, what: &str) {
    match r {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => {}
        Err(other) => panic!("{what}: expected permission denied (42501), got {other}"),
        Ok(_) => panic!("{what}: expected permission denied (42501), but it succeeded"),
    }
}

// ---- KEDA -------------------------------------------------------------------------------------

/// (id, desired_state, status, messages as (status, not_before offset)) and whether the session
/// needs a browser, i.e. counts towards the pods KEDA asks for.
type Seed = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    bool,
);
const KEDA_SEEDS: &[Seed] = &[
    ("run_new", "running", "new", &[], true),
    ("run_starting", "running", "starting", &[], true),
    ("run_qr", "running", "qr_pending", &[], true),
    ("run_pairing", "running", "pairing", &[], true),
    (
        "run_connected",
        "running",
        "connected",
        &[("queued", "-1 minute")],
        true,
    ),
    (
        "hib_due",
        "running",
        "hibernated",
        &[("queued", "-1 minute")],
        true,
    ),
    (
        "hib_future",
        "running",
        "hibernated",
        &[("queued", "1 hour")],
        false,
    ),
    (
        "hib_sent",
        "running",
        "hibernated",
        &[("sent", "-1 hour")],
        false,
    ),
    (
        "hib_cancelled",
        "running",
        "hibernated",
        &[("cancelled", "-1 hour")],
        false,
    ),
    ("hib_idle", "running", "hibernated", &[], false),
    (
        "stopped",
        "stopped",
        "stopped",
        &[("queued", "-1 minute")],
        false,
    ),
    (
        "stopped_hib",
        "stopped",
        "hibernated",
        &[("queued", "-1 minute")],
        false,
    ),
    (
        "failed",
        "running",
        "failed",
        &[("queued", "-1 minute")],
        false,
    ),
    ("logged_out", "logged_out", "logged_out", &[], false),
    // a stop or logout asked for but not yet carried out still needs a runner with a browser
    ("stopping", "stopped", "connected", &[], true),
    ("logout_pending", "logged_out", "hibernated", &[], true),
];

async fn seed_keda(pool: &PgPool) -> i64 {
    for (id, desired, status, messages, _) in KEDA_SEEDS {
        sqlx::query("insert into wa_session (id, desired_state, status) values ($1, $2, $3)")
            .bind(id)
            .bind(desired)
            .bind(status)
            .execute(pool)
            .await
            .unwrap();
        for (mstatus, offset) in *messages {
            sqlx::query(
                "insert into wa_message (session_id, recipient, body, status, not_before)
                 values ($1, '15551234567', 'hi', $2, now() + $3::interval)",
            )
            .bind(id)
            .bind(mstatus)
            .bind(offset)
            .execute(pool)
            .await
            .unwrap();
        }
    }
    KEDA_SEEDS.iter().filter(|s| s.4).count() as i64
}

#[tokio::test]
async fn keda_query_counts_sessions_that_need_a_browser() {
    let db = test_db().await;
    let query = keda_query();

    let empty: i64 = sqlx::query_scalar(&query)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(empty, 0, "no sessions must mean zero pods");

    let expected = seed_keda(&db.pool).await;
    let n: i64 = sqlx::query_scalar(&query)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, expected, "sessions needing a browser");

    // A due message for a sleeping session is what wakes the fleet from zero.
    sqlx::query("update wa_message set not_before = now() - interval '1 second' where session_id = 'hib_future'")
        .execute(&db.pool)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar(&query)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, expected + 1, "hib_future's message is now due");

    // KEDA logs in as wa_keda: its column rights must be enough for the query.
    apply_roles(&db.pool).await;
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::raw_sql("set role wa_keda")
        .execute(&mut *conn)
        .await
        .unwrap();
    let as_keda: i64 = sqlx::query_scalar(&query)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(as_keda, expected + 1);
    insufficient_privilege(
        sqlx::query("select qr_code from wa_session")
            .fetch_all(&mut *conn)
            .await,
        "wa_keda reading QR codes",
    );
    insufficient_privilege(
        sqlx::query("select body from wa_message")
            .fetch_all(&mut *conn)
            .await,
        "wa_keda reading message bodies",
    );
}

#[test]
fn manifests_agree_on_capacity_memory_and_secrets() {
    let cm = yaml("deploy/k8s/configmap.yaml");
    let so = yaml("deploy/k8s/scaledobject.yaml");
    let dep = yaml("deploy/k8s/deployment.yaml");
    let secret = yaml("deploy/k8s/secret.yaml");
    let job = yaml("deploy/k8s/migrate-job.yaml");
    let ta = yaml("deploy/k8s/triggerauthentication.yaml");

    let capacity: u64 = str_at(&cm, &["data", "WA_RUNNER_CAPACITY"])
        .parse()
        .unwrap();
    let meta = &so["spec"]["triggers"][0]["metadata"];
    assert_eq!(
        str_at(meta, &["targetQueryValue"]).parse::<u64>().unwrap(),
        capacity,
        "KEDA's target per pod must be WA_RUNNER_CAPACITY"
    );
    assert_eq!(str_at(meta, &["activationTargetQueryValue"]), "0");
    assert_eq!(so["spec"]["minReplicaCount"].as_u64(), Some(0));
    assert_eq!(
        str_at(&so, &["spec", "scaleTargetRef", "name"]),
        str_at(&dep, &["metadata", "name"])
    );
    assert!(
        dep["spec"].get("replicas").is_none(),
        "KEDA owns the replica count"
    );

    let pod = &dep["spec"]["template"]["spec"];
    let runner = &pod["containers"][0];
    let request = quantity(str_at(runner, &["resources", "requests", "memory"]));
    let limit = quantity(str_at(runner, &["resources", "limits", "memory"]));
    assert!(
        request >= capacity * MB_PER_SESSION,
        "memory request {request} < {capacity} sessions x 210 MB"
    );
    assert!(limit >= request);
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace >= 60,
        "grace period {grace}s is too short for the drain"
    );

    // Every config variable the ConfigMap sets is one the binary reads (a typo would be
    // silently ignored, and the default used).
    let known: Vec<&str> = wa_outbox::config::VARS.iter().map(|v| v.0).collect();
    for key in cm["data"].as_mapping().unwrap().keys() {
        let key = key.as_str().unwrap();
        assert!(
            known.contains(&key),
            "configmap.yaml sets unknown variable {key}"
        );
    }
    // Likewise the variables the image and the pods set directly (HOME and TMPDIR are for
    // Chromium, not for wa-outbox).
    let process_env = ["HOME", "TMPDIR"];
    let dockerfile = std::fs::read_to_string(repo_file("deploy/docker/Dockerfile")).unwrap();
    let env_block = dockerfile
        .split("\nENV ")
        .nth(1)
        .expect("the Dockerfile sets ENV");
    let mut image_vars = vec![];
    for line in env_block.lines() {
        image_vars.extend(
            line.split_whitespace()
                .filter_map(|t| t.split_once('=').map(|(k, _)| k.to_string())),
        );
        if !line.trim_end().ends_with('\\') {
            break;
        }
    }
    assert!(
        image_vars.iter().any(|v| v == "WA_HTTP_LISTEN"),
        "{image_vars:?}"
    );
    let pod_vars = [runner, &job["spec"]["template"]["spec"]["containers"][0]]
        .into_iter()
        .flat_map(|c| c["env"].as_sequence().unwrap())
        .map(|e| str_at(e, &["name"]).to_string());
    for var in image_vars.iter().cloned().chain(pod_vars) {
        assert!(
            known.contains(&var.as_str()) || process_env.contains(&var.as_str()),
            "the image or a pod sets unknown variable {var}"
        );
    }
    // Every secret key referenced exists in the Secret.
    let keys: Vec<&str> = secret["stringData"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    let mut refs = vec![];
    for c in [runner, &job["spec"]["template"]["spec"]["containers"][0]] {
        for env in c["env"].as_sequence().unwrap() {
            if let Some(r) = env.get("valueFrom").and_then(|v| v.get("secretKeyRef")) {
                refs.push(str_at(r, &["key"]).to_string());
            }
        }
    }
    for r in ta["spec"]["secretTargetRef"].as_sequence().unwrap() {
        refs.push(str_at(r, &["key"]).to_string());
    }
    for r in &refs {
        assert!(
            keys.contains(&r.as_str()),
            "secret key {r} is referenced but not defined"
        );
    }
    assert!(refs.iter().any(|r| r == "DATABASE_URL") && refs.iter().any(|r| r == "WA_AUTH_KEY"));
}

/// Kubernetes memory quantities as bytes (the forms the manifests use).
fn quantity(q: &str) -> u64 {
    let units: [(&str, u64); 6] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, mult) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("bad quantity {q}"))
                * mult;
        }
    }
    q.parse().unwrap_or_else(|_| panic!("bad quantity {q}"))
}

// ---- roles ------------------------------------------------------------------------------------

#[tokio::test]
async fn roles_give_django_and_runners_only_what_they_need() {
    let db = test_db().await;
    apply_roles(&db.pool).await;
    apply_roles(&db.pool).await; // re-runnable
    sqlx::query("insert into wa_session (id) values ('other')")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "insert into wa_session_auth (session_id, key_id, nonce, ciphertext, size_bytes, sha256)
         values ('other', 'k1', '\\x00', '\\x00', 1, 'ab')",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::raw_sql("set role wa_django")
        .execute(&mut *conn)
        .await
        .unwrap();
    insufficient_privilege(
        sqlx::query("select * from wa_session_auth")
            .fetch_all(&mut *conn)
            .await,
        "wa_django reading wa_session_auth",
    );
    insufficient_privilege(
        sqlx::query("select * from wa_runner")
            .fetch_all(&mut *conn)
            .await,
        "wa_django reading wa_runner",
    );
    // What Django does: create a session and a message, read them back through the views.
    sqlx::query("insert into wa_session (id, user_id) values ('user_7_session', 7)")
        .execute(&mut *conn)
        .await
        .expect("django inserts a session");
    let id: i64 = sqlx::query_scalar(
        "insert into wa_message (session_id, recipient, body) values ('user_7_session', '15551234567', 'hi') returning id",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("django inserts a message");
    for view in [
        "wa_outbox_stats",
        "wa_session_overview",
        "wa_runner_overview",
        "wa_event",
        "wa_media",
    ] {
        sqlx::query(&format!("select * from {view}"))
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("django reads {view}: {e}"));
    }
    let has_login: bool =
        sqlx::query_scalar("select has_stored_login from wa_session_overview where id = 'other'")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert!(
        has_login,
        "the view tells a stored login exists without exposing it"
    );
    sqlx::query("update wa_session set desired_state = 'stopped' where id = 'user_7_session'")
        .execute(&mut *conn)
        .await
        .expect("django changes desired_state");
    sqlx::query("update wa_message set status = 'cancelled' where id = $1 and status = 'queued'")
        .bind(id)
        .execute(&mut *conn)
        .await
        .expect("django cancels a queued message");
    insufficient_privilege(
        sqlx::query("update wa_session set status = 'connected'")
            .execute(&mut *conn)
            .await,
        "wa_django writing a runner-owned column",
    );
    insufficient_privilege(
        sqlx::query("update wa_message set body = 'changed'")
            .execute(&mut *conn)
            .await,
        "wa_django rewriting a message",
    );
    insufficient_privilege(
        sqlx::query("delete from wa_message")
            .execute(&mut *conn)
            .await,
        "wa_django deleting messages",
    );
    insufficient_privilege(
        sqlx::query("delete from wa_media")
            .execute(&mut *conn)
            .await,
        "wa_django deleting media",
    );

    sqlx::raw_sql("reset role; set role wa_runner")
        .execute(&mut *conn)
        .await
        .unwrap();
    // The runner's daily work.
    let n: i64 = sqlx::query_scalar("select count(*) from wa_session_auth")
        .fetch_one(&mut *conn)
        .await
        .expect("runner reads logins");
    assert_eq!(n, 1);
    sqlx::query("update wa_session set status = 'connected', runner_id = gen_random_uuid() where id = 'user_7_session'")
        .execute(&mut *conn)
        .await
        .expect("runner writes session state");
    let event: i64 = sqlx::query_scalar(
        "insert into wa_event (session_id, kind) values ('user_7_session', 'session_status') returning id",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("runner records events");
    sqlx::query(
        "insert into wa_media (session_id, event_id, wa_message_id, kind, mime, size, sha256, data)
         values ('user_7_session', $1, 'false_1@c.us_X', 'image', 'image/png', 1, encode(sha256('x'), 'hex'), 'x')",
    )
    .bind(event)
    .execute(&mut *conn)
    .await
    .expect("runner stores incoming media");
    sqlx::query("select version, success from _sqlx_migrations")
        .fetch_all(&mut *conn)
        .await
        .expect("runner checks the schema version");
    sqlx::query("delete from wa_event where session_id = 'user_7_session'")
        .execute(&mut *conn)
        .await
        .expect("runner prunes events");
    // ...and nothing that changes the schema.
    for ddl in [
        "drop table wa_message",
        "alter table wa_session add column nope int",
        "truncate wa_event",
        "create table wa_nope (x int)",
        "drop view wa_outbox_stats",
    ] {
        insufficient_privilege(sqlx::query(ddl).execute(&mut *conn).await, ddl);
    }
    sqlx::raw_sql("reset role")
        .execute(&mut *conn)
        .await
        .unwrap();
    let still_there: bool = sqlx::query_scalar("select to_regclass('wa_message') is not null")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert!(still_there);
}

// ---- HTTP -------------------------------------------------------------------------------------

struct Server {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start_server(pool: PgPool, metrics: Metrics, draining: watch::Receiver<bool>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(http::serve_listener(
        listener,
        pool,
        metrics,
        draining,
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        base,
        stop: Some(stop),
        task,
    }
}

impl Server {
    async fn shutdown(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("server stops on its shutdown signal")
            .unwrap()
            .expect("server exits cleanly");
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get(c: &reqwest::Client, url: &str) -> (u16, String, String) {
    let r = c
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

#[tokio::test]
async fn readyz_follows_draining_and_the_database() {
    let db = test_db().await;
    let (drain_tx, drain_rx) = watch::channel(false);
    let server = start_server(db.pool.clone(), Metrics::new(), drain_rx).await;
    let c = client();

    assert_eq!(get(&c, &format!("{}/healthz", server.base)).await.0, 200);
    let (status, _, body) = get(&c, &format!("{}/readyz", server.base)).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    drain_tx.send(true).unwrap();
    let (status, _, body) = get(&c, &format!("{}/readyz", server.base)).await;
    assert_eq!((status, body.as_str()), (503, "draining\n"));
    // Still alive while draining: Kubernetes must not kill a pod that is saving its logins.
    assert_eq!(get(&c, &format!("{}/healthz", server.base)).await.0, 200);
    let (_, _, metrics) = get(&c, &format!("{}/metrics", server.base)).await;
    assert_eq!(
        parse_openmetrics(&metrics)[&series("wa_draining", &[])],
        1.0
    );

    drain_tx.send(false).unwrap();
    assert_eq!(get(&c, &format!("{}/readyz", server.base)).await.0, 200);
    server.shutdown().await;

    // A database nobody answers on: not ready, still alive, metrics say the count failed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dead = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy(&format!("postgres://nobody@127.0.0.1:{port}/nothing"))
        .unwrap();
    let (_tx, rx) = watch::channel(false);
    let server = start_server(dead, Metrics::new(), rx).await;
    let (status, _, body) = get(&c, &format!("{}/readyz", server.base)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("database"), "{body}");
    assert_eq!(get(&c, &format!("{}/healthz", server.base)).await.0, 200);
    let (status, _, text) = get(&c, &format!("{}/metrics", server.base)).await;
    assert_eq!(status, 200);
    let m = parse_openmetrics(&text);
    assert_eq!(m[&series("wa_metrics_db_up", &[])], 0.0);
    assert!(
        !m.keys().any(|(name, _)| name == "wa_sessions"),
        "no stale counts when the database is away"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_expose_seeded_counts_and_runner_series() {
    let db = test_db().await;
    for (id, status) in [("a", "connected"), ("b", "connected"), ("c", "hibernated")] {
        sqlx::query("insert into wa_session (id, status) values ($1, $2)")
            .bind(id)
            .bind(status)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    for status in ["queued", "queued", "queued", "sent", "failed", "failed"] {
        sqlx::query("insert into wa_message (session_id, recipient, body, status) values ('a', '15551234567', 'x', $1)")
            .bind(status)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let metrics = Metrics::new();
    metrics.observe_claim_latency(Duration::from_micros(1500));
    metrics.observe_send_latency(Duration::from_millis(80));
    metrics.observe_send_latency(Duration::from_millis(120));
    metrics.inc_browser_restarts();
    metrics.set_live_browsers(2);
    metrics.set_session_memory_bytes("a", 211_000_000);
    metrics.set_session_memory_bytes("b", 190_000_000);
    let (_tx, rx) = watch::channel(false);
    let server = start_server(db.pool.clone(), metrics.clone(), rx).await;
    let c = client();

    let (status, content_type, text) = get(&c, &format!("{}/metrics", server.base)).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let m = parse_openmetrics(&text);
    let expect = [
        (series("wa_sessions", &[("status", "connected")]), 2.0),
        (series("wa_sessions", &[("status", "hibernated")]), 1.0),
        (series("wa_sessions", &[("status", "new")]), 0.0),
        (series("wa_messages", &[("status", "queued")]), 3.0),
        (series("wa_messages", &[("status", "sent")]), 1.0),
        (series("wa_messages", &[("status", "failed")]), 2.0),
        (series("wa_messages", &[("status", "cancelled")]), 0.0),
        (series("wa_metrics_db_up", &[]), 1.0),
        (series("wa_draining", &[]), 0.0),
        (series("wa_claim_latency_seconds_count", &[]), 1.0),
        (series("wa_claim_latency_seconds_sum", &[]), 0.0015),
        (series("wa_send_latency_seconds_count", &[]), 2.0),
        (
            series("wa_send_latency_seconds_bucket", &[("le", "0.1")]),
            1.0,
        ),
        (
            series("wa_send_latency_seconds_bucket", &[("le", "+Inf")]),
            2.0,
        ),
        (series("wa_browser_restarts_total", &[]), 1.0),
        (series("wa_live_browsers", &[]), 2.0),
        (
            series("wa_session_memory_bytes", &[("session_id", "a")]),
            211e6,
        ),
    ];
    for (key, value) in &expect {
        let got = m
            .get(key)
            .unwrap_or_else(|| panic!("{key:?} missing in\n{text}"));
        assert!(
            (got - value).abs() < 1e-9,
            "{key:?} = {got}, expected {value}"
        );
    }
    for status in http::SESSION_STATUSES {
        assert!(m.contains_key(&series("wa_sessions", &[("status", status)])));
    }
    for status in http::MESSAGE_STATUSES {
        assert!(m.contains_key(&series("wa_messages", &[("status", status)])));
    }

    // Counts are read at scrape time, and a session that left stops being reported.
    sqlx::query(
        "insert into wa_message (session_id, recipient, body) values ('b', '15551234567', 'y')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    metrics.remove_session("b");
    let (_, _, text) = get(&c, &format!("{}/metrics", server.base)).await;
    let m = parse_openmetrics(&text);
    assert_eq!(m[&series("wa_messages", &[("status", "queued")])], 4.0);
    assert!(!m.contains_key(&series("wa_session_memory_bytes", &[("session_id", "b")])));
    server.shutdown().await;
}

#[tokio::test]
async fn serve_names_the_variable_when_the_address_is_taken() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://nobody@127.0.0.1:1/unused")
        .unwrap();
    let (_tx, rx) = watch::channel(false);
    let served = tokio::time::timeout(
        Duration::from_secs(5),
        http::serve(addr, pool, Metrics::new(), rx, std::future::pending()),
    )
    .await
    .expect("a bind failure returns at once");
    let err = served.unwrap_err();
    assert!(format!("{err:#}").contains("WA_HTTP_LISTEN"), "{err:#}");
    let err = http::bind(addr).await.unwrap_err();
    assert!(format!("{err:#}").contains(&addr.to_string()), "{err:#}");
}

type SeriesKey = (String, Vec<(String, String)>);

fn series(name: &str, labels: &[(&str, &str)]) -> SeriesKey {
    let mut l: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.sort();
    (name.to_string(), l)
}

/// A strict reader of the OpenMetrics text format, enough to prove the exposition is well
/// formed: every line is a descriptor or a sample of a declared family, labels are quoted
/// pairs, values are numbers, the body ends with `# EOF`, and no series appears twice.
fn parse_openmetrics(text: &str) -> BTreeMap<SeriesKey, f64> {
    let mut out = BTreeMap::new();
    let mut families: Vec<String> = vec![];
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.last(),
        Some(&"# EOF"),
        "exposition must end with # EOF"
    );
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
            })
    };
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts
                .next()
                .unwrap_or_else(|| panic!("bad descriptor: {line}"));
            assert!(
                ["HELP", "TYPE", "UNIT"].contains(&kind),
                "bad descriptor: {line}"
            );
            assert!(valid_name(name), "bad metric name in {line}");
            if kind == "TYPE" {
                let t = parts.next().unwrap();
                assert!(
                    [
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "info",
                        "stateset",
                        "unknown"
                    ]
                    .contains(&t),
                    "bad type in {line}"
                );
                families.push(name.to_string());
            }
            continue;
        }
        let (name_labels, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match name_labels.split_once('{') {
            None => (name_labels, vec![]),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let mut labels = vec![];
                for pair in body.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    assert!(valid_name(k), "bad label name in {line}");
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or_else(|| panic!("unquoted label value: {line}"));
                    labels.push((k.to_string(), v.to_string()));
                }
                labels.sort();
                (name, labels)
            }
        };
        assert!(valid_name(name), "bad metric name in {line}");
        assert!(
            families.iter().any(|f| name == f
                || ["_total", "_count", "_sum", "_bucket", "_created", "_info"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(f.as_str()))),
            "sample {name} of no declared family"
        );
        let key = (name.to_string(), labels);
        assert!(out.insert(key, value).is_none(), "duplicate series: {line}");
    }
    out
}

// ---- docs -------------------------------------------------------------------------------------

fn sql_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = vec![];
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```sql") => current = Some(String::new()),
            (Some(b), "```") => {
                blocks.push(std::mem::take(b));
                current = None;
            }
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

fn squash(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test]
async fn sql_in_the_deployment_docs_runs_and_matches_the_scaledobject() {
    let doc = std::fs::read_to_string(repo_file("docs/deployment.md")).unwrap();
    let keda_section = &doc[doc.find("## 4.").unwrap()..doc.find("## 5.").unwrap()];
    let shown = sql_blocks(keda_section);
    assert_eq!(
        shown.iter().map(|s| squash(s)).collect::<Vec<_>>(),
        vec![squash(&keda_query())],
        "docs/deployment.md §4 must show the ScaledObject's query as it is"
    );

    let recipes = sql_blocks(&doc[doc.find("## 8.").unwrap()..doc.find("## 9.").unwrap()]);
    assert!(recipes.len() >= 8, "found {} recipes", recipes.len());
    let db = test_db().await;
    seed_keda(&db.pool).await;
    sqlx::query(
        "insert into wa_runner (id, host, pid, version, capacity) values (gen_random_uuid(), 'pod-1', 1, '0.1.0', 8)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("insert into wa_session (id, status) values ('user_123_session', 'failed')")
        .execute(&db.pool)
        .await
        .unwrap();
    for sql in recipes {
        let mut tx = db.pool.begin().await.unwrap();
        sqlx::raw_sql(&sql)
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("recipe failed: {e}\n{sql}"));
        tx.rollback().await.unwrap();
    }
}

// ---- memory per session -----------------------------------------------------------------------

fn own_pss_bytes(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test]
async fn memory_of_a_real_browser_counts_all_its_processes() {
    use std::os::unix::process::CommandExt;

    let chromium = std::env::var("WA_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(&chromium);
    cmd.args([
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--remote-debugging-port=0",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg("about:blank")
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    // Its own process group, so the whole browser can be killed at the end.
    .process_group(0)
    .die_with_parent();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.arg("--no-sandbox");
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{chromium}: {e} (install Debian's chromium)"));
    let pid = child.id();

    // A browser is several processes (browser, zygotes, renderer, utilities); wait until the
    // renderer is up, i.e. the tree holds clearly more than the browser process alone.
    let (tree, own) = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let tree = http::process_tree_pss_bytes(pid).expect("the browser is readable");
            let own = own_pss_bytes(pid);
            if tree > own + 20_000_000 {
                return (tree, own);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the browser's child processes appear within 60 s");
    // SAFETY: kill with a negative pid signals the process group we created above.
    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
    let _ = child.wait();

    // The wait above already proved the children are counted (tree > own + 20 MB).
    assert!(tree < 4_000_000_000, "implausible PSS {tree}");
    eprintln!(
        "headless Chromium on about:blank: {} MB PSS in all, {} MB in the browser process",
        tree / 1_000_000,
        own / 1_000_000
    );

    let gone = http::process_tree_pss_bytes(pid);
    assert!(
        gone.is_err(),
        "a process that is gone is an error, not 0: {gone:?}"
    );
}
