//! nginx as the reference web server: found or installed, run from a private configuration on a
//! loopback port, and stopped with all its workers however the bench ends.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustix::process::{Pid, Signal};

/// How long nginx may take to start answering, and to stop once asked.
const PATIENCE: Duration = Duration::from_secs(5);

/// Where Debian puts nginx; also looked for on `PATH`.
const SBIN: &str = "/usr/sbin/nginx";

/// The nginx binary: `given`, or one installed, or one installed now with apt-get when `install`
/// allows and this is root. `Err` says why there is none.
pub fn find(given: Option<PathBuf>, install: bool) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return if p.is_file() { Ok(p) } else { Err(format!("{} does not exist", p.display())) };
    }
    if let Some(p) = installed() {
        return Ok(p);
    }
    if !install {
        return Err("nginx is not installed (and --no-install)".into());
    }
    if !rustix::process::geteuid().is_root() {
        return Err("nginx is not installed, and installing it needs root".into());
    }
    apt_install().map_err(|e| format!("installing nginx failed: {e:#}"))?;
    installed().ok_or_else(|| "apt-get installed no nginx binary".into())
}

fn installed() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
    on_path.map(|d| d.join("nginx")).chain([PathBuf::from(SBIN)]).find(|p| p.is_file())
}

/// `apt-get install -y nginx-light`, else `nginx`, with an `apt-get update` first if the first
/// try fails. Debian starts an installed service unless `policy-rc.d` forbids it: a system nginx
/// on port 80 would outlive the bench, so a forbidding one is put in place for the install if
/// there is none, and removed after.
fn apt_install() -> Result<()> {
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let placed = !policy.exists();
    if placed {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(policy, "#!/bin/sh\n# ferry-bench: no service starts while it installs nginx\nexit 101\n")?;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))?;
    }
    let apt = |args: &[&str]| -> bool {
        println!("running apt-get {}", args.join(" "));
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let install = || apt(&["install", "-y", "nginx-light"]) || apt(&["install", "-y", "nginx"]);
    let ok = install() || (apt(&["update"]) && install());
    if placed {
        let _ = std::fs::remove_file(policy);
    }
    if !ok {
        bail!("apt-get could install neither nginx-light nor nginx");
    }
    Ok(())
}

/// `nginx -v`'s answer: `nginx version: nginx/1.22.1`.
pub fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
        .unwrap_or_else(|e| format!("(nginx -v failed: {e})"))
}

/// What the private configuration says, printed with the results.
pub fn settings(workers: usize) -> String {
    format!(
        "worker_processes {workers}; access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000; \
         everything else nginx's defaults"
    )
}

/// A loopback port free a moment ago. nginx cannot be told to pick one itself (`listen` has no
/// port 0 that it reports back), so one is bound, noted and released; another process could
/// take it in between, which the start then reports.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// An nginx master and its workers, stopped and reaped on drop.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    /// Configuration, pid file, error log.
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts `bin` with `workers` worker processes serving `root` on a free loopback port, and
    /// waits until it accepts connections.
    ///
    /// # Errors
    /// nginx did not start, or did not answer within [`PATIENCE`] (its error log is quoted).
    pub fn start(bin: &Path, root: &Path, workers: usize) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let d = dir.path().display();
        // Run as root, nginx starts its workers as `nobody`: they read the files, which are
        // world-readable, and nothing else of the bench's.
        let conf = format!(
            "worker_processes {workers};\n\
             daemon off;\n\
             master_process on;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
               access_log off;\n\
               sendfile on;\n\
               tcp_nopush on;\n\
               keepalive_requests 1000000;\n\
               default_type application/octet-stream;\n\
               client_body_temp_path {d}/body;\n\
               server {{\n\
                 listen 127.0.0.1:{port};\n\
                 root {root};\n\
                 location / {{ }}\n\
               }}\n\
             }}\n",
            root = root.display(),
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let mut cmd = Command::new(bin);
        cmd.arg("-p").arg(dir.path()).arg("-c").arg(&conf_path).arg("-e").arg(dir.path().join("error.log"));
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // Its own process group, so that the workers can be killed with the master whatever
        // state it is in; and SIGTERM (nginx's fast shutdown) if the bench dies without running
        // its destructors. The terminal's Ctrl-C does not reach the group: the bench handles it
        // and stops nginx itself.
        cmd.process_group(0);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(Signal::TERM)).map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
        let mut nginx = Self { child, addr, _dir: dir };
        let t = Instant::now();
        loop {
            if let Some(status) = nginx.child.try_wait()? {
                bail!("nginx exited ({status}) at start: {}", nginx.error_log());
            }
            if TcpStream::connect(addr).is_ok() {
                return Ok(nginx);
            }
            if t.elapsed() > PATIENCE {
                bail!("nginx did not answer on {addr} within {PATIENCE:?}: {}", nginx.error_log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The master's PID; its workers are its children.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("error.log")).unwrap_or_default().trim().to_owned()
    }
}

impl Drop for Nginx {
    /// SIGTERM (fast shutdown: the master stops its workers, then exits), then SIGKILL to the
    /// whole group if it takes longer than [`PATIENCE`]; the master is reaped either way.
    fn drop(&mut self) {
        let pid = Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, Signal::TERM);
        let t = Instant::now();
        while t.elapsed() < PATIENCE {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Nothing is left of the group after a clean stop; this is for a master that hung, or
        // workers that outlived it.
        let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        let _ = self.child.wait();
    }
}
