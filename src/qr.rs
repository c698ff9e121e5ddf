//! QR payload → PNG data URL and terminal rendering.
