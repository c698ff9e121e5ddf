//! QR payload → PNG data URL and terminal rendering.

/// Placeholder until the QR renderer lands.
pub fn png_data_url(_payload: &str) -> String {
    String::new()
}
