//! Incoming media on the simulator (issue 13): the phone sends a file, the "server" keeps it
//! encrypted as WhatsApp's media servers do, and the page holds the message with the direct path,
//! hashes and media key the real page's messages carry, so that a client can only get the bytes
//! through the page's own download manager (docs/sim-surface.md "Incoming media").
//!
//! The encryption is WhatsApp's media scheme as the gateways implement it (Baileys'
//! `downloadContentFromMessage`, the node-side decryption quoted in docs/sim-surface.md): the
//! 32-byte media key expanded by HKDF-SHA256 (no salt, info `WhatsApp <Type> Keys`) into 112
//! bytes: IV (16), cipher key (32), MAC key (32); the file is AES-256-CBC (PKCS#7) of the
//! plaintext followed by the first 10 bytes of HMAC-SHA256(MAC key, IV ‖ ciphertext).
//! `filehash` is the base64 SHA-256 of the plaintext, `encFilehash` of the encrypted file.

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use base64::Engine as _;
use bytes::Bytes;
use hmac::Mac;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The largest file the control API takes (WhatsApp's own limit for documents is far larger; the
/// simulator holds everything in memory).
pub const MAX_INCOMING_MEDIA: usize = 64 << 20;

/// `POST /_sim/incoming`'s `media`: the phone sends a file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncomingMediaReq {
    /// image, video, audio, voice, document or sticker.
    pub kind: String,
    /// The file, base64.
    pub data: String,
    pub mime: String,
    pub filename: Option<String>,
    pub caption: Option<String>,
}

/// What the page's message carries about its file (serialized to the page as is).
#[derive(Debug, Clone, Serialize)]
pub struct InMedia {
    /// The page's message type: image, video, audio, ptt (a voice note), document, sticker.
    #[serde(rename = "type")]
    pub page_type: String,
    pub mimetype: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    pub size: u64,
    pub direct_path: String,
    pub media_key: String,
    pub media_key_timestamp: i64,
    pub filehash: String,
    pub enc_filehash: String,
    /// Hex SHA-256 of the plaintext (for tests reading `/_sim/messages`; the page ignores it).
    pub sha256: String,
}

/// The HKDF info of a page message type (WhatsApp's media types).
pub fn hkdf_info(page_type: &str) -> &'static str {
    match page_type {
        "video" | "gif" => "WhatsApp Video Keys",
        "audio" | "ptt" => "WhatsApp Audio Keys",
        "document" => "WhatsApp Document Keys",
        _ => "WhatsApp Image Keys",
    }
}

fn page_type(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "image" => "image",
        "video" => "video",
        "audio" => "audio",
        "voice" => "ptt",
        "document" => "document",
        "sticker" => "sticker",
        _ => return None,
    })
}

/// Encrypts `plain` under `media_key` for a message of `page_type`: the file as the media server
/// keeps it.
pub fn encrypt(plain: &[u8], media_key: &[u8; 32], page_type: &str) -> Vec<u8> {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(&[0u8; 32]), media_key);
    let mut okm = [0u8; 112];
    hk.expand(hkdf_info(page_type).as_bytes(), &mut okm)
        .expect("112 bytes is a valid HKDF-SHA256 length");
    let (iv, rest) = okm.split_at(16);
    let (cipher_key, rest) = rest.split_at(32);
    let mac_key = &rest[..32];
    let cipher = aes::Aes256::new(GenericArray::from_slice(cipher_key));
    // CBC with PKCS#7 padding.
    let pad = 16 - plain.len() % 16;
    let mut data = plain.to_vec();
    data.extend(std::iter::repeat_n(pad as u8, pad));
    let mut prev: [u8; 16] = iv.try_into().expect("16 bytes");
    for block in data.chunks_mut(16) {
        for (b, p) in block.iter_mut().zip(prev.iter()) {
            *b ^= p;
        }
        let ga = GenericArray::from_mut_slice(block);
        cipher.encrypt_block(ga);
        prev.copy_from_slice(block);
    }
    let mut mac = <hmac::Hmac<Sha256> as Mac>::new_from_slice(mac_key).expect("any key length");
    mac.update(iv);
    mac.update(&data);
    let tag = mac.finalize().into_bytes();
    data.extend_from_slice(&tag[..10]);
    data
}

/// Checks a request's file and makes the message's media and the encrypted file (to be served
/// at `direct_path`). Err: a sentence for a 400.
pub fn prepare(r: IncomingMediaReq, token: &str) -> Result<(InMedia, Bytes), String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let page_type = page_type(&r.kind)
        .ok_or_else(|| "media.kind: image, video, audio, voice, document or sticker".to_string())?;
    let mime = r.mime.trim().to_string();
    if mime.is_empty() || mime.len() > 255 || !mime.contains('/') {
        return Err("media.mime: a MIME type like image/png".into());
    }
    let plain = b64
        .decode(r.data.trim())
        .map_err(|_| "media.data: the file, base64".to_string())?;
    if plain.is_empty() {
        return Err("media.data: the file is empty".into());
    }
    if plain.len() > MAX_INCOMING_MEDIA {
        return Err(format!("media.data: at most {MAX_INCOMING_MEDIA} bytes"));
    }
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let file = encrypt(&plain, &key, page_type);
    let media = InMedia {
        page_type: page_type.to_string(),
        mimetype: mime,
        filename: r.filename.filter(|f| !f.is_empty()),
        caption: r.caption.filter(|c| !c.is_empty()),
        size: plain.len() as u64,
        direct_path: format!("/mms/{page_type}/{token}.enc"),
        media_key: b64.encode(key),
        media_key_timestamp: chrono::Utc::now().timestamp(),
        filehash: b64.encode(Sha256::digest(&plain)),
        enc_filehash: b64.encode(Sha256::digest(&file)),
        sha256: hex::encode(Sha256::digest(&plain)),
    };
    Ok((media, Bytes::from(file)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cbc_and_mac_have_whatsapps_shape() {
        let key = [7u8; 32];
        let plain = b"hello media";
        let file = encrypt(plain, &key, "image");
        // One padded block and the 10-byte MAC.
        assert_eq!(file.len(), 16 + 10);
        let again = encrypt(plain, &key, "image");
        assert_eq!(file, again, "deterministic for one key");
        assert_ne!(file, encrypt(plain, &key, "ptt"), "the type picks the keys");
        // A full block of plaintext gains a whole block of padding.
        assert_eq!(encrypt(&[0u8; 16], &key, "image").len(), 32 + 10);
    }

    #[test]
    fn bad_requests_are_refused_with_a_sentence() {
        let req = |kind: &str, data: &str, mime: &str| IncomingMediaReq {
            kind: kind.into(),
            data: data.into(),
            mime: mime.into(),
            filename: None,
            caption: None,
        };
        assert!(prepare(req("gif", "aGk=", "image/gif"), "t").is_err());
        assert!(prepare(req("image", "***", "image/png"), "t").is_err());
        assert!(prepare(req("image", "aGk=", "png"), "t").is_err());
        let (m, file) = prepare(req("voice", "aGk=", "audio/ogg; codecs=opus"), "t").unwrap();
        assert_eq!(m.page_type, "ptt");
        assert_eq!(m.size, 2);
        assert_eq!(m.direct_path, "/mms/ptt/t.enc");
        assert_eq!(file.len(), 26);
    }
}
