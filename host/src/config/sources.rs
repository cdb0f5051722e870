//! Where settings come from, and which wins: command line > environment >
//! config file > defaults.
//!
//! Every layer speaks the command line's language, so one parser (clap, with
//! [`Config`]'s definitions) checks them all. The config file (`-c host.toml`)
//! has the long flags as keys; the environment has `HOST_ARGS` (extra
//! arguments, as Gunicorn's `GUNICORN_CMD_ARGS`), `PORT` (bind
//! `0.0.0.0:$PORT`) and `WEB_CONCURRENCY` (workers). Each lower layer becomes
//! the defaults of the next, so a higher layer replaces a setting whole (a
//! `--bind` on the command line replaces the file's list rather than adding
//! to it).

use std::{
    ffi::OsString,
    fmt,
    path::{Path, PathBuf},
};

use clap::{parser::ValueSource, ArgAction, CommandFactory, FromArgMatches};

use crate::config::Config;

/// Extra command-line arguments from the environment (as `GUNICORN_CMD_ARGS`).
pub const HOST_ARGS_ENV: &str = "HOST_ARGS";
/// A port to bind on every IPv4 address when nothing else sets `--bind` (Heroku-style).
pub const PORT_ENV: &str = "PORT";
/// The number of workers when nothing else sets `--workers`.
pub const WEB_CONCURRENCY_ENV: &str = "WEB_CONCURRENCY";

/// Options that steer loading itself, not the server: never taken from a file.
const META: &[&str] = &["config", "check_config", "print_config", "help", "version"];

/// Everything settings may come from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The command line, program name first.
    pub cli: Vec<OsString>,
    /// `HOST_ARGS`.
    pub host_args: Option<String>,
    /// `PORT`.
    pub port: Option<String>,
    /// `WEB_CONCURRENCY`.
    pub web_concurrency: Option<String>,
}

impl Sources {
    /// This process's command line and environment.
    pub fn from_process() -> Sources {
        Sources {
            cli: std::env::args_os().collect(),
            host_args: std::env::var(HOST_ARGS_ENV).ok(),
            port: std::env::var(PORT_ENV).ok(),
            web_concurrency: std::env::var(WEB_CONCURRENCY_ENV).ok(),
        }
    }
}

/// Why the settings could not be resolved.
#[derive(Debug)]
pub enum LayerError {
    /// A problem on the command line or in `HOST_ARGS` (clap's own message; may be help or version).
    Clap(clap::Error),
    /// A problem with the config file or an environment variable: one line.
    Invalid(String),
}

impl fmt::Display for LayerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerError::Clap(e) => write!(f, "{e}"),
            LayerError::Invalid(message) => f.write_str(message),
        }
    }
}

impl From<clap::Error> for LayerError {
    fn from(e: clap::Error) -> Self {
        LayerError::Clap(e)
    }
}

/// Resolves the settings from all layers.
pub fn resolve(sources: &Sources) -> Result<Config, LayerError> {
    let config = Config::from_arg_matches(&layered(sources)?)?;
    config.validate().map_err(LayerError::Invalid)?;
    Ok(config)
}

/// Parses the command line over the defaults the lower layers set.
fn layered(sources: &Sources) -> Result<clap::ArgMatches, LayerError> {
    let host_args = match &sources.host_args {
        Some(text) => shlex::split(text).ok_or_else(|| {
            LayerError::Invalid(format!("{HOST_ARGS_ENV}: unbalanced quotes in {text:?}"))
        })?,
        None => Vec::new(),
    };
    let mut cmd = Config::command();

    // The file: named on the command line, else in HOST_ARGS.
    let cli_strings: Vec<String> = sources
        .cli
        .iter()
        .skip(1)
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    if let Some(path) = config_path(&cli_strings).or_else(|| config_path(&host_args)) {
        for (id, values) in read_file(&path)? {
            cmd = set_default(cmd, &id, values);
        }
    }

    // The environment.
    if let Some(n) = &sources.web_concurrency {
        check_value(&cmd, "workers", std::slice::from_ref(n))
            .map_err(|e| LayerError::Invalid(format!("{WEB_CONCURRENCY_ENV}={n}: {e}")))?;
        cmd = set_default(cmd, "workers", vec![n.clone()]);
    }
    if let Some(port) = &sources.port {
        let bind = format!("0.0.0.0:{port}");
        check_value(&cmd, "binds", std::slice::from_ref(&bind))
            .map_err(|e| LayerError::Invalid(format!("{PORT_ENV}={port}: {e}")))?;
        cmd = set_default(cmd, "binds", vec![bind]);
    }
    if !host_args.is_empty() {
        let partial = cmd.clone().mut_arg("app", |a| a.required(false));
        let matches = partial
            .try_get_matches_from(std::iter::once("host".to_owned()).chain(host_args))
            .map_err(|e| LayerError::Invalid(format!("{HOST_ARGS_ENV}: {}", clap_reason(&e))))?;
        for id in given_ids(&cmd, &matches) {
            let values = raw_values(&matches, &id);
            cmd = set_default(cmd, &id, values);
        }
    }

    // The command line, over everything.
    Ok(cmd.try_get_matches_from(&sources.cli)?)
}

/// Finds `-c FILE`, `--config FILE` or `--config=FILE` among `args`.
fn config_path(args: &[String]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "-c" || a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
        if let Some(p) = a
            .strip_prefix("-c")
            .filter(|p| !p.is_empty() && !a.starts_with("--"))
        {
            return Some(PathBuf::from(p));
        }
    }
    None
}

/// Reads a config file into (argument id, values), checking every key and value.
fn read_file(path: &Path) -> Result<Vec<(String, Vec<String>)>, LayerError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| LayerError::Invalid(format!("{shown}: cannot read the config file: {e}")))?;
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        LayerError::Invalid(format!(
            "{shown}: not valid TOML: {}",
            first_line(e.message())
        ))
    })?;
    let pairs = match table.remove(CERTIFICATE_TABLE) {
        Some(value) => certificate_tables(&value).map_err(|why| {
            LayerError::Invalid(format!("{shown}: [[{CERTIFICATE_TABLE}]]: {why}"))
        })?,
        None => Vec::new(),
    };
    let cmd = Config::command();
    let mut out = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let arg = cmd
            .get_arguments()
            .find(|a| {
                a.get_long() == Some(long.as_str())
                    || a.get_all_aliases()
                        .is_some_and(|aliases| aliases.contains(&long.as_str()))
                    || (a.is_positional() && a.get_id() == "app" && long == "app")
            })
            .filter(|a| !META.contains(&a.get_id().as_str()))
            .ok_or_else(|| LayerError::Invalid(format!("{shown}: unknown key `{key}`")))?;
        let id = arg.get_id().to_string();
        let is_flag = matches!(arg.get_action(), ArgAction::SetTrue);
        let values = toml_values(&value, is_flag)
            .map_err(|why| LayerError::Invalid(format!("{shown}: key `{key}`: {why}")))?;
        check_value(&cmd, &id, &values)
            .map_err(|why| LayerError::Invalid(format!("{shown}: key `{key}`: {why}")))?;
        out.push((id, values));
    }
    // The tables' pairs come after any `certfile`/`keyfile` keys' (whose
    // first pair stays the default certificate).
    if !pairs.is_empty() {
        let (certs, keys): (Vec<String>, Vec<String>) = pairs.into_iter().unzip();
        for (id, extra) in [("certfiles", certs), ("keyfiles", keys)] {
            match out.iter_mut().find(|(name, _)| name == id) {
                Some((_, values)) => values.extend(extra),
                None => out.push((id.to_owned(), extra)),
            }
        }
    }
    Ok(out)
}

/// The config file's table array of certificates, one per SNI name set:
/// `[[certificate]]` with `certfile` and `keyfile`.
pub const CERTIFICATE_TABLE: &str = "certificate";

/// The (certfile, keyfile) pairs of the `[[certificate]]` tables.
fn certificate_tables(value: &toml::Value) -> Result<Vec<(String, String)>, String> {
    let toml::Value::Array(items) = value else {
        return Err("expected tables: [[certificate]] with certfile and keyfile".into());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let toml::Value::Table(t) = item else {
                return Err(format!("entry {} is not a table", i + 1));
            };
            if let Some(key) = t.keys().find(|k| *k != "certfile" && *k != "keyfile") {
                return Err(format!("entry {}: unknown key `{key}`", i + 1));
            }
            let get = |key: &str| match t.get(key) {
                Some(toml::Value::String(s)) => Ok(s.clone()),
                _ => Err(format!("entry {} needs `{key}` (a path)", i + 1)),
            };
            Ok((get("certfile")?, get("keyfile")?))
        })
        .collect()
}

/// A TOML value as the strings the command line would carry.
fn toml_values(value: &toml::Value, is_flag: bool) -> Result<Vec<String>, String> {
    let scalar = |v: &toml::Value| match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Boolean(b) if is_flag => Ok(b.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        other => Err(format!(
            "expected a string or a number, found {}",
            other.type_str()
        )),
    };
    match value {
        toml::Value::Boolean(_) if !is_flag => Err("expected a value, found a boolean".into()),
        toml::Value::Array(items) if !is_flag => items.iter().map(scalar).collect(),
        _ if is_flag && !value.is_bool() => Err("expected true or false".into()),
        _ => scalar(value).map(|v| vec![v]),
    }
}

/// Checks `values` for the argument `id` with its own parser; the reason on failure.
fn check_value(cmd: &clap::Command, id: &str, values: &[String]) -> Result<(), String> {
    let Some(arg) = cmd.get_arguments().find(|a| a.get_id() == id) else {
        return Err(format!("unknown setting `{id}`"));
    };
    let probe = cmd.clone().mut_arg("app", |a| a.required(false));
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return match values {
            [v] if v == "true" || v == "false" => Ok(()),
            _ => Err("expected true or false".into()),
        };
    }
    let mut argv = vec!["host".to_owned()];
    if arg.is_positional() {
        argv.push("--".into());
        argv.extend(values.iter().cloned());
    } else {
        let long = arg.get_long().unwrap_or_default();
        for v in values {
            argv.push(format!("--{long}={v}"));
        }
    }
    probe
        .try_get_matches_from(argv)
        .map(drop)
        .map_err(|e| clap_reason(&e))
}

/// Makes `values` the default of argument `id` (a required argument with a
/// default is no longer required on the command line).
fn set_default(cmd: clap::Command, id: &str, values: Vec<String>) -> clap::Command {
    cmd.mut_arg(id, |a| {
        let values: Vec<clap::builder::OsStr> = values.into_iter().map(Into::into).collect();
        a.default_values(values).required(false)
    })
}

/// The arguments a layer set explicitly.
fn given_ids(cmd: &clap::Command, matches: &clap::ArgMatches) -> Vec<String> {
    cmd.get_arguments()
        .map(|a| a.get_id().to_string())
        .filter(|id| !META.contains(&id.as_str()))
        .filter(|id| matches.value_source(id) == Some(ValueSource::CommandLine))
        .collect()
}

/// The values of `id` as given (before parsing).
fn raw_values(matches: &clap::ArgMatches, id: &str) -> Vec<String> {
    matches
        .get_raw(id)
        .map(|vals| vals.map(|v| v.to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// The first line of a clap error, without its `error: ` label.
fn clap_reason(e: &clap::Error) -> String {
    first_line(&e.to_string())
        .trim_start_matches("error: ")
        .to_owned()
}

/// The effective settings as TOML, one key per setting (`--print-config`).
pub fn to_toml(sources: &Sources) -> Result<String, LayerError> {
    let matches = layered(sources)?;
    let mut table = toml::Table::new();
    for arg in Config::command().get_arguments() {
        let id = arg.get_id().as_str();
        if META.contains(&id) {
            continue;
        }
        let key = if arg.is_positional() {
            "app".to_owned()
        } else {
            arg.get_long().unwrap_or(id).to_owned()
        };
        let values = raw_values(&matches, id);
        let value = match arg.get_action() {
            ArgAction::SetTrue => toml::Value::Boolean(values.first().is_some_and(|v| v == "true")),
            ArgAction::Append => toml::Value::Array(values.iter().map(|v| typed(v)).collect()),
            _ => match values.first() {
                Some(v) => typed(v),
                None => continue,
            },
        };
        table.insert(key, value);
    }
    toml::to_string(&table)
        .map_err(|e| LayerError::Invalid(format!("cannot print the configuration: {e}")))
}

/// What differs between two `--print-config` outputs, as `key: old → new`.
pub fn diff(old: &str, new: &str) -> Vec<String> {
    let parse = |text: &str| text.parse::<toml::Table>().unwrap_or_default();
    let (old, new) = (parse(old), parse(new));
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let shown = |v: Option<&toml::Value>| v.map_or("(unset)".to_owned(), ToString::to_string);
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| format!("{k}: {} → {}", shown(old.get(k)), shown(new.get(k))))
        .collect()
}

/// A raw value as TOML: an integer when it is one, else a string.
fn typed(v: &str) -> toml::Value {
    v.parse::<i64>()
        .map(toml::Value::Integer)
        .unwrap_or_else(|_| toml::Value::String(v.to_owned()))
}
