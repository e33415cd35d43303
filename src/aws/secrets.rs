//! Passwords read from Secrets Manager at run time, so they sit in no function configuration.
//! A reference is a secret's name or ARN, whose whole `SecretString` is the password, or
//! `NAME_OR_ARN#KEY`, the string at `KEY` of a JSON `SecretString` (secret names and ARNs
//! cannot contain `#`). Values never reach an error message or a log: errors name the secret,
//! never what it holds.

use super::{describe, Aws};
use crate::model::remote::Secret;

/// Reads the password `reference` names.
pub async fn password(aws: &Aws, reference: &str) -> Result<Secret, String> {
    let (id, key) = match reference.split_once('#') {
        Some((id, key)) => (id, Some(key)),
        None => (reference, None),
    };
    let client = aws_sdk_secretsmanager::Client::new(&aws.config);
    let out = client
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|e| format!("cannot read the secret {id}: {}", describe(&e)))?;
    let text = out.secret_string().ok_or_else(|| {
        format!("the secret {id} holds no SecretString (binary secrets are not supported)")
    })?;
    let value = match key {
        None => text.to_owned(),
        Some(key) => serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|json| json.get(key)?.as_str().map(str::to_owned))
            .ok_or_else(|| {
                format!("the secret {id} is not a JSON object with a string at the key {key}")
            })?,
    };
    if value.is_empty() {
        return Err(format!("the secret {id} holds an empty password"));
    }
    Ok(Secret::new(value))
}
