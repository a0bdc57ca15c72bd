//! The offline verifier of an NDJSON audit export (`samgate audit verify
//! --export`, DESIGN §9): any file is either verified or refused naming a
//! seq, never a panic. The seeds are real exports signed by the key in
//! `fuzz/keys/audit.pub.raw` (see docs/security.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Write;

const KEY: &[u8; 32] = include_bytes!("../keys/audit.pub.raw");

fuzz_target!(|data: &[u8]| {
    let Ok(mut f) = tempfile::NamedTempFile::new() else {
        return;
    };
    if f.write_all(data).is_err() || f.flush().is_err() {
        return;
    }
    match samgate::audit::verify::verify_export(f.path(), *KEY) {
        Ok(summary) => {
            let _ = summary;
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
