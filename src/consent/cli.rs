//! `samgate consent sign` and `samgate token sign` (DESIGN §8.2).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::token::SigningKeyFile;
use super::verify::ConsentClaims;
use crate::cli::ConsentSignArgs;
use crate::subject::personnummer::Personnummer;

/// Parses `--given-by ROLE:NAME`.
pub fn parse_given_by(s: &str) -> Result<super::lifecycle::GivenBy, String> {
    let (role, name) = s
        .split_once(':')
        .ok_or_else(|| "--given-by: expected ROLE:NAME".to_owned())?;
    let role = role.trim();
    if !super::lifecycle::ROLES.contains(&role) {
        return Err(format!(
            "--given-by: the role must be one of {}",
            super::lifecycle::ROLES.join(", ")
        ));
    }
    let name = name.trim();
    if name.is_empty() {
        return Err("--given-by: the name is empty".to_owned());
    }
    Ok(super::lifecycle::GivenBy {
        role: role.to_owned(),
        name: name.to_owned(),
    })
}

/// Signs a consent (library form, used by the demo and tests).
pub fn sign_consent(args: &ConsentSignArgs, now: i64) -> Result<String, String> {
    // The number is judged on the date the consent is signed at.
    let today = time::OffsetDateTime::from_unix_timestamp(now)
        .map_err(|e| format!("signing time: {e}"))?
        .date();
    let pnr = Personnummer::parse_at(&args.subject, today).map_err(|e| format!("subject: {e}"))?;
    let key = SigningKeyFile::load(&args.key).map_err(|e| e.to_string())?;
    let claims = ConsentClaims {
        jti: uuid::Uuid::new_v4().to_string(),
        iss: args.issuer.clone(),
        sub: pnr.expose().to_owned(),
        aud: Some("samgate".into()),
        iat: Some(now),
        nbf: now,
        exp: now + i64::from(args.days) * 86_400,
        parties: args.parties.clone(),
        purposes: args.purposes.clone(),
        categories: args.categories.clone(),
        method: args.method.clone(),
        recorded_by: args.recorded_by.clone(),
        given_by: args.given_by.as_deref().map(parse_given_by).transpose()?,
        protected_identity: args.protected_identity.then_some(true),
    };
    key.sign(&args.key_id, &claims).map_err(|e| e.to_string())
}

/// `samgate consent sign` as parsed: the personnummer is read from a file or
/// standard input, never taken from argv (issue #19).
#[derive(Debug, clap::Args)]
pub struct SignCommand {
    /// Everything but the subject.
    #[command(flatten)]
    pub args: ConsentSignArgs,
    /// File holding the participant's personnummer on one line (`-` reads
    /// standard input).
    #[arg(long = "subject-file", value_name = "FILE")]
    pub subject_file: Option<PathBuf>,
    /// Refused: a personnummer in argv is readable by every local user in the
    /// process list (`ps`, `/proc/<pid>/cmdline`) and stays in shell history.
    #[arg(long, hide = true, value_name = "PNR")]
    pub subject: Option<String>,
}

/// Why `--subject` is refused (printed as is).
pub const SUBJECT_IN_ARGV: &str =
    "--subject is refused: a personnummer on the command line is visible to \
every local user in the process list (ps, /proc/<pid>/cmdline) and is kept in shell history; \
put it in a file (mode 0600) and pass --subject-file FILE, or pipe it in with --subject-file -";

/// Reads the subject: the first line of `path` (`-` = standard input),
/// surrounding whitespace removed. The error never contains the file's text.
pub fn read_subject(path: &Path) -> Result<String, String> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut s)
            .map_err(|e| format!("--subject-file -: cannot read standard input: {e}"))?;
        s
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| format!("--subject-file {}: {e}", path.display()))?
    };
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    match (lines.next(), lines.next()) {
        (Some(one), None) => Ok(one.to_owned()),
        (None, _) => Err("--subject-file: no personnummer in the input".into()),
        (Some(_), Some(_)) => {
            Err("--subject-file: expected one personnummer on one line, found several lines".into())
        }
    }
}

/// `samgate consent sign`: prints the compact JWS alone on one line.
#[expect(
    clippy::disallowed_methods,
    reason = "a consent signed on the command line is valid from the real time"
)]
pub fn sign(cmd: SignCommand) -> ExitCode {
    if cmd.subject.is_some() {
        eprintln!("samgate consent sign: {SUBJECT_IN_ARGV}");
        return ExitCode::from(2);
    }
    let Some(file) = &cmd.subject_file else {
        eprintln!(
            "samgate consent sign: --subject-file FILE (or - for standard input) is required"
        );
        return ExitCode::from(2);
    };
    let mut args = cmd.args;
    args.subject = match read_subject(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("samgate consent sign: {e}");
            return ExitCode::from(2);
        }
    };
    match sign_consent(&args, time::OffsetDateTime::now_utc().unix_timestamp()) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("samgate consent sign: {e}");
            ExitCode::from(2)
        }
    }
}

/// `samgate token sign`: a user JWT (EdDSA) for a party's jwt_issuer.
pub fn token_sign(key: &Path, iss: &str, sub: &str, aud: &str, minutes: u32) -> ExitCode {
    match super::token::sign_user_token(key, iss, sub, aud, minutes) {
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
