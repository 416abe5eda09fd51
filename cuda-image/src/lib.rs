//! CUDA module images (filled by issue 4 prep).
