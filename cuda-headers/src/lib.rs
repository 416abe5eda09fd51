//! CUDA driver-API types and signature list (filled by issue 2).
