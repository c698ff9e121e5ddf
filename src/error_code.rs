//! The closed set of machine-readable error codes written to `error_code` columns.
//! Mirrors the `wa_error_code` domain in the latest migration that redefines it; a test keeps the two in step.

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($($variant:ident => $text:literal: $doc:literal,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode { $(#[doc = $doc] $variant,)* }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];
            pub fn as_str(self) -> &'static str { match self { $(ErrorCode::$variant => $text,)* } }
            pub fn describe(self) -> &'static str { match self { $(ErrorCode::$variant => $doc,)* } }
        }
    };
}

error_codes! {
    InvalidRecipient => "invalid_recipient": "recipient is not a phone number or a c.us/g.us JID",
    NotOnWhatsapp => "not_on_whatsapp": "the number has no WhatsApp account; nothing was sent",
    BodyTooLong => "body_too_long": "body or caption longer than WhatsApp accepts (65,536 characters)",
    EmptyMessage => "empty_message": "a text message without a body",
    MediaMissing => "media_missing": "a media kind without media_url or media_data",
    MediaInvalidUrl => "media_invalid_url": "media_url is not an absolute http(s) URL",
    MediaFetchFailed => "media_fetch_failed": "media_url could not be fetched (status, network or timeout); an incoming file could not be downloaded through the page",
    MediaTooLarge => "media_too_large": "media larger than WA_MEDIA_MAX_BYTES (incoming: WA_INBOUND_MEDIA_MAX_BYTES)",
    MediaHostForbidden => "media_host_forbidden": "media host not allow-listed, or a loopback/private/link-local address",
    MediaInvalid => "media_invalid": "the media is not what the kind needs (a sticker from bytes that are not a PNG, JPEG, GIF or WebP image the page can read)",
    InvalidOptions => "invalid_options": "options holds a key or value the runner does not understand",
    SessionLoggedOut => "session_logged_out": "the session is logged out; the message was not sent",
    SendTimeout => "send_timeout": "the page did not confirm the send in time (retried)",
    SendFailed => "send_failed": "the page refused the send (retried)",
    AttemptsExhausted => "attempts_exhausted": "transient failures used up max_attempts",
    QrTimeout => "qr_timeout": "no one scanned the QR (or entered the pairing code) in time",
    BrowserCrashed => "browser_crashed": "the browser or page died (sessions restart with back-off)",
    BrowserStartFailed => "browser_start_failed": "Chromium could not be started",
    PageLoadFailed => "page_load_failed": "WhatsApp Web did not load in time",
    AuthRestoreFailed => "auth_restore_failed": "the stored login could not be decrypted or restored",
    DeviceUnlinked => "device_unlinked": "the phone unlinked this device",
    InvalidPairPhone => "invalid_pair_phone": "pair_phone is not a phone number WhatsApp accepts",
    SessionConflict => "session_conflict": "another WhatsApp Web page took this login over (CONFLICT)",
    AccountBanned => "account_banned": "WhatsApp blocked the account (TOS_BLOCK, SMB_TOS_BLOCK)",
    ProxyBlocked => "proxy_blocked": "WhatsApp refuses the network the browser connects from (PROXYBLOCK)",
    ProxyInvalid => "proxy_invalid": "proxy_url is not an http://, https:// or socks5:// URL with a host and port the browser can use",
    ProxyFailed => "proxy_failed": "the session's proxy refused the connection or its credentials",
    WebVersionUnsupported => "web_version_unsupported": "this WhatsApp Web build lacks a module the driver uses, or says it is deprecated",
    InvalidCommand => "invalid_command": "a command's kind or args are not what the runner accepts (the error says which)",
    CommandFailed => "command_failed": "the page refused or failed the command",
    CommandTimeout => "command_timeout": "the page did not finish the command in time (after 3 attempts)",
    CommandInterrupted => "command_interrupted": "a command that changes the world was interrupted and the page cannot tell whether it happened: check before asking again",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_in_the_migration_domain() {
        // The latest definition of the domain's check.
        let sql = include_str!("../migrations/20261204000301_sticker.sql");
        let start = sql
            .find("alter domain wa_error_code add constraint")
            .unwrap();
        let domain = &sql[start..start + sql[start..].find("));").unwrap()];
        for code in ErrorCode::ALL {
            assert!(
                domain.contains(&format!("'{}'", code.as_str())),
                "{code} missing from domain"
            );
        }
        assert_eq!(
            domain.matches('\'').count() / 2,
            ErrorCode::ALL.len(),
            "domain has codes the enum lacks"
        );
    }
}
