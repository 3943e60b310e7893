//! What the command is doing now: named by the orchestration (`term.step(…)`), named again in a
//! `--timeout` error, and, on a terminal, shown on stderr as a spinner line once it has taken a
//! few seconds. Off a terminal nothing is drawn.

use std::io::Write;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a step may take before the spinner appears.
const QUIET_FOR: Duration = Duration::from_secs(2);
const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

#[derive(Default)]
struct State {
    step: Option<(String, Instant)>,
    /// The spinner line is on the screen.
    drawn: bool,
    frame: usize,
    /// A drawing task is running.
    running: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    step: None,
    drawn: false,
    frame: 0,
    running: false,
});

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

fn erase(state: &mut State) {
    if state.drawn {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K");
        let _ = err.flush();
        state.drawn = false;
    }
}

/// Take the spinner off the screen before another line goes to stderr.
pub fn clear_line() {
    erase(&mut state());
}

/// What is being done now (None: nothing worth a spinner, e.g. the live table is drawing).
pub fn set(step: Option<String>, draw: bool) {
    let mut s = state();
    erase(&mut s);
    s.step = step.map(|text| (text, Instant::now()));
    if draw && s.step.is_some() && !s.running {
        s.running = true;
        drop(s);
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(spin());
        } else {
            state().running = false;
        }
    }
}

/// A line of progress drawn at once (`-o json` while following), unless a step is showing.
pub fn show(text: &str) {
    let mut s = state();
    if s.step.is_some() {
        return;
    }
    let width = console::Term::stderr().size().1 as usize;
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r\x1b[2K{}",
        console::truncate_str(text, width.max(20) - 1, "…")
    );
    let _ = err.flush();
    s.drawn = true;
}

pub fn current() -> Option<String> {
    state().step.as_ref().map(|(text, _)| text.clone())
}

async fn spin() {
    let mut ticker = tokio::time::interval(Duration::from_millis(120));
    loop {
        ticker.tick().await;
        let mut s = state();
        let Some((text, since)) = s.step.clone() else {
            erase(&mut s);
            s.running = false;
            return;
        };
        let waited = since.elapsed();
        if waited < QUIET_FOR {
            continue;
        }
        let frame = FRAMES[s.frame % FRAMES.len()];
        s.frame += 1;
        let width = console::Term::stderr().size().1 as usize;
        let line = format!("{frame} {text} ({}s)", waited.as_secs());
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{}",
            console::truncate_str(&line, width.max(20) - 1, "…")
        );
        let _ = err.flush();
        s.drawn = true;
    }
}
