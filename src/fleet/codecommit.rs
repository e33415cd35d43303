//! AWS CodeCommit as a fleet source: every repository of an account in one region. The AWS
//! SDK lives in `crate::aws` and nowhere else (an architecture invariant), so this room says
//! what it needs, [`CodeCommitApi`], and the front end hands it one.

use crate::model::fleet::{Listing, Lookup};
use std::future::Future;
use std::pin::Pin;

pub type ApiFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The CodeCommit API calls discovery makes.
pub trait CodeCommitApi: Send + Sync {
    /// Every repository in `region` (the SDK's own region settings when `None`): its
    /// `repositoryId` as the id, its name as the path, its description, default branch and
    /// HTTPS clone URL. CodeCommit repositories are never public, archived or forks. A failed
    /// call leaves the listing incomplete and says why. Also how many API requests it made.
    fn list<'a>(&'a self, region: Option<&'a str>) -> ApiFuture<'a, (Listing, u32)>;

    /// Whether the repository `name` with the id `id` still exists: a repository of that name
    /// with another id is a new one, and the known one is gone.
    fn lookup<'a>(
        &'a self,
        region: Option<&'a str>,
        name: &'a str,
        id: &'a str,
    ) -> ApiFuture<'a, Lookup>;
}
