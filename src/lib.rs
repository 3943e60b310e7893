//! kubectl-kmm: prove that every KMM Module will work on an OpenShift release before upgrading.
//!
//! Flow: `cli` (flags) → `commands` (orchestration) → `release` / `registry` (core) → `output`.

pub mod boot;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod completion;
pub mod error;
pub mod module;
pub mod output;
pub mod platform;
pub mod registry;
pub mod release;

use std::process::ExitCode;

use clap::Parser;

use crate::error::ExitStatus;

/// kubectl's completion hook run as its own binary: the same answers as `kubectl-kmm __complete`.
pub fn complete_main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    commands::completion::protocol(&args).into()
}

/// Parse the command line, run, and turn the outcome into the documented exit code.
pub fn main() -> ExitCode {
    // `check --boot`'s VM runs this binary as its /init.
    #[cfg(target_os = "linux")]
    if boot::guest::is_init() {
        boot::guest::run();
    }
    // One rustls provider for kube and the registry client alike; failing means one is set.
    let _ = rustls::crypto::ring::default_provider().install_default();

    // kubectl's plugin completion hook: `kubectl_complete-kmm` runs `kubectl-kmm __complete …`.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__complete") {
        return commands::completion::protocol(&args[2..]).into();
    }

    let args = match cli::hoist_flags(args) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitStatus::BadInput.into();
        }
    };
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitStatus::BadInput.into()
            } else {
                ExitStatus::Success.into()
            };
        }
    };
    let term = output::Term::new(cli.verbose, cli.no_color);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitStatus::Environment.into();
        }
    };
    match runtime.block_on(commands::run(cli, &term)) {
        Ok(status) => status.into(),
        Err(error) => {
            term.error(&error);
            error.exit_status().into()
        }
    }
}
