//! The compute cache NVRTC asks the driver for, kept in the guest.
//!
//! NVRTC hands the driver (table `da9151d3`, see
//! [`crate::runtime_api::export_tables::nvrtc_cache`]) what identifies a compile stage: the
//! program's LLVM bitcode, the stage's options and NVRTC's own build identity. The driver makes an
//! opaque key of it, and NVRTC then asks for the stage's output under that key, or stores the
//! output it compiled. A compile is a pure function of those inputs, so the guest can answer
//! every one of these questions itself: no host round trip, and one client's cache can never
//! reach another's.
//!
//! - A key is the SHA-256 of every input NVRTC passed ([`KeyInputs::digest`]).
//! - Outputs live in memory (up to [`MEMORY_LIMIT`] bytes, oldest first out) and, unless turned
//!   off, in a directory of files named by their key, each checked against its own SHA-256 when
//!   read back; the directory is trimmed to `CUDA_CACHE_MAXSIZE` bytes, oldest files first.
//! - Settings ([`Settings::from_lookup`]): `CUDA_CACHE_DISABLE=1` turns the cache off as it turns
//!   the driver's off; `VGPU_COMPILE_CACHE` is `off`, `memory`, or an absolute directory. The
//!   default directory is `$CUDA_CACHE_PATH/vgpu-nvrtc`, else `$XDG_CACHE_HOME/vgpu/nvrtc`, else
//!   `$HOME/.cache/vgpu/nvrtc`. The driver's own `ComputeCache` files are never touched.
//!
//! Nothing here runs until NVRTC calls a slot.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest as _, Sha256};

/// What a key is made of: everything NVRTC passes when it asks for one.
#[derive(Debug, Clone, Copy)]
pub struct KeyInputs<'a> {
    /// The compile stage NVRTC names (1: PTX to cubin, 2: NVVM).
    pub stage: u32,
    /// The program's LLVM bitcode.
    pub data: &'a [u8],
    /// The stage's options, without their NUL.
    pub options: &'a [u8],
    /// NVRTC's build identity (`HOST64`), without its NUL.
    pub build: &'a [u8],
    /// NVRTC's build date, without its NUL.
    pub date: &'a [u8],
    /// The two trailing words NVRTC passes; their meaning is not known, so they are part of the key.
    pub words: [u32; 2],
}

/// A key: the SHA-256 of a [`KeyInputs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub [u8; 32]);

impl KeyInputs<'_> {
    /// The key. Each variable-length input is preceded by its length, so no two different input
    /// lists hash the same bytes.
    pub fn digest(&self) -> Key {
        let mut hash = Sha256::new();
        hash.update(b"vgpu nvrtc compile cache v1\0");
        hash.update(self.stage.to_le_bytes());
        for part in [self.data, self.options, self.build, self.date] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        for word in self.words {
            hash.update(word.to_le_bytes());
        }
        Key(hash.finalize().into())
    }
}

impl Key {
    /// Its file name: 64 hex digits.
    pub fn file_name(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// How much the in-memory part keeps, in bytes of output.
pub const MEMORY_LIMIT: u64 = 64 << 20;
/// The directory's size limit when `CUDA_CACHE_MAXSIZE` is not set (the driver's default).
pub const DEFAULT_DIRECTORY_LIMIT: u64 = 1 << 30;
/// The largest output kept: NVRTC passes sizes as 32-bit words.
pub const LARGEST_OUTPUT: u64 = u32::MAX as u64;

/// Where outputs are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settings {
    /// No cache: every key request is refused and NVRTC compiles as without a driver cache.
    Off,
    /// Memory only.
    Memory,
    /// Memory and files in a directory, trimmed to a size limit.
    Directory {
        /// The directory.
        path: PathBuf,
        /// Its size limit in bytes.
        limit: u64,
    },
}

/// Why the settings cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// `VGPU_COMPILE_CACHE` is neither `off`, `memory` nor an absolute path.
    #[error("VGPU_COMPILE_CACHE={0:?} is not off, memory or an absolute directory")]
    BadChoice(String),
    /// `CUDA_CACHE_MAXSIZE` is not a number of bytes.
    #[error("CUDA_CACHE_MAXSIZE={0:?} is not a number of bytes")]
    BadLimit(String),
}

impl Settings {
    /// Reads the settings from a variable lookup (the process environment in production).
    ///
    /// # Errors
    /// A [`SettingsError`] naming the variable that is wrong.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Self, SettingsError> {
        let set = |name: &str| lookup(name).filter(|v| !v.is_empty());
        if set("CUDA_CACHE_DISABLE").is_some_and(|v| v != "0") {
            return Ok(Self::Off);
        }
        let path = match set("VGPU_COMPILE_CACHE") {
            Some(choice) if choice == "off" || choice == "0" => return Ok(Self::Off),
            Some(choice) if choice == "memory" => return Ok(Self::Memory),
            Some(choice) => {
                let path = PathBuf::from(&choice);
                if !path.is_absolute() {
                    return Err(SettingsError::BadChoice(
                        choice.to_string_lossy().into_owned(),
                    ));
                }
                path
            }
            None => {
                let absolute =
                    |name: &str| set(name).map(PathBuf::from).filter(|p| p.is_absolute());
                match (
                    absolute("CUDA_CACHE_PATH"),
                    absolute("XDG_CACHE_HOME"),
                    absolute("HOME"),
                ) {
                    (Some(cuda), _, _) => cuda.join("vgpu-nvrtc"),
                    (None, Some(xdg), _) => xdg.join("vgpu").join("nvrtc"),
                    (None, None, Some(home)) => home.join(".cache").join("vgpu").join("nvrtc"),
                    (None, None, None) => return Ok(Self::Memory),
                }
            }
        };
        let limit = match set("CUDA_CACHE_MAXSIZE") {
            None => DEFAULT_DIRECTORY_LIMIT,
            Some(text) => text
                .to_str()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .ok_or_else(|| SettingsError::BadLimit(text.to_string_lossy().into_owned()))?,
        };
        if limit == 0 {
            return Ok(Self::Memory);
        }
        Ok(Self::Directory { path, limit })
    }
}

/// Why an output could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The cache is off.
    #[error("the compile cache is off")]
    Off,
    /// The output is larger than NVRTC can take back.
    #[error("an output of {0} bytes is larger than the cache keeps")]
    TooLarge(u64),
    /// The directory could not be written.
    #[error("compile cache directory {path}: {source}")]
    Directory {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
}

/// The outputs kept in memory, oldest first out.
#[derive(Debug, Default)]
struct Memory {
    entries: HashMap<Key, Arc<[u8]>>,
    order: VecDeque<Key>,
    bytes: u64,
}

impl Memory {
    fn insert(&mut self, key: Key, data: Arc<[u8]>) {
        if data.len() as u64 > MEMORY_LIMIT {
            return;
        }
        if let Some(old) = self.entries.insert(key, data.clone()) {
            self.bytes -= old.len() as u64;
            self.order.retain(|k| *k != key);
        }
        self.bytes += data.len() as u64;
        self.order.push_back(key);
        while self.bytes > MEMORY_LIMIT {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.entries.remove(&oldest) {
                self.bytes -= gone.len() as u64;
            }
        }
    }
}

/// The first bytes of every cache file, then the output's length (u64, little-endian) and its
/// SHA-256.
const FILE_MAGIC: &[u8; 8] = b"VGPUNC01";
const FILE_HEADER: usize = FILE_MAGIC.len() + 8 + 32;

/// The cache: memory in front of an optional directory.
#[derive(Debug)]
pub struct Store {
    settings: Settings,
    memory: Mutex<Memory>,
    /// The directory's size as last counted plus what was written since; `u64::MAX` until first
    /// counted.
    directory_bytes: AtomicU64,
}

impl Store {
    /// A store with these settings. Nothing is read or created until it is used.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            memory: Mutex::new(Memory::default()),
            directory_bytes: AtomicU64::new(u64::MAX),
        }
    }

    /// Its settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether it keeps anything.
    pub fn enabled(&self) -> bool {
        self.settings != Settings::Off
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The output kept under `key`: from memory, else from its file (which then stays in
    /// memory). A file that fails its check is removed and counts as a miss.
    pub fn get(&self, key: &Key) -> Option<Arc<[u8]>> {
        if let Some(data) = self.memory().entries.get(key) {
            return Some(data.clone());
        }
        let Settings::Directory { path, .. } = &self.settings else {
            return None;
        };
        let file = path.join(key.file_name());
        let data: Arc<[u8]> = match read_checked(&file) {
            Ok(Some(data)) => data.into(),
            Ok(None) => return None,
            Err(_) => {
                let _ = fs::remove_file(&file);
                return None;
            }
        };
        self.memory().insert(*key, data.clone());
        Some(data)
    }

    /// Keeps `data` under `key`, in memory and, with a directory, in a file written whole
    /// (a temporary file renamed into place), then trims the directory to its limit.
    ///
    /// # Errors
    /// [`StoreError`]; the output is still kept in memory when only the directory failed.
    pub fn put(&self, key: &Key, data: &[u8]) -> Result<(), StoreError> {
        if !self.enabled() {
            return Err(StoreError::Off);
        }
        if data.len() as u64 > LARGEST_OUTPUT {
            return Err(StoreError::TooLarge(data.len() as u64));
        }
        self.memory().insert(*key, Arc::from(data));
        let Settings::Directory { path, limit } = &self.settings else {
            return Ok(());
        };
        let written = write_whole(path, key, data)?;
        // SYNC POINT: a running total only decides when to trim; a stale value trims late or
        // early, never wrongly, because trimming recounts the directory.
        let counted = self.directory_bytes.load(Ordering::Relaxed);
        let total = if counted == u64::MAX {
            directory_size(path)
        } else {
            counted.saturating_add(written)
        };
        let total = if total > *limit {
            trim(path, *limit)
        } else {
            total
        };
        // SYNC POINT: see above.
        self.directory_bytes.store(total, Ordering::Relaxed);
        Ok(())
    }
}

/// Reads a cache file: `Ok(None)` when there is none, an error when it is damaged.
fn read_checked(file: &Path) -> io::Result<Option<Vec<u8>>> {
    let mut handle = match fs::File::open(file) {
        Ok(handle) => handle,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut header = [0u8; FILE_HEADER];
    handle.read_exact(&mut header)?;
    let damaged = || io::Error::new(io::ErrorKind::InvalidData, "damaged compile cache file");
    if &header[..8] != FILE_MAGIC {
        return Err(damaged());
    }
    let length = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    if length > LARGEST_OUTPUT {
        return Err(damaged());
    }
    let mut data = Vec::with_capacity(length as usize);
    handle.take(length + 1).read_to_end(&mut data)?;
    if data.len() as u64 != length || Sha256::digest(&data).as_slice() != &header[16..] {
        return Err(damaged());
    }
    Ok(Some(data))
}

/// Writes one cache file whole; returns its size.
fn write_whole(dir: &Path, key: &Key, data: &[u8]) -> Result<u64, StoreError> {
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source| StoreError::Directory { path, source }
    };
    create_private_dir(dir).map_err(failed(dir))?;
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    // SYNC POINT: only makes temporary names unique within the process.
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    let name = key.file_name();
    let temporary = dir.join(format!(".{name}.{}.{serial}.tmp", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(FILE_MAGIC)?;
        file.write_all(&(data.len() as u64).to_le_bytes())?;
        file.write_all(&Sha256::digest(data))?;
        file.write_all(data)?;
        fs::rename(&temporary, dir.join(&name))
    })();
    if let Err(source) = result {
        let _ = fs::remove_file(&temporary);
        return Err(StoreError::Directory {
            path: temporary,
            source,
        });
    }
    Ok((FILE_HEADER + data.len()) as u64)
}

/// Creates the directory (and its parents) readable by its owner only.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The cache files in `dir` with their sizes and modification times.
fn cache_files(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((e.path(), meta.len(), meta.modified().ok()?))
        })
        .collect()
}

fn directory_size(dir: &Path) -> u64 {
    cache_files(dir).iter().map(|(_, size, _)| size).sum()
}

/// Removes the oldest cache files until the rest fit in `limit`; returns what is left.
fn trim(dir: &Path, limit: u64) -> u64 {
    let mut files = cache_files(dir);
    files.sort_by_key(|(_, _, modified)| *modified);
    let mut total: u64 = files.iter().map(|(_, size, _)| size).sum();
    for (path, size, _) in files {
        if total <= limit {
            break;
        }
        if fs::remove_file(&path).is_ok() {
            total -= size;
        }
    }
    total
}

/// The process's store, made from the environment on first use (memory only in this crate's unit
/// tests). Bad settings are logged once and leave the cache off.
pub fn global() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        // Unit tests never write under the tester's home: theirs is memory only.
        if cfg!(test) {
            return Store::new(Settings::Memory);
        }
        let settings = Settings::from_lookup(|name| std::env::var_os(name)).unwrap_or_else(|e| {
            crate::log::log!(
                crate::log::Level::Warn,
                "{e}; the NVRTC compile cache is off"
            );
            Settings::Off
        });
        Store::new(settings)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    fn inputs(data: &[u8]) -> KeyInputs<'_> {
        KeyInputs {
            stage: 1,
            data,
            options: b" -arch=sm_90",
            build: b"HOST64",
            date: b"Aug 20 202514:13:52",
            words: [0, 1],
        }
    }

    #[test]
    fn every_input_changes_the_key() {
        let base = inputs(b"BC\xc0\xde program");
        let key = base.digest();
        assert_eq!(key, inputs(b"BC\xc0\xde program").digest());
        let variants = [
            KeyInputs { stage: 2, ..base },
            KeyInputs {
                data: b"BC\xc0\xde programs",
                ..base
            },
            KeyInputs {
                options: b" -arch=sm_80",
                ..base
            },
            KeyInputs {
                build: b"HOST32",
                ..base
            },
            KeyInputs {
                date: b"Aug 21 202514:13:52",
                ..base
            },
            KeyInputs {
                words: [1, 1],
                ..base
            },
            KeyInputs {
                words: [0, 0],
                ..base
            },
            // Moving a byte from one input to the next must not give the same key.
            KeyInputs {
                options: b" -arch=sm_90H",
                build: b"OST64",
                ..base
            },
        ];
        for variant in variants {
            assert_ne!(variant.digest(), key, "{variant:?}");
        }
        assert_eq!(key.file_name().len(), 64);
    }

    #[test]
    fn settings_follow_the_environment() {
        let s = |vars: &[(&str, &str)]| Settings::from_lookup(env(vars));
        let dir = |p: &str, limit| {
            Ok(Settings::Directory {
                path: p.into(),
                limit,
            })
        };
        assert_eq!(
            s(&[("HOME", "/home/u")]),
            dir("/home/u/.cache/vgpu/nvrtc", DEFAULT_DIRECTORY_LIMIT)
        );
        assert_eq!(
            s(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/x")]),
            dir("/x/vgpu/nvrtc", DEFAULT_DIRECTORY_LIMIT)
        );
        assert_eq!(
            s(&[
                ("HOME", "/h"),
                ("CUDA_CACHE_PATH", "/c"),
                ("CUDA_CACHE_MAXSIZE", "4096")
            ]),
            dir("/c/vgpu-nvrtc", 4096)
        );
        assert_eq!(
            s(&[("HOME", "/h"), ("VGPU_COMPILE_CACHE", "/v")]),
            dir("/v", DEFAULT_DIRECTORY_LIMIT)
        );
        assert_eq!(
            s(&[("HOME", "/h"), ("CUDA_CACHE_DISABLE", "1")]),
            Ok(Settings::Off)
        );
        assert_eq!(
            s(&[("HOME", "/h"), ("CUDA_CACHE_DISABLE", "0")]),
            dir("/h/.cache/vgpu/nvrtc", DEFAULT_DIRECTORY_LIMIT)
        );
        assert_eq!(s(&[("VGPU_COMPILE_CACHE", "off")]), Ok(Settings::Off));
        assert_eq!(s(&[("VGPU_COMPILE_CACHE", "memory")]), Ok(Settings::Memory));
        assert_eq!(s(&[]), Ok(Settings::Memory));
        assert_eq!(s(&[("HOME", "relative")]), Ok(Settings::Memory));
        assert_eq!(
            s(&[("HOME", "/h"), ("CUDA_CACHE_MAXSIZE", "0")]),
            Ok(Settings::Memory)
        );
        assert_eq!(
            s(&[("VGPU_COMPILE_CACHE", "rel/dir")]),
            Err(SettingsError::BadChoice("rel/dir".into()))
        );
        assert_eq!(
            s(&[("HOME", "/h"), ("CUDA_CACHE_MAXSIZE", "lots")]),
            Err(SettingsError::BadLimit("lots".into()))
        );
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "vgpu-compile-cache-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn outputs_survive_in_files_and_damaged_files_are_misses() {
        let dir = temp_dir("files");
        let settings = Settings::Directory {
            path: dir.clone(),
            limit: 1 << 20,
        };
        let key = inputs(b"program one").digest();
        let other = inputs(b"program two").digest();
        let first = Store::new(settings.clone());
        assert!(first.get(&key).is_none());
        first.put(&key, b"cubin one").unwrap();
        assert_eq!(&*first.get(&key).unwrap(), b"cubin one");
        assert!(first.get(&other).is_none());

        // A second process (a fresh store) finds it on disk.
        let second = Store::new(settings.clone());
        assert_eq!(&*second.get(&key).unwrap(), b"cubin one");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);

        // A damaged file (one flipped byte of output) is a miss and is removed.
        let file = dir.join(key.file_name());
        let mut bytes = fs::read(&file).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        fs::write(&file, &bytes).unwrap();
        assert!(Store::new(settings.clone()).get(&key).is_none());
        assert!(!file.exists());
        // So is a truncated one.
        first.put(&other, b"cubin two").unwrap();
        let file = dir.join(other.file_name());
        let bytes = fs::read(&file).unwrap();
        fs::write(&file, &bytes[..bytes.len() - 2]).unwrap();
        assert!(Store::new(settings).get(&other).is_none());
        // No temporary file is left behind.
        let left: Vec<_> = fs::read_dir(&dir).unwrap().filter_map(Result::ok).collect();
        assert!(left
            .iter()
            .all(|e| !e.file_name().to_string_lossy().ends_with(".tmp")));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_directory_is_trimmed_oldest_first() {
        let dir = temp_dir("trim");
        let output = vec![7u8; 1000];
        let file_size = (FILE_HEADER + output.len()) as u64;
        let store = Store::new(Settings::Directory {
            path: dir.clone(),
            limit: 3 * file_size,
        });
        let keys: Vec<Key> = (0..5u8).map(|i| inputs(&[i]).digest()).collect();
        for key in &keys {
            store.put(key, &output).unwrap();
            // Distinct modification times, so "oldest" is well defined.
            std::thread::sleep(std::time::Duration::from_millis(15));
        }
        let present: Vec<bool> = keys
            .iter()
            .map(|k| dir.join(k.file_name()).exists())
            .collect();
        assert_eq!(present, [false, false, true, true, true]);
        // The memory part still answers for all of them.
        assert!(keys.iter().all(|k| store.get(k).is_some()));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn off_keeps_nothing_and_memory_keeps_no_files() {
        let key = inputs(b"p").digest();
        let off = Store::new(Settings::Off);
        assert!(matches!(off.put(&key, b"x"), Err(StoreError::Off)));
        assert!(off.get(&key).is_none());
        let memory = Store::new(Settings::Memory);
        memory.put(&key, b"x").unwrap();
        assert_eq!(&*memory.get(&key).unwrap(), b"x");
    }

    #[test]
    fn memory_keeps_at_most_its_limit() {
        let mut memory = Memory::default();
        let big: Arc<[u8]> = vec![0u8; (MEMORY_LIMIT / 2) as usize].into();
        let keys: Vec<Key> = (0..3u8).map(|i| inputs(&[i]).digest()).collect();
        for key in &keys {
            memory.insert(*key, big.clone());
        }
        assert!(memory.bytes <= MEMORY_LIMIT);
        assert!(!memory.entries.contains_key(&keys[0]));
        assert!(memory.entries.contains_key(&keys[2]));
        // Replacing an entry does not count it twice.
        memory.insert(keys[2], big.clone());
        assert_eq!(memory.bytes, 2 * big.len() as u64);
        assert_eq!(memory.order.len(), 2);
    }
}
