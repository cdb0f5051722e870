//! `host`: serve a Rust app built as a shared library with a pre-forking pool
//! of workers.
//!
//! This file only turns the command line into a [`config::Config`] and hands
//! it to the master; every outcome becomes an exit code from [`exit_code`].

use clap::Parser;
use host::{config, exit_code, logging, master};

fn main() {
    let config = match config::Config::try_parse() {
        Ok(config) => config,
        Err(e) => {
            let code = if e.use_stderr() {
                exit_code::USAGE
            } else {
                exit_code::OK
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    logging::init(config.log_level.filter());
    std::process::exit(master::run(config));
}
