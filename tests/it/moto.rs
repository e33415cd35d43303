//! moto's server as the local S3 and Secrets Manager of the Lambda tests: one per test, on a
//! free loopback port, spoken to over plain HTTP. moto checks no signatures, so the test's own
//! requests carry an Authorization header only to name the service they are for.

use crate::harness::free_port;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    port: u16,
}

const REGION: &str = "us-east-1";

impl Moto {
    pub fn start() -> Moto {
        assert!(
            Command::new("moto_server")
                .arg("--help")
                .output()
                .is_ok_and(|o| o.status.success()),
            "moto_server is not installed: run scripts/test.sh (it installs moto[server] with pip)"
        );
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while ureq::get(&format!("{}/moto-api/", moto.endpoint()))
            .call()
            .is_err()
        {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What a function needs to use this as its AWS: the endpoint, a region and dummy
    /// credentials.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ]
    }

    fn request(&self, method: &str, path: &str, service: &str) -> ureq::Request {
        ureq::request(method, &format!("{}{path}", self.endpoint())).set(
            "Authorization",
            &format!("AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/{service}/aws4_request, SignedHeaders=host, Signature=0"),
        )
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.request("PUT", &format!("/{bucket}"), "s3")
            .call()
            .expect("create a bucket");
    }

    /// The keys of every object in the bucket.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let xml = self
            .request("GET", &format!("/{bucket}?list-type=2"), "s3")
            .call()
            .expect("list a bucket")
            .into_string()
            .expect("listing text");
        xml.split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Key>").map(|(k, _)| k.to_owned()))
            .collect()
    }

    pub fn get(&self, bucket: &str, key: &str) -> String {
        self.request("GET", &format!("/{bucket}/{key}"), "s3")
            .call()
            .expect("get an object")
            .into_string()
            .expect("object text")
    }

    /// The object's user metadata `name` (`x-amz-meta-<name>`), read by a HEAD request.
    pub fn metadata(&self, bucket: &str, key: &str, name: &str) -> Option<String> {
        self.request("HEAD", &format!("/{bucket}/{key}"), "s3")
            .call()
            .expect("head an object")
            .header(&format!("x-amz-meta-{name}"))
            .map(str::to_owned)
    }

    pub fn put(&self, bucket: &str, key: &str, body: &str) {
        self.request("PUT", &format!("/{bucket}/{key}"), "s3")
            .send_string(body)
            .expect("put an object");
    }
}

impl Moto {
    /// A Secrets Manager call (JSON protocol); the response's JSON.
    fn secretsmanager(&self, action: &str, body: serde_json::Value) -> serde_json::Value {
        self.request("POST", "/", "secretsmanager")
            .set("X-Amz-Target", &format!("secretsmanager.{action}"))
            .set("Content-Type", "application/x-amz-json-1.1")
            .send_string(&body.to_string())
            .unwrap_or_else(|e| panic!("secretsmanager {action}: {e}"))
            .into_json()
            .expect("a JSON response")
    }

    /// Creates a secret; returns its ARN.
    pub fn create_secret(&self, name: &str, value: &str) -> String {
        let out = self.secretsmanager(
            "CreateSecret",
            serde_json::json!({ "Name": name, "SecretString": value }),
        );
        out["ARN"]
            .as_str()
            .expect("the new secret's ARN")
            .to_owned()
    }

    pub fn put_secret_value(&self, id: &str, value: &str) {
        self.secretsmanager(
            "PutSecretValue",
            serde_json::json!({ "SecretId": id, "SecretString": value }),
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
