//! Recipient normalisation to WhatsApp JIDs.
//!
//! Callers write numbers the way people do (`+1 (555) 123-4567`); WhatsApp wants
//! `15551234567@c.us`. Anything we cannot map with certainty is refused with
//! `invalid_recipient` rather than guessed at: a wrong guess sends to a stranger.

/// E.164 allows at most 15 digits; shorter than 6 is no phone number anywhere.
const MIN_DIGITS: usize = 6;
const MAX_DIGITS: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jid(String);

impl Jid {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn is_group(&self) -> bool {
        self.0.ends_with("@g.us")
    }
}

impl std::fmt::Display for Jid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn phone_digits(s: &str) -> Option<String> {
    let s = s.trim();
    let body = s.strip_prefix('+').unwrap_or(s);
    if !body
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '(' | ')' | '.'))
    {
        return None;
    }
    let digits: String = body.chars().filter(char::is_ascii_digit).collect();
    if !(MIN_DIGITS..=MAX_DIGITS).contains(&digits.len()) || digits.starts_with('0') {
        return None;
    }
    Some(digits)
}

/// Maps a recipient to its JID, or explains why it cannot.
pub fn normalize(recipient: &str) -> Result<Jid, String> {
    let r = recipient.trim();
    if let Some((user, server)) = r.split_once('@') {
        return match server {
            "c.us" => {
                if user.len() >= MIN_DIGITS
                    && user.len() <= MAX_DIGITS
                    && user.bytes().all(|b| b.is_ascii_digit())
                    && !user.starts_with('0')
                {
                    Ok(Jid(format!("{user}@c.us")))
                } else {
                    Err(format!(
                        "`{recipient}`: a c.us JID is the number's digits, e.g. 15551234567@c.us"
                    ))
                }
            }
            "g.us" => {
                // Groups: `<digits>` or the older `<creator digits>-<timestamp>`.
                let ok = !user.is_empty()
                    && user.len() <= 40
                    && user.split('-').count() <= 2
                    && user
                        .split('-')
                        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
                if ok {
                    Ok(Jid(format!("{user}@g.us")))
                } else {
                    Err(format!("`{recipient}` is not a group JID"))
                }
            }
            _ => Err(format!(
                "`{recipient}`: only @c.us and @g.us JIDs are supported"
            )),
        };
    }
    phone_digits(r)
        .map(|d| Jid(format!("{d}@c.us")))
        .ok_or_else(|| format!("`{recipient}` is not a phone number (6 to 15 digits, international format) or a JID"))
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn table() {
        let ok = [
            ("15551234567", "15551234567@c.us"),
            ("+15551234567", "15551234567@c.us"),
            ("+1 (555) 123-4567", "15551234567@c.us"),
            ("  +44 20 7946 0958 ", "442079460958@c.us"),
            ("1.555.123.4567", "15551234567@c.us"),
            ("15551234567@c.us", "15551234567@c.us"),
            ("120363012345678901@g.us", "120363012345678901@g.us"),
            ("15551234567-1600000000@g.us", "15551234567-1600000000@g.us"),
        ];
        for (input, want) in ok {
            assert_eq!(
                normalize(input).map(|j| j.to_string()),
                Ok(want.to_string()),
                "{input}"
            );
        }
        let bad = [
            "",
            "   ",
            "hello",
            "12345",
            "1234567890123456",
            "+",
            "++15551234567",
            "1555123456a",
            "015551234567",
            "15551234567@s.whatsapp.net",
            "abc@c.us",
            "1555@c.us",
            "@g.us",
            "1-2-3@g.us",
            "15551234567@",
            "+1 555 123 4567 ext 9",
            "1555\n1234567",
            "１５５５１２３４５６７",
        ];
        for input in bad {
            assert!(normalize(input).is_err(), "{input:?} should be refused");
        }
        assert!(normalize("120363012345678901@g.us").unwrap().is_group());
        assert!(!normalize("15551234567").unwrap().is_group());
    }
}
