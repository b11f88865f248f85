//! The container image and the install instructions: `scripts/image` builds an OCI image from
//! scratch (no registry pull) whose filesystem runs ebb as UID 65532 on a read-only root, and
//! docs/operations.md creates the namespace before the Secret it puts in it.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

fn dockerfile_instructions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string("Dockerfile").expect("Dockerfile");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (op, rest) = l.split_once(' ').unwrap_or((l, ""));
            (op.to_ascii_uppercase(), rest.trim().to_string())
        })
        .collect()
}

#[test]
fn the_dockerfile_pulls_nothing_runs_nothing_and_is_not_root() {
    let ins = dockerfile_instructions();
    assert_eq!(ins.first(), Some(&("FROM".to_string(), "scratch".to_string())));
    assert_eq!(ins.iter().filter(|(op, _)| op == "FROM").count(), 1, "{ins:?}");
    assert!(
        !ins.iter().any(|(op, _)| op == "RUN"),
        "nothing runs at build time: {ins:?}"
    );
    let user = ins
        .iter()
        .rev()
        .find(|(op, _)| op == "USER")
        .map(|(_, u)| u.clone());
    let uid = user
        .as_deref()
        .and_then(|u| u.split(':').next())
        .and_then(|u| u.parse::<u32>().ok());
    assert!(uid.is_some_and(|u| u != 0), "a numeric non-root USER: {user:?}");
    assert!(
        ins.contains(&("ENTRYPOINT".to_string(), "[\"/ebb\"]".to_string())),
        "{ins:?}"
    );
}

#[test]
fn install_docs_create_the_namespace_before_the_secret() {
    let doc = std::fs::read_to_string("docs/operations.md").expect("docs/operations.md");
    let commands: Vec<&str> = doc
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("kubectl "))
        .collect();
    let secret = commands
        .iter()
        .position(|c| c.contains("create secret"))
        .expect("the docs create the ebb-certs Secret");
    let namespace = commands
        .iter()
        .position(|c| c.contains("create namespace ebb") || c.contains("manifests/namespace.yaml"));
    assert!(
        namespace.is_some_and(|n| n < secret),
        "the namespace must exist before `{}`: {commands:?}",
        commands[secret]
    );
}

/// coreutils' `sha256sum` of a file.
fn sha256_hex(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A blob of the layout, checked against its digest and size.
fn blob(layout: &Path, descriptor: &serde_json::Value) -> Vec<u8> {
    let digest = descriptor["digest"].as_str().expect("digest");
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let path = layout.join("blobs/sha256").join(hex);
    let bytes = std::fs::read(&path).expect("blob");
    assert_eq!(sha256_hex(&path), hex, "blob content matches its digest");
    assert_eq!(descriptor["size"].as_u64(), Some(bytes.len() as u64));
    bytes
}

fn ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(s, "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

#[test]
fn the_image_runs_as_non_root_on_a_read_only_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = dir.path().join("oci");
    // The test binary stands in for the release build (same libraries, minutes less).
    let out = Command::new("scripts/image")
        .args([
            "--binary",
            env!("CARGO_BIN_EXE_ebb"),
            "--tag",
            "localhost/ebb-test:0",
        ])
        .arg("--out")
        .arg(&layout)
        .output()
        .expect("scripts/image runs");
    assert!(
        out.status.success(),
        "scripts/image failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json")).expect("JSON");
    assert!(layout.join("oci-layout").is_file());
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(&layout, &index["manifests"][0])).expect("manifest");
    let config: serde_json::Value =
        serde_json::from_slice(&blob(&layout, &manifest["config"])).expect("config");
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(config["config"]["Entrypoint"], serde_json::json!(["/ebb"]));
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "one layer, no base image: {manifest}");

    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).expect("mkdir");
    let layer = dir.path().join("layer.tar.gz");
    std::fs::write(&layer, blob(&layout, &layers[0])).expect("write layer");
    let untar = Command::new("tar")
        .arg("-xzf")
        .arg(&layer)
        .arg("-C")
        .arg(&rootfs)
        .status()
        .expect("tar");
    assert!(untar.success());
    for file in [
        "ebb",
        "etc/ssl/certs/ca-certificates.crt",
        "etc/passwd",
        "lib64/ld-linux-x86-64.so.2",
    ] {
        assert!(rootfs.join(file).is_file(), "{file} in the image");
    }

    // The image's own files, mounted read-only with a tmpfs /tmp (as the manifests mount an
    // emptyDir), run `ebb metrics-server --local` as UID 65532: the bundled libraries suffice and
    // nothing is written outside /tmp.
    // Port 0: the kernel picks free ports as ebb binds them; the banner says which.
    let root = rootfs.display().to_string();
    let script = format!(
        "mount --bind '{root}' '{root}' && mount -o remount,ro,bind '{root}' && mount -t tmpfs tmpfs '{root}/tmp' && \
         exec chroot --userspec=65532:65532 '{root}' /ebb metrics-server --local --state-dir /tmp/.ebb \
         --secure-port 0 --metrics-port 0 --log-level warn"
    );
    let mut child = Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux)");
    let deadline = Instant::now() + Duration::from_secs(60);
    let admin = match common::net::read_banner(&mut child, Duration::from_secs(60)) {
        Ok(banner) => banner.admin,
        Err(e) => {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut s) = child.stderr.take() {
                let _ = s.read_to_string(&mut err);
            }
            panic!("ebb in the image printed no banner ({e}): {err}");
        }
    };
    while !ready(admin) {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("ebb in the image exited ({status}): {err}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ebb in the image did not become ready");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
