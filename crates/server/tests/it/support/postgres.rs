//! A private PostgreSQL server for one test, which the test may stop and
//! start (the shared one of `scripts/test-services.sh` must never stop:
//! other tests use it). Made as that script makes its own: Debian's
//! binaries, `initdb` with trust authentication, run as the `postgres`
//! user when the test runs as root (PostgreSQL refuses to run as root).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A PostgreSQL cluster in a temporary folder, listening on a free loopback
/// port; stopped (`-m immediate`) and removed when dropped.
pub struct PrivatePostgres {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    root: tempfile::TempDir,
}

impl PrivatePostgres {
    /// Makes a cluster and starts it.
    pub fn start() -> Self {
        let bin = pg_bin();
        let root = tempfile::tempdir().expect("a temporary folder");
        let data = root.path().join("pg");
        fs_err::create_dir(&data).expect("the cluster folder is made");
        if is_root() {
            // The cluster and the socket folder must belong to postgres.
            run(Command::new("chown")
                .arg("postgres")
                .arg(root.path())
                .arg(&data));
        }
        let log = root.path().join("pg.log");
        run(as_pg(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "envstore", "-D"])
            .arg(&data));
        let server = Self {
            port: free_port(),
            bin,
            data,
            log,
            root,
        };
        server.start_again();
        server
    }

    /// A URL of the `postgres` database; its user may create databases.
    pub fn url(&self) -> String {
        format!("postgres://envstore@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl start` on the same port and folder; waits until it answers.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.root.path().display()
        );
        let started = Instant::now();
        loop {
            let output = as_pg(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(&self.log)
                .args(["-w", "-t", "60", "-o", &options, "start"])
                .output()
                .expect("pg_ctl runs");
            if output.status.success() {
                return;
            }
            // The port of a server stopped a moment ago may still be held.
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "PostgreSQL did not start: {}\n{}",
                describe(&output),
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `pg_ctl stop -m fast`: clients are disconnected, the server exits.
    pub fn stop_fast(&self) {
        self.stop("fast");
    }

    /// `pg_ctl stop -m immediate`: as if the server crashed.
    pub fn stop_immediate(&self) {
        self.stop("immediate");
    }

    fn stop(&self, mode: &str) {
        run(as_pg(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-m", mode, "stop"]));
    }

    /// Whether the server accepts connections now (`pg_isready`).
    pub fn is_ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .status()
            .is_ok_and(|status| status.success())
    }

    /// The server's own log, for failure messages.
    pub fn server_log(&self) -> String {
        fs_err::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            let _ = as_pg(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-w", "-m", "immediate", "stop"])
                .output();
        }
    }
}

/// The newest `/usr/lib/postgresql/*/bin`, or the folder of `initdb` on PATH.
fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = fs_err::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    found.sort_by_key(|bin| {
        bin.parent()
            .and_then(|version| version.file_name())
            .and_then(|name| name.to_str())
            .and_then(|name| name.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(bin) = found.pop() {
        return bin;
    }
    let output = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output();
    match output {
        Ok(output) if output.status.success() => {
            let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
            path.parent()
                .expect("initdb lives in a folder")
                .to_path_buf()
        }
        _ => panic!("PostgreSQL is not installed (apt-get install postgresql): no initdb found"),
    }
}

fn is_root() -> bool {
    // `id -u`: this crate has no libc to ask with.
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// `program`, run as `postgres` when the test runs as root.
fn as_pg(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{command:?} does not run: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        describe(&output)
    );
    output
}

fn describe(output: &Output) -> String {
    format!(
        "{}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    listener.local_addr().expect("a bound address").port()
}
