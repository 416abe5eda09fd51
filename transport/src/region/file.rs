//! The file behind a region: a `/dev/shm` file or a PCI BAR's sysfs resource, sized and mapped.

use super::*;

pub(super) fn file_size(file: &File, path: &Path) -> Result<u64, TransportError> {
    let meta = file
        .metadata()
        .map_err(TransportError::io("fstat region"))?;
    if meta.len() != 0 || meta.file_type().is_file() && !is_sysfs_resource(path) {
        return Ok(meta.len());
    }
    Ok(sysfs_bar_size(path).unwrap_or(0))
}

pub(super) fn is_sysfs_resource(path: &Path) -> bool {
    path.starts_with("/sys/")
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("resource"))
}

/// Size of PCI BAR N from the sibling `resource` file (`start end flags` per line) when fstat says 0.
pub(crate) fn sysfs_bar_size(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let bar: usize = name
        .strip_prefix("resource")?
        .split('_')
        .next()?
        .parse()
        .ok()?;
    let table = std::fs::read_to_string(path.with_file_name("resource")).ok()?;
    let mut cols = table.lines().nth(bar)?.split_ascii_whitespace();
    let parse = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let start = parse(cols.next()?)?;
    let end = parse(cols.next()?)?;
    (end > start).then(|| end - start + 1)
}

pub(super) fn open_rw(path: &Path, create: bool) -> Result<File, TransportError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .mode(0o660)
        .open(path)
        .map_err(TransportError::io("open region file"))
}

pub(super) fn map_len(size: u64) -> Result<usize, TransportError> {
    usize::try_from(size).map_err(|_| TransportError::BadHeader("capacity"))
}
