//! The CUDA version in which each versioned driver symbol appeared, from `cudaTypedefs.h`'s
//! `PFN_<name>_v<version>[_ptds|_ptsz]` typedefs: the first input for `cuGetProcAddress`.

/// Which default-stream semantics a symbol variant has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamVariant {
    /// The legacy default stream (no suffix).
    Legacy,
    /// `_ptds`: per-thread default stream, synchronous calls.
    PerThreadDefaultStream,
    /// `_ptsz`: per-thread default stream, calls taking a stream.
    PerThreadStreamZero,
}

/// One `PFN_…` typedef.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcVersion {
    /// The name as `cuGetProcAddress` is asked for it, e.g. `cuMemcpyHtoD`.
    pub name: &'static str,
    /// `1000 * major + 10 * minor` of the CUDA release that introduced this variant.
    pub version: u32,
    /// The stream semantics of this variant.
    pub stream: StreamVariant,
}

include!("generated/versions.rs");

/// All variants of `name`, oldest first.
pub fn versions_of(name: &str) -> &'static [ProcVersion] {
    let start = PROC_VERSIONS.partition_point(|v| v.name < name);
    let end = PROC_VERSIONS.partition_point(|v| v.name <= name);
    &PROC_VERSIONS[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memcpy_htod_has_its_three_generations() {
        let found: Vec<(u32, StreamVariant)> = versions_of("cuMemcpyHtoD")
            .iter()
            .map(|v| (v.version, v.stream))
            .collect();
        assert!(found.contains(&(2000, StreamVariant::Legacy)));
        assert!(found.contains(&(3020, StreamVariant::Legacy)));
        assert!(found.contains(&(7000, StreamVariant::PerThreadDefaultStream)));
        assert!(PROC_VERSIONS.windows(2).all(|w| w[0].name <= w[1].name));
    }
}
