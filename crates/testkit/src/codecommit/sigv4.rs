//! AWS Signature Version 4, as a service checks it: the `Authorization`
//! header's form, its credential scope, the clock skew, and the signature
//! itself (recomputed from the request, the secret key and the scope).

use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// How far a request's `X-Amz-Date` may be from the service's clock.
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// What a service knows to check a signature.
pub struct Verifier<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

/// A request as signed: method, path, query, headers (names lowercase) and
/// body.
pub struct Signed<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// Why a request is refused: the AWS error type and its message.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub kind: &'static str,
    pub message: String,
}

fn refuse(kind: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        kind,
        message: message.into(),
    }
}

impl Signed<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Verifier<'_> {
    /// Accepts a request signed by this key for this region and service, as
    /// AWS's front end answers otherwise.
    pub fn verify(&self, request: &Signed, now: SystemTime) -> Result<(), Refusal> {
        let Some(authorization) = request.header("authorization") else {
            return Err(refuse(
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            ));
        };
        let rest = authorization
            .strip_prefix("AWS4-HMAC-SHA256 ")
            .ok_or_else(|| {
                refuse(
                    "IncompleteSignature",
                    "Authorization header requires the AWS4-HMAC-SHA256 algorithm",
                )
            })?;
        let mut credential = None;
        let mut signed_headers = None;
        let mut signature = None;
        for part in rest.split(',').map(str::trim) {
            match part.split_once('=') {
                Some(("Credential", v)) => credential = Some(v),
                Some(("SignedHeaders", v)) => signed_headers = Some(v),
                Some(("Signature", v)) => signature = Some(v),
                _ => {}
            }
        }
        let (Some(credential), Some(signed_headers), Some(signature)) =
            (credential, signed_headers, signature)
        else {
            return Err(refuse(
                "IncompleteSignature",
                "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' \
                 parameters",
            ));
        };
        let scope: Vec<&str> = credential.split('/').collect();
        let [key, date, region, service, terminator] = scope[..] else {
            return Err(refuse(
                "IncompleteSignature",
                format!(
                    "Credential {credential:?} is not <key>/<date>/<region>/<service>/aws4_request"
                ),
            ));
        };
        if key != self.access_key_id {
            return Err(refuse(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ));
        }
        if region != self.region {
            return Err(refuse(
                "InvalidSignatureException",
                format!(
                    "Credential should be scoped to a valid region, not '{region}'. Use '{}'.",
                    self.region
                ),
            ));
        }
        if service != self.service || terminator != "aws4_request" {
            return Err(refuse(
                "InvalidSignatureException",
                format!(
                    "Credential should be scoped to correct service: '{}'.",
                    self.service
                ),
            ));
        }
        let amz_date = request.header("x-amz-date").unwrap_or("");
        let Some(at) = parse_amz_date(amz_date) else {
            return Err(refuse(
                "IncompleteSignature",
                "X-Amz-Date must be a date like 20240101T000000Z",
            ));
        };
        if !amz_date.starts_with(date) || date.len() != 8 {
            return Err(refuse(
                "InvalidSignatureException",
                format!("Date in Credential scope does not match YYYYMMDD from X-Amz-Date: {date}"),
            ));
        }
        let skew = now
            .duration_since(at)
            .or_else(|_| at.duration_since(now))
            .unwrap_or_default();
        if skew > MAX_SKEW {
            return Err(refuse(
                "InvalidSignatureException",
                format!("Signature expired: {amz_date} is more than 15 minutes from now"),
            ));
        }
        let names: Vec<&str> = signed_headers.split(';').collect();
        if !names.contains(&"host") || !names.windows(2).all(|w| w[0] < w[1]) {
            return Err(refuse(
                "InvalidSignatureException",
                "SignedHeaders must be sorted, lowercase, and include host",
            ));
        }
        let canonical = canonical_request(request, &names, signed_headers).map_err(|missing| {
            refuse(
                "InvalidSignatureException",
                format!("the signed header {missing} is not in the request"),
            )
        })?;
        let scope = format!("{date}/{region}/{service}/aws4_request");
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let mut signing_key = format!("AWS4{}", self.secret_access_key).into_bytes();
        for part in [date, region, service, "aws4_request"] {
            signing_key = hmac(&signing_key, part.as_bytes());
        }
        if hex(&hmac(&signing_key, to_sign.as_bytes())) != signature {
            return Err(refuse(
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided. \
                 Check your AWS Secret Access Key and signing method.",
            ));
        }
        Ok(())
    }
}

/// The canonical request; `Err` names a signed header the request lacks.
fn canonical_request<'a>(
    request: &Signed,
    names: &[&'a str],
    signed_headers: &str,
) -> Result<String, &'a str> {
    let mut headers = String::new();
    for name in names {
        let values: Vec<String> = request
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        if values.is_empty() {
            return Err(name);
        }
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let mut query: Vec<&str> = request.query.split('&').filter(|p| !p.is_empty()).collect();
    query.sort_unstable();
    let payload = match request.header("x-amz-content-sha256") {
        Some(hash) => hash.to_string(),
        None => hex(&Sha256::digest(request.body)),
    };
    Ok(format!(
        "{}\n{}\n{}\n{headers}\n{signed_headers}\n{payload}",
        request.method,
        request.path,
        query.join("&")
    ))
}

/// `20240101T000000Z` as a time.
fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &text[0..4],
        &text[4..6],
        &text[6..8],
        &text[9..11],
        &text[11..13],
        &text[13..15]
    );
    humantime::parse_rfc3339(&rfc3339).ok()
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERIFIER: Verifier<'static> = Verifier {
        access_key_id: "AKIDEXAMPLE",
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        region: "us-east-1",
        service: "iam",
    };

    /// AWS's worked example of a signed request (IAM ListUsers, in the
    /// SigV4 documentation), with its published signature.
    fn example(authorization: &str) -> Result<(), Refusal> {
        let headers = vec![
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            ),
            ("host".to_string(), "iam.amazonaws.com".to_string()),
            ("x-amz-date".to_string(), "20150830T123600Z".to_string()),
            ("authorization".to_string(), authorization.to_string()),
        ];
        let request = Signed {
            method: "GET",
            path: "/",
            query: "Version=2010-05-08&Action=ListUsers",
            headers: &headers,
            body: b"",
        };
        let now = parse_amz_date("20150830T123900Z").expect("a valid date");
        VERIFIER.verify(&request, now)
    }

    fn authorization(key: &str, region: &str, signature: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential={key}/20150830/{region}/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, Signature={signature}"
        )
    }

    const SIGNATURE: &str = "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";

    #[test]
    fn the_documented_example_verifies() {
        assert_eq!(
            example(&authorization("AKIDEXAMPLE", "us-east-1", SIGNATURE)),
            Ok(())
        );
    }

    #[test]
    fn a_wrong_key_region_or_signature_is_refused_as_aws_does() {
        let kind = |auth: &str| example(auth).map_err(|r| r.kind);
        assert_eq!(
            kind(&authorization("AKIDOTHER", "us-east-1", SIGNATURE)),
            Err("UnrecognizedClientException")
        );
        assert_eq!(
            kind(&authorization("AKIDEXAMPLE", "eu-west-1", SIGNATURE)),
            Err("InvalidSignatureException")
        );
        let tampered = SIGNATURE.replace('5', "6");
        assert_eq!(
            kind(&authorization("AKIDEXAMPLE", "us-east-1", &tampered)),
            Err("InvalidSignatureException")
        );
        assert_eq!(kind("Bearer x"), Err("IncompleteSignature"));
        assert_eq!(
            kind("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request"),
            Err("IncompleteSignature")
        );
    }
}
