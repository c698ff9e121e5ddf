//! Recipient normalisation to WhatsApp JIDs.
