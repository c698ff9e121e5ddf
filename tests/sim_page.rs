//! The simulator's page, by WhatsApp Web build, in real headless Chromium: what a driver sees
//! through `window.require` on the early-2026 page and on today's (docs/sim-surface.md, "By
//! version"). Every wait polls a condition with a deadline; nothing sleeps to synchronise.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::js_protocol::runtime::EvaluateParams;
use chromiumoxide::Page;
use futures::StreamExt;
use serde_json::{json, Value};
use wa_outbox::child::DieWithParent as _;
use wa_outbox::sim::{EARLY_2026_WA_VERSION, NEWEST_WA_VERSION};
use wa_outbox::testing::wait_for;

const WAIT: Duration = Duration::from_secs(30);
const ME: &str = "15550001111";
const FRIEND: &str = "15550002222";

struct Sim {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sim(version: &str, extra: &[&str]) -> Sim {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wa-outbox"))
        .args(["sim", "--listen", "127.0.0.1:0", "--wa-version", version])
        .args(["--sync-delay-ms", "200", "--ack-step-ms", "100"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .die_with_parent()
        .spawn()
        .expect("spawn wa-outbox sim");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the sim prints its address");
    let base = line
        .trim()
        .strip_prefix("sim listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    Sim { child, base, http }
}

impl Sim {
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("POST");
        (r.status().as_u16(), r.json().await.expect("json"))
    }
    async fn get(&self, path: &str) -> Value {
        let r = self.http.get(format!("{}{path}", self.base)).send().await;
        r.expect("GET").json().await.expect("json")
    }
    async fn sent(&self) -> Vec<Value> {
        let v = self.get(&format!("/_sim/messages?phone={ME}")).await;
        v["messages"].as_array().cloned().unwrap_or_default()
    }
    /// Scans the QR the page shows right now for `ME`.
    async fn scan(&self, page: &Page) {
        let qr = wait_js(page, "a QR", "Socket().state === 'UNPAIRED' && Conn().ref").await;
        let qr = wait_for("the QR at the sim", WAIT, || async {
            let devices = self.get("/_sim/devices").await;
            devices["devices"].as_array().and_then(|d| {
                d.iter()
                    .filter_map(|d| d["qr"].as_str())
                    .find(|q| q.starts_with(qr.as_str().unwrap_or("?")))
                    .map(str::to_string)
            })
        })
        .await;
        let (status, body) = self
            .post("/_sim/scan", json!({"qr": qr, "phone": ME, "name": "Page"}))
            .await;
        assert_eq!(status, 200, "{body}");
        wait_js(page, "CONNECTED", "Socket().state === 'CONNECTED'").await;
    }
}

/// Helpers every evaluation can use: the page's own modules, nothing of the simulator's.
const PRELUDE: &str = "const R = (n) => window.require(n);
    const Socket = () => R('WAWebSocketModel').Socket;
    const Conn = () => R('WAWebConnModel').Conn;
    const Wid = (s) => R('WAWebWidFactory').createWid(s);
    const Msg = () => R('WAWebCollections').Msg;";

/// Evaluates `body` (statements of an async function, with PRELUDE) and returns its JSON value.
async fn js(page: &Page, body: &str) -> Result<Value, String> {
    let expr = format!("(async () => {{ {PRELUDE} {body} }})()");
    let params = EvaluateParams::builder()
        .expression(expr)
        .await_promise(true)
        .return_by_value(true)
        .build()
        .map_err(|e| e.to_string())?;
    let eval = tokio::time::timeout(WAIT, page.evaluate_expression(params)).await;
    let res = eval.map_err(|_| "evaluation timed out".to_string())?;
    let res = res.map_err(|e| e.to_string())?;
    Ok(res.value().cloned().unwrap_or(Value::Null))
}

/// Waits until the expression `expr` is truthy (errors count as not yet) and returns its value.
async fn wait_js(page: &Page, what: &str, expr: &str) -> Value {
    let body = format!("try {{ return ({expr}) || null; }} catch (e) {{ return null; }}");
    wait_for(what, WAIT, || async {
        js(page, &body)
            .await
            .ok()
            .filter(|v| !v.is_null() && *v != json!(false))
    })
    .await
}

async fn browser(profile: &std::path::Path) -> (Browser, tokio::task::JoinHandle<()>) {
    let bin = std::env::var("WA_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let config = BrowserConfig::builder()
        .chrome_executable(bin)
        .no_sandbox()
        .user_data_dir(profile)
        .args(["--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        .build()
        .expect("browser config");
    let (browser, mut handler) = Browser::launch(config).await.expect("launch Chromium");
    let task = tokio::spawn(async move { while handler.next().await.is_some() {} });
    (browser, task)
}

async fn open(browser: &Browser, sim: &Sim) -> Page {
    let page = browser
        .new_page(sim.base.as_str())
        .await
        .expect("open page");
    wait_js(
        &page,
        "Debug.VERSION",
        "window.Debug && window.Debug.VERSION",
    )
    .await;
    page
}

async fn close(mut browser: Browser, task: tokio::task::JoinHandle<()>) {
    let _ = browser.close().await;
    let _ = browser.wait().await;
    task.abort();
}

const KEY_PROBE: &str = "const K = R('WAWebMsgKey');
    const k = new K({ fromMe: true, remote: Wid('15550002222@c.us'), id: '3EB0AABBCC' });
    return { ser: k._serialized, own: Object.prototype.hasOwnProperty.call(k, '_serialized'),
             d1: k.$1 === undefined ? null : k.$1, str: k.toString(),
             wid: k.remote._serialized, get_undef: Msg().get(undefined) === undefined };";

const UNKNOWN_PROBE: &str =
    "try { R('WAWebNoSuchModule'); return 'no error'; } catch (e) { return e.message; }";

#[tokio::test]
async fn both_versions_report_their_build_key_shape_and_strict_require() {
    for version in [EARLY_2026_WA_VERSION, NEWEST_WA_VERSION] {
        let sim = start_sim(version, &[]);
        // A late-registration fault: today's page honours it, the early one predates it.
        let (status, _) = sim
            .post(
                "/_sim/faults",
                json!({"late_modules": ["WAWebQueryExistsJob"], "late_ms": 4000}),
            )
            .await;
        assert_eq!(status, 200);
        let dir = tempfile::tempdir().unwrap();
        let (b, task) = browser(dir.path()).await;
        let page = open(&b, &sim).await;
        let newest = version == NEWEST_WA_VERSION;

        let v = js(&page, "return window.Debug.VERSION;").await.unwrap();
        assert_eq!(v, json!(version));

        let k = js(&page, KEY_PROBE).await.unwrap();
        let key = "true_15550002222@c.us_3EB0AABBCC";
        assert_eq!(k["str"], json!(key), "{version}");
        assert_eq!(k["wid"], json!("15550002222@c.us"), "Wid keeps _serialized");
        assert_eq!(k["get_undef"], json!(true));
        if newest {
            assert_eq!(k["ser"], Value::Null, "no _serialized on today's MsgKey");
            assert_eq!(k["own"], json!(false));
            assert_eq!(k["d1"], json!(key));
        } else {
            assert_eq!(k["ser"], json!(key));
            assert_eq!(k["d1"], Value::Null);
        }

        let err = js(&page, UNKNOWN_PROBE).await.unwrap();
        assert_eq!(err, json!("Requiring unknown module \"WAWebNoSuchModule\""));

        let late = js(
            &page,
            "try { R('WAWebQueryExistsJob'); return 'ok'; } catch (e) { return e.message; }",
        )
        .await
        .unwrap();
        if newest {
            assert_eq!(
                late,
                json!("Requiring unknown module \"WAWebQueryExistsJob\"")
            );
            wait_js(&page, "the late module", "!!R('WAWebQueryExistsJob')").await;
        } else {
            assert_eq!(late, json!("ok"));
        }
        close(b, task).await;
    }
}

#[tokio::test]
async fn newest_page_lid_threads_sibling_index_and_refusals() {
    let sim = start_sim(NEWEST_WA_VERSION, &["--reload-after-pair-ms", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let (b, task) = browser(dir.path()).await;
    let page = open(&b, &sim).await;
    sim.scan(&page).await;

    let me_lid = js(
        &page,
        "return R('WAWebUserPrefsMeUser').getMaybeMeLidUser()._serialized;",
    )
    .await
    .unwrap();
    let me_lid = me_lid.as_str().expect("own LID").to_string();
    assert!(
        me_lid.ends_with("@lid") && me_lid.len() == 15 + 4,
        "{me_lid}"
    );

    // queryWidExists answers the LID and teaches the page the mapping.
    let q = js(
        &page,
        &format!(
            "const r = await R('WAWebQueryExistsJob').queryWidExists(Wid('{FRIEND}@c.us'));
             const C = R('WAWebApiContact');
             return {{ wid: r.wid._serialized,
                      lid: C.getCurrentLid(Wid('{FRIEND}@c.us'))._serialized,
                      pn: C.getPhoneNumber(r.wid)._serialized,
                      alt: C.getAlternateUserWid(r.wid)._serialized,
                      unknown: C.getCurrentLid(Wid('15559990000@c.us')) }};"
        ),
    )
    .await
    .unwrap();
    let lid = q["wid"].as_str().expect("a LID").to_string();
    assert!(lid.ends_with("@lid"), "{q}");
    assert_eq!(q["lid"], json!(lid));
    assert_eq!(q["pn"], json!(format!("{FRIEND}@c.us")));
    assert_eq!(q["alt"], json!(format!("{FRIEND}@c.us")));
    assert_eq!(q["unknown"], Value::Null);

    // The chat of a phone number is its LID thread; a send keyed by the LID goes out, is
    // recorded by phone, and is filed under the sibling (pn) key.
    let sent = js(
        &page,
        &format!(
            "const {{ chat }} = await R('WAWebFindChatAction').findOrCreateLatestChat(Wid('{FRIEND}@c.us'));
             const K = R('WAWebMsgKey');
             const key = new K({{ fromMe: true, remote: chat.id, id: await K.newId() }});
             const [m, r] = R('WAWebSendMsgChatAction').addAndSendMsgToChat(chat,
                 {{ id: key, type: 'chat', body: 'to the lid', t: Math.floor(Date.now() / 1000) }});
             await m;
             const result = await r;
             const sib = new K({{ fromMe: true, remote: Wid('{FRIEND}@c.us'), id: key.id }});
             return {{ chat: chat.id._serialized, key: key.toString(), result: result.messageSendResult,
                      byKey: Msg().get(key) === undefined, bySibling: !!Msg().get(sib),
                      db: (await Msg().getMessagesById([key])).messages.length }};"
        ),
    )
    .await
    .unwrap();
    assert_eq!(sent["chat"], json!(lid));
    assert_eq!(sent["result"], json!("OK"));
    assert_eq!(
        sent["byKey"],
        json!(true),
        "Msg.get(callerKey) misses: {sent}"
    );
    assert_eq!(
        sent["bySibling"],
        json!(true),
        "the sibling key finds it: {sent}"
    );
    assert_eq!(
        sent["db"],
        json!(0),
        "getMessagesById(callerKey) misses too"
    );
    let key = sent["key"].as_str().unwrap().to_string();
    let rec = wait_for("the send recorded", WAIT, || async {
        sim.sent()
            .await
            .into_iter()
            .find(|m| m["serialized"] == json!(key))
    })
    .await;
    assert_eq!(rec["to"], json!(format!("{FRIEND}@c.us")));
    assert_eq!(rec["to_lid"], json!(lid));

    // getMessagesById hands an undefined key to IndexedDB, which rejects.
    let e = js(
        &page,
        "try { await Msg().getMessagesById([undefined]); return 'resolved'; }
         catch (e) { return e.name + ': ' + e.message; }",
    )
    .await
    .unwrap();
    assert!(
        e.as_str().unwrap().starts_with("DataError: ")
            && e.as_str()
                .unwrap()
                .contains("No key or key range specified"),
        "{e}"
    );

    // A late ack -1 (error 463 in the receipt) reaches the stored model.
    wait_for("ack 1+ at the sim", WAIT, || async {
        let m = sim
            .sent()
            .await
            .into_iter()
            .find(|m| m["serialized"] == json!(key))?;
        (m["ack"].as_i64()? >= 1).then_some(())
    })
    .await;
    let (status, body) = sim.post("/_sim/ack", json!({"id": key, "ack": -1})).await;
    assert_eq!(status, 200, "{body}");
    let sib = format!("true_{FRIEND}@c.us_{}", key.rsplit('_').next().unwrap());
    wait_js(
        &page,
        "ack -1 on the page",
        &format!("Msg().get('{sib}').ack === -1 && Msg().get('{sib}').isSendFailure === true"),
    )
    .await;

    // Addressed to the phone JID of a LID contact: refused as error 463.
    let refused = js(
        &page,
        &format!(
            "const chat = await R('WAWebCollections').Chat.find(Wid('{FRIEND}@c.us'));
             const K = R('WAWebMsgKey');
             const key = new K({{ fromMe: true, remote: chat.id, id: await K.newId() }});
             const [m, r] = R('WAWebSendMsgChatAction').addAndSendMsgToChat(chat,
                 {{ id: key, type: 'chat', body: 'to the pn', t: Math.floor(Date.now() / 1000) }});
             const msg = await m;
             const result = await r;
             return {{ key: key.toString(), result: result.messageSendResult, ack: msg.ack,
                      failure: msg.isSendFailure === true }};"
        ),
    )
    .await
    .unwrap();
    assert_eq!(refused["result"], json!("ERROR"), "{refused}");
    assert_eq!(refused["ack"], json!(-1));
    assert_eq!(refused["failure"], json!(true));
    assert!(!sim
        .sent()
        .await
        .iter()
        .any(|m| m["serialized"] == refused["key"]));

    // Incoming: from the contact's LID thread; a ciphertext placeholder decrypts in place.
    js(
        &page,
        "window.__seen = []; Msg().on('change:type change:body', (m, v) => window.__seen.push(String(v)));
         return true;",
    )
    .await
    .unwrap();
    let (status, inc) = sim
        .post(
            "/_sim/incoming",
            json!({"to": ME, "from": FRIEND, "body": "secret", "ciphertext_ms": 300}),
        )
        .await;
    assert_eq!(status, 200, "{inc}");
    let ser = inc["serialized"].as_str().unwrap().to_string();
    assert_eq!(ser, format!("false_{lid}_{}", inc["id"].as_str().unwrap()));
    let first = wait_js(&page, "the placeholder", &format!("Msg().get('{ser}')")).await;
    assert_eq!(first["type"], json!("ciphertext"), "{first}");
    assert_eq!(first["from"]["_serialized"], json!(lid));
    wait_js(
        &page,
        "decryption",
        &format!("Msg().get('{ser}').type === 'chat' && Msg().get('{ser}').body === 'secret'"),
    )
    .await;
    let seen = js(&page, "return window.__seen;").await.unwrap();
    assert_eq!(
        seen,
        json!(["chat", "secret"]),
        "change:type then change:body"
    );

    // A self-reload (service-worker update) resumes the login from the profile.
    js(&page, "window.__before_reload = 1; return true;")
        .await
        .unwrap();
    let (status, _) = sim.post("/_sim/reload", json!({"phone": ME})).await;
    assert_eq!(status, 200);
    wait_js(
        &page,
        "reloaded and CONNECTED",
        "!window.__before_reload && Socket().state === 'CONNECTED'",
    )
    .await;

    // Logout navigates to ?post_logout=1 and shows a new QR.
    js(
        &page,
        "window.__bridge = 0; R('WAWebCmd').Cmd.on('logout_from_bridge', () => window.__bridge++);
         return true;",
    )
    .await
    .unwrap();
    let (status, _) = sim.post("/_sim/logout", json!({"phone": ME})).await;
    assert_eq!(status, 200);
    wait_js(
        &page,
        "the post-logout load",
        "location.search.includes('post_logout=1') && Socket().state === 'UNPAIRED'",
    )
    .await;

    // Terminal states: the page stays there.
    sim.scan(&page).await;
    let (status, body) = sim
        .post("/_sim/state", json!({"phone": ME, "state": "TOS_BLOCK"}))
        .await;
    assert_eq!(status, 200, "{body}");
    wait_js(&page, "TOS_BLOCK", "Socket().state === 'TOS_BLOCK'").await;
    wait_for("the page to drop its socket", WAIT, || async {
        let d = sim.get("/_sim/devices").await;
        let linked = d["devices"]
            .as_array()?
            .iter()
            .find(|d| d["phone"] == json!(ME))?
            .clone();
        (linked["connected"] == json!(false)).then_some(())
    })
    .await;
    close(b, task).await;
}

#[tokio::test]
async fn early_page_keeps_phone_threads_and_logs_out_in_place() {
    let sim = start_sim(EARLY_2026_WA_VERSION, &[]);
    let dir = tempfile::tempdir().unwrap();
    let (b, task) = browser(dir.path()).await;
    let page = open(&b, &sim).await;
    sim.scan(&page).await;
    js(&page, "window.__marker = 1; return true;")
        .await
        .unwrap();
    let r = js(
        &page,
        &format!(
            "const r = await R('WAWebQueryExistsJob').queryWidExists(Wid('{FRIEND}@c.us'));
             const {{ chat }} = await R('WAWebFindChatAction').findOrCreateLatestChat(Wid('{FRIEND}@c.us'));
             return {{ wid: r.wid._serialized, chat: chat.id._serialized,
                      lid: R('WAWebUserPrefsMeUser').getMaybeMeLidUser() }};"
        ),
    )
    .await
    .unwrap();
    assert_eq!(r["wid"], json!(format!("{FRIEND}@c.us")));
    assert_eq!(r["chat"], json!(format!("{FRIEND}@c.us")));
    assert_eq!(r["lid"], Value::Null);
    let (status, _) = sim.post("/_sim/logout", json!({"phone": ME})).await;
    assert_eq!(status, 200);
    wait_js(&page, "UNPAIRED in place", "Socket().state === 'UNPAIRED'").await;
    let still = js(
        &page,
        "return { marker: window.__marker, search: location.search };",
    )
    .await
    .unwrap();
    assert_eq!(
        still,
        json!({"marker": 1, "search": ""}),
        "no navigation on logout"
    );
    close(b, task).await;
}

#[tokio::test]
async fn newest_page_reloads_itself_after_pairing() {
    let sim = start_sim(NEWEST_WA_VERSION, &["--reload-after-pair-ms", "1000"]);
    let dir = tempfile::tempdir().unwrap();
    let (b, task) = browser(dir.path()).await;
    let page = open(&b, &sim).await;
    sim.scan(&page).await;
    js(&page, "window.__marker = 1; return true;")
        .await
        .unwrap();
    wait_js(
        &page,
        "the reload after pairing, logged in again",
        "!window.__marker && Socket().state === 'CONNECTED'",
    )
    .await;
    close(b, task).await;
}

/// What the page keeps of its login, read back in the page: a non-extractable HKDF key in
/// `wawc_db_enc`/`keys`, the noise info in localStorage, the rest encrypted in `wawc`/`user`.
const LOGIN_PROBE: &str = "const open = (n) => new Promise((ok, ko) => {
        const r = indexedDB.open(n); r.onsuccess = () => ok(r.result); r.onerror = () => ko(r.error); });
    const all = (db, s) => new Promise((ok, ko) => {
        const r = db.transaction(s).objectStore(s).getAll(); r.onsuccess = () => ok(r.result); r.onerror = () => ko(r.error); });
    const enc = await open('wawc_db_enc');
    const recs = await all(enc, 'keys');
    const stores = Array.from(enc.objectStoreNames).sort();
    enc.close();
    const user = await open('wawc');
    const plain = JSON.stringify(await all(user, 'user'));
    user.close();
    const k = recs[0] && recs[0].key;
    return { records: recs.length, stores, crypto_key: k instanceof CryptoKey,
             extractable: k ? k.extractable : null, algorithm: k ? k.algorithm.name : null,
             usages: k ? k.usages : null, expires: recs[0] ? typeof recs[0]._expiration : null,
             noise: !!localStorage.getItem('WANoiseInfo'), iv: !!localStorage.getItem('WANoiseInfoIv'),
             salt: localStorage.getItem('WebEncKeySalt'), plain_phone: plain.includes(me) };";

async fn login_probe(page: &Page) -> Value {
    js(page, &format!("const me = '{ME}'; {LOGIN_PROBE}"))
        .await
        .unwrap()
}

/// The login as the real page stores it (no version switch: `wawc_db_enc` predates both ends):
/// it resumes across a reload, a missing piece means a fresh QR, a logout removes it all and
/// empties CacheStorage.
#[tokio::test]
async fn login_is_stored_as_the_real_page_stores_it() {
    for version in [EARLY_2026_WA_VERSION, NEWEST_WA_VERSION] {
        let sim = start_sim(version, &[]);
        let dir = tempfile::tempdir().unwrap();
        let (b, task) = browser(dir.path()).await;
        let page = open(&b, &sim).await;
        sim.scan(&page).await;
        let p = login_probe(&page).await;
        assert_eq!(
            p,
            json!({"records": 1, "stores": ["fts_hmac_keys", "keys", "worm_ear_keys"],
                   "crypto_key": true, "extractable": false, "algorithm": "HKDF",
                   "usages": ["deriveKey"], "expires": "number", "noise": true, "iv": true,
                   "salt": p["salt"], "plain_phone": false}),
            "{version}"
        );
        assert!(p["salt"].is_string(), "{p}");

        // A reload resumes the login without a QR.
        js(
            &page,
            "window.__marker = 1; location.reload(); return true;",
        )
        .await
        .unwrap();
        wait_js(
            &page,
            "resumed after a reload",
            &format!(
                "!window.__marker && Socket().state === 'CONNECTED' && Conn().wid.user === '{ME}'"
            ),
        )
        .await;

        // Without its localStorage half the login is gone: a fresh QR, a new key.
        js(
            &page,
            "localStorage.removeItem('WANoiseInfo'); window.__marker = 2; location.reload(); return true;",
        )
        .await
        .unwrap();
        wait_js(
            &page,
            "a fresh QR",
            "!window.__marker && Socket().state === 'UNPAIRED' && Conn().ref",
        )
        .await;
        let fresh = login_probe(&page).await;
        assert_eq!(fresh["crypto_key"], json!(true), "{fresh}");
        assert_eq!(fresh["noise"], json!(true), "{fresh}");
        assert_ne!(fresh["salt"], p["salt"], "a new key");

        // Logout removes the login and every CacheStorage entry.
        sim.scan(&page).await;
        let salt = login_probe(&page).await["salt"].clone();
        js(
            &page,
            "const c = await caches.open('wa-test'); await c.put('/x', new Response('x'));
             window.__marker = 3; return (await caches.keys()).length;",
        )
        .await
        .unwrap();
        let (status, _) = sim.post("/_sim/logout", json!({"phone": ME})).await;
        assert_eq!(status, 200);
        wait_js(
            &page,
            "a fresh QR after the logout",
            "Socket().state === 'UNPAIRED' && Conn().ref",
        )
        .await;
        let after = wait_js(
            &page,
            "the login replaced and CacheStorage empty",
            &format!(
                "(async () => {{ const n = (await caches.keys()).length;
                    return n === 0 && localStorage.getItem('WebEncKeySalt') !== {salt} && n + 1; }})()"
            ),
        )
        .await;
        assert_eq!(after, json!(1));
        close(b, task).await;
    }
}
