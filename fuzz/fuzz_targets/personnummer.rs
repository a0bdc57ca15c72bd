//! The personnummer / samordningsnummer parser (DESIGN §3): any string is
//! either refused with a typed error or parsed into a value whose canonical
//! form parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use samgate::subject::personnummer::Personnummer;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let today = time::macros::date!(2026 - 06 - 01);
    for r in [Personnummer::parse(s), Personnummer::parse_at(s, today)] {
        if let Ok(p) = r {
            let again = Personnummer::parse(p.expose()).expect("canonical form must parse");
            assert_eq!(again.expose(), p.expose());
        }
    }
});
