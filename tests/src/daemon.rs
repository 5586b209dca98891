use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::process::{dump_log, terminate};
use crate::workdir::VmailUser;

/// One of our daemons, run from the workspace's build output as the vmail
/// user (as systemd runs it); stopped on drop, its stderr shown when the
/// test fails.
pub struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

/// The path of a binary built from this workspace, as a copy the vmail
/// user can run: the checkout may lie where vmail cannot enter (under
/// /root, mode 0700). `cargo test --workspace` builds every daemon;
/// tests/run builds them first too.
pub fn daemon_binary(name: &str) -> Result<PathBuf> {
    let built = workspace_binary(name)?;
    runnable_copy(&built).with_context(|| format!("copying {}", built.display()))
}

/// Where cargo built binary `name` (for what runs as root).
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // A test runs as target/<profile>/deps/<test>, a benchmark program
    // as target/<profile>/<bin>; daemons are target/<profile>/<name>.
    let exe_dir = exe.parent().context("unexpected binary location")?;
    let profile_dir = if exe_dir.ends_with("deps") {
        exe_dir
            .parent()
            .context("unexpected test binary location")?
    } else {
        exe_dir
    };
    let binary = profile_dir.join(name);
    if !binary.is_file() {
        bail!(
            "{} is missing: build the daemons first (cargo build --workspace --bins)",
            binary.display()
        );
    }
    Ok(binary)
}

/// A copy of `binary` in a directory every user can traverse, refreshed
/// when the build changed it. Copies are made under a temporary name and
/// renamed into place, so parallel test programs never see half a file.
fn runnable_copy(binary: &Path) -> Result<PathBuf> {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::PermissionsExt as _;
    let profile_dir = binary.parent().context("binary without a directory")?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    profile_dir.hash(&mut hasher);
    let dir = std::env::temp_dir()
        .join("chatmail-test-bin")
        .join(format!("{:016x}", hasher.finish()));
    fs::create_dir_all(&dir)?;
    for level in [dir.parent().unwrap_or(&dir), &dir] {
        fs::set_permissions(level, fs::Permissions::from_mode(0o755))?;
    }
    let name = binary.file_name().context("binary without a name")?;
    let copy = dir.join(name);
    let original = fs::metadata(binary)?;
    let fresh = fs::metadata(&copy).is_ok_and(|existing| {
        existing.len() == original.len() && existing.modified().ok() >= original.modified().ok()
    });
    if !fresh {
        static COPIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let temp = dir.join(format!(
            ".{}-{}-{n}",
            name.to_string_lossy(),
            std::process::id()
        ));
        fs::copy(binary, &temp)?;
        fs::set_permissions(&temp, fs::Permissions::from_mode(0o755))?;
        fs::rename(&temp, &copy)?;
    }
    Ok(copy)
}

/// The malloc settings of the filters' systemd units: large buffers are
/// mapped and unmapped, not kept in the heap once freed.
pub const MALLOC_TUNABLES: &str =
    "glibc.malloc.mmap_threshold=131072:glibc.malloc.trim_threshold=262144";

/// What shows that a daemon is ready.
pub enum Ready<'a> {
    /// Its unix socket exists.
    Socket(&'a Path),
    /// It accepts TCP connections on 127.0.0.1 at this port.
    Port(u16),
    /// It accepts TCP connections on 127.0.0.1 at all these ports.
    Ports(&'a [u16]),
}

impl Ready<'_> {
    fn reached(&self) -> bool {
        match self {
            Self::Socket(path) => path.exists(),
            Self::Port(port) => accepts(*port),
            Self::Ports(ports) => ports.iter().all(|port| accepts(*port)),
        }
    }
}

fn accepts(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

impl Daemon {
    /// Starts `name` with `args` as vmail and waits until it is `ready`.
    pub fn start(
        name: &str,
        args: &[&std::ffi::OsStr],
        ready: Ready<'_>,
        log_dir: &Path,
    ) -> Result<Self> {
        Self::start_with_env(name, args, &[], ready, log_dir)
    }

    /// As [`Daemon::start`], with extra environment variables.
    pub fn start_with_env(
        name: &str,
        args: &[&std::ffi::OsStr],
        env: &[(&str, &str)],
        ready: Ready<'_>,
        log_dir: &Path,
    ) -> Result<Self> {
        let vmail = VmailUser::lookup()?;
        let mut command = Command::new(daemon_binary(name)?);
        command
            .args(args)
            // As the filters' systemd units set it.
            .env("GLIBC_TUNABLES", MALLOC_TUNABLES)
            .uid(vmail.uid)
            .gid(vmail.gid)
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied());
        Self::spawn(name, command, ready, log_dir)
    }

    /// Starts a program of another package (OpenDKIM, say) as `command`
    /// says, as this user, and waits until it is `ready`.
    pub fn spawn(
        name: &str,
        mut command: Command,
        ready: Ready<'_>,
        log_dir: &Path,
    ) -> Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let mut daemon = Self {
            name: name.to_owned(),
            child,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.reached() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                let log = fs::read_to_string(&daemon.log).unwrap_or_default();
                bail!("{name} exited with {status}: {log}");
            }
            if Instant::now() > deadline {
                bail!("{name} did not become ready");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(daemon)
    }

    /// Stops the daemon now (as on drop).
    pub fn stop(self) {}

    /// Kills the daemon with SIGKILL, as a crash or the OOM killer would:
    /// no chance to clean up.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    #[must_use]
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            dump_log(&self.name, &self.log);
        }
        terminate(&mut self.child, Duration::from_secs(5));
    }
}
