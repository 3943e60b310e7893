//! The initramfs `check --boot` hands the kernel: a `newc` cpio archive (the format
//! `Documentation/driver-api/early-userspace/buffer-format.rst` describes), built in memory and
//! left uncompressed so that any kernel unpacks it.

/// An archive being written. Parent directories must be added before what they hold.
pub struct Cpio {
    bytes: Vec<u8>,
    inode: u32,
}

const FILE: u32 = 0o100000;
const DIR: u32 = 0o040000;
const CHAR: u32 = 0o020000;
const LINK: u32 = 0o120000;

impl Default for Cpio {
    fn default() -> Self {
        Self::new()
    }
}

impl Cpio {
    pub fn new() -> Self {
        Cpio {
            bytes: Vec::new(),
            inode: 1,
        }
    }

    pub fn dir(&mut self, path: &str) {
        self.entry(path, DIR | 0o755, (0, 0), b"");
    }

    pub fn file(&mut self, path: &str, executable: bool, data: &[u8]) {
        let mode = if executable { 0o755 } else { 0o644 };
        self.entry(path, FILE | mode, (0, 0), data);
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, LINK | 0o777, (0, 0), target.as_bytes());
    }

    /// A character device node (`/dev/console` must exist before the kernel starts `/init`).
    pub fn char_device(&mut self, path: &str, major: u32, minor: u32) {
        self.entry(path, CHAR | 0o600, (major, minor), b"");
    }

    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.inode = 0;
        self.entry("TRAILER!!!", 0, (0, 0), b"");
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn entry(&mut self, path: &str, mode: u32, (major, minor): (u32, u32), data: &[u8]) {
        let name = path.trim_start_matches('/');
        let fields = [
            self.inode,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime
            data.len() as u32,
            0, // dev major
            0, // dev minor
            major,
            minor,
            name.len() as u32 + 1,
            0, // check
        ];
        self.inode += 1;
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_terminated() {
        let mut cpio = Cpio::new();
        cpio.dir("dev");
        cpio.char_device("/dev/console", 5, 1);
        cpio.file("init", true, b"#!");
        cpio.symlink("lib64", "lib");
        let bytes = cpio.finish();
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(text.matches("070701").count(), 5);
        assert!(text.contains("TRAILER!!!\0"));
        // /dev/console: mode 020600, rdev 5:1.
        let console = text.find("dev/console").unwrap() - 110;
        assert_eq!(&text[console + 14..console + 22], "00002180");
        assert_eq!(&text[console + 78..console + 94], "0000000500000001");
    }
}
