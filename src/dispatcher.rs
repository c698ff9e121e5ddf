//! The dispatcher: claims due messages for owned connected sessions and sends them at most once.
