"""JAX through vgpu: a jitted matmul and a grad step."""
import os
import sys

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax
import jax.numpy as jnp


def main() -> int:
    print("backend", jax.default_backend(), [d.platform for d in jax.devices()])
    key = jax.random.PRNGKey(0)
    a = jax.random.normal(key, (256, 256), dtype=jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (256, 256), dtype=jnp.float32)
    c = jax.jit(lambda p, q: p @ q)(a, b)
    print("matmul", f"{float(c.sum()):.5g}")

    def loss(w, x):
        return jnp.mean(jnp.tanh(x @ w) ** 2)

    g = jax.jit(jax.grad(loss))(b, a)
    print("grad", f"{float(jnp.linalg.norm(g)):.5g}")
    print("PASS jax")
    return 0


if __name__ == "__main__":
    sys.exit(main())
