//! The relay's processes: started with their output in a log file,
//! watched, and stopped with SIGTERM (SIGKILL after a grace period).

use std::fs::{File, OpenOptions};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chatmail_configure::Vmail;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct Process {
    pub name: String,
    child: Child,
    /// How it was started, to start it again.
    spec: Spec,
}

#[derive(Clone)]
struct Spec {
    program: std::path::PathBuf,
    args: Vec<std::ffi::OsString>,
    user: Option<Vmail>,
    log_dir: std::path::PathBuf,
}

fn log_file(log_dir: &Path, name: &str) -> Result<File> {
    let path = log_dir.join(format!("{name}.log"));
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))
}

impl Process {
    /// Starts `program` with stdout and stderr appended to
    /// `<log_dir>/<name>.log`, as `user` when given.
    pub fn start(
        name: &str,
        program: &Path,
        args: &[&std::ffi::OsStr],
        user: Option<Vmail>,
        log_dir: &Path,
    ) -> Result<Self> {
        let spec = Spec {
            program: program.to_owned(),
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            user,
            log_dir: log_dir.to_owned(),
        };
        let child = spawn(name, &spec)?;
        Ok(Self {
            name: name.to_owned(),
            child,
            spec,
        })
    }

    /// Starts the process again, as it was started (after it exited).
    pub fn restart(&mut self) -> Result<()> {
        self.child = spawn(&self.name, &self.spec)?;
        Ok(())
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn stop(mut self) {
        let Ok(raw) = i32::try_from(self.child.id()) else {
            return;
        };
        if self.exited().is_some() {
            return;
        }
        let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop in time; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(name: &str, spec: &Spec) -> Result<Child> {
    let log = log_file(&spec.log_dir, name)?;
    // setpriv (util-linux) also drops root's supplementary groups,
    // which std's uid()/gid() would keep.
    let mut command = match spec.user {
        Some(user) => {
            let mut command = Command::new("setpriv");
            command
                .arg(format!("--reuid={}", user.uid))
                .arg(format!("--regid={}", user.gid))
                .arg("--clear-groups")
                .arg(&spec.program);
            command
        }
        None => Command::new(&spec.program),
    };
    command
        .args(&spec.args)
        // As the filters' systemd units set it: message buffers are mapped
        // and unmapped, not kept in the heap once freed.
        .env(
            "GLIBC_TUNABLES",
            "glibc.malloc.mmap_threshold=131072:glibc.malloc.trim_threshold=262144",
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    command
        .spawn()
        .with_context(|| format!("starting {}", spec.program.display()))
}

/// Waits until something listens on `address:port`.
pub fn wait_for_port(address: IpAddr, port: u16, what: &str, limit: Duration) -> Result<()> {
    let target = SocketAddr::new(address, port);
    let deadline = Instant::now() + limit;
    while TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            bail!("{what} does not listen on {target} after {limit:?}; see its log");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Waits until a unix socket at `path` accepts connections.
pub fn wait_for_socket(path: &Path, what: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while std::os::unix::net::UnixStream::connect(path).is_err() {
        if Instant::now() > deadline {
            bail!(
                "{what} does not accept connections on {} after {limit:?}; see its log",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Runs a command to completion; its output goes into the error.
pub fn run(command: &mut Command, what: &str) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The last lines of `<log_dir>/<name>.log`, for an error message.
pub fn log_tail(log_dir: &Path, name: &str) -> String {
    let path = log_dir.join(format!("{name}.log"));
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(15);
    format!(
        "last lines of {}:\n{}",
        path.display(),
        lines.get(start..).unwrap_or_default().join("\n")
    )
}
