//! Writing files that a running poller reads.

use std::{io::Write, path::Path};

/// Replaces `path` with `contents` atomically (write a temporary file beside it, then rename), so a
/// poller reading it concurrently sees the old or the new content, never a truncated mix.
pub fn write_atomic(path: &Path, contents: impl AsRef<[u8]>) {
    let dir = path.parent().expect("the file has a parent directory");
    // Same directory: a rename within one filesystem is atomic. The name does not look like a
    // manifest (`.tmp`), so a directory poller never parses it.
    let mut tmp = tempfile::Builder::new()
        .prefix(".write-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .expect("temporary file");
    tmp.write_all(contents.as_ref()).expect("write temporary file");
    tmp.as_file().sync_all().expect("sync temporary file");
    tmp.persist(path).expect("rename over the target");
}
