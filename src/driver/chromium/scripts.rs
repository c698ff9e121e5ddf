//! The injected page functions (`chromium/*.js`) and how they are called: each is sent as the
//! `functionDeclaration` of `Runtime.callFunctionOn`, every piece of user data as one of its JSON
//! arguments. Also the install step that puts the page's hooks in place.

use std::sync::LazyLock;
use std::time::Duration;

use chromiumoxide::cdp::js_protocol::runtime::{CallArgument, CallFunctionOnParams};
use chromiumoxide::error::CdpError;
use chromiumoxide::Page;

use super::config::ChromiumConfig;
use crate::driver::DriverError;
use crate::error_code::ErrorCode;

/// The injected functions. Each file holds exactly one function expression.
const JS_WAIT_LOADED: &str = include_str!("wait_loaded.js");
const JS_INSTALL: &str = include_str!("install.js");
const JS_SEND: &str = include_str!("send.js");
const JS_NUMBER_EXISTS: &str = include_str!("number_exists.js");
const JS_FIND_MESSAGE: &str = include_str!("find_message.js");
const JS_INBOUND_SINCE: &str = include_str!("inbound_since.js");
// Typed inbound events (issue 13): reactions, poll votes, edits, revokes from the other side.
const JS_INBOUND_TYPED: &str = include_str!("inbound_typed.js");
const JS_TYPED_SINCE: &str = include_str!("typed_since.js");
const JS_MARK_READ: &str = include_str!("mark_read.js");
const JS_PRESENCE: &str = include_str!("presence.js");
// Contacts and profile pictures (issue 14).
const JS_CONTACT_INFO: &str = include_str!("contact_info.js");
const JS_PROFILE_PICTURE: &str = include_str!("profile_picture.js");
// Chats and history (issue 14).
const JS_CHATS: &str = include_str!("chats.js");
const JS_HISTORY: &str = include_str!("history.js");
const JS_REACT: &str = include_str!("react.js");
const JS_EDIT: &str = include_str!("edit.js");
const JS_FORWARD: &str = include_str!("forward.js");
// Groups (issue 14).
const JS_GROUP_CREATE: &str = include_str!("group_create.js");
const JS_GROUP_INFO: &str = include_str!("group_info.js");
const JS_GROUPS_ALL: &str = include_str!("groups_all.js");
const JS_GROUP_INVITE: &str = include_str!("group_invite.js");
const JS_GROUP_LEAVE: &str = include_str!("group_leave.js");
const JS_GROUP_PARTICIPANTS: &str = include_str!("group_participants.js");
// Calls and group notifications from the other side (issue 14).
const JS_CALL_HOOKS: &str = include_str!("call_hooks.js");
const JS_REJECT_CALL: &str = include_str!("reject_call.js");
// Incoming media (issue 13).
const JS_MEDIA_DOWNLOAD: &str = include_str!("media_download.js");
const JS_MEDIA_CHUNK: &str = include_str!("media_chunk.js");
pub(super) const JS_LOGOUT: &str = include_str!("logout.js");
pub(super) const JS_LIVENESS: &str = include_str!("liveness.js");
pub(super) const JS_EXPORT_STORAGE: &str = include_str!("export_storage.js");
pub(super) const JS_IMPORT_STORAGE: &str = include_str!("import_storage.js");
/// Shared-browser mode: run before the app's own scripts in every document of a context's page.
pub(super) const JS_KEY_SHADOW: &str = include_str!("key_shadow.js");
/// Helpers for today's page (message keys, LID siblings, sends in flight), handed to the functions
/// below as their first argument (see `with_lib`).
const JS_LIB: &str = include_str!("lib.js");

/// `source` (a function whose first parameter is lib.js's result) as a function of the remaining
/// arguments, for `Runtime.callFunctionOn`.
fn with_lib(source: &str) -> String {
    format!(
        "function () {{ const lib = ({JS_LIB})(); \
         return ({source}).apply(null, [lib].concat(Array.prototype.slice.call(arguments))); }}"
    )
}

static FN_INSTALL: LazyLock<String> = LazyLock::new(|| with_lib(JS_INSTALL));
static FN_INBOUND_TYPED: LazyLock<String> = LazyLock::new(|| with_lib(JS_INBOUND_TYPED));
pub(super) static FN_TYPED_SINCE: LazyLock<String> = LazyLock::new(|| with_lib(JS_TYPED_SINCE));
pub(super) static FN_SEND: LazyLock<String> = LazyLock::new(|| with_lib(JS_SEND));
pub(super) static FN_NUMBER_EXISTS: LazyLock<String> = LazyLock::new(|| with_lib(JS_NUMBER_EXISTS));
pub(super) static FN_FIND_MESSAGE: LazyLock<String> = LazyLock::new(|| with_lib(JS_FIND_MESSAGE));
pub(super) static FN_INBOUND_SINCE: LazyLock<String> = LazyLock::new(|| with_lib(JS_INBOUND_SINCE));
pub(super) static FN_MARK_READ: LazyLock<String> = LazyLock::new(|| with_lib(JS_MARK_READ));
pub(super) static FN_PRESENCE: LazyLock<String> = LazyLock::new(|| with_lib(JS_PRESENCE));
pub(super) static FN_CONTACT_INFO: LazyLock<String> = LazyLock::new(|| with_lib(JS_CONTACT_INFO));
pub(super) static FN_PROFILE_PICTURE: LazyLock<String> =
    LazyLock::new(|| with_lib(JS_PROFILE_PICTURE));
pub(super) static FN_CHATS: LazyLock<String> = LazyLock::new(|| with_lib(JS_CHATS));
pub(super) static FN_HISTORY: LazyLock<String> = LazyLock::new(|| with_lib(JS_HISTORY));
pub(super) static FN_REACT: LazyLock<String> = LazyLock::new(|| with_lib(JS_REACT));
pub(super) static FN_EDIT: LazyLock<String> = LazyLock::new(|| with_lib(JS_EDIT));
pub(super) static FN_FORWARD: LazyLock<String> = LazyLock::new(|| with_lib(JS_FORWARD));
pub(super) static FN_GROUP_CREATE: LazyLock<String> = LazyLock::new(|| with_lib(JS_GROUP_CREATE));
pub(super) static FN_GROUP_INFO: LazyLock<String> = LazyLock::new(|| with_lib(JS_GROUP_INFO));
pub(super) static FN_GROUPS_ALL: LazyLock<String> = LazyLock::new(|| with_lib(JS_GROUPS_ALL));
pub(super) static FN_GROUP_INVITE: LazyLock<String> = LazyLock::new(|| with_lib(JS_GROUP_INVITE));
pub(super) static FN_GROUP_LEAVE: LazyLock<String> = LazyLock::new(|| with_lib(JS_GROUP_LEAVE));
pub(super) static FN_GROUP_PARTICIPANTS: LazyLock<String> =
    LazyLock::new(|| with_lib(JS_GROUP_PARTICIPANTS));
static FN_CALL_HOOKS: LazyLock<String> = LazyLock::new(|| with_lib(JS_CALL_HOOKS));
pub(super) static FN_REJECT_CALL: LazyLock<String> = LazyLock::new(|| with_lib(JS_REJECT_CALL));

pub(super) static FN_MEDIA_DOWNLOAD: LazyLock<String> =
    LazyLock::new(|| with_lib(JS_MEDIA_DOWNLOAD));
pub(super) static FN_MEDIA_CHUNK: LazyLock<String> = LazyLock::new(|| with_lib(JS_MEDIA_CHUNK));

/// How long install waits for modules the page has not registered yet (today's page registers
/// them progressively, often 10–30 s after its loader: wa-js PR 3476) before it reports them as
/// missing.
const MODULE_PROBE_MAX: Duration = Duration::from_secs(30);

/// Name of the page → runner binding. Neutral on purpose: the page can see it.
pub(super) const BINDING: &str = "__wa_outbox_push";

pub(super) enum CallError {
    Timeout,
    /// The page's code threw.
    Js(String),
    /// The DevTools call itself failed (target gone, connection closed…).
    Cdp(String),
}

pub(super) async fn cdp_call<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, DriverError> {
    tokio::time::timeout(timeout, fut).await.map_err(|_| {
        DriverError::transient(ErrorCode::BrowserStartFailed, "DevTools call timed out")
    })
}

pub(super) async fn call_function(
    page: &Page,
    source: &str,
    args: Vec<serde_json::Value>,
    timeout: Duration,
) -> Result<serde_json::Value, CallError> {
    let mut builder = CallFunctionOnParams::builder()
        .function_declaration(source)
        .await_promise(true)
        .return_by_value(true);
    for a in args {
        builder = builder.argument(CallArgument::builder().value(a).build());
    }
    let params = builder.build().map_err(CallError::Cdp)?;
    match tokio::time::timeout(timeout, page.evaluate_function(params)).await {
        Err(_) => Err(CallError::Timeout),
        Ok(Err(CdpError::JavascriptException(ex))) => {
            let text = ex
                .exception
                .as_ref()
                .and_then(|o| o.description.clone())
                .unwrap_or_else(|| ex.text.clone());
            // First line only: a stack trace adds nothing for the error column.
            Err(CallError::Js(
                text.lines().next().unwrap_or_default().to_string(),
            ))
        }
        Ok(Err(CdpError::Timeout)) => Err(CallError::Timeout),
        Ok(Err(e)) => Err(CallError::Cdp(e.to_string())),
        Ok(Ok(r)) => Ok(r.value().cloned().unwrap_or(serde_json::Value::Null)),
    }
}

/// A DevTools call that failed while a session starts.
pub(super) fn listen_failed(e: CdpError) -> DriverError {
    DriverError::transient(ErrorCode::BrowserStartFailed, e.to_string())
}

/// Waits for WhatsApp Web's code, then installs the hooks (idempotent per document).
pub(super) async fn install(
    page: &Page,
    config: &ChromiumConfig,
    pair_phone: Option<&str>,
) -> Result<(), DriverError> {
    let ms = config.start_timeout.as_millis() as u64;
    match call_function(
        page,
        JS_WAIT_LOADED,
        vec![serde_json::json!(ms)],
        config.start_timeout + Duration::from_secs(1),
    )
    .await
    {
        Ok(version) => tracing::debug!(%version, "WhatsApp Web loaded"),
        Err(CallError::Timeout) => {
            return Err(DriverError::transient(
                ErrorCode::PageLoadFailed,
                format!(
                    "WhatsApp Web did not load within {:?}",
                    config.start_timeout
                ),
            ))
        }
        Err(CallError::Js(m) | CallError::Cdp(m)) => {
            return Err(DriverError::transient(ErrorCode::PageLoadFailed, m))
        }
    }
    let pair = pair_phone.map(|p| p.chars().filter(|c| c.is_ascii_digit()).collect::<String>());
    let probe = MODULE_PROBE_MAX.min(config.start_timeout);
    let r = call_function(
        page,
        &FN_INSTALL,
        vec![
            serde_json::json!(BINDING),
            serde_json::json!(pair),
            serde_json::json!(probe.as_millis() as u64),
        ],
        probe + config.cdp_timeout,
    )
    .await
    .map_err(|e| {
        let m = match e {
            CallError::Timeout => "installing page hooks timed out".to_string(),
            CallError::Js(m) | CallError::Cdp(m) => format!("installing page hooks failed: {m}"),
        };
        DriverError::transient(ErrorCode::PageLoadFailed, m)
    })?;
    missing_modules(&r)?;
    install_hooks(page, config, probe, &FN_CALL_HOOKS, "the call hooks").await?;
    install_hooks(
        page,
        config,
        probe,
        &FN_INBOUND_TYPED,
        "the typed-event hooks",
    )
    .await
}

/// `{missing: [...]}` from an install function: the session cannot work on this build.
fn missing_modules(r: &serde_json::Value) -> Result<(), DriverError> {
    if let Some(missing) = r.get("missing").and_then(|m| m.as_array()) {
        let names: Vec<&str> = missing.iter().filter_map(|m| m.as_str()).collect();
        return Err(DriverError::permanent(
            ErrorCode::WebVersionUnsupported,
            format!(
                "this WhatsApp Web build lacks what the driver uses: {}",
                names.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Hooks installed after install.js on the same binding, each probing for its own modules:
/// call_hooks.js (calls and group notifications) and inbound_typed.js (reactions, poll votes,
/// edits and revokes from the other side). `what` names them in an error.
async fn install_hooks(
    page: &Page,
    config: &ChromiumConfig,
    probe: Duration,
    source: &str,
    what: &str,
) -> Result<(), DriverError> {
    let r = call_function(
        page,
        source,
        vec![
            serde_json::json!(BINDING),
            serde_json::json!(probe.as_millis() as u64),
        ],
        probe + config.cdp_timeout,
    )
    .await
    .map_err(|e| {
        let m = match e {
            CallError::Timeout => format!("installing {what} timed out"),
            CallError::Js(m) | CallError::Cdp(m) => format!("installing {what} failed: {m}"),
        };
        DriverError::transient(ErrorCode::PageLoadFailed, m)
    })?;
    missing_modules(&r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_functions_are_single_function_expressions() {
        for src in [
            JS_LIB,
            JS_WAIT_LOADED,
            JS_INSTALL,
            JS_SEND,
            JS_NUMBER_EXISTS,
            JS_FIND_MESSAGE,
            JS_INBOUND_SINCE,
            JS_INBOUND_TYPED,
            JS_TYPED_SINCE,
            JS_MARK_READ,
            JS_PRESENCE,
            JS_CONTACT_INFO,
            JS_PROFILE_PICTURE,
            JS_CHATS,
            JS_HISTORY,
            JS_GROUP_CREATE,
            JS_GROUP_INFO,
            JS_GROUPS_ALL,
            JS_GROUP_INVITE,
            JS_GROUP_LEAVE,
            JS_GROUP_PARTICIPANTS,
            JS_CALL_HOOKS,
            JS_REJECT_CALL,
            JS_MEDIA_DOWNLOAD,
            JS_MEDIA_CHUNK,
            JS_LOGOUT,
            JS_LIVENESS,
            JS_EXPORT_STORAGE,
            JS_IMPORT_STORAGE,
        ] {
            let code: String = src
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let code = code.trim();
            assert!(
                code.starts_with("function") || code.starts_with("async function"),
                "{}",
                &code[..40.min(code.len())]
            );
            assert!(code.ends_with('}'));
        }
    }
}
