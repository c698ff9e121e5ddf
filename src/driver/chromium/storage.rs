//! Shared-browser mode's login storage. A browser context keeps storage in memory only, so the
//! login is exported from the live page into the session's profile folder (`export_storage.js`,
//! before a close and before each save) and imported into a fresh context on a placeholder
//! document of the app's origin before the app loads (`import_storage.js`); `key_shadow.js`, run
//! in every document of the context's page, keeps what the export needs of the login's keys.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use chromiumoxide::cdp::browser_protocol::fetch::{
    DisableParams as FetchDisableParams, EnableParams as FetchEnableParams, EventRequestPaused,
    FulfillRequestParams, HeaderEntry, RequestPattern, RequestStage,
};
use chromiumoxide::cdp::browser_protocol::page::NavigateParams;
use chromiumoxide::Page;
use futures::StreamExt as _;

use super::config::ChromiumConfig;
use super::scripts::{call_function, cdp_call, CallError, JS_EXPORT_STORAGE, JS_IMPORT_STORAGE};
use crate::driver::DriverError;
use crate::error_code::ErrorCode;

/// The export of a shared-browser session's storage, inside its profile folder.
const EXPORT_FILE: &str = "storage.json";

/// A login stored in one browser mode is unreadable in the other (Chromium's own stores vs an
/// export of a context's storage): fail with auth_restore_failed instead of showing a new QR.
pub(super) fn check_login_format(shared: bool, profile_dir: &Path) -> Result<(), DriverError> {
    let export = profile_dir
        .join(crate::auth_store::CONTEXT_EXPORT_DIR)
        .join(EXPORT_FILE)
        .exists();
    let chromium = ["Default/IndexedDB", "Default/Local Storage"]
        .iter()
        .any(|d| profile_dir.join(d).exists());
    let (saved_by, here) = match (shared, export, chromium) {
        (true, false, true) => ("per-session", "shared"),
        (false, true, false) => ("shared", "per-session"),
        _ => return Ok(()),
    };
    Err(DriverError::permanent(
        ErrorCode::AuthRestoreFailed,
        format!(
            "the stored login was saved with WA_BROWSER_MODE={saved_by} and this runner uses \
             {here}; every runner of a database must use the same mode"
        ),
    ))
}

/// Shared-browser mode: writes the live page's storage (the login) into the profile folder,
/// replacing the previous export only once the new one is complete.
pub(super) async fn export_storage(
    page: &Page,
    profile_dir: &Path,
    timeout: Duration,
) -> Result<(), DriverError> {
    let failed = |m: String| DriverError::transient(ErrorCode::BrowserCrashed, m);
    let v = match call_function(page, JS_EXPORT_STORAGE, vec![], timeout).await {
        Ok(v) => v,
        Err(CallError::Timeout) => return Err(failed("exporting the login timed out".into())),
        Err(CallError::Js(m) | CallError::Cdp(m)) => {
            return Err(failed(format!("exporting the login: {m}")))
        }
    };
    let dir = profile_dir.join(crate::auth_store::CONTEXT_EXPORT_DIR);
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!("{EXPORT_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(&v)?)?;
        std::fs::rename(&tmp, dir.join(EXPORT_FILE))
    };
    write().map_err(|e| failed(format!("writing the login export: {e}")))
}

/// Shared-browser mode, before the app loads: if the session's profile folder holds an export of
/// its storage, a placeholder document of the app's origin is served into the fresh context
/// (Fetch interception; the app's own code never runs there) and the export is written into its
/// IndexedDB and localStorage. A corrupt export fails the start with auth_restore_failed rather
/// than showing a new QR.
pub(super) async fn restore_storage(
    page: &Page,
    config: &ChromiumConfig,
    profile_dir: &Path,
) -> Result<(), DriverError> {
    let file = profile_dir
        .join(crate::auth_store::CONTEXT_EXPORT_DIR)
        .join(EXPORT_FILE);
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(DriverError::permanent(
                ErrorCode::AuthRestoreFailed,
                format!("cannot read the stored login: {e}"),
            ))
        }
    };
    let data: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        DriverError::permanent(
            ErrorCode::AuthRestoreFailed,
            format!(
                "the stored login is not a storage export ({:?})",
                e.classify()
            ),
        )
    })?;
    let failed = |m: String| DriverError::transient(ErrorCode::PageLoadFailed, m);
    let cdp = config.cdp_timeout;
    let origin = reqwest::Url::parse(&config.web_url)
        .map_err(|e| failed(format!("WA_WEB_URL: {e}")))?
        .origin()
        .ascii_serialization();
    let placeholder = format!("{origin}/__wa_outbox_restore");
    let mut paused = cdp_call(cdp, page.event_listener::<EventRequestPaused>())
        .await?
        .map_err(|e| failed(e.to_string()))?;
    let pattern = RequestPattern::builder()
        .url_pattern(placeholder.clone())
        .request_stage(RequestStage::Request)
        .build();
    cdp_call(
        cdp,
        page.execute(FetchEnableParams::builder().pattern(pattern).build()),
    )
    .await?
    .map_err(|e| failed(format!("Fetch.enable: {e}")))?;
    let serve = {
        let page = page.clone();
        tokio::spawn(async move {
            let Some(ev) = paused.next().await else {
                return;
            };
            let body = base64::engine::general_purpose::STANDARD
                .encode("<!doctype html><title>wa-outbox: restoring a login</title>");
            let fulfil = FulfillRequestParams::builder()
                .request_id(ev.request_id.clone())
                .response_code(200)
                .response_header(HeaderEntry::new("Content-Type", "text/html; charset=utf-8"))
                .body(body)
                .build();
            if let Ok(f) = fulfil {
                let _ = tokio::time::timeout(cdp, page.execute(f)).await;
            }
        })
    };
    let nav = NavigateParams::builder()
        .url(placeholder)
        .build()
        .map_err(failed)?;
    let went = tokio::time::timeout(config.start_timeout, page.goto(nav)).await;
    serve.abort();
    let _ = tokio::time::timeout(cdp, page.execute(FetchDisableParams::default())).await;
    match went {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(failed(format!("placeholder page: {e}"))),
        Err(_) => return Err(failed("placeholder page timed out".into())),
    }
    match call_function(page, JS_IMPORT_STORAGE, vec![data], config.start_timeout).await {
        Ok(_) => Ok(()),
        Err(CallError::Js(m)) => Err(DriverError::permanent(
            ErrorCode::AuthRestoreFailed,
            format!("the stored login could not be imported: {m}"),
        )),
        Err(CallError::Timeout) => Err(failed("importing the stored login timed out".into())),
        Err(CallError::Cdp(m)) => Err(failed(format!("importing the stored login: {m}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_stored_in_the_other_browser_mode_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        // Nothing stored yet: either mode may start.
        assert!(check_login_format(true, p).is_ok() && check_login_format(false, p).is_ok());
        std::fs::create_dir_all(p.join("Default/IndexedDB")).unwrap();
        assert!(check_login_format(false, p).is_ok());
        let err = check_login_format(true, p).unwrap_err();
        assert_eq!(err.code(), ErrorCode::AuthRestoreFailed);
        assert!(!err.is_transient(), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join(crate::auth_store::CONTEXT_EXPORT_DIR)).unwrap();
        std::fs::write(
            p.join(crate::auth_store::CONTEXT_EXPORT_DIR)
                .join(EXPORT_FILE),
            "{}",
        )
        .unwrap();
        assert!(check_login_format(true, p).is_ok());
        assert_eq!(
            check_login_format(false, p).unwrap_err().code(),
            ErrorCode::AuthRestoreFailed
        );
    }
}
