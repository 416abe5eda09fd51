"""CuPy's CUDA libraries through vgpu, one library per run so that one failure hides no other:

    cupy_libs_check.py fft      cuFFT: complex-to-complex 1-D on 4096 complex64, real, 2-D, inverse
    cupy_libs_check.py random   cuRAND: uniform, normal, log-normal from fixed seeds
    cupy_libs_check.py sparse   cuSPARSE: SpMV, SpMM, SpGEMM on a CSR matrix built here
    cupy_libs_check.py linalg   cuSOLVER: solve, inv, det, SVD, eigh, Cholesky, QR

Every input is made on the host from fixed numbers, every printed value is rounded (the GPU's
results are bit-identical between runs of the same code, the rounding only keeps a margin), and
each section checks itself against NumPy where that is cheap, so native and vgpu stdouts are
diffed line for line.
"""
import os
import sys

import numpy as np

if len(sys.argv) > 1 and sys.argv[1] == "sparse":
    # CuPy routes SpMV through CUB when its accelerators allow it; without them the sparse
    # products go to cuSPARSE, which is what this row is for.
    os.environ["CUPY_ACCELERATORS"] = ""

import cupy as cp  # noqa: E402  (after CUPY_ACCELERATORS)


def fmt(x, digits=7) -> str:
    """A real or complex scalar (Python, NumPy or a 0-d CuPy array), rounded to `digits`
    significant digits."""
    x = complex(x.item() if hasattr(x, "item") else x)
    if x.imag == 0:
        return f"{x.real:.{digits}g}"
    return f"{x.real:.{digits}g}{x.imag:+.{digits}g}j"


def fft() -> None:
    n = 4096
    t = np.arange(n, dtype=np.float64)
    x = (np.cos(2 * np.pi * 5 * t / n) + 0.5j * np.sin(2 * np.pi * 17 * t / n)
         + (t % 7) / 7).astype(np.complex64)
    y = cp.fft.fft(cp.asarray(x))
    host = cp.asnumpy(y)
    print("fft c2c", n, y.dtype, "bins 0 5 17 4079 4091:",
          " ".join(fmt(host[k], 6) for k in (0, 5, 17, 4079, 4091)))
    print("fft c2c sum|y|", fmt(np.abs(host.astype(np.complex128)).sum(), 6))
    print("fft c2c matches numpy", bool(np.allclose(host, np.fft.fft(x), rtol=1e-4, atol=1e-2)))
    back = cp.asnumpy(cp.fft.ifft(y))
    print("fft inverse round trip", bool(np.allclose(back, x, atol=1e-5)))
    real = np.sin(2 * np.pi * 3 * t / n).astype(np.float32)
    r = cp.asnumpy(cp.fft.rfft(cp.asarray(real)))
    print("fft r2c", r.shape[0], "bin 3", fmt(r[3], 6), "matches numpy",
          bool(np.allclose(r, np.fft.rfft(real), rtol=1e-4, atol=1e-2)))
    grid = (np.arange(64 * 64, dtype=np.float32).reshape(64, 64) % 13).astype(np.complex64)
    g = cp.asnumpy(cp.fft.fft2(cp.asarray(grid)))
    print("fft 2d 64x64 dc", fmt(g[0, 0], 7), "matches numpy",
          bool(np.allclose(g, np.fft.fft2(grid), rtol=1e-4, atol=1e-1)))


def random() -> None:
    cp.random.seed(1234)
    u = cp.random.rand(1 << 16, dtype=cp.float32)
    print("curand uniform first", " ".join(f"{v:.9g}" for v in cp.asnumpy(u[:4])))
    print("curand uniform mean", fmt(u.mean(dtype=cp.float64), 6),
          "in [0,1)", bool(((u >= 0) & (u < 1)).all()))
    g = cp.random.standard_normal(1 << 16, dtype=cp.float32)
    print("curand normal first", " ".join(f"{v:.9g}" for v in cp.asnumpy(g[:4])))
    print("curand normal mean", fmt(g.mean(dtype=cp.float64), 5),
          "std", fmt(g.std(dtype=cp.float64), 5))
    state = cp.random.RandomState(seed=42)
    ln = state.lognormal(mean=0.0, sigma=0.5, size=4096)
    print("curand lognormal first", " ".join(f"{v:.12g}" for v in cp.asnumpy(ln[:3])),
          "sum", fmt(ln.sum(), 9))
    again = cp.random.RandomState(seed=42).lognormal(mean=0.0, sigma=0.5, size=4096)
    print("curand same seed same numbers", bool((again == ln).all()))


def sparse() -> None:
    import cupyx
    import cupyx.cusparse
    import cupyx.scipy.sparse as sp

    n = 4096
    i = np.arange(n)
    rows = np.concatenate([i, i[1:], i[:-1], i])
    cols = np.concatenate([i, i[1:] - 1, i[:-1] + 1, (i * 37 + 11) % n])
    vals = np.concatenate([np.full(n, 4.0), np.full(n - 1, -1.0), np.full(n - 1, -1.0),
                           np.full(n, 0.25)])
    a = sp.coo_matrix((cp.asarray(vals), (cp.asarray(rows), cp.asarray(cols))),
                      shape=(n, n)).tocsr()
    a.sum_duplicates()
    print("csr", a.shape, "nnz", int(a.nnz))
    x = cp.asarray(np.linspace(-1.0, 1.0, n))
    dense = a.toarray()
    y = cupyx.cusparse.spmv(a, x)
    print("spmv sum", fmt(y.sum(), 12), "y[1] y[2047]", fmt(y[1], 12), fmt(y[2047], 12),
          "matches dense", bool(cp.allclose(y, dense @ x)))
    yt = cupyx.cusparse.spmv(a, x, transa=True)
    # The transposed product sums with atomics (order varies run to run) and its plain sum
    # cancels to ~1e-13, which shows that order: the sum of magnitudes does not.
    print("spmv transposed abs sum", fmt(cp.abs(yt).sum(), 12), "matches dense",
          bool(cp.allclose(yt, dense.T @ x)))
    b = cp.asfortranarray(cp.asarray(np.arange(n * 8, dtype=np.float64).reshape(n, 8) % 5))
    c = cupyx.cusparse.spmm(a, b)
    print("spmm sum", fmt(c.sum(), 12), "matches dense", bool(cp.allclose(c, dense @ b)))
    a2 = a @ a
    print("spgemm nnz", int(a2.nnz), "sum", fmt(a2.sum(), 12), "matches dense",
          bool(cp.allclose(a2.toarray(), dense @ dense)))
    y2 = a @ x
    print("csr @ vector matches spmv", bool(cp.allclose(y2, y)))


def linalg() -> None:
    rng = np.random.default_rng(7)
    m = rng.standard_normal((256, 256)) + 32 * np.eye(256)
    rhs = rng.standard_normal((256, 4))
    a, b = cp.asarray(m), cp.asarray(rhs)
    x = cp.linalg.solve(a, b)
    print("solve getrf/getrs x[0]", " ".join(fmt(v, 10) for v in cp.asnumpy(x[0])),
          "residual small", bool(float(cp.abs(a @ x - b).max()) < 1e-10))
    x32 = cp.linalg.solve(a.astype(cp.float32), b.astype(cp.float32))
    print("solve float32 matches float64", bool(cp.allclose(x32, x, atol=1e-4)))
    inv = cp.linalg.inv(a)
    print("inv identity", bool(cp.allclose(inv @ a, cp.eye(256), atol=1e-10)))
    print("det log", fmt(cp.linalg.slogdet(a)[1], 10))
    tall = rng.standard_normal((128, 64))
    s = cp.linalg.svd(cp.asarray(tall), compute_uv=False)
    print("svd top", " ".join(fmt(v, 10) for v in cp.asnumpy(s[:3])), "matches numpy",
          bool(np.allclose(cp.asnumpy(s), np.linalg.svd(tall, compute_uv=False))))
    u, s2, vt = cp.linalg.svd(cp.asarray(tall), full_matrices=False)
    print("svd reconstructs", bool(cp.allclose((u * s2) @ vt, cp.asarray(tall), atol=1e-10)))
    sym = tall.T @ tall
    w = cp.linalg.eigh(cp.asarray(sym))[0]
    print("eigh syevd largest", fmt(w[-1], 10), "smallest", fmt(w[0], 10), "matches numpy",
          bool(np.allclose(cp.asnumpy(w), np.linalg.eigvalsh(sym))))
    chol = cp.linalg.cholesky(cp.asarray(sym))
    print("cholesky potrf L[0,0]", fmt(chol[0, 0], 10), "reconstructs",
          bool(cp.allclose(chol @ chol.T, cp.asarray(sym), atol=1e-9)))
    q, r = cp.linalg.qr(cp.asarray(tall))
    print("qr geqrf |R[0,0]|", fmt(abs(float(r[0, 0])), 10), "reconstructs",
          bool(cp.allclose(q @ r, cp.asarray(tall), atol=1e-10)))


SECTIONS = {"fft": fft, "random": random, "sparse": sparse, "linalg": linalg}


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] not in SECTIONS:
        print(f"usage: {sys.argv[0]} {'|'.join(SECTIONS)}", file=sys.stderr)
        return 2
    SECTIONS[sys.argv[1]]()
    cp.cuda.Device().synchronize()
    print("PASS cupy", sys.argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
