//! The contenders as child processes: samgate (this executable re-run as
//! `samgate serve`, the same library code as the `samgate` binary) and
//! nginx (the Debian package, installed with apt-get when missing, in the
//! foreground with its own configuration in the run's directory), plus CPU
//! accounting from `/proc/<pid>/stat`.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("picking a port")?;
    Ok(l.local_addr()?)
}

/// Clock ticks per second of `/proc/<pid>/stat` times.
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// utime + stime of one process (all its threads), in ticks.
pub fn ticks_of(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split(' ').collect();
    // After the name: state(3) ppid(4) ... utime(14) stime(15).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn ppid_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    rest.split(' ').nth(1)?.parse().ok()
}

/// The process and its direct children (nginx: master and workers).
pub fn family(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                if ppid_of(child) == Some(pid) {
                    out.push(child);
                }
            }
        }
    }
    out
}

/// CPU ticks used so far by a process and its direct children.
pub fn cpu_ticks(pid: u32) -> u64 {
    family(pid).into_iter().filter_map(ticks_of).sum()
}

/// A running contender.
pub struct Proc {
    /// Name for the report.
    pub name: String,
    child: Child,
}

impl Proc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the process (SIGTERM, then SIGKILL after `grace`).
    pub fn stop(mut self, grace: Duration) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early ({status})", self.name);
        }
        Ok(())
    }
}

/// Starts `samgate serve --config <config>` by re-running this executable
/// in its serve mode; logs go to `log`.
pub fn spawn_samgate(name: &str, config: &Path, log: &Path) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let log_file = std::fs::File::create(log)?;
    let child = Command::new(exe)
        .args(["__serve", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .context("starting samgate")?;
    Ok(Proc {
        name: name.to_owned(),
        child,
    })
}

/// The nginx executable, installed with apt-get when missing.
pub fn nginx_binary() -> anyhow::Result<PathBuf> {
    let find = || {
        ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    };
    if let Some(p) = find() {
        return Ok(p);
    }
    eprintln!("nginx is not installed: installing the Debian package with apt-get");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "nginx"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    let ok = install().map(|s| s.success()).unwrap_or(false);
    if !ok {
        let _ = Command::new("apt-get").arg("update").status();
        let _ = install();
    }
    find().context("nginx could not be installed (apt-get install nginx)")
}

/// nginx's version line.
pub fn nginx_version(bin: &Path) -> String {
    Command::new(bin)
        .arg("-v")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
        .unwrap_or_default()
}

/// Writes nginx.conf into `run` and starts nginx in the foreground: an
/// mTLS listener with the gateway's certificate, client certificates
/// verified against the same CA, proxying `/v1/exchanges` to the upstream
/// over HTTPS (keep-alive pool) with the gateway's client certificate and
/// the upstream's certificate verified.
pub fn spawn_nginx(
    bin: &Path,
    pki: &Path,
    run: &Path,
    listen: SocketAddr,
    upstream: SocketAddr,
) -> anyhow::Result<Proc> {
    std::fs::create_dir_all(run.join("tmp"))?;
    let p = |f: &str| pki.join(f).display().to_string();
    let r = |f: &str| run.join(f).display().to_string();
    let conf = format!(
        r#"# Written by samgate-bench: nginx as an mTLS reverse proxy.
daemon off;
master_process on;
user root;
worker_processes auto;
pid {pid};
error_log {err} warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log {access};
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    upstream recipient {{
        server {upstream};
        keepalive 128;
    }}
    server {{
        listen {listen} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_client_certificate {ca};
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        location = /v1/exchanges {{
            proxy_pass https://recipient/inbox;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_certificate {ccert};
            proxy_ssl_certificate_key {ckey};
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse on;
        }}
    }}
}}
"#,
        pid = r("nginx.pid"),
        err = r("error.log"),
        access = r("access.log"),
        tmp = r("tmp"),
        cert = p("gateway.pem"),
        key = p("gateway.key"),
        ca = p("ca.pem"),
        ccert = p("gateway-client.pem"),
        ckey = p("gateway-client.key"),
    );
    let conf_path = run.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let nginx = || {
        let mut c = Command::new(bin);
        c.arg("-p")
            .arg(run)
            .arg("-e")
            .arg(run.join("error.log"))
            .arg("-c")
            .arg(&conf_path);
        c
    };
    let test = nginx().arg("-t").output().context("nginx -t")?;
    if !test.status.success() {
        bail!(
            "nginx refused the configuration: {}",
            String::from_utf8_lossy(&test.stderr)
        );
    }
    let child = nginx()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx")?;
    Ok(Proc {
        name: "nginx".into(),
        child,
    })
}
