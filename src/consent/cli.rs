//! `samgate consent sign` and `samgate token sign`.
use std::path::Path;
use std::process::ExitCode;

use crate::cli::ConsentSignArgs;

/// `samgate consent sign`.
pub fn sign(_args: ConsentSignArgs) -> ExitCode {
    eprintln!("samgate consent sign: not yet implemented");
    ExitCode::from(2)
}

/// `samgate token sign`: a user JWT (EdDSA) for a party's jwt_issuer.
pub fn token_sign(key: &Path, iss: &str, sub: &str, aud: &str, minutes: u32) -> ExitCode {
    match crate::consent::token::sign_user_token(key, iss, sub, aud, minutes) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("samgate token sign: {e}");
            ExitCode::from(2)
        }
    }
}
