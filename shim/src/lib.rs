//! The guest-side libcuda.so.1 (filled by issue 2).
