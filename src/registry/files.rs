//! Files inside images, read straight from the registry: the platform manifest of an image, and
//! its layers streamed through `layers` in a blocking thread (decompression and tar parsing are
//! synchronous; the network reads underneath them are not).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::layers::{self, FindError, LayerSource, Tree, TreeQuery};
use super::manifest::{self, ImageManifest, Manifest};
use super::reference::ImageRef;
use super::{BlobError, Registry};
use crate::error::{Error, Result};

/// The layers of one image, opened lazily from the registry (newest first).
struct RegistryLayers<'a> {
    registry: &'a Registry,
    handle: tokio::runtime::Handle,
    image: &'a ImageRef,
    manifest: &'a ImageManifest,
    /// Compressed bytes read from the registry, when counted.
    counter: Option<Arc<AtomicU64>>,
}

struct Counting<R> {
    inner: R,
    counter: Arc<AtomicU64>,
}

impl<R: std::io::Read> std::io::Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl LayerSource for RegistryLayers<'_> {
    fn layer_count(&self) -> usize {
        self.manifest.layers.len()
    }

    fn open(&self, index_from_top: usize) -> std::io::Result<Box<dyn std::io::Read + '_>> {
        let layers = &self.manifest.layers;
        let layer = &layers[layers.len() - 1 - index_from_top];
        let reader = self
            .registry
            .blob_reader(self.handle.clone(), self.image, layer);
        Ok(match &self.counter {
            Some(counter) => Box::new(Counting {
                inner: reader,
                counter: counter.clone(),
            }),
            None => Box::new(reader),
        })
    }
}

/// The registry error inside an io::Error chain from a `BlobReader`, if any.
fn blob_error(e: &std::io::Error) -> Option<Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = e.get_ref().map(|r| r as _);
    while let Some(err) = current {
        if let Some(BlobError(inner)) = err.downcast_ref::<BlobError>() {
            return Some(inner.clone());
        }
        current = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|r| r as _),
            None => err.source(),
        };
    }
    None
}

fn find_error(image: &ImageRef, e: FindError) -> Error {
    match e {
        FindError::TooLarge { path, size, limit } => Error::FileTooLarge {
            image: image.to_string(),
            path,
            size,
            limit,
        },
        FindError::Io(io) => blob_error(&io).unwrap_or_else(|| Error::CorruptLayer {
            image: image.to_string(),
            reason: io.to_string(),
        }),
    }
}

/// Run `work` over `image`'s layers in a blocking thread of the current runtime.
async fn with_layers<T, F>(
    registry: &Registry,
    image: &ImageRef,
    manifest: &ImageManifest,
    counter: Option<Arc<AtomicU64>>,
    work: F,
) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&dyn LayerSource) -> std::result::Result<T, FindError> + Send + 'static,
{
    let registry = registry.clone();
    let image = image.clone();
    let image_name = image.to_string();
    let manifest = manifest.clone();
    let handle = tokio::runtime::Handle::current();
    let task = tokio::task::spawn_blocking(move || {
        let source = RegistryLayers {
            registry: &registry,
            handle,
            image: &image,
            manifest: &manifest,
            counter,
        };
        work(&source).map_err(|e| find_error(&image, e))
    });
    task.await.map_err(|e| Error::CorruptLayer {
        image: image_name,
        reason: format!("layer reader stopped: {e}"),
    })?
}

/// Read `paths` from `image`'s layers as a container sees them, streaming.
pub async fn read_files(
    registry: &Registry,
    image: &ImageRef,
    manifest: &ImageManifest,
    paths: &[&str],
    limit: u64,
) -> Result<HashMap<String, Option<Vec<u8>>>> {
    let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
    with_layers(registry, image, manifest, None, move |source| {
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        layers::find_files(source, &paths, limit)
    })
    .await
}

/// `layers::find_first` over `image`'s layers, adding the compressed bytes read to `counter`.
pub async fn find_first(
    registry: &Registry,
    image: &ImageRef,
    manifest: &ImageManifest,
    wants: Vec<layers::Want>,
    limit: u64,
    counter: Arc<AtomicU64>,
) -> Result<Vec<Option<layers::FoundFile>>> {
    with_layers(registry, image, manifest, Some(counter), move |source| {
        layers::find_first(source, &wants, limit)
    })
    .await
}

/// The merged view of the subtrees `query` names, as a container sees them, reading no further
/// than `answered` needs (see `layers::scan_tree`).
pub async fn scan_tree<A>(
    registry: &Registry,
    image: &ImageRef,
    manifest: &ImageManifest,
    query: TreeQuery,
    mut answered: A,
) -> Result<Tree>
where
    A: FnMut(&Tree) -> bool + Send + 'static,
{
    with_layers(registry, image, manifest, None, move |source| {
        layers::scan_tree(source, &query, &mut answered)
    })
    .await
}

/// The image manifest of `image` for `goarch`, from the manifest `body` fetched for it: the
/// manifest itself, or the entry of a list or index for `linux/<goarch>`. Returns it and whether
/// a list was involved. `role` names the image in errors ("release image", "driver-toolkit
/// image", "kmod image").
pub async fn platform_manifest(
    registry: &Registry,
    image: &ImageRef,
    body: &[u8],
    goarch: &str,
    role: &'static str,
) -> Result<(ImageManifest, bool)> {
    let unsupported = |reason: String| Error::UnsupportedManifest {
        role,
        image: image.to_string(),
        reason,
    };
    match manifest::parse(body, None).map_err(unsupported)? {
        Manifest::Image(m) => Ok((m, false)),
        Manifest::Index(entries) => {
            let entry =
                manifest::select_platform(&entries, goarch).ok_or_else(|| Error::NoPlatform {
                    role,
                    image: image.to_string(),
                    platform: format!("linux/{goarch}"),
                    available: manifest::describe_platforms(&entries),
                })?;
            let child = image.pinned(&entry.digest);
            let fetched = registry
                .manifest(&child)
                .await
                .map_err(|e| e.with_role(role))?;
            match manifest::parse(&fetched.body, None).map_err(unsupported)? {
                Manifest::Image(m) => Ok((m, true)),
                Manifest::Index(_) => Err(unsupported("an index nested in an index".into())),
            }
        }
    }
}

/// A small blob (an image config), whole and verified against its digest; refused above `limit`.
pub async fn small_blob(
    registry: &Registry,
    image: &ImageRef,
    blob: &super::manifest::Descriptor,
    limit: u64,
) -> Result<Vec<u8>> {
    if blob.size > limit {
        return Err(Error::FileTooLarge {
            image: image.to_string(),
            path: format!("blob {}", blob.digest),
            size: blob.size,
            limit,
        });
    }
    let registry = registry.clone();
    let image = image.clone();
    let image_name = image.to_string();
    let blob = blob.clone();
    let handle = tokio::runtime::Handle::current();
    let task = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut bytes = Vec::new();
        registry
            .blob_reader(handle, &image, &blob)
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| find_error(&image, FindError::Io(e)))?;
        Ok(bytes)
    });
    task.await.map_err(|e| Error::CorruptLayer {
        image: image_name,
        reason: format!("blob reader stopped: {e}"),
    })?
}
