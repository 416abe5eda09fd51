//! `/etc/ld.so.preload`: reading its entries, and the one permitted write, removing the shim's
//! own lines (`recover`). No other module opens this file for writing; a test checks the source.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::dropin::names_shim;
use crate::error::Error;
use crate::paths::{self, Root};

/// Whether a line of ld.so.preload names the shim. Comment lines never do.
pub fn line_names_shim(line: &str, libs: &[&Path]) -> bool {
    let t = line.trim_start();
    if t.starts_with('#') {
        return false;
    }
    t.split(|c: char| c == ':' || c.is_whitespace())
        .any(|tok| libs.iter().any(|lib| names_shim(tok, lib)))
}

/// The non-comment entries of ld.so.preload, as read (empty when the file is absent).
///
/// # Errors
/// When the file exists but cannot be read.
pub fn entries(root: &Root) -> Result<Vec<String>, Error> {
    let real = root.resolve(paths::LD_SO_PRELOAD);
    let text = match fs::read(&real) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", real, e)),
    };
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split(|c: char| c == ':' || c.is_whitespace()))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect())
}

/// `bytes` without the lines that name the shim; every other byte kept as it was.
pub fn without_shim_lines(bytes: &[u8], libs: &[&Path]) -> (Vec<u8>, Vec<String>) {
    let mut kept = Vec::with_capacity(bytes.len());
    let mut removed = Vec::new();
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let text = String::from_utf8_lossy(line);
        if line_names_shim(text.trim_end_matches('\n'), libs) {
            removed.push(text.trim_end_matches('\n').to_string());
        } else {
            kept.extend_from_slice(line);
        }
    }
    (kept, removed)
}

/// Removes only the lines naming the shim from ld.so.preload, in place (same inode, owner and
/// mode); the file is left untouched when no line names it. Returns the removed lines.
///
/// # Errors
/// When the file exists but cannot be read or rewritten.
pub fn remove_shim_lines(root: &Root, libs: &[&Path], dry_run: bool) -> Result<Vec<String>, Error> {
    let real = root.resolve(paths::LD_SO_PRELOAD);
    let bytes = match fs::read(&real) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", real, e)),
    };
    let (kept, removed) = without_shim_lines(&bytes, libs);
    if removed.is_empty() || dry_run {
        return Ok(removed);
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&real)
        .map_err(|e| Error::io("open for writing", &real, e))?;
    f.write_all(&kept)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write", real, e))?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_foreign_lines_and_comments_byte_for_byte() {
        let lib = Path::new("/usr/lib64/libvgpu-cuda.so");
        let input = b"# keep: mentions libvgpu-cuda.so in a comment\n/usr/lib/libfoo.so\n\
/usr/lib64/libvgpu-cuda.so\n  /opt/x/libvgpu-cuda.so  \r\n/lib/a.so /lib/b.so\n/usr/lib/tail.so";
        let (kept, removed) = without_shim_lines(input, &[lib]);
        assert_eq!(
            kept,
            b"# keep: mentions libvgpu-cuda.so in a comment\n/usr/lib/libfoo.so\n\
/lib/a.so /lib/b.so\n/usr/lib/tail.so"
        );
        assert_eq!(removed.len(), 2);
    }
}
