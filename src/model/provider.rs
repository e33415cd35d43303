//! Who sends ferry events: the hosting providers whose webhooks (and events) ferry understands.
//! A mirror may pin one (`webhook_provider`), so no other authentication scheme is accepted.

/// Who sent a delivery. Decides how it is authenticated and how its payload is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum Provider {
    #[serde(rename = "github")]
    GitHub,
    #[serde(rename = "gitlab")]
    GitLab,
    #[serde(rename = "gitea")]
    Gitea,
    #[serde(rename = "forgejo")]
    Forgejo,
    #[serde(rename = "bitbucket_cloud")]
    BitbucketCloud,
    #[serde(rename = "bitbucket_server")]
    BitbucketServer,
    #[serde(rename = "codecommit")]
    CodeCommit,
    #[serde(rename = "generic")]
    Generic,
}

impl Provider {
    pub const ALL: [Provider; 8] = [
        Provider::GitHub,
        Provider::GitLab,
        Provider::Gitea,
        Provider::Forgejo,
        Provider::BitbucketCloud,
        Provider::BitbucketServer,
        Provider::CodeCommit,
        Provider::Generic,
    ];

    /// The provider with this machine name ([`Provider::as_str`]).
    pub fn parse(name: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// The stable machine name (logs, metrics labels, the status page).
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::GitLab => "gitlab",
            Provider::Gitea => "gitea",
            Provider::Forgejo => "forgejo",
            Provider::BitbucketCloud => "bitbucket_cloud",
            Provider::BitbucketServer => "bitbucket_server",
            Provider::CodeCommit => "codecommit",
            Provider::Generic => "generic",
        }
    }

    /// The name people know the provider by, for messages.
    pub fn label(self) -> &'static str {
        match self {
            Provider::GitHub => "GitHub",
            Provider::GitLab => "GitLab",
            Provider::Gitea => "Gitea",
            Provider::Forgejo => "Forgejo",
            Provider::BitbucketCloud => "Bitbucket Cloud",
            Provider::BitbucketServer => "Bitbucket Server",
            Provider::CodeCommit => "CodeCommit",
            Provider::Generic => "generic",
        }
    }
}
