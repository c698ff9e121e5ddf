//! Which WhatsApp Web build the simulator models (`--wa-version`).
//!
//! The page (`app.html`) switches each behaviour on the build's third component against a named
//! threshold next to the code it changes; docs/sim-surface.md ("By version") lists them all with
//! their public sources. The server needs only the LID switch (it refuses phone-addressed sends
//! to LID contacts and hands out LIDs), so only that threshold lives here too.

/// The newest build seen in public evidence (code-corpus comments of 2026-10-09/10); the default.
pub const NEWEST_WA_VERSION: &str = "2.3000.1049833609";

/// The early-2026 build people pinned as a known-good workaround (avoylenko/wwebjs-api#93,
/// 2026-01-14: "works well with version: 2.3000.1031490220-alpha"). Models the page as
/// whatsapp-web.js 1.34.x knew it: no LID, `MsgKey._serialized`, logout in place.
pub const EARLY_2026_WA_VERSION: &str = "2.3000.1031490220";

/// One-to-one chats are LID threads from this build: wa-js#3358 (2026-02-27, 2.3000.1034143497,
/// "Chat not found in ChatStore for …@lid") and wa-js#3374 (2.3000.1034851462: sends to `@c.us`
/// no longer go out). Same constant as `LID_BUILD` in app.html.
pub const LID_FROM_BUILD: u64 = 1_034_143_497;

/// A parsed `--wa-version`: the text `Debug.VERSION` reports and its build (third component).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaVersion {
    pub text: String,
    pub build: u64,
}

impl WaVersion {
    /// `2.3000.1049833609` (an `-alpha`/`-beta` suffix, as WhatsApp's own version strings
    /// carry, is kept in the text and ignored for comparisons).
    pub fn parse(raw: &str) -> Result<WaVersion, String> {
        let bad = || {
            format!(
                "{raw:?} is not a WhatsApp Web build number; expected three dot-separated \
                 numbers like {NEWEST_WA_VERSION} (optionally with -alpha or -beta)"
            )
        };
        let text = raw.trim();
        let core = text
            .strip_suffix("-alpha")
            .or_else(|| text.strip_suffix("-beta"))
            .unwrap_or(text);
        let parts: Vec<&str> = core.split('.').collect();
        if parts.len() != 3
            || parts
                .iter()
                .any(|p| p.is_empty() || p.len() > 12 || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(bad());
        }
        let build = parts[2].parse::<u64>().map_err(|_| bad())?;
        Ok(WaVersion {
            text: text.to_string(),
            build,
        })
    }

    pub fn has_lid(&self) -> bool {
        self.build >= LID_FROM_BUILD
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_build_numbers() {
        let v = WaVersion::parse(NEWEST_WA_VERSION).unwrap();
        assert_eq!(v.build, 1_049_833_609);
        assert!(v.has_lid());
        let e = WaVersion::parse(EARLY_2026_WA_VERSION).unwrap();
        assert!(!e.has_lid());
        assert_eq!(
            WaVersion::parse("2.3000.1043220887-alpha").unwrap().build,
            1_043_220_887
        );
        for bad in [
            "",
            "2.3000",
            "2.3000.x",
            "2.3000.1.4",
            "v2.3000.1",
            "2..1",
            "2.3000.1 1",
        ] {
            let err = WaVersion::parse(bad).unwrap_err();
            assert!(
                err.contains("not a WhatsApp Web build number"),
                "{bad}: {err}"
            );
        }
    }
}
