//! An EventBridge event as the Lambda function or the webhook path receives it: any JSON.
#![no_main]

use ferry::intake::codecommit;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(serde_json::Value::Object(body)) = serde_json::from_slice(data) {
        let _ = codecommit::repository(&body);
        let _ = codecommit::classify(&body);
    }
});
