//! The AWS services ferry uses: S3 for the Lambda function's sync records ([`s3::S3Records`],
//! which survive cold starts), Secrets Manager for passwords fetched at run time, and
//! CodeCommit for fleets whose source is a CodeCommit account ([`codecommit::CodeCommit`]).
//!
//! Architecture invariant: `aws` imports only `engine` and `model`, and the AWS SDK is used
//! here and nowhere else. The engine says what a record store is
//! ([`crate::engine::record::RecordStore`]); this room provides one, and the Lambda front end
//! plugs it in.

pub mod codecommit;
pub mod s3;
pub mod secrets;

use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

/// The SDK's shared configuration: the default credential and region chain (in Lambda, the
/// execution role's credentials in the environment; `AWS_ENDPOINT_URL` is honoured), over
/// HTTPS with rustls and ring.
pub struct Aws {
    config: aws_config::SdkConfig,
}

impl Aws {
    pub async fn load() -> Aws {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .load()
            .await;
        Aws { config }
    }
}

/// An SDK error in full (the service's code and message, or the connection's failure), for
/// reports and logs. SDK errors carry no credentials.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    aws_sdk_s3::error::DisplayErrorContext(e).to_string()
}
