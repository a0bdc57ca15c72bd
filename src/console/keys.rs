//! The console's keys (DESIGN §11), built at start and held by the state:
//! the consent signer and the CSRF key (see [`crate::console`] for the
//! token's form).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;

use crate::config::Config;
use crate::consent::token::SigningKeyFile;

/// How long a form's CSRF token is accepted.
pub const CSRF_TTL_SECS: i64 = 4 * 3600;

/// The console's keys, built at start.
pub struct ConsoleState {
    signer: Option<(SigningKeyFile, String)>,
    csrf: hmac::Key,
}

impl ConsoleState {
    /// Loads `[console] signing_key` (if configured) and derives the CSRF key.
    pub fn load(config: &Config) -> Result<Self, String> {
        let Some(c) = &config.console else {
            let rng = ring::rand::SystemRandom::new();
            let csrf = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
                .map_err(|_| "system random number generator failed".to_owned())?;
            return Ok(Self { signer: None, csrf });
        };
        let signer = SigningKeyFile::load(&c.signing_key).map_err(|e| e.to_string())?;
        let pem_bytes = std::fs::read(&c.signing_key).map_err(|e| e.to_string())?;
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]);
        let prk = salt.extract(&pem_bytes);
        let info: &[&[u8]] = &[b"samgate/console/csrf/v1"];
        let okm = prk
            .expand(info, hmac::HMAC_SHA256)
            .map_err(|_| "key derivation failed".to_owned())?;
        let csrf = hmac::Key::from(okm);
        Ok(Self {
            signer: Some((signer, c.key_id.clone())),
            csrf,
        })
    }

    /// The console's consent signer and its `kid`, when configured.
    pub(crate) fn signer(&self) -> Option<(&SigningKeyFile, &str)> {
        self.signer.as_ref().map(|(s, k)| (s, k.as_str()))
    }

    fn mac(&self, user: &str, nonce: &[u8], at: i64) -> hmac::Tag {
        let mut msg = Vec::with_capacity(user.len() + nonce.len() + 9);
        msg.extend_from_slice(user.as_bytes());
        msg.push(0);
        msg.extend_from_slice(nonce);
        msg.extend_from_slice(&at.to_be_bytes());
        hmac::sign(&self.csrf, &msg)
    }

    /// A fresh CSRF token for `user` at unix time `now`.
    pub(crate) fn csrf_token(&self, user: &str, now: i64) -> String {
        let nonce = uuid::Uuid::new_v4();
        let mut raw = nonce.as_bytes().to_vec();
        raw.extend_from_slice(&now.to_be_bytes());
        raw.extend_from_slice(self.mac(user, nonce.as_bytes(), now).as_ref());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Whether `token` was issued to `user` within the last [`CSRF_TTL_SECS`].
    pub(crate) fn csrf_ok(&self, user: &str, token: &str, now: i64) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(token.trim()) else {
            return false;
        };
        let (Some(nonce), Some(at), Some(tag)) = (raw.get(..16), raw.get(16..24), raw.get(24..))
        else {
            return false;
        };
        let Ok(at_bytes) = <[u8; 8]>::try_from(at) else {
            return false;
        };
        let at = i64::from_be_bytes(at_bytes);
        if at > now + 60 || now - at > CSRF_TTL_SECS {
            return false;
        }
        let mut msg = Vec::new();
        msg.extend_from_slice(user.as_bytes());
        msg.push(0);
        msg.extend_from_slice(nonce);
        msg.extend_from_slice(&at.to_be_bytes());
        hmac::verify(&self.csrf, &msg, tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ConsoleState {
        let rng = ring::rand::SystemRandom::new();
        ConsoleState {
            signer: None,
            csrf: hmac::Key::generate(hmac::HMAC_SHA256, &rng).unwrap(),
        }
    }

    #[test]
    fn csrf_token_is_bound_to_user_and_time() {
        let s = state();
        let t = s.csrf_token("anna.lind", 1_000_000);
        assert!(s.csrf_ok("anna.lind", &t, 1_000_010));
        assert!(!s.csrf_ok("erik.berg", &t, 1_000_010), "another user");
        assert!(
            !s.csrf_ok("anna.lind", &t, 1_000_000 + CSRF_TTL_SECS + 1),
            "expired"
        );
        assert!(!s.csrf_ok("anna.lind", &t, 999_000), "from the future");
        let mut forged = t.clone().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        assert!(!s.csrf_ok(
            "anna.lind",
            std::str::from_utf8(&forged).unwrap(),
            1_000_010
        ));
        assert!(!s.csrf_ok("anna.lind", "", 1_000_010));
        assert!(!s.csrf_ok("anna.lind", "!!!", 1_000_010));
        let other = state();
        assert!(!other.csrf_ok("anna.lind", &t, 1_000_010), "another key");
    }
}
