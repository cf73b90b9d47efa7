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
    socket: Option<AbsPath>,
    audit_log: Option<AbsPath>,
    log_level: Option<LogLevel>,
    backup_enabled: Option<bool>,
    backup_interval: Option<HumanDuration>,
    retention_days: Option<u32>,
    keep_last: Option<u32>,
    keep_hourly: Option<u32>,
    keep_daily: Option<u32>,
    keep_weekly: Option<u32>,
    keep_monthly: Option<u32>,
    backup_jitter: Option<HumanDuration>,
    compression_enabled: Option<bool>,
    compression_level: Option<u8>,
    encryption_enabled: Option<bool>,
    max_part_size: Option<ByteSize>,
    recovery_enabled: Option<bool>,
    recovery_timeout: Option<HumanDuration>,
    backup_monitoring_enabled: Option<bool>,
    backup_monitoring_interval: Option<HumanDuration>,
    database: Option<DatabaseSection>,
    config: Option<TreeSection>,
    logs: Option<TreeSection>,
    application: Option<TreeSection>,
    access: Option<AccessSection>,
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
    pub interval: Option<HumanDuration>,
    pub at: Option<DailyAt>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeSection {
    pub paths: Vec<AbsPath>,
    #[serde(default)]
    pub exclude: Vec<String>,
    pub interval: Option<HumanDuration>,
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
    pub socket: PathBuf,
    pub audit_log: PathBuf,
    pub log_level: log::LevelFilter,
    pub backup_enabled: bool,
    pub backup_interval: Duration,
    pub retention_days: u32,
    pub retention: crate::retention::Policy,
    /// Largest random delay added to scheduled runs.
    pub backup_jitter: Duration,
    pub compression_enabled: bool,
    pub compression_level: u8,
    pub encryption_enabled: bool,
    pub max_part_size: u64,
    pub recovery_enabled: bool,
    pub recovery_timeout: Duration,
    pub monitoring_enabled: bool,
    pub monitoring_interval: Duration,
    pub database: Option<DatabaseSection>,
    pub config: Option<TreeSection>,
    pub logs: Option<TreeSection>,
    pub application: Option<TreeSection>,
    pub access: AccessSection,
}

/// Smallest part an archive may be split into (tests use small parts).
pub const MIN_PART_SIZE: u64 = 64 << 10;
/// Just under FAT32's 4 GiB file size limit.
pub const DEFAULT_PART_SIZE: u64 = (4 << 30) - (1 << 20);

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

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "not found: write one (see README.md), or name it with --config or RVM_BACKUP_CONFIG".into()
                }
                _ => format!("cannot read: {e}"),
            })
        })?;
        Config::parse(&text, path)
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
        if !(MIN_PART_SIZE..=DEFAULT_PART_SIZE).contains(&max_part_size) {
            return Err(err(format!(
                "max_part_size = {max_part_size}: it must be from 64K to just under 4G"
            )));
        }
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
        let backup_dir = raw
            .backup_dir
            .map_or_else(|| PathBuf::from("/var/lib/rvm-backup"), |p| p.0);
        Ok(Config {
            file: path.to_path_buf(),
            environment: env,
            audit_log: raw
                .audit_log
                .map_or_else(|| backup_dir.join("audit.log"), |p| p.0),
            backup_dir,
            key_file: raw
                .key_file
                .map_or_else(|| PathBuf::from("/etc/rvm-backup/master.key"), |p| p.0),
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
            compression_enabled: raw.compression_enabled.unwrap_or(true),
            compression_level: level,
            encryption_enabled: raw.encryption_enabled.unwrap_or(true),
            max_part_size,
            recovery_enabled: raw.recovery_enabled.unwrap_or(true),
            recovery_timeout: raw
                .recovery_timeout
                .map_or(Duration::from_secs(300), |d| d.0),
            monitoring_enabled: raw.backup_monitoring_enabled.unwrap_or(true),
            monitoring_interval: raw
                .backup_monitoring_interval
                .map_or(Duration::from_secs(600), |d| d.0),
            database: raw.database,
            config: raw.config,
            logs: raw.logs,
            application: raw.application,
            access: raw.access.unwrap_or_default(),
        })
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
}
