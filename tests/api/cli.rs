//! The command line (DESIGN §8.2): exit codes and messages.

use std::process::Command;

fn samgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_samgate"))
        .args(args)
        .output()
        .unwrap()
}

/// A temp dir with a working set written by `samgate init --dir`.
fn initialised() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().to_str().unwrap();
    assert!(samgate(&["init", "--dir", t]).status.success());
    dir
}

#[test]
fn an_unknown_subcommand_prints_usage_and_exits_2() {
    let out = samgate(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));
}

#[test]
fn init_writes_a_working_set_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("nested/deploy");
    let t = target.to_str().unwrap();
    let out = samgate(&["init", "--dir", t, "--listen", "127.0.0.1:9443"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml = std::fs::read_to_string(target.join("samgate.toml")).unwrap();
    assert!(toml.contains("listen = \"127.0.0.1:9443\""));
    let again = samgate(&["init", "--dir", t]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("samgate.toml"));
    assert_eq!(
        std::fs::read_to_string(target.join("samgate.toml")).unwrap(),
        toml
    );
}

#[test]
fn serve_refuses_a_bad_config_with_exit_2_naming_the_key() {
    let dir = initialised();
    let path = dir.path().join("samgate.toml");
    let text =
        std::fs::read_to_string(&path)
            .unwrap()
            .replacen("[storage]\n", "[storage]\npool = 3\n", 1);
    std::fs::write(&path, text).unwrap();
    let out = samgate(&["serve", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pool"));
}

#[test]
fn token_sign_prints_one_jwt() {
    let dir = initialised();
    let key = dir.path().join("keys/users-sfk-kalmar-audit.pem");
    let out = samgate(&[
        "token",
        "sign",
        "--key",
        key.to_str().unwrap(),
        "--iss",
        "sfk-kalmar-audit-users",
        "--sub",
        "revisor.anna",
    ]);
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert_eq!(s.trim().split('.').count(), 3);
}
