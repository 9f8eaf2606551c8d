"""x @ W with a weight gradient laid out for the CPU; the dot of every dense layer.

Autodiff's weight gradient of y = x @ W is x^T g: a matmul that contracts over the tokens, the
first axis of both operands. XLA's CPU matmul wants each operand's contracted axis last, so it
first copies one of them into transposed layout, and it picks g, the larger one when a layer
widens (the FFN's 1024-wide activations, the N x V gradient of the logits). `matmul` has the
same values as x @ W, but its gradient writes the product so that the smaller of x and g is the
one transposed. Measured on the benchmark workload, the gain is uncertain: alternating
whole-process `python -m train.bench --only train` runs favoured it (median 846 against 937
ms per step, together with model/dropout.py's 32-bit draws), while both versions compiled
side by side in one process timed alike (docs/performance.md). GPU matmuls take transposed
operands as flags, so there this changes nothing.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def matmul(x: jax.Array, w: jax.Array, precision=None, preferred_element_type=None) -> jax.Array:
    """(N, D_in) @ (D_in, D_out) -> (N, D_out), as lax.dot_general computes it."""
    return lax.dot_general(x, w, (((1,), (0,)), ((), ())), precision=precision,
                           preferred_element_type=preferred_element_type)


def _matmul_fwd(x, w, precision, preferred_element_type):
    return matmul(x, w, precision, preferred_element_type), (x, w)


def _matmul_bwd(precision, preferred_element_type, residuals, g):  # g: (N, D_out)
    x, w = residuals
    g = g.astype(x.dtype)
    dx = jnp.einsum("no,do->nd", g, w, precision=precision,
                    preferred_element_type=preferred_element_type)  # (N, D_in)
    if x.shape[1] <= g.shape[1]:  # transpose x
        dw = jnp.einsum("nd,no->do", x, g, precision=precision,
                        preferred_element_type=preferred_element_type)
    else:  # transpose g, then the (D_out, D_in) product, smaller than either
        dw = jnp.einsum("no,nd->od", g, x, precision=precision,
                        preferred_element_type=preferred_element_type).T
    return dx.astype(x.dtype), dw.astype(w.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


def dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers, precision=None,
                preferred_element_type=None, out_sharding=None) -> jax.Array:
    """Drop-in `dot_general` for nnx.Linear: (..., D_in) x (D_in, D_out) goes through `matmul`,
    anything else (batch dimensions, an output sharding) through lax.dot_general."""
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    dense = (rhs.ndim == 2 and tuple(rhs_contract) == (0,) and tuple(lhs_contract) == (lhs.ndim - 1,)
             and not lhs_batch and not rhs_batch and out_sharding is None)
    if not dense:
        return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type, out_sharding=out_sharding)
    lead = lhs.shape[:-1]
    y = matmul(lhs.reshape(-1, lhs.shape[-1]), rhs, precision, preferred_element_type)
    return y.reshape(*lead, rhs.shape[1])
