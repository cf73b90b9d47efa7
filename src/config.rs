//! The TOML config file (DESIGN.md "Config"): parsing, profiles, defaults.
//!
//! Every key is checked while parsing, so a wrong key, a mistyped value or a
//! relative path is reported with the key's name and its line. Values left
//! out come from the `environment` profile, then from built-in defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::strategy::Strategy;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/rvm-backup/rvm-backup.toml";
pub const CONFIG_ENV: &str = "RVM_BACKUP_CONFIG";
pub const DEFAULT_SOCKET: &str = "/run/rvm-backup/control.sock";

#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "config {}: {}",
            self.path.display(),
            self.message.trim_end()
        )
    }
}

impl std::error::Error for ConfigError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Development,
    Staging,
    Production,
}

impl Environment {
    fn retention_days(self) -> u32 {
        match self {
            Environment::Development => 2,
            Environment::Staging => 7,
            Environment::Production => 30,
        }
    }

    fn log_level(self) -> log::LevelFilter {
        match self {
            Environment::Development => log::LevelFilter::Debug,
            Environment::Staging => log::LevelFilter::Info,
            Environment::Production => log::LevelFilter::Warn,
        }
    }
}

/// A duration written like "90s", "10m", "6h", "7d" or "1h30m".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration {s:?}: write it like \"90s\", \"10m\", \"6h\", \"7d\" or \"1h30m\""
        )
    };
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        digits.clear();
    }
    if !digits.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// Write a number of seconds the way a config would ("90s", "10m", "366d").
pub fn format_secs(secs: u64) -> String {
    for (unit, n) in [('d', 86_400), ('h', 3600), ('m', 60)] {
        if secs >= n && secs.is_multiple_of(n) {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}

/// A duration that must lie within `MIN..=MAX` seconds. The range is
/// checked while the value is read, so the error names the key and line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundedDuration<const MIN: u64, const MAX: u64>(pub Duration);

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for BoundedDuration<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let v = parse_duration(&s).map_err(serde::de::Error::custom)?;
        if !(MIN..=MAX).contains(&v.as_secs()) {
            return Err(serde::de::Error::custom(format!(
                "duration {s:?} is out of range: it must be from {} to {}",
                format_secs(MIN),
                format_secs(MAX)
            )));
        }
        Ok(BoundedDuration(v))
    }
}

/// `backup_interval` and a strategy's `interval`: 1s to 366d. (1s, not 1m:
/// tests and demos run a scheduler every few seconds.)
pub type IntervalDuration = BoundedDuration<1, { 366 * 86_400 }>;
/// `backup_jitter`: 1s to 1d.
pub type JitterDuration = BoundedDuration<1, 86_400>;
/// `recovery_timeout`: 1s to 1d.
pub type TimeoutDuration = BoundedDuration<1, 86_400>;
/// `backup_monitoring_interval`: 1s to 7d (1s, not 1m: tests watch the
/// monitor react within seconds; a board should use minutes).
pub type MonitoringDuration = BoundedDuration<1, { 7 * 86_400 }>;

/// Write a byte count the way a config would ("64K", "1G", "4095M").
pub fn format_size(n: u64) -> String {
    for (unit, m) in [('G', 1u64 << 30), ('M', 1 << 20), ('K', 1 << 10)] {
        if n >= m && n.is_multiple_of(m) {
            return format!("{}{unit}", n / m);
        }
    }
    n.to_string()
}

/// A byte size that must lie within `MIN..=MAX`, checked while read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundedSize<const MIN: u64, const MAX: u64>(pub u64);

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for BoundedSize<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = ByteSize::deserialize(d)?.0;
        if !(MIN..=MAX).contains(&n) {
            return Err(serde::de::Error::custom(format!(
                "size {n} is out of range: it must be from {} to {}",
                format_size(MIN),
                format_size(MAX)
            )));
        }
        Ok(BoundedSize(n))
    }
}

/// A small count that must lie within `MIN..=MAX`, checked while read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundedCount<const MIN: u32, const MAX: u32>(pub u32);

impl<'de, const MIN: u32, const MAX: u32> Deserialize<'de> for BoundedCount<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        match u32::try_from(n) {
            Ok(v) if (MIN..=MAX).contains(&v) => Ok(BoundedCount(v)),
            _ => Err(serde::de::Error::custom(format!(
                "{n} is out of range: it must be from {MIN} to {MAX}"
            ))),
        }
    }
}

/// A byte size written like 4096, "64K", "100M" or "4G".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        let n = match Raw::deserialize(d)? {
            Raw::N(n) => n,
            Raw::S(s) => parse_size(&s).map_err(serde::de::Error::custom)?,
        };
        Ok(ByteSize(n))
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'M')) => (&t[..i], 1 << 20),
        Some((i, 'G')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("invalid size {s:?}: write it like \"64K\", \"100M\" or \"4G\""))
}

/// An absolute path (relative ones are refused: the daemon's working
/// directory is not something an operator should have to think about).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbsPath(pub PathBuf);

impl<'de> Deserialize<'de> for AbsPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if !text.starts_with('/') {
            return Err(serde::de::Error::custom(format!(
                "path {text:?} must be absolute"
            )));
        }
        // Archives hold normal paths only (no `//`, `.`, `..` or trailing
        // `/`); a config path must be one too, or its backups could never
        // be restored.
        if crate::format::record::check_path(text.as_bytes()).is_err() {
            return Err(serde::de::Error::custom(format!(
                "path {text:?} must be normal: no trailing '/', '//', '.' or '..'"
            )));
        }
        Ok(AbsPath(PathBuf::from(text)))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    environment: Option<Environment>,
    backup_dir: Option<AbsPath>,
    key_file: Option<AbsPath>,
    recovery_public_key: Option<crate::recovery::RecoveryPublicKey>,
    recovery_key_file: Option<AbsPath>,
    socket: Option<AbsPath>,
    audit_log: Option<AbsPath>,
    log_level: Option<LogLevel>,
    backup_enabled: Option<bool>,
    backup_interval: Option<IntervalDuration>,
    retention_days: Option<u32>,
    keep_last: Option<u32>,
    keep_hourly: Option<u32>,
    keep_daily: Option<u32>,
    keep_weekly: Option<u32>,
    keep_monthly: Option<u32>,
    backup_jitter: Option<JitterDuration>,
    full_every: Option<IntervalDuration>,
    full_every_count: Option<BoundedCount<0, { crate::chain::MAX_CHAIN as u32 - 1 }>>,
    compression_enabled: Option<bool>,
    compression_level: Option<u8>,
    encryption_enabled: Option<bool>,
    max_part_size: Option<BoundedSize<MIN_PART_SIZE, DEFAULT_PART_SIZE>>,
    audit_max_bytes: Option<BoundedSize<MIN_AUDIT_MAX_BYTES, MAX_AUDIT_MAX_BYTES>>,
    audit_keep: Option<BoundedCount<0, MAX_AUDIT_KEEP>>,
    recovery_enabled: Option<bool>,
    recovery_timeout: Option<TimeoutDuration>,
    /// `[recovery] stop`, `start`: commands around an in-place restore.
    recovery: Option<crate::hooks::RecoveryHooks>,
    backup_monitoring_enabled: Option<bool>,
    backup_monitoring_interval: Option<MonitoringDuration>,
    /// `[monitoring]`: the rules' thresholds.
    monitoring: Option<crate::monitor::thresholds::MonitoringSection>,
    drill_interval: Option<IntervalDuration>,
    export_dir: Option<AbsPath>,
    textfile_dir: Option<AbsPath>,
    export_interval: Option<IntervalDuration>,
    export_keep: Option<BoundedCount<1, MAX_EXPORT_KEEP>>,
    machine_id_file: Option<AbsPath>,
    /// `[[alert]]` tables: where alerts are delivered.
    alert: Option<Vec<crate::alerting::sink::CheckedSink>>,
    heartbeat_url: Option<crate::net::url::HttpUrl>,
    outbox_max: Option<
        BoundedCount<{ crate::alerting::outbox::MIN_MAX }, { crate::alerting::outbox::MAX_MAX }>,
    >,
    database: Option<DatabaseSection>,
    config: Option<TreeSection>,
    logs: Option<TreeSection>,
    application: Option<TreeSection>,
    access: Option<AccessSection>,
    /// `[offsite]`: the S3-compatible store.
    offsite: Option<crate::offsite::config::OffsiteSection>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    pub path: AbsPath,
    pub interval: Option<IntervalDuration>,
    pub at: Option<DailyAt>,
    /// Point-in-time recovery (WAL shipping) while the daemon runs
    /// (default on).
    pub pitr: Option<bool>,
    /// How often the daemon ships new WAL frames (default 1s).
    pub pitr_sync_interval: Option<SyncInterval>,
    /// How often a new generation starts from a fresh snapshot (default 24h).
    pub pitr_snapshot_interval: Option<IntervalDuration>,
    /// How long restore points are kept (default 7d).
    pub pitr_retention: Option<IntervalDuration>,
}

/// `pitr_snapshot_interval` when absent.
pub const DEFAULT_PITR_SNAPSHOT_S: u64 = 86_400;
/// `pitr_retention` when absent.
pub const DEFAULT_PITR_RETENTION_S: u64 = 7 * 86_400;

impl DatabaseSection {
    pub fn pitr_enabled(&self) -> bool {
        self.pitr.unwrap_or(true)
    }
    pub fn pitr_sync(&self) -> Duration {
        self.pitr_sync_interval
            .map_or(Duration::from_secs(1), |d| d.0)
    }
    pub fn pitr_snapshot(&self) -> Duration {
        self.pitr_snapshot_interval
            .map_or(Duration::from_secs(DEFAULT_PITR_SNAPSHOT_S), |d| d.0)
    }
    pub fn pitr_retention(&self) -> Duration {
        self.pitr_retention
            .map_or(Duration::from_secs(DEFAULT_PITR_RETENTION_S), |d| d.0)
    }
}

/// `pitr_sync_interval`: `"250ms"` or a duration as elsewhere (`"2s"`),
/// from 100ms to 1h.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncInterval(pub Duration);

impl<'de> Deserialize<'de> for SyncInterval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let v = match s.strip_suffix("ms") {
            Some(ms) if !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()) => {
                Duration::from_millis(
                    ms.parse()
                        .map_err(|_| serde::de::Error::custom(format!("invalid duration {s:?}")))?,
                )
            }
            _ => parse_duration(&s).map_err(serde::de::Error::custom)?,
        };
        if v < Duration::from_millis(100) || v > Duration::from_secs(3600) {
            return Err(serde::de::Error::custom(format!(
                "duration {s:?} is out of range: it must be from 100ms to 1h"
            )));
        }
        Ok(SyncInterval(v))
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeSection {
    pub paths: Vec<AbsPath>,
    #[serde(default)]
    pub exclude: Vec<String>,
    pub interval: Option<IntervalDuration>,
    pub at: Option<DailyAt>,
}

/// A daily time of day, UTC, written `"HH:MM"`; checked when the config is
/// loaded, so every command refuses a config the daemon would refuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DailyAt {
    pub hour: u32,
    pub minute: u32,
}

impl DailyAt {
    pub fn parse(s: &str) -> Option<DailyAt> {
        let (h, m) = s.split_once(':')?;
        let all_digits = |t: &str| t.len() == 2 && t.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(h) || !all_digits(m) {
            return None;
        }
        let (hour, minute) = (h.parse().ok()?, m.parse().ok()?);
        (hour < 24 && minute < 60).then_some(DailyAt { hour, minute })
    }
}

impl<'de> Deserialize<'de> for DailyAt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DailyAt::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid daily time {s:?}: write it as \"HH:MM\" (UTC), e.g. \"03:30\""
            ))
        })
    }
}

/// Who may do what on the control socket (used by the daemon).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSection {
    #[serde(default)]
    pub reader: Members,
    #[serde(default)]
    pub operator: Members,
    #[serde(default)]
    pub admin: Members,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Members {
    #[serde(default)]
    pub uids: Vec<u32>,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// What one strategy backs up.
#[derive(Clone, Debug)]
pub enum SourceSpec {
    Database {
        path: PathBuf,
    },
    Tree {
        paths: Vec<PathBuf>,
        exclude: Vec<String>,
    },
}

/// The effective configuration: every value filled in.
#[derive(Clone, Debug)]
pub struct Config {
    pub file: PathBuf,
    pub environment: Environment,
    pub backup_dir: PathBuf,
    pub key_file: PathBuf,
    /// The fleet's recovery public key (`rvmrec1:…`): `export` seals the
    /// key ring to it.
    pub recovery_public_key: Option<crate::recovery::RecoveryPublicKey>,
    /// Where `disaster-restore` finds the recovery private key.
    pub recovery_key_file: Option<PathBuf>,
    pub socket: PathBuf,
    pub audit_log: PathBuf,
    pub log_level: log::LevelFilter,
    pub backup_enabled: bool,
    pub backup_interval: Duration,
    pub retention_days: u32,
    pub retention: crate::retention::Policy,
    /// Largest random delay added to scheduled runs.
    pub backup_jitter: Duration,
    /// Incremental chains of the tree strategies: a full archive when the
    /// chain's full archive is this old (`full_every`, default 7 days)...
    pub full_every: Duration,
    /// ... or when the chain already has this many incrementals
    /// (`full_every_count`, default 30, 0 to 63; 0 = every backup full).
    pub full_every_count: u32,
    pub compression_enabled: bool,
    pub compression_level: u8,
    pub encryption_enabled: bool,
    pub max_part_size: u64,
    /// Rotate the audit log when it grows beyond this many bytes.
    pub audit_max_bytes: u64,
    /// How many rotated audit logs (`audit.log.1` …) to keep.
    pub audit_keep: u32,
    pub recovery_enabled: bool,
    pub recovery_timeout: Duration,
    /// Commands that stop and start the platform around an in-place restore.
    pub recovery: crate::hooks::RecoveryHooks,
    pub monitoring_enabled: bool,
    pub monitoring_interval: Duration,
    /// `[monitoring]`: the thresholds of the monitor's rules.
    pub monitoring: crate::monitor::thresholds::Thresholds,
    /// How often the daemon runs a recovery drill of every configured
    /// strategy (`drill_interval`, default 7 days, `"1s"` to `"366d"`).
    pub drill_interval: Duration,
    /// Where the recovery stick is mounted (`export_dir`, default
    /// `/media/rvm-recovery`): the daemon exports there on
    /// `export_interval` while a stick is mounted.
    pub export_dir: PathBuf,
    /// node_exporter's textfile collector directory (`textfile_dir`): the
    /// daemon keeps `rvm_backup.prom` there. `None`: no textfile.
    pub textfile_dir: Option<PathBuf>,
    /// How often the daemon exports a recovery set (default 1 day).
    pub export_interval: Duration,
    /// How many recovery sets of this board a stick keeps (1 to 100,
    /// default 3).
    pub export_keep: u32,
    /// The file naming this machine (`/etc/machine-id`); a recovery set
    /// records it, and `disaster-restore` prefers the sets of this board.
    pub machine_id_file: PathBuf,
    /// The alert sinks (`[[alert]]` tables), named and checked.
    pub alerts: Vec<crate::alerting::sink::Sink>,
    /// Pinged around each backup job (healthchecks style), if set.
    pub heartbeat_url: Option<crate::net::url::HttpUrl>,
    /// Most entries the alert outbox holds (default 1000, 16 to 100000).
    pub outbox_max: u32,
    pub database: Option<DatabaseSection>,
    pub config: Option<TreeSection>,
    pub logs: Option<TreeSection>,
    pub application: Option<TreeSection>,
    pub access: AccessSection,
    /// `[offsite]`: the S3-compatible store, if configured.
    pub offsite: Option<crate::offsite::config::OffsiteSection>,
}

/// `full_every_count` when absent: at most 30 incrementals after a full
/// archive (a week of 6-hourly backups fits).
pub const DEFAULT_FULL_EVERY_COUNT: u32 = 30;

/// `export_interval` when absent: a recovery set a day.
pub const DEFAULT_EXPORT_INTERVAL_S: u64 = 86_400;
/// `export_keep`: default and upper bound.
pub const DEFAULT_EXPORT_KEEP: u32 = 3;
pub const MAX_EXPORT_KEEP: u32 = 100;

/// `drill_interval` when absent: a recovery drill a week.
pub const DEFAULT_DRILL_INTERVAL_S: u64 = 7 * 86_400;

/// Smallest part an archive may be split into (tests use small parts).
pub const MIN_PART_SIZE: u64 = 64 << 10;
/// Just under FAT32's 4 GiB file size limit.
pub const DEFAULT_PART_SIZE: u64 = (4 << 30) - (1 << 20);
/// `audit_max_bytes`: default and range.
pub const DEFAULT_AUDIT_MAX_BYTES: u64 = 4 << 20;
pub const MIN_AUDIT_MAX_BYTES: u64 = 64 << 10;
pub const MAX_AUDIT_MAX_BYTES: u64 = 1 << 30;
/// `audit_keep`: default and largest value.
pub const DEFAULT_AUDIT_KEEP: u32 = 3;
pub const MAX_AUDIT_KEEP: u32 = crate::audit::MAX_ROTATED;
/// The largest config file read.
pub const MAX_CONFIG_LEN: usize = 1 << 20;

impl Config {
    /// Which file to read: `--config`, else `$RVM_BACKUP_CONFIG`, else the default.
    pub fn locate(flag: Option<&Path>) -> PathBuf {
        flag.map(Path::to_path_buf)
            .or_else(|| {
                std::env::var_os(CONFIG_ENV)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
    }

    /// Read (a regular file of at most 1 MiB; a FIFO or device is refused
    /// at once), parse, then check on the file system that `backup_dir`
    /// does not overlap a source (see [`Config::check_real_paths`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            path: path.to_path_buf(),
            message,
        };
        let (_, bytes) = crate::fsutil::read_regular(path, MAX_CONFIG_LEN, crate::fsutil::Follow::Yes)
            .map_err(|e| {
                err(match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        "not found: write one (see README.md), or name it with --config or RVM_BACKUP_CONFIG".into()
                    }
                    _ => format!("cannot read: {e}"),
                })
            })?;
        let text = String::from_utf8(bytes)
            .map_err(|_| err("is not UTF-8 text; a config file is TOML".into()))?;
        let cfg = Config::parse(&text, path)?;
        cfg.check_real_paths()?;
        Ok(cfg)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            path: path.to_path_buf(),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        let env = raw.environment.unwrap_or(Environment::Production);
        let level = raw.compression_level.unwrap_or(1);
        if !(1..=10).contains(&level) {
            return Err(err(format!(
                "compression_level = {level}: it must be from 1 (fastest) to 10 (smallest)"
            )));
        }
        let max_part_size = raw.max_part_size.map_or(DEFAULT_PART_SIZE, |b| b.0);
        if let Some(t) = [&raw.config, &raw.logs, &raw.application]
            .into_iter()
            .flatten()
            .find(|t| t.paths.is_empty())
        {
            return Err(err(format!(
                "a [config]/[logs]/[application] section has no paths (exclude = {:?})",
                t.exclude
            )));
        }
        for t in [&raw.config, &raw.logs, &raw.application]
            .into_iter()
            .flatten()
        {
            for (i, a) in t.paths.iter().enumerate() {
                if let Some((_, b)) = t
                    .paths
                    .iter()
                    .enumerate()
                    .find(|(j, b)| *j != i && a.0.starts_with(&b.0))
                {
                    return Err(err(format!(
                        "paths {:?} and {:?} overlap: list only the outer one (and exclude what it should skip)",
                        b.0.display().to_string(),
                        a.0.display().to_string()
                    )));
                }
            }
        }
        let monitoring = raw.monitoring.unwrap_or_default().resolve();
        monitoring.check().map_err(err)?;
        let backup_dir = raw
            .backup_dir
            .map_or_else(|| PathBuf::from("/var/lib/rvm-backup"), |p| p.0);
        let sources = source_roots(&raw.database, &raw.config, &raw.logs, &raw.application);
        for (label, p) in &sources {
            if let Some(m) = overlap_message((&backup_dir, p), label, None) {
                return Err(err(m));
            }
        }
        if let Some(t) = &raw.textfile_dir {
            check_textfile_dir(&t.0, &backup_dir, &sources).map_err(err)?;
        }
        let alerts = crate::alerting::sink::build(raw.alert.unwrap_or_default()).map_err(err)?;
        Ok(Config {
            file: path.to_path_buf(),
            alerts,
            heartbeat_url: raw.heartbeat_url,
            outbox_max: raw
                .outbox_max
                .map_or(crate::alerting::outbox::DEFAULT_MAX, |n| n.0),
            environment: env,
            audit_log: raw
                .audit_log
                .map_or_else(|| backup_dir.join("audit.log"), |p| p.0),
            backup_dir,
            key_file: raw
                .key_file
                .map_or_else(|| PathBuf::from("/etc/rvm-backup/master.key"), |p| p.0),
            recovery_public_key: raw.recovery_public_key,
            recovery_key_file: raw.recovery_key_file.map(|p| p.0),
            socket: raw
                .socket
                .map_or_else(|| PathBuf::from("/run/rvm-backup/control.sock"), |p| p.0),
            log_level: raw
                .log_level
                .map_or_else(|| env.log_level(), LogLevel::filter),
            backup_enabled: raw.backup_enabled.unwrap_or(true),
            backup_interval: raw
                .backup_interval
                .map_or(Duration::from_secs(6 * 3600), |d| d.0),
            retention_days: raw.retention_days.unwrap_or_else(|| env.retention_days()),
            retention: crate::retention::Policy {
                keep_last: raw.keep_last.unwrap_or(0),
                keep_hourly: raw.keep_hourly.unwrap_or(0),
                keep_daily: raw.keep_daily.unwrap_or(0),
                keep_weekly: raw.keep_weekly.unwrap_or(0),
                keep_monthly: raw.keep_monthly.unwrap_or(0),
                within_days: raw.retention_days.unwrap_or_else(|| env.retention_days()),
            },
            backup_jitter: raw.backup_jitter.map_or(Duration::from_secs(300), |d| d.0),
            full_every: raw
                .full_every
                .map_or(Duration::from_secs(7 * 86_400), |d| d.0),
            full_every_count: raw
                .full_every_count
                .map_or(DEFAULT_FULL_EVERY_COUNT, |k| k.0),
            compression_enabled: raw.compression_enabled.unwrap_or(true),
            compression_level: level,
            encryption_enabled: raw.encryption_enabled.unwrap_or(true),
            max_part_size,
            audit_max_bytes: raw.audit_max_bytes.map_or(DEFAULT_AUDIT_MAX_BYTES, |b| b.0),
            audit_keep: raw.audit_keep.map_or(DEFAULT_AUDIT_KEEP, |k| k.0),
            recovery_enabled: raw.recovery_enabled.unwrap_or(true),
            recovery_timeout: raw
                .recovery_timeout
                .map_or(Duration::from_secs(300), |d| d.0),
            recovery: raw.recovery.unwrap_or_default(),
            monitoring_enabled: raw.backup_monitoring_enabled.unwrap_or(true),
            monitoring_interval: raw
                .backup_monitoring_interval
                .map_or(Duration::from_secs(600), |d| d.0),
            monitoring,
            drill_interval: raw
                .drill_interval
                .map_or(Duration::from_secs(DEFAULT_DRILL_INTERVAL_S), |d| d.0),
            textfile_dir: raw.textfile_dir.map(|p| p.0),
            export_dir: raw
                .export_dir
                .map_or_else(|| PathBuf::from("/media/rvm-recovery"), |p| p.0),
            export_interval: raw
                .export_interval
                .map_or(Duration::from_secs(DEFAULT_EXPORT_INTERVAL_S), |d| d.0),
            export_keep: raw.export_keep.map_or(DEFAULT_EXPORT_KEEP, |k| k.0),
            machine_id_file: raw
                .machine_id_file
                .map_or_else(|| PathBuf::from("/etc/machine-id"), |p| p.0),
            database: raw.database,
            config: raw.config,
            logs: raw.logs,
            application: raw.application,
            access: raw.access.unwrap_or_default(),
            offsite: raw.offsite,
        })
    }

    /// Every configured source root with the key it comes from, e.g.
    /// `("[application] path", "/opt/myrvm")`.
    pub fn source_roots(&self) -> Vec<(&'static str, PathBuf)> {
        source_roots(&self.database, &self.config, &self.logs, &self.application)
    }

    /// `backup_dir` must not overlap a source once symlinks and bind mounts
    /// are seen through: compares the real paths (the longest existing
    /// prefix of each, canonicalized) and the device and inode of
    /// `backup_dir`, each source root and their existing ancestors. Called
    /// by [`Config::load`]; `parse` does the same on the written paths.
    pub fn check_real_paths(&self) -> Result<(), ConfigError> {
        let err = |message: String| ConfigError {
            path: self.file.clone(),
            message,
        };
        let backup_real = real_path(&self.backup_dir);
        let backup_ids = ancestor_ids(&backup_real);
        for (label, src) in self.source_roots() {
            let src_real = real_path(&src);
            let written = (self.backup_dir.as_path(), src.as_path());
            let resolved = (backup_real.as_path(), src_real.as_path());
            if let Some(m) = overlap_message(resolved, label, Some(written)) {
                return Err(err(m));
            }
            let src_ids = ancestor_ids(&src_real);
            let inside = |ids: &[(u64, u64)], of: &[(u64, u64)]| {
                of.first().is_some_and(|root| ids.contains(root))
            };
            // The first element is the path itself when it exists.
            let own = |p: &Path, ids: &Vec<(u64, u64)>| -> Vec<(u64, u64)> {
                if p.exists() {
                    ids.iter().take(1).copied().collect()
                } else {
                    Vec::new()
                }
            };
            let backup_own = own(&backup_real, &backup_ids);
            let src_own = own(&src_real, &src_ids);
            let tail = "(the same directory is reachable under both names, through a bind mount or a symlink); move the backup directory out of the sources";
            if inside(&backup_ids, &src_own) {
                return Err(err(format!(
                    "backup_dir {:?} lies inside {label} {:?} {tail}",
                    self.backup_dir.display().to_string(),
                    src.display().to_string()
                )));
            }
            if inside(&src_ids, &backup_own) {
                return Err(err(format!(
                    "{label} {:?} lies inside backup_dir {:?} {tail}",
                    src.display().to_string(),
                    self.backup_dir.display().to_string()
                )));
            }
        }
        Ok(())
    }

    /// The sources of a strategy, or `None` when its section is absent.
    pub fn source(&self, strategy: Strategy) -> Option<SourceSpec> {
        let tree = |t: &TreeSection| SourceSpec::Tree {
            paths: t.paths.iter().map(|p| p.0.clone()).collect(),
            exclude: t.exclude.clone(),
        };
        match strategy {
            Strategy::Database => self.database.as_ref().map(|d| SourceSpec::Database {
                path: d.path.0.clone(),
            }),
            Strategy::Config => self.config.as_ref().map(tree),
            Strategy::Logs => self.logs.as_ref().map(tree),
            Strategy::Application => self.application.as_ref().map(tree),
        }
    }

    /// When a strategy runs: its own interval (else `backup_interval`) and
    /// its daily time, if it has one. `None` when it is not configured.
    pub fn schedule(&self, strategy: Strategy) -> Option<(Duration, Option<DailyAt>)> {
        let (interval, at) = match strategy {
            Strategy::Database => self.database.as_ref().map(|d| (d.interval, d.at))?,
            Strategy::Config => self.config.as_ref().map(|t| (t.interval, t.at))?,
            Strategy::Logs => self.logs.as_ref().map(|t| (t.interval, t.at))?,
            Strategy::Application => self.application.as_ref().map(|t| (t.interval, t.at))?,
        };
        Some((interval.map_or(self.backup_interval, |d| d.0), at))
    }

    /// Strategies that have a section in the config, in canonical order.
    pub fn configured(&self) -> Vec<Strategy> {
        Strategy::ALL
            .into_iter()
            .filter(|s| self.source(*s).is_some())
            .collect()
    }
}

fn source_roots(
    database: &Option<DatabaseSection>,
    config: &Option<TreeSection>,
    logs: &Option<TreeSection>,
    application: &Option<TreeSection>,
) -> Vec<(&'static str, PathBuf)> {
    let mut v: Vec<(&'static str, PathBuf)> = Vec::new();
    if let Some(d) = database {
        v.push(("[database] path", d.path.0.clone()));
    }
    for (label, t) in [
        ("[config] path", config),
        ("[logs] path", logs),
        ("[application] path", application),
    ] {
        for p in t.iter().flat_map(|t| &t.paths) {
            v.push((label, p.0.clone()));
        }
    }
    v
}

/// Why `backup_dir` and a source (from key `label`) overlap, if they do:
/// equal, or one inside the other. `paths` are the paths compared; when
/// `written` is given (the paths as configured, `paths` then being their
/// resolved forms) the message names both.
/// `textfile_dir` is written by the daemon (a file and its temporary
/// name): never the backup directory or inside it (the store is ours
/// alone), never inside a source (the platform's files), and not above
/// the backup directory either (node_exporter reads it; the store has no
/// business there).
fn check_textfile_dir(
    dir: &Path,
    backup_dir: &Path,
    sources: &[(&'static str, PathBuf)],
) -> Result<(), String> {
    let t = format!("textfile_dir {:?}", dir.display().to_string());
    let b = format!("backup_dir {:?}", backup_dir.display().to_string());
    if dir.starts_with(backup_dir) || backup_dir.starts_with(dir) {
        return Err(format!(
            "{t} overlaps {b}: give node_exporter's textfile collector directory (e.g. /var/lib/node_exporter/textfile_collector)"
        ));
    }
    if let Some((label, p)) = sources.iter().find(|(_, p)| dir.starts_with(p)) {
        return Err(format!(
            "{t} lies inside {label} {:?}: rvm-backup does not write into the sources; give node_exporter's textfile collector directory",
            p.display().to_string()
        ));
    }
    Ok(())
}

fn overlap_message(
    paths: (&Path, &Path),
    label: &str,
    written: Option<(&Path, &Path)>,
) -> Option<String> {
    let (backup_dir, src) = paths;
    let (wb, ws) = written.unwrap_or(paths);
    let b = format!("backup_dir {:?}", wb.display().to_string());
    let s = format!("{label} {:?}", ws.display().to_string());
    let how = match written {
        Some(_) => format!(
            " (through symlinks: backup_dir is really {:?}, the source {:?})",
            backup_dir.display().to_string(),
            src.display().to_string()
        ),
        None => String::new(),
    };
    let fix = "move the backup directory out of the sources";
    if backup_dir == src {
        Some(format!(
            "{b} is the same as {s}{how}: nothing could be backed up into itself; {fix}"
        ))
    } else if backup_dir.starts_with(src) {
        Some(format!(
            "{b} lies inside {s}{how}: every archive would contain the earlier ones; {fix}"
        ))
    } else if src.starts_with(backup_dir) {
        Some(format!(
            "{s} lies inside {b}{how}: the backup directory's cleanup and retention must never touch source files; {fix}"
        ))
    } else {
        None
    }
}

/// `p` with its longest existing prefix canonicalized (symlinks resolved)
/// and the rest appended as written.
pub fn real_path(p: &Path) -> PathBuf {
    let mut existing = p;
    let mut rest: Vec<&std::ffi::OsStr> = Vec::new();
    loop {
        if let Ok(mut c) = std::fs::canonicalize(existing) {
            for part in rest.iter().rev() {
                c.push(part);
            }
            return c;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// (device, inode) of `p` (first, if it exists) and of each existing
/// ancestor, nearest first.
fn ancestor_ids(p: &Path) -> Vec<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    p.ancestors()
        .filter_map(|a| std::fs::metadata(a).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect()
}

impl LogLevel {
    fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
backup_dir = "/var/lib/rvm-backup"
key_file   = "/etc/rvm-backup/master.key"

[database]
path = "/var/lib/myrvm/rvm.sqlite"

[config]
paths = ["/etc/myrvm"]

[logs]
paths = ["/var/log/myrvm"]

[application]
paths = ["/opt/myrvm"]
exclude = ["*.pyc", "__pycache__"]
"#;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(t, Path::new("test.toml"))
    }

    #[test]
    fn minimal_design_file_works() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.configured().len(), 4);
        assert_eq!(c.socket, PathBuf::from("/run/rvm-backup/control.sock"));
        assert_eq!(c.environment, Environment::Production);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = parse("backup_dir = \"/x\"\nretention_dayz = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("retention_dayz") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn mistyped_value_names_line() {
        let e = parse("\n\nbackup_interval = \"ten minutes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("duration"), "{e}");
        let e = parse("[config]\npaths = [\"relative/dir\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("absolute") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn paths_must_be_normal_and_disjoint() {
        for bad in ["/etc/myrvm/", "/etc//myrvm", "/etc/./myrvm", "/etc/../etc"] {
            let e = parse(&format!("[config]\npaths = [\"{bad}\"]\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("normal") && e.contains("line 2"), "{bad}: {e}");
        }
        let e = parse("[application]\npaths = [\"/opt/a\", \"/opt/a/b\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("overlap"), "{e}");
        let e = parse("[application]\npaths = [\"/opt/a\", \"/opt/a\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("overlap"), "{e}");
        assert!(parse("[application]\npaths = [\"/opt/a\", \"/opt/ab\"]\n").is_ok());
    }

    #[test]
    fn profiles_pick_defaults() {
        let c = parse("environment = \"development\"").unwrap();
        assert_eq!(c.retention_days, 2);
        assert_eq!(c.log_level, log::LevelFilter::Debug);
        let c = parse("environment = \"staging\"\nretention_days = 9").unwrap();
        assert_eq!(c.retention_days, 9);
    }

    #[test]
    fn board_profiles_parse() {
        for (name, text) in [
            (
                "development",
                include_str!("../board/profiles/development.toml"),
            ),
            ("staging", include_str!("../board/profiles/staging.toml")),
            (
                "production",
                include_str!("../board/profiles/production.toml"),
            ),
        ] {
            let c = parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(format!("{:?}", c.environment).to_lowercase(), name);
            assert_eq!(c.configured().len(), 4, "{name}");
        }
    }

    #[test]
    fn daily_time_is_checked_at_load() {
        let c = parse("[config]\npaths = [\"/etc/x\"]\nat = \"03:30\"\n").unwrap();
        assert_eq!(
            c.schedule(Strategy::Config).unwrap().1,
            Some(DailyAt {
                hour: 3,
                minute: 30
            })
        );
        for bad in ["24:00", "3:30", "03:60", "0330", "+3:30", "03:3x", ""] {
            let e = parse(&format!("[config]\npaths = [\"/etc/x\"]\nat = \"{bad}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("HH:MM") && e.contains("line 3"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert_eq!(parse_size("64K").unwrap(), 65536);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn drill_interval_defaults_to_a_week_and_is_bounded() {
        assert_eq!(
            parse("").unwrap().drill_interval,
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(
            parse("drill_interval = \"1d\"\n").unwrap().drill_interval,
            Duration::from_secs(86_400)
        );
        let e = parse("\n\ndrill_interval = \"400d\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("drill_interval") && e.contains("line 3") && e.contains("366d"),
            "{e}"
        );
    }

    #[test]
    fn durations_and_sizes_are_bounded_per_key() {
        for (key, val, range) in [
            (
                "backup_interval",
                "\"18446744073709552s\"",
                "from 1s to 366d",
            ),
            ("backup_interval", "\"367d\"", "from 1s to 366d"),
            ("backup_jitter", "\"2d\"", "from 1s to 1d"),
            ("recovery_timeout", "\"25h\"", "from 1s to 1d"),
            ("backup_monitoring_interval", "\"8d\"", "from 1s to 7d"),
            ("backup_monitoring_interval", "\"0s\"", "invalid duration"),
            ("max_part_size", "\"5G\"", "from 64K to 4095M"),
            ("max_part_size", "1000", "from 64K to 4095M"),
            ("audit_max_bytes", "\"2G\"", "from 64K to 1G"),
            ("audit_max_bytes", "\"1K\"", "from 64K to 1G"),
            ("audit_keep", "21", "from 0 to 20"),
            ("audit_keep", "-1", "from 0 to 20"),
            ("outbox_max", "15", "from 16 to 100000"),
            ("heartbeat_url", "\"https://hc-ping.com/x\"", "curl"),
        ] {
            let e = parse(&format!("\n\n{key} = {val}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(range) && e.contains("line 3") && e.contains(key),
                "{key} = {val}: {e}"
            );
        }
        let e = parse("[config]\npaths = [\"/etc/x\"]\ninterval = \"400d\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("366d"), "{e}");
        let c = parse(
            "backup_interval = \"366d\"\nbackup_jitter = \"1d\"\naudit_max_bytes = \"64K\"\naudit_keep = 0\n",
        )
        .unwrap();
        assert_eq!(c.backup_interval, Duration::from_secs(366 * 86_400));
        assert_eq!((c.audit_max_bytes, c.audit_keep), (65536, 0));
        let c = parse("").unwrap();
        assert_eq!(
            (c.audit_max_bytes, c.audit_keep),
            (DEFAULT_AUDIT_MAX_BYTES, DEFAULT_AUDIT_KEEP)
        );
    }

    #[test]
    fn monitoring_table_is_checked_per_key() {
        let c = parse("").unwrap();
        assert_eq!(
            c.monitoring,
            crate::monitor::thresholds::Thresholds::default()
        );
        assert_eq!(
            (c.monitoring.age_warning, c.monitoring.age_critical),
            (2, 4)
        );
        let c = parse("[monitoring]\nage_warning = 3\nrepeat = \"1h\"\nsize_min_bytes = \"1M\"\n")
            .unwrap();
        assert_eq!(c.monitoring.age_warning, 3);
        assert_eq!(c.monitoring.repeat, Duration::from_secs(3600));
        assert_eq!(c.monitoring.size_min_bytes, 1 << 20);
        for (text, want) in [
            ("[monitoring]\n\nage_warnin = 3\n", "age_warnin"),
            ("[monitoring]\n\nconfirm = 0\n", "from 1 to 100"),
            ("[monitoring]\n\nsize_history = 51\n", "from 3 to 50"),
            ("[monitoring]\n\nrepeat = \"31d\"\n", "from 1s to 30d"),
            (
                "[monitoring]\n\nfree_warning_percent = 100\n",
                "from 0 to 99",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("line 3"), "{text}: {e}");
        }
        let e = parse("[monitoring]\nage_warning = 5\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("age_warning = 5 must be at most age_critical = 4"),
            "{e}"
        );
        let e = parse("[monitoring]\nfree_critical_percent = 20\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("free_warning_percent = 10 must be at least"),
            "{e}"
        );
        for (text, want) in [
            (
                "[monitoring]\noffsite_failures_warning = 7\n",
                "offsite_failures_warning = 7 must be at most offsite_failures_critical = 6",
            ),
            (
                "[monitoring]\noffsite_lag_warning = \"2h\"\noffsite_lag_critical = \"1h\"\n",
                "offsite_lag_warning = 7200s must be at most offsite_lag_critical = 3600s",
            ),
            (
                "[monitoring]\noffsite_failures_critical = 0\n",
                "from 1 to 1000",
            ),
            (
                "[monitoring]\noffsite_lag_warning = \"31d\"\n",
                "from 1s to 30d",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn backup_dir_must_not_overlap_a_source() {
        for (backup_dir, section, want) in [
            (
                "/opt/app",
                "[application]\npaths = [\"/opt/app\"]",
                "is the same as [application] path \"/opt/app\"",
            ),
            (
                "/opt/app/backups",
                "[application]\npaths = [\"/opt/app\"]",
                "backup_dir \"/opt/app/backups\" lies inside [application] path \"/opt/app\"",
            ),
            (
                "/opt",
                "[application]\npaths = [\"/opt/app\"]",
                "[application] path \"/opt/app\" lies inside backup_dir \"/opt\"",
            ),
            (
                "/var/lib/db/rvm.sqlite",
                "[database]\npath = \"/var/lib/db/rvm.sqlite\"",
                "same as [database] path",
            ),
            (
                "/var/lib",
                "[database]\npath = \"/var/lib/db/rvm.sqlite\"",
                "[database] path \"/var/lib/db/rvm.sqlite\" lies inside backup_dir",
            ),
            (
                "/etc/myrvm/b",
                "[config]\npaths = [\"/etc/other\", \"/etc/myrvm\"]",
                "inside [config] path \"/etc/myrvm\"",
            ),
            (
                "/var/log/x/y",
                "[logs]\npaths = [\"/var/log/x\"]",
                "inside [logs] path",
            ),
        ] {
            let e = parse(&format!("backup_dir = \"{backup_dir}\"\n{section}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(want) && e.contains("move the backup directory out of the sources"),
                "{backup_dir}: {e}"
            );
        }
        // Neighbours, and the audit log and key inside a source, are fine.
        parse("backup_dir = \"/opt/app2\"\naudit_log = \"/opt/app/audit.log\"\nkey_file = \"/opt/app/k\"\n[application]\npaths = [\"/opt/app\"]\n").unwrap();
    }

    #[test]
    fn backup_dir_reached_through_a_symlink_is_refused_at_load() {
        let d = std::env::temp_dir().join(format!("rvb-config-real-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("app/var")).unwrap();
        std::os::unix::fs::symlink(d.join("app/var"), d.join("srv")).unwrap();
        let file = d.join("c.toml");
        let write = |backup: &Path| {
            std::fs::write(
                &file,
                format!(
                    "backup_dir = \"{}\"\n[application]\npaths = [\"{}\"]\n",
                    backup.display(),
                    d.join("app").display()
                ),
            )
            .unwrap()
        };
        // backup_dir (not yet existing) below a symlink into the source.
        write(&d.join("srv/backups"));
        let e = Config::load(&file).unwrap_err().to_string();
        assert!(
            e.contains("srv/backups\" lies inside [application] path")
                && e.contains("through symlinks")
                && e.contains("app/var/backups"),
            "{e}"
        );
        // The source reached through a symlink in backup_dir's place.
        std::os::unix::fs::symlink(d.join("app"), d.join("applink")).unwrap();
        write(&d.join("applink"));
        let e = Config::load(&file).unwrap_err().to_string();
        assert!(e.contains("is the same as"), "{e}");
        write(&d.join("elsewhere"));
        Config::load(&file).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn special_config_files_fail_fast() {
        let d = std::env::temp_dir().join(format!("rvb-config-special-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let fifo = d.join("fifo.toml");
        crate::fsutil::make_fifo(&fifo);
        let e = Config::load(&fifo).unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
        let e = Config::load(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("character device"), "{e}");
        let big = d.join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_CONFIG_LEN + 1]).unwrap();
        let e = Config::load(&big).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn textfile_dir_stays_out_of_the_store_and_the_sources() {
        let with = |dir: &str| parse(&format!("textfile_dir = \"{dir}\"\n{MINIMAL}"));
        let ok = with("/var/lib/node_exporter/textfile_collector").unwrap();
        assert_eq!(
            ok.textfile_dir.as_deref(),
            Some(Path::new("/var/lib/node_exporter/textfile_collector"))
        );
        assert_eq!(parse(MINIMAL).unwrap().textfile_dir, None);
        for (bad, says) in [
            ("/var/lib/rvm-backup", "overlaps backup_dir"),
            ("/var/lib/rvm-backup/prom", "overlaps backup_dir"),
            ("/var/lib", "overlaps backup_dir"),
            ("/etc/myrvm/prom", "lies inside [config] path"),
        ] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(with("relative/dir").is_err());
    }

    #[test]
    fn pitr_keys_are_checked_with_key_and_line() {
        let with = |extra: &str| {
            Config::parse(
                &format!("[database]\npath = \"/var/lib/db/rvm.sqlite\"\n{extra}\n"),
                Path::new("/etc/rvm-backup/rvm-backup.toml"),
            )
        };
        let c = with("").unwrap();
        let db = c.database.unwrap();
        assert!(db.pitr_enabled());
        assert_eq!(db.pitr_sync(), Duration::from_secs(1));
        assert_eq!(db.pitr_snapshot(), Duration::from_secs(86_400));
        assert_eq!(db.pitr_retention(), Duration::from_secs(7 * 86_400));
        let c = with("pitr = false\npitr_sync_interval = \"250ms\"").unwrap();
        let db = c.database.unwrap();
        assert!(!db.pitr_enabled());
        assert_eq!(db.pitr_sync(), Duration::from_millis(250));
        for (bad, says) in [
            ("pitr_sync_interval = \"50ms\"", "from 100ms to 1h"),
            ("pitr_sync_interval = \"2h\"", "from 100ms to 1h"),
            ("pitr_sync_interval = \"ms\"", "invalid duration"),
            ("pitr_retention = \"400d\"", "from 1s to 366d"),
            ("pitr_snapshot_interval = \"0s\"", "invalid duration"),
            ("pitr = \"yes\"", ""),
        ] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("line 3"), "{bad}: {e}");
        }
    }

    #[test]
    fn offsite_keys_are_checked_with_key_and_line() {
        let with = |lines: &str| {
            Config::parse(
                &format!("backup_dir = \"/var/lib/rvm-backup\"\n[offsite]\n{lines}\n"),
                Path::new("/etc/rvm-backup/rvm-backup.toml"),
            )
        };
        let good = "endpoint = \"http://127.0.0.1:8333\"\nbucket = \"rvm-fleet\"\naccess_key_id = \"AKID\"\nsecret_key_file = \"/etc/rvm-backup/s3.secret\"";
        let c = with(good).unwrap();
        let o = c.offsite.unwrap();
        assert_eq!((o.region(), o.part_size()), ("us-east-1", 8 << 20));
        assert_eq!(o.interval(), Duration::from_secs(900));
        assert!(o.bandwidth_limit.is_none() && o.prefix.is_none());
        let c = with(&format!("{good}\nprefix = \"fleet/b-1\"\nbandwidth_limit = \"256K\"\nregion = \"eu-west-1\"\ninterval = \"10m\"\nca_file = \"/etc/ssl/ca.pem\"\nmultipart_size = \"5M\"")).unwrap();
        let o = c.offsite.unwrap();
        assert_eq!(o.prefix().unwrap(), "fleet/b-1/");
        assert_eq!(o.bandwidth_limit.unwrap().0, 256 << 10);
        assert!(
            with(&good.replace("http://127.0.0.1:8333", "https://s3.example.com"))
                .unwrap()
                .offsite
                .unwrap()
                .endpoint
                .0
                .tls
        );
        for (bad, says, line) in [
            ("endpoint = \"ftp://x\"", "not an http", 3),
            ("endpoint = \"http://x/bucket\"", "without a path", 3),
            ("bucket = \"Bad_Bucket\"", "not an S3 bucket name", 4),
            ("prefix = \"../x\"", "must be segments", 7),
            ("bandwidth_limit = \"fast\"", "invalid size", 7),
            ("bandwidth_limit = 10", "out of range", 7),
            ("secret_key_file = \"s3.secret\"", "must be absolute", 6),
            ("multipart_size = \"1M\"", "out of range", 7),
            ("access_key_id = \"a b\"", "printable ASCII", 5),
            ("colour = 1", "unknown field", 7),
        ] {
            let key = bad.split(' ').next().unwrap();
            let text = if good.contains(&format!("{key} =")) {
                good.lines()
                    .map(|l| {
                        if l.starts_with(&format!("{key} =")) {
                            bad
                        } else {
                            l
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                format!("{good}\n{bad}")
            };
            let e = with(&text).unwrap_err().to_string();
            assert!(
                e.contains(says) && e.contains(&format!("line {line}")),
                "{bad}: {e}"
            );
        }
        let e = with("bucket = \"b12\"").unwrap_err().to_string();
        assert!(e.contains("missing field") && e.contains("endpoint"), "{e}");
    }
}
