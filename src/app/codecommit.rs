//! The CodeCommit API fleets list their CodeCommit sources with: `crate::aws`'s client
//! behind `crate::fleet`'s interface (the fleet room does not link the AWS SDK).

use crate::config::{FleetSource, FleetSpec};
use crate::fleet::codecommit::CodeCommitApi;

/// A CodeCommit API when a fleet has a CodeCommit source (the SDK's configuration is loaded
/// only then); `None` otherwise, and in a build without AWS support, where discovering such a
/// fleet says so.
pub async fn api_for<'a>(
    fleets: impl IntoIterator<Item = &'a FleetSpec>,
) -> Option<Box<dyn CodeCommitApi>> {
    if !fleets
        .into_iter()
        .any(|f| matches!(f.source, FleetSource::CodeCommit { .. }))
    {
        return None;
    }
    load().await
}

#[cfg(feature = "aws")]
async fn load() -> Option<Box<dyn CodeCommitApi>> {
    let aws = crate::aws::Aws::load().await;
    Some(Box::new(crate::aws::codecommit::CodeCommit::new(&aws)))
}

#[cfg(not(feature = "aws"))]
async fn load() -> Option<Box<dyn CodeCommitApi>> {
    None
}

#[cfg(feature = "aws")]
mod adapter {
    use crate::aws::codecommit::CodeCommit;
    use crate::fleet::codecommit::{ApiFuture, CodeCommitApi};
    use crate::model::fleet::{Listing, Lookup};

    impl CodeCommitApi for CodeCommit {
        fn list<'a>(&'a self, region: Option<&'a str>) -> ApiFuture<'a, (Listing, u32)> {
            Box::pin(CodeCommit::list(self, region))
        }

        fn lookup<'a>(
            &'a self,
            region: Option<&'a str>,
            name: &'a str,
            id: &'a str,
        ) -> ApiFuture<'a, Lookup> {
            Box::pin(CodeCommit::lookup(self, region, name, id))
        }
    }
}
