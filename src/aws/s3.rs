//! Sync records in an S3 bucket: one JSON object per (source, destination, ref selection),
//! read with its ETag and written with a conditional PUT (`If-Match` on that ETag, or
//! `If-None-Match: *` when creating), so two invocations never silently overwrite each other.

use super::{describe, Aws};
use crate::engine::record::{
    self, Contents, LfsState, RecordKey, RecordStore, StoreError, StoreFuture, Stored, Version,
    Written,
};
use crate::model::mirror::short_hash;
use crate::model::refs::RefMap;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;

/// The user metadata (`x-amz-meta-ferry-settled`) that holds a record's settled stamp: written
/// with the record in one PUT, so that any write without it leaves the record with none, and
/// read by a HEAD request, without the record.
const SETTLED_METADATA: &str = "ferry-settled";

pub struct S3Records {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

impl S3Records {
    /// Records under `prefix` (`""` for the bucket's root) in `bucket`.
    pub fn new(aws: &Aws, bucket: &str, prefix: &str) -> S3Records {
        S3Records {
            client: aws_sdk_s3::Client::new(&aws.config),
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        }
    }

    /// `PREFIX<source slug>-<source hash>/<destination hash>-<selection hash>.json`: hashes of
    /// the credential-free URLs; the object itself says what it is the record of.
    pub fn object_key(&self, key: RecordKey<'_>) -> String {
        format!(
            "{}{}-{}/{}-{}.json",
            self.prefix,
            key.source.slug(),
            short_hash(key.source.identity()),
            short_hash(key.destination.identity()),
            key.selection_id()
        )
    }

    fn location(&self, object: &str) -> String {
        format!("s3://{}/{object}", self.bucket)
    }

    /// The object `PREFIX<name>` (a fleet's inventory, `fleets/<fleet>.json`); `None` when
    /// there is none.
    pub async fn get_file(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
        let object = format!("{}{name}", self.prefix);
        let got = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&object)
            .send()
            .await;
        let out = match got {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
            Err(e) => {
                return Err(format!(
                    "cannot read {}: {}",
                    self.location(&object),
                    describe(&e)
                ))
            }
        };
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| format!("cannot read {}: {}", self.location(&object), describe(&e)))?;
        Ok(Some(bytes.into_bytes().to_vec()))
    }

    /// Replaces the object `PREFIX<name>`. Unconditional: the fleet function runs one
    /// invocation at a time (reserved concurrency 1), so its writes never race.
    pub async fn put_file(&self, name: &str, bytes: Vec<u8>) -> Result<(), String> {
        let object = format!("{}{name}", self.prefix);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&object)
            .content_type("application/json")
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("cannot write {}: {}", self.location(&object), describe(&e)))
    }
}

impl RecordStore for S3Records {
    fn load<'a>(&'a self, key: RecordKey<'a>) -> StoreFuture<'a, Stored> {
        Box::pin(async move {
            let object = self.object_key(key);
            let got = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&object)
                .send()
                .await;
            let out = match got {
                Ok(out) => out,
                Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                    return Ok(Stored {
                        refs: RefMap::new(),
                        lfs: LfsState::default(),
                        version: Version::Absent,
                        settled: None,
                    })
                }
                Err(e) => {
                    return Err(StoreError(format!(
                        "cannot read {}: {}",
                        self.location(&object),
                        describe(&e)
                    )))
                }
            };
            let etag = out.e_tag().map(str::to_owned).ok_or_else(|| {
                StoreError(format!(
                    "reading {} returned no ETag, which conditional writes need",
                    self.location(&object)
                ))
            })?;
            let settled = out
                .metadata()
                .and_then(|m| m.get(SETTLED_METADATA))
                .cloned();
            let bytes = out.body.collect().await.map_err(|e| {
                StoreError(format!(
                    "cannot read {}: {}",
                    self.location(&object),
                    describe(&e)
                ))
            })?;
            let (refs, lfs) = record::decode(&bytes.into_bytes(), &self.location(&object));
            Ok(Stored {
                refs,
                lfs,
                version: Version::Tag(etag),
                settled,
            })
        })
    }

    fn settled<'a>(&'a self, key: RecordKey<'a>) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            let object = self.object_key(key);
            let head = self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(&object)
                .send()
                .await;
            match head {
                Ok(out) => Ok(out
                    .metadata()
                    .and_then(|m| m.get(SETTLED_METADATA))
                    .cloned()),
                Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(None),
                Err(e) => Err(StoreError(format!(
                    "cannot read {}: {}",
                    self.location(&object),
                    describe(&e)
                ))),
            }
        })
    }

    fn save<'a>(
        &'a self,
        key: RecordKey<'a>,
        contents: Contents<'a>,
        expected: &'a Version,
    ) -> StoreFuture<'a, Written> {
        Box::pin(async move {
            let object = self.object_key(key);
            let put = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&object)
                .content_type("application/json")
                .set_metadata(
                    contents
                        .settled
                        .map(|stamp| [(SETTLED_METADATA.to_owned(), stamp.to_owned())].into()),
                )
                .body(ByteStream::from(record::encode(key, contents)?));
            let put = match expected {
                Version::Absent => put.if_none_match("*"),
                Version::Tag(etag) => put.if_match(etag),
            };
            match put.send().await {
                Ok(out) => Ok(Written::Saved(match out.e_tag() {
                    Some(etag) => Version::Tag(etag.to_owned()),
                    // Without the new ETag the next save of this run cannot be conditional on
                    // it; a version that matches nothing makes it re-read instead.
                    None => Version::Tag(String::new()),
                })),
                Err(e) => {
                    let status = e.raw_response().map(|r| r.status().as_u16());
                    // 412: the ETag no longer matches, or the object now exists; 409: another
                    // conditional write to it is in flight; 404: it was deleted since it was
                    // read (If-Match on a missing object).
                    let lost = matches!(status, Some(412 | 409))
                        || matches!(
                            e.code(),
                            Some("PreconditionFailed" | "ConditionalRequestConflict")
                        )
                        || (status == Some(404) && matches!(expected, Version::Tag(_)));
                    if lost {
                        Ok(Written::Conflict)
                    } else {
                        Err(StoreError(format!(
                            "cannot write {}: {}",
                            self.location(&object),
                            describe(&e)
                        )))
                    }
                }
            }
        })
    }
}
