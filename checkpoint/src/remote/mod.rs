//! The stores snapshots go to, behind one interface: object stores through the `object_store`
//! crate ([`objects`]: S3, GCS, Azure, a local directory) and the Hugging Face Hub through
//! distill's Hub client ([`hub`]).
//!
//! Paths given to a remote are relative to the run's folder (`manifests/NAME.json`,
//! `data/NAME.redb.zst`).

pub(crate) mod hub;
pub(crate) mod objects;

use crate::error::Result;
use crate::manifest::{DATA, MANIFESTS, Manifest};
use crate::target::{Identity, Place, Target};
use distill_hub::HubAccess;
use std::collections::BTreeSet;
use std::path::Path;

/// What a run's folder holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Listing {
    /// Names of the snapshots with a manifest, oldest first.
    pub manifests: Vec<String>,
    /// Names of the snapshots with data, oldest first.
    pub data: Vec<String>,
    /// The commit listed (the Hub): later reads read that commit.
    pub revision: Option<String>,
}

/// What a new snapshot makes obsolete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Prune {
    /// Snapshots whose manifest is removed (first: from then on no reader picks them).
    pub manifests: Vec<String>,
    /// Snapshots whose data is removed (after their manifests).
    pub data: Vec<String>,
}

impl Prune {
    /// Every path removed, manifests first.
    pub fn paths(&self) -> Vec<String> {
        self.manifests
            .iter()
            .map(|n| Manifest::manifest_path(n))
            .chain(self.data.iter().map(|n| Manifest::data_path(n)))
            .collect()
    }
}

impl Listing {
    /// Sorts the names in a listing of paths relative to the run's folder.
    pub fn from_paths<'a>(paths: impl IntoIterator<Item = &'a str>) -> Self {
        let mut manifests = BTreeSet::new();
        let mut data = BTreeSet::new();
        for path in paths {
            match Manifest::name_in(path) {
                Some((MANIFESTS, name)) => {
                    manifests.insert(name);
                }
                Some((DATA, name)) => {
                    data.insert(name);
                }
                _ => {}
            }
        }
        Self {
            manifests: manifests.into_iter().collect(),
            data: data.into_iter().collect(),
            revision: None,
        }
    }

    /// What goes once snapshot `new` is complete, keeping the `keep` newest complete ones:
    /// the manifests of the others, their data, and data without a manifest older than every
    /// snapshot kept (an upload that was cut off; a newer one may be under way elsewhere).
    pub fn prune(&self, new: &str, keep: u32) -> Prune {
        let mut complete: BTreeSet<&str> = self.manifests.iter().map(String::as_str).collect();
        complete.insert(new);
        let kept: BTreeSet<&str> = complete.iter().rev().take(keep as usize).copied().collect();
        let oldest_kept = kept.iter().next().copied().unwrap_or(new);
        let manifests: Vec<String> = self
            .manifests
            .iter()
            .filter(|n| !kept.contains(n.as_str()))
            .cloned()
            .collect();
        let data = self
            .data
            .iter()
            .filter(|n| {
                !kept.contains(n.as_str())
                    && n.as_str() != new
                    && (manifests.contains(n) || n.as_str() < oldest_kept)
            })
            .cloned()
            .collect();
        Prune { manifests, data }
    }
}

/// A store holding one run's folder.
pub(crate) enum Remote {
    /// S3, GCS, Azure or a local directory.
    Objects(objects::Objects),
    /// A Hub dataset repository.
    Hub(hub::HubRemote),
}

impl Remote {
    /// The store of `target`, at `identity`'s folder. Object store credentials come from the
    /// environment; the Hub's from `hub`.
    pub fn open(target: &Target, identity: &Identity, hub: &HubAccess) -> Result<Self> {
        let folder = target.folder(identity);
        Ok(match &target.place {
            Place::Objects { scheme, bucket, .. } => Remote::Objects(objects::Objects::open(
                &target.url,
                scheme,
                bucket,
                &folder,
            )?),
            Place::Hub { repo, .. } => {
                Remote::Hub(hub::HubRemote::open(&target.url, repo, &folder, hub)?)
            }
        })
    }

    /// Readies the store for writing: the Hub repository is created (private) if missing.
    pub fn prepare(&self) -> Result<()> {
        match self {
            Remote::Objects(_) => Ok(()),
            Remote::Hub(hub) => hub.prepare(),
        }
    }

    /// The run's folder.
    pub fn list(&self) -> Result<Listing> {
        match self {
            Remote::Objects(o) => o.list(),
            Remote::Hub(h) => h.list(),
        }
    }

    /// A manifest's bytes, as of `listing`.
    pub fn read(&self, listing: &Listing, path: &str) -> Result<Vec<u8>> {
        match self {
            Remote::Objects(o) => o.read(path),
            Remote::Hub(h) => h.read(listing, path),
        }
    }

    /// Uploads a snapshot: its data (in parts), then its manifest, then removes what `prune`
    /// says. On the Hub, all of it is one atomic commit.
    pub fn publish(&self, file: &Path, manifest: &Manifest, prune: &Prune) -> Result<()> {
        match self {
            Remote::Objects(o) => o.publish(file, manifest, prune),
            Remote::Hub(h) => h.publish(file, manifest, prune),
        }
    }

    /// Downloads the data of `manifest` (as of `listing`) into `dest` (created).
    pub fn download(&self, listing: &Listing, manifest: &Manifest, dest: &Path) -> Result<()> {
        match self {
            Remote::Objects(o) => o.download(&manifest.data, dest),
            Remote::Hub(h) => h.download(listing, manifest, dest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[u64]) -> Vec<String> {
        n.iter().map(|p| Manifest::name_for(*p, 1)).collect()
    }

    #[test]
    fn pruning_keeps_the_newest_complete_snapshots_and_a_newer_upload_under_way() {
        let listing = Listing {
            manifests: names(&[1, 2, 3, 4]),
            // 0: an old cut-off upload; 5: one under way elsewhere; 6: the new one.
            data: names(&[0, 1, 2, 3, 4, 5, 6]),
            revision: None,
        };
        let new = Manifest::name_for(6, 1);
        let prune = listing.prune(&new, 3);
        // Kept: 6, 4 and 3.
        assert_eq!(prune.manifests, names(&[1, 2]));
        assert_eq!(prune.data, names(&[0, 1, 2]));
        assert_eq!(prune.paths()[0], Manifest::manifest_path(&names(&[1])[0]));
        let all = listing.prune(&new, 100);
        assert_eq!(
            all,
            Prune {
                manifests: vec![],
                data: names(&[0])
            }
        );
    }

    #[test]
    fn a_listing_knows_only_snapshot_paths() {
        let m = Manifest::name_for(3, 9);
        let l = Listing::from_paths([
            Manifest::manifest_path(&m).as_str(),
            Manifest::data_path(&m).as_str(),
            "data/x#1",
            "README.md",
        ]);
        assert_eq!(l.manifests, vec![m.clone()]);
        assert_eq!(l.data, vec![m]);
    }
}
