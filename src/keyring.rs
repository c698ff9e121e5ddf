//! The keys logins are sealed under (WA_AUTH_KEY): parsed and checked here, used by the stored
//! login archives (`crate::auth_store`). Its own module so that the configuration can check the
//! variable without depending on the archive store.

/// The keys a runner knows: the first encrypts, all decrypt (so keys can rotate).
#[derive(Clone)]
pub struct KeyRing {
    pub(crate) keys: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("KeyRing")
            .field("key_ids", &self.key_ids())
            .finish()
    }
}

impl KeyRing {
    /// Parses `id:base64key[,id:base64key…]`; each key is 32 bytes of standard base64.
    pub fn parse(s: &str) -> Result<Self, String> {
        use base64::Engine;
        let mut keys = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, b64) = part
                .split_once(':')
                .ok_or_else(|| "expected `id:base64key[,id:base64key…]`".to_string())?;
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!("key id `{id}` must be letters, digits, _ or -"));
            }
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| format!("key `{id}` is not valid base64"))?;
            let key: [u8; 32] = raw.try_into().map_err(|v: Vec<u8>| {
                format!("key `{id}` is {} bytes; AES-256 needs 32", v.len())
            })?;
            if keys.iter().any(|(k, _)| k == id) {
                return Err(format!("key id `{id}` appears twice"));
            }
            keys.push((id.to_string(), key));
        }
        if keys.is_empty() {
            return Err("no key given".into());
        }
        Ok(Self { keys })
    }

    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// The id new archives are sealed under.
    pub fn current_key_id(&self) -> &str {
        &self.keys[0].0
    }

    /// A fresh random key in WA_AUTH_KEY format, `id:base64`.
    pub fn generate_spec(id: &str) -> String {
        use base64::Engine;
        let key: [u8; 32] = rand::random();
        format!(
            "{id}:{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        )
    }
}
