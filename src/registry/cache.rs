//! Answers read from images are immutable per digest, so they are kept on disk under
//! `$XDG_CACHE_HOME/kubectl-kmm` (`~/Library/Caches` on macOS, `%LOCALAPPDATA%` on Windows:
//! `platform::cache_dir`). A broken or unreadable cache entry is simply a miss.

use std::path::PathBuf;

use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
pub struct Cache {
    dir: Option<PathBuf>,
}

impl Cache {
    /// The user's cache directory, or no cache at all with `--no-cache` or without a home.
    pub fn new(disabled: bool) -> Self {
        let dir = if disabled {
            None
        } else {
            crate::platform::cache_dir()
        };
        Cache { dir }
    }

    pub fn at(dir: PathBuf) -> Self {
        Cache { dir: Some(dir) }
    }

    fn path(&self, namespace: &str, key: &str) -> Option<PathBuf> {
        let hash = hex::encode(Sha256::digest(key.as_bytes()));
        self.dir
            .as_ref()
            .map(|d| d.join(namespace).join(format!("{hash}.json")))
    }

    pub fn get<T: DeserializeOwned>(&self, namespace: &str, key: &str) -> Option<T> {
        let bytes = std::fs::read(self.path(namespace, key)?).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Write atomically (temp file + rename) so a concurrent reader never sees half a file.
    pub fn put<T: Serialize>(&self, namespace: &str, key: &str, value: &T) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
        self.put_bytes(namespace, key, &bytes)
    }

    /// A file kept as it is (a kernel image, a module): what `put_bytes` wrote.
    pub fn get_bytes(&self, namespace: &str, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path(namespace, key)?).ok()
    }

    pub fn put_bytes(&self, namespace: &str, key: &str, bytes: &[u8]) -> std::io::Result<()> {
        let Some(path) = self.path(namespace, key) else {
            return Ok(());
        };
        let dir = path.parent().unwrap_or(&path);
        std::fs::create_dir_all(dir)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_misses() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path().to_path_buf());
        assert_eq!(cache.get::<String>("ns", "k"), None);
        cache.put("ns", "k", &"v".to_string()).unwrap();
        assert_eq!(cache.get::<String>("ns", "k").as_deref(), Some("v"));
        // Corrupt entries are misses, not errors.
        let path = cache.path("ns", "k").unwrap();
        std::fs::write(&path, b"{garbage").unwrap();
        assert_eq!(cache.get::<String>("ns", "k"), None);
        cache.put_bytes("raw", "k", b"\x7fELF").unwrap();
        assert_eq!(
            cache.get_bytes("raw", "k").as_deref(),
            Some(&b"\x7fELF"[..])
        );
        assert_eq!(cache.get_bytes("raw", "other"), None);
        let off = Cache::new(true);
        off.put("ns", "k", &1).unwrap();
        assert_eq!(off.get::<i32>("ns", "k"), None);
    }
}
