//! Regenerating `cuda-headers/src/generated/` from a clean header cache reproduces the committed
//! files byte for byte (the command-line equivalent is
//! `cargo run -p cuda-headers-generator -- --check --cache-dir "$(mktemp -d)"`).
//!
//! Needs libclang (`apt-get install libclang-dev`) and rustfmt. The headers are downloaded from
//! PyPI into a fresh cache; when PyPI cannot be reached the default cache is used if it holds the
//! pinned wheel, and otherwise the test prints why and skips.

use std::path::PathBuf;

use cuda_headers_generator::{committed_dir, generate, wheel, GenerateError, HeaderSource};

#[test]
fn regeneration_reproduces_the_committed_files() {
    let pinned =
        wheel::pinned(wheel::DEFAULT_CUDA_VERSION).expect("the committed version is pinned");
    let fresh_cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cuda-headers-clean-cache");
    let _ = std::fs::remove_dir_all(&fresh_cache);
    let source = match pinned.ensure_headers(&fresh_cache) {
        Ok(_) => HeaderSource::Wheel {
            wheel: pinned,
            cache: fresh_cache,
        },
        Err(e @ (GenerateError::Download { .. } | GenerateError::Metadata { .. })) => {
            let cache = wheel::default_cache_dir();
            if !pinned
                .cached_include_dir(&cache)
                .join(".complete")
                .is_file()
            {
                println!(
                    "SKIPPED: CUDA headers unavailable ({e}) and not cached in {}",
                    cache.display()
                );
                return;
            }
            println!(
                "PyPI unreachable ({e}); using the cached wheel in {}",
                cache.display()
            );
            HeaderSource::Wheel {
                wheel: pinned,
                cache,
            }
        }
        Err(e) => panic!("fetching the pinned headers failed: {e}"),
    };
    let generated = generate(&source).unwrap_or_else(|e| {
        panic!("generation failed: {e} (libclang-dev and rustfmt must be installed)")
    });
    assert_eq!(generated.files.len(), 3);
    for (name, contents) in &generated.files {
        let path = committed_dir().join(name);
        let committed =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!contents.is_empty());
        assert!(
            committed == *contents,
            "{} differs from a fresh generation; run `cargo run -p cuda-headers-generator` and review the diff",
            path.display()
        );
    }
}
