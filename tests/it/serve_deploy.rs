//! The deployment files for `ferry serve` (deploy/systemd, deploy/cluster) are checked by the
//! tools that read them: systemd's verifier, nginx's config test, and ferry itself. The
//! container file (deploy/container) is not built here: no container engine runs in the tests.

use crate::harness::unique;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = std::fs::read_to_string(repo_file("deploy/systemd/ferry.service"))
        .expect("read the unit")
        .replace("/usr/local/bin/ferry", env!("CARGO_BIN_EXE_ferry"));
    let path = dir.path().join("ferry.service");
    std::fs::write(&path, unit).expect("write the unit");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze (Debian package systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ferry.service"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{stderr}");
}

#[test]
fn the_cluster_nginx_example_passes_nginx_config_test() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The example's node host names resolve only in its deployment.
    let conf = std::fs::read_to_string(repo_file("deploy/cluster/nginx.conf"))
        .expect("read nginx.conf")
        .replace("ferry-a:", "127.0.0.1:")
        .replace("ferry-b:", "127.0.0.2:")
        .replace("ferry-c:", "127.0.0.3:")
        .replace("http {", "http {\n    access_log off;")
        .replace(
            "listen 80;",
            &format!("listen 127.0.0.1:{};", crate::harness::free_port()),
        );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).expect("write nginx.conf");
    let out = Command::new("nginx")
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&path)
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .arg("-g")
        .arg(format!("pid {};", dir.path().join("nginx.pid").display()))
        .output()
        .expect("run nginx (Debian package nginx-light)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
}

#[test]
fn the_cluster_example_config_is_valid_and_status_reads_the_cluster_store() {
    let url = crate::cluster::database_url(&unique("example").replace('-', "_"));
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["status", "--config"])
        .arg(repo_file("deploy/cluster/ferry.toml"))
        .args([
            "--listen",
            &format!("127.0.0.1:{}", crate::harness::free_port()),
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("FERRY_STORE_URL", &url)
        .env("APP_WEBHOOK_SECRET", "s3cret")
        .env("FERRY_ADMIN_TOKEN", "t0ken")
        .output()
        .expect("run ferry status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // No node has run on this store yet: it is empty, and it had to be reached to say so.
    assert_eq!(
        out.status.code(),
        Some(1),
        "not a configuration error: {stderr}"
    );
    assert!(
        stderr.contains("cluster's store postgres://127.0.0.1:"),
        "{stderr}"
    );
    assert!(stderr.contains("no ferry tables yet"), "{stderr}");
    assert!(
        !stderr.contains("ferry@"),
        "the URL's user stays out: {stderr}"
    );
}
