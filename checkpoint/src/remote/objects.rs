//! Object stores through the `object_store` crate: S3 (and S3-compatible servers), Google
//! Cloud Storage, Azure Blob Storage and a local directory. Credentials and endpoints come from
//! the environment variables each store's builder reads (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
//!
//! Data goes up as a multipart upload: the object appears only when the upload is completed,
//! so an upload cut off midway leaves nothing a reader sees (on S3, its parts stay billed
//! until a lifecycle rule aborts it; an error here aborts it). The manifest goes up after, in
//! one `put`, atomic on every store.

use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::remote::{Listing, Prune};
use crate::secrets::scrub;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

/// Bytes per uploaded part: above S3's 5 MiB minimum.
const PART_BYTES: usize = 8 << 20;
/// Parts uploading at once.
const PARTS_IN_FLIGHT: usize = 4;

/// A run's folder in an object store.
pub(crate) struct Objects {
    url: String,
    store: Arc<dyn ObjectStore>,
    folder: StorePath,
    runtime: tokio::runtime::Runtime,
}

/// Whether trying again may help with this failure of the store.
fn transient(error: &object_store::Error) -> bool {
    // A store's refusals that `object_store` reports as generic errors (a bucket that does
    // not exist, a key it does not know): the same call later fails the same way.
    const REFUSALS: [&str; 5] = [
        "NoSuchBucket",
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ContainerNotFound",
    ];
    if let object_store::Error::Generic { .. } = error {
        let text = describe(error);
        if REFUSALS.iter().any(|code| text.contains(code)) {
            return false;
        }
    }
    !matches!(
        error,
        object_store::Error::NotFound { .. }
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::UnknownConfigurationKey { .. }
    )
}

/// The error and its causes, each once, scrubbed of credentials.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    scrub(&text)
}

impl Objects {
    /// The folder `folder` of the store of `scheme` (`bucket` for s3, gs and az).
    pub fn open(url: &str, scheme: &str, bucket: &str, folder: &str) -> Result<Self> {
        let bad = |detail: String| Error::BadUrl {
            url: url.to_owned(),
            detail,
        };
        let built = match scheme {
            "s3" => object_store::aws::AmazonS3Builder::from_env()
                .with_url(format!("s3://{bucket}"))
                .build()
                .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
            "gs" => object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(format!("gs://{bucket}"))
                .build()
                .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
            "az" => object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(format!("az://{bucket}"))
                .build()
                .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
            "file" => {
                Ok(Arc::new(object_store::local::LocalFileSystem::new()) as Arc<dyn ObjectStore>)
            }
            other => return Err(bad(format!("'{other}' is not an object store scheme"))),
        };
        let store = built.map_err(|e| bad(describe(&e)))?;
        let folder = StorePath::parse(folder).map_err(|e| bad(describe(&e)))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Start {
                what: "I/O runtime",
                detail: e.to_string(),
            })?;
        Ok(Self {
            url: url.to_owned(),
            store,
            folder,
            runtime,
        })
    }

    fn path(&self, relative: &str) -> StorePath {
        relative
            .split('/')
            .fold(self.folder.clone(), |path, part| path.clone().join(part))
    }

    fn failed(&self, action: impl Into<String>) -> impl FnOnce(object_store::Error) -> Error + '_ {
        let action = action.into();
        move |e| Error::Store {
            url: self.url.clone(),
            action,
            transient: transient(&e),
            detail: describe(&e),
        }
    }

    /// Every snapshot path in the run's folder.
    pub fn list(&self) -> Result<Listing> {
        let metas = self.runtime.block_on(async {
            let stream = self.store.list(Some(&self.folder));
            stream.try_collect::<Vec<_>>().await
        });
        let metas = match metas {
            Ok(metas) => metas,
            // A folder never written to (a local directory that does not exist yet).
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(self.failed("list the snapshots")(e)),
        };
        let prefix = format!("{}/", self.folder);
        let relative: Vec<String> = metas
            .iter()
            .filter_map(|m| m.location.as_ref().strip_prefix(&prefix).map(str::to_owned))
            .collect();
        Ok(Listing::from_paths(relative.iter().map(String::as_str)))
    }

    /// A small object, whole.
    pub fn read(&self, relative: &str) -> Result<Vec<u8>> {
        let path = self.path(relative);
        self.runtime
            .block_on(async { self.store.get(&path).await?.bytes().await })
            .map(|b| b.to_vec())
            .map_err(self.failed(format!("read {relative}")))
    }

    /// Data in parts, then the manifest, then the pruned objects (manifests first).
    pub fn publish(&self, file: &Path, manifest: &Manifest, prune: &Prune) -> Result<()> {
        let data = self.path(&manifest.data);
        self.runtime
            .block_on(self.upload(file, &data, &manifest.data))?;
        let manifest_path = Manifest::manifest_path(&manifest.name);
        let path = self.path(&manifest_path);
        self.runtime
            .block_on(self.store.put(&path, manifest.to_json().into()))
            .map_err(self.failed(format!("write {manifest_path}")))?;
        for relative in prune.paths() {
            let path = self.path(&relative);
            match self.runtime.block_on(self.store.delete(&path)) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.failed(format!("delete {relative}"))(e)),
            }
        }
        Ok(())
    }

    /// A multipart upload of `file` to `path`, aborted on failure.
    async fn upload(&self, file: &Path, path: &StorePath, relative: &str) -> Result<()> {
        let action = format!("upload {relative}");
        let upload = self
            .store
            .put_multipart(path)
            .await
            .map_err(self.failed(action.clone()))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut input = std::fs::File::open(file).map_err(Error::io(file))?;
        let mut buf = vec![0u8; PART_BYTES];
        let mut parts = 0u64;
        loop {
            let n = read_full(&mut input, &mut buf).map_err(Error::io(file))?;
            if n == 0 {
                break;
            }
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(self.failed(action)(e));
            }
            writer.write(&buf[..n]);
            parts += 1;
            if parts == 1 && crate::fault::Fault::HoldAfterPart.armed() {
                // Let the first part reach the store, then wait to be killed.
                let _ = writer.wait_for_capacity(0).await;
                crate::fault::Fault::HoldAfterPart.hold();
            }
        }
        writer.finish().await.map_err(self.failed(action))?;
        Ok(())
    }

    /// Downloads `relative` into `dest` (created).
    pub fn download(&self, relative: &str, dest: &Path) -> Result<()> {
        let path = self.path(relative);
        let mut out = std::fs::File::create(dest).map_err(Error::io(dest))?;
        let action = format!("download {relative}");
        self.runtime.block_on(async {
            let mut stream = self
                .store
                .get(&path)
                .await
                .map_err(self.failed(action.clone()))?
                .into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(self.failed(action.clone()))?;
                out.write_all(&chunk).map_err(Error::io(dest))?;
            }
            out.sync_all().map_err(Error::io(dest))
        })
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}
