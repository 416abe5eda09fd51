"""PyTorch through vgpu: every line is deterministic, so native and vgpu outputs are diffed."""
import os
import sys

import torch


def fmt(x: float) -> str:
    return f"{x:.5g}"


def main() -> int:
    print("available", torch.cuda.is_available())
    if not torch.cuda.is_available():
        return 1
    props = torch.cuda.get_device_properties(0)
    print("device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
    print("memory_total", props.total_memory)
    torch.manual_seed(0)
    a = torch.randn(512, 512)
    b = torch.randn(512, 512)
    # TORCH_DTYPES (e.g. "float32") narrows the matmul checks while a failure is being chased.
    names = os.environ.get("TORCH_DTYPES", "float32,bfloat16,float16").split(",")
    for dtype in (getattr(torch, n) for n in names):
        c = (a.cuda().to(dtype) @ b.cuda().to(dtype)).double().cpu()
        print("matmul", str(dtype), fmt(c.sum().item()), fmt(c.abs().max().item()))
    torch.backends.cudnn.deterministic = True
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(16 * 8 * 8, 10)).cuda()
    x = torch.randn(4, 3, 16, 16).cuda()
    y = torch.tensor([1, 2, 3, 4]).cuda()
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    grad = sum(p.grad.double().norm().item() ** 2 for p in net.parameters()) ** 0.5
    print("conv loss", fmt(loss.item()), "grad_norm", fmt(grad))
    layer = torch.nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128, dropout=0.0,
                                             batch_first=True).cuda()
    head = torch.nn.Linear(64, 16).cuda()
    opt = torch.optim.AdamW(list(layer.parameters()) + list(head.parameters()), lr=1e-3)
    seq = torch.randn(8, 32, 64).cuda()
    target = torch.randint(0, 16, (8, 32)).cuda()
    for step in range(3):
        opt.zero_grad()
        out = head(layer(seq))
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, 16), target.reshape(-1))
        loss.backward()
        opt.step()
        print("transformer step", step, "loss", f"{loss.item():.4g}")
    static_in = torch.randn(256, 256, device="cuda")
    w = torch.randn(256, 256, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            static_out = torch.relu(static_in @ w)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = torch.relu(static_in @ w)
    for i in range(3):
        static_in.copy_(torch.full((256, 256), float(i + 1), device="cuda"))
        graph.replay()
        torch.cuda.synchronize()
        print("graph replay", i, fmt(static_out.double().sum().item()))
    print("PASS torch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
