"""Triton through vgpu: the vector-add tutorial kernel, checked against torch."""
import sys

import torch
import triton
import triton.language as tl


@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(axis=0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask), mask=mask)


def main() -> int:
    torch.manual_seed(0)
    n = 98432
    x = torch.rand(n, device="cuda")
    y = torch.rand(n, device="cuda")
    out = torch.empty_like(x)
    add_kernel[(triton.cdiv(n, 1024),)](x, y, out, n, BLOCK=1024)
    torch.cuda.synchronize()
    print("triton max_abs_diff", float((out - (x + y)).abs().max()))
    print("triton sum", f"{out.double().sum().item():.6f}")
    ok = torch.equal(out, x + y)
    print("PASS triton" if ok else "FAIL triton")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
