//! The terminal's own settings while the live view draws.

/// Echo of typed keys turned off on stdin's terminal until dropped: a key (or Enter) typed
/// while the table is redrawn in place would otherwise be echoed into it and shift it. Line
/// editing and signals stay as they are (Ctrl-C still interrupts).
pub struct EchoOff {
    #[cfg(unix)]
    saved: libc::termios,
    #[cfg(windows)]
    saved: winconsole::Mode,
}

impl EchoOff {
    /// None when stdin is not a terminal (or elsewhere than Unix).
    #[cfg(unix)]
    pub fn stdin() -> Option<EchoOff> {
        let fd = libc::STDIN_FILENO;
        // SAFETY: isatty and tcgetattr/tcsetattr only read or write the termios we pass, for a
        // file descriptor that stays open for the whole process.
        unsafe {
            if libc::isatty(fd) != 1 {
                return None;
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut saved) != 0 {
                return None;
            }
            let mut quiet = saved;
            quiet.c_lflag &= !(libc::ECHO | libc::ECHONL);
            if libc::tcsetattr(fd, libc::TCSANOW, &quiet) != 0 {
                return None;
            }
            Some(EchoOff { saved })
        }
    }

    /// On Windows: the console input mode without `ENABLE_ECHO_INPUT`.
    #[cfg(windows)]
    pub fn stdin() -> Option<EchoOff> {
        let saved = winconsole::mode(winconsole::Stream::Input)?;
        winconsole::set_mode(winconsole::Stream::Input, saved & !winconsole::ECHO_INPUT)?;
        Some(EchoOff { saved })
    }

    #[cfg(not(any(unix, windows)))]
    pub fn stdin() -> Option<EchoOff> {
        None
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        #[cfg(unix)]
        // SAFETY: restores the settings read in `stdin()` on the same descriptor.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved);
        }
        #[cfg(windows)]
        let _ = winconsole::set_mode(winconsole::Stream::Input, self.saved);
    }
}

/// Whether stdout (or stderr) is a terminal that understands ANSI escape sequences: colour and
/// the live view's cursor movements. A Windows console interprets them only with virtual-terminal
/// processing, which is turned on here; a console where that fails (before Windows 10 1511, or
/// a legacy console) would print them as text, so it is treated like a pipe.
pub fn ansi_terminal(stderr: bool) -> bool {
    use std::io::IsTerminal;
    let is_terminal = if stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    #[cfg(windows)]
    {
        let stream = if stderr {
            winconsole::Stream::Error
        } else {
            winconsole::Stream::Output
        };
        is_terminal
            && winconsole::mode(stream).is_some_and(|mode| {
                mode & winconsole::VIRTUAL_TERMINAL != 0
                    || winconsole::set_mode(stream, mode | winconsole::VIRTUAL_TERMINAL).is_some()
            })
    }
    #[cfg(not(windows))]
    is_terminal
}

/// The Windows console's modes (`GetConsoleMode`/`SetConsoleMode`) on the standard handles.
#[cfg(windows)]
mod winconsole {
    use windows_sys::Win32::System::Console::{
        CONSOLE_MODE, ENABLE_ECHO_INPUT, ENABLE_VIRTUAL_TERMINAL_PROCESSING, GetConsoleMode,
        GetStdHandle, STD_ERROR_HANDLE, STD_INPUT_HANDLE, STD_OUTPUT_HANDLE, SetConsoleMode,
    };

    pub type Mode = CONSOLE_MODE;
    pub const ECHO_INPUT: Mode = ENABLE_ECHO_INPUT;
    pub const VIRTUAL_TERMINAL: Mode = ENABLE_VIRTUAL_TERMINAL_PROCESSING;

    #[derive(Clone, Copy)]
    pub enum Stream {
        Input,
        Output,
        Error,
    }

    fn handle(stream: Stream) -> windows_sys::Win32::Foundation::HANDLE {
        let which = match stream {
            Stream::Input => STD_INPUT_HANDLE,
            Stream::Output => STD_OUTPUT_HANDLE,
            Stream::Error => STD_ERROR_HANDLE,
        };
        // SAFETY: GetStdHandle only reads the process's standard handle table.
        unsafe { GetStdHandle(which) }
    }

    /// None when the handle is not a console (a pipe, a file, or no handle at all).
    pub fn mode(stream: Stream) -> Option<Mode> {
        let mut mode: Mode = 0;
        // SAFETY: GetConsoleMode writes one CONSOLE_MODE through the pointer we own.
        (unsafe { GetConsoleMode(handle(stream), &mut mode) } != 0).then_some(mode)
    }

    pub fn set_mode(stream: Stream, mode: Mode) -> Option<()> {
        // SAFETY: SetConsoleMode takes the handle and a plain flag value.
        (unsafe { SetConsoleMode(handle(stream), mode) } != 0).then_some(())
    }
}
