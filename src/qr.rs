//! QR payload → PNG data URL and terminal rendering.
//!
//! The payload is a login credential while it is valid (DESIGN.md §3): nothing here logs it, and
//! errors never echo it.

use base64::Engine as _;
use qrcode::render::unicode::Dense1x2;
use qrcode::{Color, QrCode};

/// Pixels per QR module in the PNG: big enough for a phone camera pointed at a screen.
const PNG_SCALE: usize = 8;
/// The blank border the QR spec asks for, in modules; scanners fail without it.
const QUIET_ZONE: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    /// Longer than the largest QR version holds (never the case for WhatsApp's ~200-byte payloads).
    #[error("QR payload of {len} bytes does not fit in a QR code")]
    TooLong { len: usize },
    #[error("PNG encoding failed: {0}")]
    Png(String),
}

fn encode(payload: &str) -> Result<QrCode, QrError> {
    QrCode::new(payload.as_bytes()).map_err(|_| QrError::TooLong { len: payload.len() })
}

/// `data:image/png;base64,…` of the payload's QR code, as stored in `wa_session.qr_image`.
pub fn try_png_data_url(payload: &str) -> Result<String, QrError> {
    let png = png_bytes(payload)?;
    Ok(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    ))
}

/// Like [`try_png_data_url`]; a payload that cannot be a QR code gives an empty string (the raw
/// payload in `qr_code` still lets a caller render it) rather than a panic.
pub fn png_data_url(payload: &str) -> String {
    try_png_data_url(payload).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "QR image not rendered");
        String::new()
    })
}

/// The PNG itself: 1-bit greyscale, black modules on white, with the quiet zone.
pub fn png_bytes(payload: &str) -> Result<Vec<u8>, QrError> {
    let code = encode(payload)?;
    let modules = code.width();
    let colors = code.to_colors();
    let side_modules = modules + 2 * QUIET_ZONE;
    let side = side_modules * PNG_SCALE;
    let dark = |mx: usize, my: usize| -> bool {
        if mx < QUIET_ZONE || my < QUIET_ZONE {
            return false;
        }
        let (x, y) = (mx - QUIET_ZONE, my - QUIET_ZONE);
        x < modules && y < modules && colors[y * modules + x] == Color::Dark
    };

    // 1-bit rows, most significant bit first; a set bit is white.
    let row_bytes = side.div_ceil(8);
    let mut pixels = vec![0u8; row_bytes * side];
    for py in 0..side {
        for px in 0..side {
            if !dark(px / PNG_SCALE, py / PNG_SCALE) {
                pixels[py * row_bytes + px / 8] |= 0x80 >> (px % 8);
            }
        }
    }

    let mut out = Vec::new();
    let side32 = u32::try_from(side).map_err(|e| QrError::Png(e.to_string()))?;
    let mut enc = png::Encoder::new(&mut out, side32, side32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::One);
    let mut writer = enc
        .write_header()
        .map_err(|e| QrError::Png(e.to_string()))?;
    writer
        .write_image_data(&pixels)
        .map_err(|e| QrError::Png(e.to_string()))?;
    writer.finish().map_err(|e| QrError::Png(e.to_string()))?;
    Ok(out)
}

/// The QR drawn with Unicode half blocks (two modules per character row), for `wa-outbox demo`.
/// Dark modules are drawn as blank on a light background so that it scans on dark terminals too.
pub fn try_terminal(payload: &str) -> Result<String, QrError> {
    let code = encode(payload)?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// Like [`try_terminal`]; an impossible payload gives a one-line explanation instead.
pub fn terminal(payload: &str) -> String {
    try_terminal(payload).unwrap_or_else(|e| format!("(QR not rendered: {e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &str = "2@Xk3vQ9m1sT7pL0aZcY8wE4rN6uH2jF5bD1gK9qS3xV7tM0yP4oI8eW6,\
        fJ4mB1kR0tZ8cQ2yX6vN9wL3aH7pE5sD1gU4oI8jK0bM=,\
        q7Lz2Vn4Xc8Rt6Yp0Wm3Ks5Jd9Hf1Ga7Eb2Nc4Ux6Iy=,\
        kP9rT3mW1xZ7vB5nQ2cL8yH4jD6sF0aG1eU9oI3tK5w=,WEB";

    fn decode_png(png: &[u8]) -> String {
        let decoder = png::Decoder::new(png);
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.bit_depth, png::BitDepth::One);
        let (w, h, line) = (info.width as usize, info.height as usize, info.line_size);
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| {
            if buf[y * line + x / 8] & (0x80 >> (x % 8)) != 0 {
                255
            } else {
                0
            }
        });
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1, "exactly one QR code in the image");
        grids[0].decode().unwrap().1
    }

    #[test]
    fn png_round_trips_to_the_payload() {
        let url = png_data_url(PAYLOAD);
        let b64 = url.strip_prefix("data:image/png;base64,").unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(decode_png(&png), PAYLOAD);
    }

    #[test]
    fn terminal_rendering_is_square_half_blocks() {
        let t = terminal(PAYLOAD);
        let code = QrCode::new(PAYLOAD).unwrap();
        let lines: Vec<&str> = t.lines().collect();
        // Two module rows per text line, quiet zone included.
        assert_eq!(lines.len(), (code.width() + 2 * QUIET_ZONE).div_ceil(2));
        assert!(lines
            .iter()
            .all(|l| l.chars().count() == code.width() + 2 * QUIET_ZONE));
        assert!(t.contains('▀') || t.contains('▄'));
    }

    #[test]
    fn oversized_payload_is_an_error_not_a_panic() {
        let huge = "x".repeat(10_000);
        assert!(matches!(
            try_png_data_url(&huge),
            Err(QrError::TooLong { len: 10_000 })
        ));
        assert_eq!(png_data_url(&huge), "");
        assert!(terminal(&huge).starts_with("(QR not rendered"));
        // The error text must not carry the payload (it is a credential).
        assert!(!try_png_data_url(&huge)
            .unwrap_err()
            .to_string()
            .contains("xxxx"));
    }
}
