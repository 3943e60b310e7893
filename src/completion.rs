//! `kubectl kmm <TAB>`: kubectl (1.26+) runs `kubectl_complete-kmm <words…> <partial>` and reads
//! Cobra's completion protocol: one candidate per line (`value\tdescription`), then `:<directive>`.
//! Candidates come from the clap definitions, so they never drift from the real flags.

use clap::{Arg, Command, ValueHint};

/// Cobra's ShellCompDirective values.
const DEFAULT: u32 = 0;
const NO_FILE_COMPLETION: u32 = 4;

fn takes_value(arg: &Arg) -> bool {
    arg.get_num_args().is_some_and(|n| n.takes_values()) && !arg.is_require_equals_set()
}

fn find_flag<'a>(cmd: &'a Command, word: &str) -> Option<&'a Arg> {
    let name = word.split('=').next().unwrap_or(word);
    cmd.get_arguments().find(|a| {
        name.strip_prefix("--").is_some_and(|long| {
            a.get_long() == Some(long) || a.get_all_aliases().is_some_and(|al| al.contains(&long))
        }) || (name.len() == 2
            && name.starts_with('-')
            && a.get_short().is_some_and(|s| name.ends_with(s)))
    })
}

/// `word`'s flag in `cmd`; before the subcommand, a flag of any subcommand (cli::hoist_flags
/// moves it after the subcommand).
fn flag_of<'a>(root: &'a Command, cmd: &'a Command, word: &str) -> Option<&'a Arg> {
    find_flag(cmd, word).or_else(|| {
        std::ptr::eq(cmd, root)
            .then(|| root.get_subcommands().find_map(|s| find_flag(s, word)))
            .flatten()
    })
}

fn help_of(text: Option<&clap::builder::StyledStr>) -> String {
    text.map(|h| h.to_string().lines().next().unwrap_or_default().to_string())
        .unwrap_or_default()
}

fn line(value: &str, help: &str) -> String {
    if help.is_empty() {
        value.to_string()
    } else {
        format!("{value}\t{help}")
    }
}

/// Candidates and the directive for `words` (everything after `kmm`; the last is the partial word).
pub fn complete(root: &Command, words: &[String]) -> (Vec<String>, u32) {
    let (partial, done) = match words.split_last() {
        Some((last, rest)) => (last.as_str(), rest),
        None => ("", &[][..]),
    };
    // Arguments report how many values they take only once the command is built.
    let mut built = root.clone();
    built.build();
    let mut cmd = &built;
    let root = &built;
    let flag = |cmd, word| flag_of(root, cmd, word);
    let mut skip_value = false;
    for word in done {
        if skip_value {
            skip_value = false;
        } else if word.starts_with('-') {
            skip_value = !word.contains('=') && flag(cmd, word).is_some_and(takes_value);
        } else if let Some(sub) = cmd.find_subcommand(word) {
            cmd = sub;
        }
    }

    // The value of the flag just typed.
    if skip_value && let Some(flag) = done.last().and_then(|w| flag(cmd, w)) {
        let values = flag.get_possible_values();
        if values.is_empty() {
            // Files (and, for -f, directories): the shell's own completion.
            let file = matches!(
                flag.get_value_hint(),
                ValueHint::FilePath | ValueHint::AnyPath | ValueHint::DirPath
            );
            return (Vec::new(), if file { DEFAULT } else { NO_FILE_COMPLETION });
        }
        let candidates = values
            .iter()
            .filter(|v| !v.is_hide_set() && v.get_name().starts_with(partial))
            .map(|v| line(v.get_name(), &help_of(v.get_help())))
            .collect();
        return (candidates, NO_FILE_COMPLETION);
    }

    let candidates = if partial.starts_with('-') {
        cmd.get_arguments()
            .filter(|a| !a.is_hide_set() && !a.is_positional())
            .filter_map(|a| a.get_long().map(|l| (format!("--{l}"), a)))
            .filter(|(flag, _)| flag.starts_with(partial))
            .map(|(flag, a)| line(&flag, &help_of(a.get_help())))
            .collect()
    } else {
        cmd.get_subcommands()
            .filter(|s| {
                !s.is_hide_set() && s.get_name() != "help" && s.get_name().starts_with(partial)
            })
            .map(|s| line(s.get_name(), &help_of(s.get_about())))
            .collect()
    };
    (candidates, NO_FILE_COMPLETION)
}

/// The protocol's text.
pub fn render(candidates: &[String], directive: u32) -> String {
    let mut out = String::new();
    for c in candidates {
        out.push_str(c);
        out.push('\n');
    }
    out.push_str(&format!(":{directive}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn run(words: &[&str]) -> (Vec<String>, u32) {
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        let (candidates, directive) = complete(&crate::cli::Cli::command(), &words);
        (
            candidates
                .iter()
                .map(|c| c.split('\t').next().unwrap_or_default().to_string())
                .collect(),
            directive,
        )
    }

    #[test]
    fn subcommands_flags_and_values() {
        let (c, d) = run(&[""]);
        assert!(
            c.contains(&"preflight".to_string()) && c.contains(&"dtk".to_string()),
            "{c:?}"
        );
        assert!(!c.contains(&"help".to_string()));
        assert_eq!(d, NO_FILE_COMPLETION);
        assert_eq!(run(&["pre"]).0, vec!["preflight"]);
        let (c, _) = run(&["preflight", "--re"]);
        assert!(
            c.contains(&"--release".to_string()) && c.contains(&"--replace".to_string()),
            "{c:?}"
        );
        assert!(!c.contains(&"--kernel".to_string()));
        assert_eq!(
            run(&["preflight", "-o", ""]).0,
            vec!["table", "wide", "json", "yaml", "name"]
        );
        assert_eq!(
            run(&["check", "-o", ""]).0,
            vec!["table", "wide", "json", "yaml"]
        );
        assert_eq!(
            run(&["dtk", "--release", "4.19.0", "--arch", "a"]).0,
            vec!["aarch64"]
        );
        assert_eq!(run(&["preflight", "--kubeconfig", ""]), (vec![], DEFAULT));
        assert_eq!(run(&["check", "-f", ""]), (vec![], DEFAULT));
        assert_eq!(run(&["check", "--registry-ca", ""]), (vec![], DEFAULT));
        // Before the subcommand too, as kubectl users write them.
        assert_eq!(run(&["--kubeconfig", ""]), (vec![], DEFAULT));
        assert_eq!(
            run(&["--kubeconfig", "k", "st"]),
            (vec!["status".to_string()], NO_FILE_COMPLETION)
        );
        assert_eq!(
            run(&["preflight", "--release", ""]),
            (vec![], NO_FILE_COMPLETION)
        );
        // A value already given does not confuse what follows.
        let (c, _) = run(&["preflight", "--release", "4.19.0", "--t"]);
        assert_eq!(c, vec!["--timeout"]);
        assert_eq!(render(&["a\tb".into()], 4), "a\tb\n:4\n");
    }
}
