//! A dataset repository on the Hugging Face Hub, through distill's Hub client: the repository
//! is created private when missing; a snapshot's data (through Git LFS, in parts when the Hub
//! asks for them), its manifest and the removal of pruned snapshots are one commit, which the
//! Hub applies atomically. The token (`HF_TOKEN`) is sent to the Hub only, never to the
//! storage URLs it hands out, and never written anywhere.

use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::remote::{Listing, Prune};
use distill_hub::{HubAccess, HubClient, UploadFile};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// The branch snapshots are committed to.
const REVISION: &str = "main";
/// Attempts per Hub call.
const ATTEMPTS: u32 = 5;
/// Time allowed for one Hub call.
const TIMEOUT: Duration = Duration::from_secs(300);

/// A run's folder in a Hub dataset repository.
pub(crate) struct HubRemote {
    url: String,
    repo: String,
    folder: String,
    client: HubClient,
}

impl HubRemote {
    /// The folder `folder` of dataset `repo`, with `access`'s endpoint and token.
    pub fn open(url: &str, repo: &str, folder: &str, access: &HubAccess) -> Result<Self> {
        let retry = distill_hub::hub_retry_policy(ATTEMPTS, TIMEOUT);
        let client =
            HubClient::new(&access.endpoint, access.token.clone(), retry).map_err(|source| {
                Error::Hub {
                    url: url.to_owned(),
                    source: Box::new(source),
                }
            })?;
        Ok(Self {
            url: url.to_owned(),
            repo: repo.to_owned(),
            folder: folder.to_owned(),
            client,
        })
    }

    fn hub(&self) -> impl FnOnce(distill_hub::Error) -> Error + '_ {
        |source| Error::Hub {
            url: self.url.clone(),
            source: Box::new(source),
        }
    }

    fn read_failed(&self) -> impl FnOnce(distill_http::Error) -> Error + '_ {
        |source| Error::HubRead {
            url: self.url.clone(),
            source: Box::new(source),
        }
    }

    fn path(&self, relative: &str) -> String {
        format!("{}/{relative}", self.folder)
    }

    /// Creates the repository, private, when it does not exist.
    pub fn prepare(&self) -> Result<()> {
        self.client
            .create_repo(&self.repo, true)
            .map_err(self.hub())
    }

    /// The snapshot paths of the run's folder at the branch's current commit.
    pub fn list(&self) -> Result<Listing> {
        let sha = match self.client.revision_sha(&self.repo, REVISION) {
            Ok(sha) => sha,
            // No repository yet: no snapshot.
            Err(e) if e.status() == Some(404) => return Ok(Listing::default()),
            Err(e) => return Err(self.read_failed()(e)),
        };
        let files = self
            .client
            .tree(&self.repo, &sha)
            .map_err(self.read_failed())?;
        let prefix = format!("{}/", self.folder);
        let mut listing =
            Listing::from_paths(files.iter().filter_map(|f| f.path.strip_prefix(&prefix)));
        listing.revision = Some(sha);
        Ok(listing)
    }

    fn revision<'a>(&self, listing: &'a Listing) -> &'a str {
        listing.revision.as_deref().unwrap_or(REVISION)
    }

    /// A small file of the listed commit, whole.
    pub fn read(&self, listing: &Listing, relative: &str) -> Result<Vec<u8>> {
        self.client
            .read_file(&self.repo, self.revision(listing), &self.path(relative))
            .map_err(self.read_failed())
    }

    /// One commit: the data, the manifest, and the pruned snapshots removed.
    pub fn publish(&self, file: &Path, manifest: &Manifest, prune: &Prune) -> Result<()> {
        let bytes = std::fs::read(file).map_err(Error::io(file))?;
        let files = [
            UploadFile {
                path: self.path(&manifest.data),
                bytes,
            },
            UploadFile {
                path: self.path(&Manifest::manifest_path(&manifest.name)),
                bytes: manifest.to_json(),
            },
        ];
        let deleted: Vec<String> = prune.paths().iter().map(|p| self.path(p)).collect();
        if crate::fault::Fault::HoldAfterPart.armed() {
            crate::fault::Fault::HoldAfterPart.hold();
        }
        let summary = format!(
            "distill snapshot {} of {} (log position {})",
            manifest.name, manifest.pipeline, manifest.log_position
        );
        self.client
            .commit(&self.repo, REVISION, &summary, &files, &deleted)
            .map_err(self.hub())?;
        Ok(())
    }

    /// Downloads the data of `manifest` at the listed commit into `dest` (created); a dropped
    /// connection resumes where it stopped.
    pub fn download(&self, listing: &Listing, manifest: &Manifest, dest: &Path) -> Result<()> {
        let mut file = std::fs::File::create(dest).map_err(Error::io(dest))?;
        self.client
            .download_to(
                &self.repo,
                self.revision(listing),
                &self.path(&manifest.data),
                manifest.size,
                &mut file,
                &AtomicBool::new(false),
            )
            .map_err(self.read_failed())?
            .map_err(Error::io(dest))?;
        file.sync_all().map_err(Error::io(dest))
    }
}
