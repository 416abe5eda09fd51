//! Images made by the real CUDA 13.0 tools (ptxas and fatbinary 13.0.88 from the
//! `nvidia-cuda-nvcc` wheel), from `tests/gpu/kernels.ptx`:
//!
//! ```text
//! ptxas -arch=sm_90 tests/gpu/kernels.ptx -o kernels.sm_90.cubin
//! fatbinary -64 --create=kernels.fatbin --image3=kind=elf,sm=90,file=kernels.sm_90.cubin \
//!     --image3=kind=ptx,sm=52,file=tests/gpu/kernels.ptx --compress=false
//! fatbinary -64 --create=kernels.compressed.fatbin ... --compress-all
//! ```

use cuda_image::{
    fatbin_entries, size_of_image, size_of_image_at, Compression, EntryKind, ImageKind,
    WRAPPER_MAGIC,
};

const CUBIN: &[u8] = include_bytes!("fixtures/kernels.sm_90.cubin");
const FATBIN: &[u8] = include_bytes!("fixtures/kernels.fatbin");
const COMPRESSED: &[u8] = include_bytes!("fixtures/kernels.compressed.fatbin");

fn with_tail(image: &[u8]) -> Vec<u8> {
    let mut out = image.to_vec();
    out.extend_from_slice(&[0xC3; 333]);
    out
}

#[test]
fn real_cubin_is_sized_exactly() {
    let layout = size_of_image(&with_tail(CUBIN)).unwrap();
    assert_eq!(layout.kind, ImageKind::Elf);
    assert_eq!(layout.len, CUBIN.len() as u64);
}

#[test]
fn real_fatbins_are_sized_exactly_and_listed() {
    for (image, compression) in [(FATBIN, Compression::None), (COMPRESSED, Compression::Zstd)] {
        let layout = size_of_image(&with_tail(image)).unwrap();
        assert_eq!(
            (layout.kind, layout.len),
            (ImageKind::Fatbin, image.len() as u64)
        );
        let entries = fatbin_entries(image).unwrap();
        let summary: Vec<_> = entries.iter().map(|e| (e.kind, e.sm_arch)).collect();
        assert_eq!(
            summary,
            [(EntryKind::Elf, Some(90)), (EntryKind::Ptx, Some(52))]
        );
        assert_eq!(entries[1].compression, compression);
        if compression == Compression::Zstd {
            assert_eq!(entries[0].compression, Compression::Zstd);
            assert_eq!(entries[0].uncompressed_len, Some(CUBIN.len() as u64));
        }
    }
}

#[test]
fn real_fatbins_chain_and_wrap() {
    let chain = [FATBIN, COMPRESSED].concat();
    let layout = size_of_image(&with_tail(&chain)).unwrap();
    assert_eq!(
        (layout.len, layout.fatbin_containers),
        (chain.len() as u64, 2)
    );
    assert_eq!(fatbin_entries(&chain).unwrap().len(), 4);

    let mut wrapper = Vec::new();
    wrapper.extend_from_slice(&WRAPPER_MAGIC.to_le_bytes());
    wrapper.extend_from_slice(&1u32.to_le_bytes());
    wrapper.extend_from_slice(&(chain.as_ptr() as u64).to_le_bytes());
    wrapper.extend_from_slice(&0u64.to_le_bytes());
    // SAFETY: the wrapper and the fatbins it points at are live buffers.
    let info = unsafe { size_of_image_at(wrapper.as_ptr()) }.unwrap();
    assert_eq!(info.payload_addr, chain.as_ptr() as usize);
    assert_eq!(info.payload.len, chain.len() as u64);
}
