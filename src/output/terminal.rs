//! The terminal's own settings while the live view draws.

/// Echo of typed keys turned off on stdin's terminal until dropped: a key (or Enter) typed
/// while the table is redrawn in place would otherwise be echoed into it and shift it. Line
/// editing and signals stay as they are (Ctrl-C still interrupts).
pub struct EchoOff {
    #[cfg(unix)]
    saved: libc::termios,
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

    #[cfg(not(unix))]
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
    }
}
