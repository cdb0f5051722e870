//! `host`: serve a Rust app built as a shared library with a pre-forking pool
//! of workers.
//!
//! This file only resolves the settings (command line, environment, config
//! file) into a [`host::Config`] and hands it to the master; every outcome
//! becomes an exit code from [`host::exit_code`].

use host::{exit_code, LayerError, Sources};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Commands are taken as the first argument only: an app library really
    // named `new`, `status` or `ctl` is served as `host ./new`.
    match args.first().map(String::as_str) {
        Some("status") => std::process::exit(host::run_status_command(&args[1..])),
        Some("new") => std::process::exit(host::run_new_command(&args[1..])),
        Some("ctl") => std::process::exit(host::run_ctl_command(&args[1..])),
        _ => {}
    }
    let sources = Sources::from_process();
    let config = match host::resolve(&sources) {
        Ok(config) => config,
        Err(LayerError::Clap(e)) => {
            let code = if e.use_stderr() {
                exit_code::USAGE
            } else {
                exit_code::OK
            };
            let _ = e.print();
            std::process::exit(code);
        }
        Err(LayerError::Invalid(message)) => {
            eprintln!("error: {message}");
            std::process::exit(exit_code::USAGE);
        }
    };
    if config.print_config {
        match host::to_toml(&sources) {
            Ok(text) => print!("{text}"),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(exit_code::USAGE);
            }
        }
        std::process::exit(exit_code::OK);
    }
    host::init_logging(config.log_level.filter());
    if config.check_config {
        std::process::exit(host::check(&config));
    }
    std::process::exit(host::run(config, sources));
}
