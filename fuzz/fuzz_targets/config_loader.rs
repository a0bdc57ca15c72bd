//! The configuration loader (DESIGN §8.1): any text is either a validated
//! configuration or refused with the key and the reason, never a panic.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use samgate::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let f = common::fixture();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = f.dir().join("samgate.toml");
    match Config::from_toml_str(text, f.dir(), &path) {
        Ok(c) => {
            assert!(c.server.max_connections >= 1);
            assert!(!c.server.header_timeout.is_zero());
        }
        Err(ConfigError::Invalid { issues, .. }) => assert!(!issues.is_empty()),
        Err(_) => {}
    }
});
