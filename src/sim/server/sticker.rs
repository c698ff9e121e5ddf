//! Stickers as WhatsApp's server takes them (issue 13): a `sticker` message's media is a WebP of
//! 512x512 pixels (what gateways convert to before sending: docs/sim-surface.md "Stickers"), or it
//! is refused like a malformed message.

use serde::Serialize;

/// What the server recorded of a sticker, beside its media.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SentSticker {
    pub width: u32,
    pub height: u32,
}

/// A WhatsApp sticker's size.
const SIDE: u32 = 512;

/// The sticker of a `sticker` message whose upload holds `bytes` (`mime` as uploaded), or why it
/// is refused.
pub(super) fn check(mime: &str, bytes: &[u8]) -> Result<SentSticker, &'static str> {
    if mime != "image/webp" {
        return Err("a sticker must be image/webp");
    }
    let (width, height) = webp_size(bytes).ok_or("a sticker must be a WebP image")?;
    if (width, height) != (SIDE, SIDE) {
        return Err("a sticker must be 512x512 pixels");
    }
    Ok(SentSticker { width, height })
}

/// The canvas size of a WebP file (RIFF container; VP8, VP8L or VP8X first chunk).
pub fn webp_size(b: &[u8]) -> Option<(u32, u32)> {
    if b.len() < 30 || &b[..4] != b"RIFF" || &b[8..12] != b"WEBP" {
        return None;
    }
    let le16 = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]) as u32;
    let le24 = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], 0]);
    match &b[12..16] {
        b"VP8 " => {
            // Frame tag (3 bytes), then the start code 9d 01 2a, then 14-bit sizes.
            (b[23..26] == [0x9d, 0x01, 0x2a]).then(|| (le16(26) & 0x3fff, le16(28) & 0x3fff))
        }
        b"VP8L" => {
            if b[20] != 0x2f {
                return None;
            }
            let bits = u32::from_le_bytes([b[21], b[22], b[23], b[24]]);
            Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
        }
        b"VP8X" => Some((le24(24) + 1, le24(27) + 1)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_size_of_each_webp_flavour() {
        let riff = |chunk: &[u8], body: &[u8]| {
            let mut v = b"RIFF\0\0\0\0WEBP".to_vec();
            v.extend_from_slice(chunk);
            v.extend_from_slice(&[0, 0, 0, 0]);
            v.extend_from_slice(body);
            v.resize(40, 0);
            v
        };
        // VP8X: 24-bit width-1 and height-1 after 4 flag bytes.
        let x = riff(b"VP8X", &[0, 0, 0, 0, 0xff, 0x01, 0, 0xff, 0x01, 0]);
        assert_eq!(webp_size(&x), Some((512, 512)));
        // VP8L: signature, then 14-bit width-1 and height-1.
        let bits: u32 = 511 | (255 << 14);
        let mut l = vec![0x2f];
        l.extend_from_slice(&bits.to_le_bytes());
        assert_eq!(webp_size(&riff(b"VP8L", &l)), Some((512, 256)));
        // VP8: frame tag, start code, 16-bit sizes (2 bits of scale).
        let v = riff(
            b"VP8 ",
            &[0, 0, 0, 0x9d, 0x01, 0x2a, 0x00, 0x02, 0x00, 0x02],
        );
        assert_eq!(webp_size(&v), Some((512, 512)));
        assert_eq!(webp_size(b"\x89PNG\r\n\x1a\n"), None);
        assert_eq!(check("image/png", &x), Err("a sticker must be image/webp"));
        assert!(check("image/webp", &x).is_ok());
    }
}
