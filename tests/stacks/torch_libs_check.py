"""PyTorch's CUDA libraries through vgpu, one per run so that one failure hides no other:

    torch_libs_check.py conv      cuDNN convolutions (2-D fp32, channels-last fp16, grouped,
                                  dilated, transposed, 3-D) and batch norm, forward and backward
    torch_libs_check.py lstm      cuDNN RNNs: a 2-layer bidirectional LSTM (also on packed,
                                  variable-length input) and a GRU, forward and backward
    torch_libs_check.py compile   torch.compile (inductor, which generates and loads Triton
                                  kernels) of a small model, forward and backward, from an empty
                                  compile cache
    torch_libs_check.py nccl      NCCL: torch.distributed with the nccl backend, world size 1
                                  (a file:// store), all_reduce, broadcast, all_gather,
                                  reduce_scatter and a 64 MiB all_reduce

Inputs come from the CPU generator with fixed seeds; cuDNN runs in deterministic mode without
TF32; printed values are rounded (the same code on the same GPU gives bit-identical results, the
rounding only keeps a margin), so native and vgpu stdouts are diffed line for line.
"""
import os
import sys
import tempfile

MODE = sys.argv[1] if len(sys.argv) > 1 else ""
if MODE == "compile":
    # Every run compiles from nothing, as a new user's first run does, and in this process.
    _cache = tempfile.mkdtemp(prefix="vgpu-stacks-inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(_cache, "inductor")
    os.environ["TRITON_CACHE_DIR"] = os.path.join(_cache, "triton")
    os.environ["TORCHINDUCTOR_COMPILE_THREADS"] = "1"
if MODE == "nccl":
    # No network on the GPU machine: NCCL's bootstrap stays on the loopback interface.
    os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402  (after the environment above)


def fmt(x, digits=6) -> str:
    return f"{float(x):.{digits}g}"


def randn(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype).cuda()


def norm(t) -> str:
    return fmt(t.double().norm())


def deterministic() -> None:
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def conv_case(name, module, x, digits=6) -> None:
    x = x.detach().requires_grad_(True)
    y = module(x)
    loss = y.float().pow(2).mean()
    loss.backward()
    grads = " ".join(norm(p.grad) for p in module.parameters() if p.grad is not None)
    print(f"{name} out {tuple(y.shape)} sum {fmt(y.double().sum(), digits)} loss "
          f"{fmt(loss, digits)} dx {fmt(x.grad.double().norm(), digits)} dparams {grads}")


def conv() -> None:
    deterministic()
    print("cudnn available", torch.backends.cudnn.is_available(), "version",
          torch.backends.cudnn.version())
    torch.manual_seed(0)
    conv_case("conv2d fp32", torch.nn.Conv2d(16, 32, 3, padding=1).cuda(),
              randn(8, 16, 32, 32, seed=1))
    half = torch.nn.Conv2d(32, 64, 3, padding=1).cuda().half().to(
        memory_format=torch.channels_last)
    conv_case("conv2d fp16 channels_last", half,
              randn(8, 32, 28, 28, seed=2, dtype=torch.float16).to(
                  memory_format=torch.channels_last), digits=4)
    conv_case("conv2d grouped", torch.nn.Conv2d(32, 32, 3, padding=1, groups=8).cuda(),
              randn(4, 32, 20, 20, seed=3))
    conv_case("conv2d dilated stride2", torch.nn.Conv2d(8, 16, 3, stride=2, dilation=2).cuda(),
              randn(4, 8, 33, 33, seed=4))
    conv_case("conv_transpose2d", torch.nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1).cuda(),
              randn(4, 16, 16, 16, seed=5))
    conv_case("conv3d", torch.nn.Conv3d(4, 8, 3, padding=1).cuda(), randn(2, 4, 8, 16, 16, seed=6))
    bn = torch.nn.BatchNorm2d(16).cuda()
    conv_case("batchnorm2d train", bn, randn(8, 16, 12, 12, seed=7))
    print("batchnorm running_mean", norm(bn.running_mean), "running_var", norm(bn.running_var))


def lstm() -> None:
    deterministic()
    torch.manual_seed(0)
    net = torch.nn.LSTM(input_size=32, hidden_size=64, num_layers=2, batch_first=True,
                        bidirectional=True).cuda()
    x = randn(4, 50, 32, seed=1).requires_grad_(True)
    out, (h, c) = net(x)
    loss = out.pow(2).mean() + h.pow(2).mean() + c.pow(2).mean()
    loss.backward()
    print("lstm out", tuple(out.shape), "sum", fmt(out.double().sum()), "h", norm(h), "c", norm(c),
          "loss", fmt(loss))
    print("lstm dx", norm(x.grad), "dW_ih_l0", norm(net.weight_ih_l0.grad), "dW_hh_l1_reverse",
          norm(net.weight_hh_l1_reverse.grad))
    net.zero_grad()
    lengths = torch.tensor([50, 41, 23, 7])
    packed = torch.nn.utils.rnn.pack_padded_sequence(x.detach(), lengths, batch_first=True)
    pout, (ph, _) = net(packed)
    padded, _ = torch.nn.utils.rnn.pad_packed_sequence(pout, batch_first=True)
    (padded.pow(2).sum() + ph.pow(2).sum()).backward()
    print("lstm packed out sum", fmt(padded.double().sum()), "h", norm(ph), "dW_ih_l0",
          norm(net.weight_ih_l0.grad))
    gru = torch.nn.GRU(input_size=32, hidden_size=48, num_layers=1, batch_first=True).cuda()
    gout, gh = gru(x.detach())
    gout.pow(2).mean().backward()
    print("gru out sum", fmt(gout.double().sum()), "h", norm(gh), "dW_ih",
          norm(gru.weight_ih_l0.grad))


def compile_() -> None:
    deterministic()
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.LayerNorm(128),
        torch.nn.Linear(128, 10)).cuda()
    x = randn(32, 64, seed=1)
    target = torch.arange(32, device="cuda") % 10
    compiled = torch.compile(model, backend="inductor")
    out = compiled(x)
    loss = torch.nn.functional.cross_entropy(out, target)
    loss.backward()
    grad = sum(p.grad.double().norm() ** 2 for p in model.parameters()) ** 0.5
    print("compiled mlp out sum", fmt(out.double().sum(), 5), "loss", fmt(loss, 5), "grad_norm",
          fmt(grad, 5))
    with torch.no_grad():
        eager = model(x)
    print("compiled matches eager", bool(torch.allclose(out, eager, atol=1e-4, rtol=1e-4)))

    @torch.compile(backend="inductor")
    def fused(a, b):
        return torch.softmax(torch.sin(a) * b + a.relu().pow(2), dim=-1).sum(dim=0)

    a, b = randn(256, 512, seed=2), randn(256, 512, seed=3)
    r = fused(a, b)
    ref = torch.softmax(torch.sin(a) * b + a.relu().pow(2), dim=-1).sum(dim=0)
    print("compiled pointwise+softmax sum", fmt(r.double().sum(), 5), "max", fmt(r.max(), 5),
          "matches eager", bool(torch.allclose(r, ref, atol=1e-4, rtol=1e-4)))
    try:
        from torch._inductor import metrics
        print("inductor generated kernels", metrics.generated_kernel_count > 0)
    except (ImportError, AttributeError):
        print("inductor generated kernels", "n/a")


def nccl() -> None:
    import torch.distributed as dist

    print("nccl available", dist.is_nccl_available(), "version", torch.cuda.nccl.version())
    torch.cuda.set_device(0)
    store = os.path.join(tempfile.mkdtemp(prefix="vgpu-stacks-nccl-"), "store")
    dist.init_process_group("nccl", init_method=f"file://{store}", rank=0, world_size=1,
                            device_id=torch.device("cuda", 0))
    print("backend", dist.get_backend(), "world", dist.get_world_size(), "rank", dist.get_rank())
    t = torch.arange(16, dtype=torch.float32, device="cuda")
    dist.all_reduce(t)
    print("all_reduce", t.tolist()[:4], "sum", t.sum().item())
    dist.broadcast(t, src=0)
    gathered = [torch.empty_like(t)]
    dist.all_gather(gathered, t * 2)
    print("all_gather", gathered[0].tolist()[:4])
    out = torch.empty(16, device="cuda")
    dist.reduce_scatter_tensor(out, t + 1)
    print("reduce_scatter", out.tolist()[:4])
    big = torch.full((16 << 20,), 0.5, device="cuda")
    dist.all_reduce(big, op=dist.ReduceOp.SUM)
    print("all_reduce 64 MiB sum", big.sum().item(), "max", big.max().item())
    dist.barrier()
    torch.cuda.synchronize()
    dist.destroy_process_group()


SECTIONS = {"conv": conv, "lstm": lstm, "compile": compile_, "nccl": nccl}


def main() -> int:
    if MODE not in SECTIONS:
        print(f"usage: {sys.argv[0]} {'|'.join(SECTIONS)}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("cuda available False")
        return 1
    SECTIONS[MODE]()
    torch.cuda.synchronize()
    print("PASS torch", MODE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
