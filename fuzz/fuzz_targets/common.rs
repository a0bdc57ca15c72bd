//! Shared setup: one working set written by `samgate init` (the same
//! library code as `samgate init --dir`), created once per fuzzing process.

use std::path::Path;
use std::sync::OnceLock;

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub config: samgate::config::Config,
}

impl Fixture {
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        samgate::init::init(dir.path(), &samgate::init::InitOptions::default()).expect("init");
        let config =
            samgate::config::Config::load(&dir.path().join("samgate.toml")).expect("config");
        Fixture { _dir: dir, config }
    })
}
