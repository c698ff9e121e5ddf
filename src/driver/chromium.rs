//! The Chromium driver (chromiumoxide).
