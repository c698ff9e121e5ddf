//! wa-outbox: WhatsApp for Django through plain PostgreSQL rows.
//!
//! The tables are the API (DESIGN.md §1). A runner (`run`) claims sessions and messages with
//! `FOR UPDATE SKIP LOCKED`, drives one WhatsApp Web page per session through a [`driver`], and
//! writes QR codes, states, acks and incoming messages back.

pub mod auth_store;
pub mod child;
pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod demo;
pub mod dispatcher;
pub mod driver;
pub mod embedded_pg;
pub mod error_code;
pub mod http;
pub mod keyring;
pub mod kinds;
pub mod maintenance;
pub mod media;
pub mod qr;
pub mod recipient;
pub mod reconciler;
pub mod runner;
pub mod session;
pub mod shared;
pub mod sim;
pub mod status;
#[doc(hidden)]
pub mod testing;
