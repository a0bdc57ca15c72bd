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
    // Two reference dates: the century of the 10-digit forms follows it.
    for today in [
        time::macros::date!(2026 - 06 - 01),
        time::macros::date!(1999 - 12 - 31),
    ] {
        if let Ok(p) = Personnummer::parse_at(s, today) {
            let again =
                Personnummer::parse_at(p.expose(), today).expect("canonical form must parse");
            assert_eq!(again.expose(), p.expose());
        }
    }
});
