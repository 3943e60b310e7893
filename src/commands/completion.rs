//! `kubectl kmm completion <shell>`, and the `__complete` protocol kubectl's plugin completion
//! hook (`kubectl_complete-kmm`) speaks.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionArgs, Shell};
use crate::error::{ExitStatus, Result};
use crate::output;

pub fn run(args: CompletionArgs) -> Result<ExitStatus> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
        Shell::Powershell => clap_complete::Shell::PowerShell,
    };
    // The scripts complete the executable itself; `kubectl kmm` goes through kubectl's hook.
    let mut command = Cli::command().bin_name("kubectl-kmm");
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "kubectl-kmm", &mut script);
    output::stdout(&String::from_utf8_lossy(&script));
    Ok(ExitStatus::Success)
}

/// `kubectl-kmm __complete <words…> <partial>`.
pub fn protocol(words: &[String]) -> ExitStatus {
    let (candidates, directive) = crate::completion::complete(&Cli::command(), words);
    output::stdout(&crate::completion::render(&candidates, directive));
    ExitStatus::Success
}
