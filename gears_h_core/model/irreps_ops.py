"""Per-row irreps operations in the forms XLA runs fast on many rows (pairs, edges).

On a CPU the readouts of ~10⁵ pairs are bound by memory traffic, not arithmetic: one pass
over a ``[35,792 pairs, 1,547]`` float32 feature array costs ~70 ms on the 2-core machine,
as much as all the matrix products of a layer. e3nn-jax's composition of the same steps
(concatenate the feature parts, regroup them, multiply every irrep copy by its radial
weight, apply a linear map, gate, spread into one-hot copies per species pair, apply the
indexed map) makes a full copy at every step and contracts the middle axis of
``[rows, mul, 2l+1]`` in batched einsums. `Linear` computes the same function in one pass:

* its input may be several parts, read chunk by chunk where they lie (never concatenated
  or regrouped);
* an optional per-row, per-irrep-copy ``scale`` (radial weights, gates) is applied while
  each chunk is transposed to ``[rows * (2l+1), mul]`` for a plain matrix product;
* with ``n_index > 0`` every row uses the weights of its own index (species pair): one
  matrix product against the weights of all indices side by side, then each row picks its
  own, instead of multiplying ``n_index`` one-hot copies of the input.

Its parameters are exactly those of ``e3nn.flax.Linear(irreps_out, force_irreps_out=True)``
applied to ``concatenate(parts).regroup()`` (for ``n_index``: to the ``n_index`` one-hot
copies of that, scaled by √n_index, concatenated and regrouped; the form the readouts used
before), with the same names, shapes and initialisation, so bundles trained with either
load into the other; tests check the outputs agree to float32 round-off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def irrep_index(irreps: e3nn.Irreps) -> np.ndarray:
    """Index of the irrep copy every component belongs to, int ``[irreps.dim]``
    (copies are counted chunk by chunk, multiplicity by multiplicity, as e3nn orders them)."""
    parts, base = [], 0
    for mul, ir in irreps:
        parts.append(np.repeat(np.arange(base, base + mul), ir.dim))
        base += mul
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def regrouped_copy_index(irreps: e3nn.Irreps) -> np.ndarray:
    """For every irrep copy of ``irreps`` (in its own order), its index among the copies of
    ``irreps.regroup()``: ``w[:, regrouped_copy_index(irreps)]`` reorders weights meant for
    the regrouped irreps into the order of ``irreps``."""
    order = sorted(range(len(irreps)), key=lambda c: (irreps[c].ir, c))
    start = np.zeros(len(irreps), np.int64)
    base = 0
    for c in order:
        start[c] = base
        base += irreps[c].mul
    if not len(irreps):
        return np.zeros(0, np.int64)
    return np.concatenate(
        [np.arange(start[c], start[c] + mul) for c, (mul, _) in enumerate(irreps)]
    )


def scale_irreps(x: e3nn.IrrepsArray, weights: jax.Array) -> e3nn.IrrepsArray:
    """``x * weights`` for ``weights`` of shape ``[..., x.irreps.num_irreps]``: every irrep
    copy times its own scalar (equivariant). Known-zero chunks stay flagged zero."""
    if weights.shape[-1] != x.irreps.num_irreps:
        raise ValueError(
            f"scale_irreps: {weights.shape[-1]} weights for {x.irreps.num_irreps} irreps"
        )
    expanded = jnp.take(weights, irrep_index(x.irreps), axis=-1)
    return e3nn.IrrepsArray(x.irreps, x.array * expanded, zero_flags=x.zero_flags)


def gate_parts(x: e3nn.IrrepsArray) -> tuple[list[e3nn.IrrepsArray], jax.Array]:
    """``e3nn.gate(x)`` (even scalars, default activations) as ``(parts, scale)`` for
    `Linear`: ``concatenate(parts)`` scaled by ``scale`` (copy by copy) is the gate's output.

    The gates multiply the non-scalars inside the next linear map instead of in a pass of
    their own.
    """
    scalars = x.filter(keep=["0e", "0o"])
    vectors = x.filter(drop=["0e", "0o"])
    n_gates = vectors.irreps.num_irreps
    n_extra = scalars.irreps.dim - n_gates
    if any(ir != e3nn.Irrep("0e") for _, ir in scalars.irreps):
        raise ValueError(f"gate_parts: only even scalars are supported, got {scalars.irreps}")
    if n_extra < 0:
        raise ValueError("gate_parts: fewer scalars than gated irreps")
    extra = e3nn.scalar_activation(scalars.slice_by_mul[:n_extra], even_act=jax.nn.gelu)
    gates = e3nn.scalar_activation(scalars.slice_by_mul[n_extra:], even_act=jax.nn.sigmoid)
    ones = jnp.ones((*extra.shape[:-1], n_extra), x.dtype)
    return [extra, vectors], jnp.concatenate([ones, gates.array], axis=-1)


@dataclass(frozen=True)
class _Chunk:
    part: int  # which input part
    chunk: int  # chunk of that part
    ir: e3nn.Irrep
    mul: int
    zero: bool
    scale_col: int  # first column of its copies in the scale (concatenated order)
    row: int  # first weight row of its copies in its irrep's block (one index's block)


def _chunk_table(parts: Sequence[e3nn.IrrepsArray]) -> list[_Chunk]:
    """Every chunk of the concatenated parts with its scale columns and weight rows (rows
    run over the non-zero chunks of one irrep in concatenated order, as ``regroup`` puts
    them)."""
    table, col = [], 0
    rows: dict[e3nn.Irrep, int] = {}
    for p, part in enumerate(parts):
        for c, ((mul, ir), zero) in enumerate(zip(part.irreps, part.zero_flags, strict=True)):
            row = rows.get(ir, 0)
            if not zero:
                rows[ir] = row + mul
            table.append(_Chunk(p, c, ir, mul, bool(zero), col, row))
            col += mul
    return table


class Linear(nn.Module):
    """Equivariant linear map of one or several irreps parts (see the module docstring).

    ``Linear(irreps_out)(x)`` equals ``e3nn.flax.Linear(irreps_out, force_irreps_out=True)(x)``;
    ``Linear(irreps_out)(parts, scale)`` equals it applied to
    ``concatenate(parts) * scale`` (``scale``: ``[rows, num_irreps]``, one scalar per irrep
    copy in concatenated order); with ``n_index``, ``Linear(irreps_out, n_index)(parts,
    scale, index)`` maps every row with the weights of its ``index``.

    Attributes:
        irreps_out: output irreps (those without a matching input irrep are zero).
        n_index: number of weight sets (0: one shared set).
        parameter_initializer: as e3nn's; default N(0, weight_std²) per instruction.
    """

    irreps_out: e3nn.Irreps
    n_index: int = 0
    parameter_initializer: Callable[[], jax.nn.initializers.Initializer] | None = None

    @nn.compact
    def __call__(
        self,
        x: e3nn.IrrepsArray | Sequence[e3nn.IrrepsArray],
        scale: jax.Array | None = None,
        index: jax.Array | None = None,
    ) -> e3nn.IrrepsArray:
        parts = [x] if isinstance(x, e3nn.IrrepsArray) else list(x)
        if any(p.ndim != 2 for p in parts):
            raise ValueError(f"Linear: expected [rows, dim] parts, got {[p.shape for p in parts]}")
        rows = parts[0].shape[0]
        dtype = parts[0].dtype
        table = _chunk_table(parts)
        if scale is not None and scale.shape != (rows, sum(c.mul for c in table)):
            raise ValueError(f"Linear: scale of shape {scale.shape} for {len(table)} chunks")
        if (index is None) != (self.n_index == 0):
            raise ValueError("Linear: give index exactly when n_index > 0")

        # e3nn.flax.Linear's instructions (and parameter names) for the regrouped input
        live = e3nn.Irreps([(c.mul, c.ir) for c in table if not c.zero])
        copies = max(self.n_index, 1)
        irreps_in = e3nn.Irreps(list(live) * copies).regroup()
        out = e3nn.Irreps(self.irreps_out).simplify()
        lin = e3nn.FunctionalLinear(irreps_in, out)

        chunks: list[jax.Array | None] = [None] * len(out)
        for ins in lin.instructions:
            mul_in, ir = irreps_in[ins.i_in]
            mul_out = out[ins.i_out].mul
            init = (
                self.parameter_initializer()
                if self.parameter_initializer is not None
                else nn.initializers.normal(stddev=ins.weight_std)
            )
            w = self.param(
                f"w[{ins.i_in},{ins.i_out}] {irreps_in[ins.i_in]},{out[ins.i_out]}",
                init,
                ins.path_shape,
                dtype,
            )
            w = ins.path_weight * w.reshape(copies, mul_in // copies, mul_out)
            total = None
            for c in table:
                if c.zero or c.ir != ir:
                    continue
                xc = parts[c.part].chunks[c.chunk]  # [rows, mul, 2l+1]
                if scale is not None:
                    xc = xc * scale[:, c.scale_col : c.scale_col + c.mul, None]
                xc = xc.transpose(0, 2, 1).reshape(rows * ir.dim, c.mul)
                wc = w[:, c.row : c.row + c.mul, :].transpose(1, 0, 2).reshape(c.mul, -1)
                y = xc @ wc
                total = y if total is None else total + y
            if total is None:
                continue
            y = total.reshape(rows, ir.dim, copies, mul_out)
            if self.n_index:
                picked = jnp.take_along_axis(y, index[:, None, None, None], axis=2)
                y = picked[:, :, 0, :] * np.sqrt(self.n_index).astype(dtype)
            else:
                y = y[:, :, 0, :]
            y = y.transpose(0, 2, 1)
            prev = chunks[ins.i_out]
            chunks[ins.i_out] = y if prev is None else prev + y
        return e3nn.from_chunks(out, chunks, (rows,), dtype).rechunk(e3nn.Irreps(self.irreps_out))


# --------------------------------------------------------------------------------------------
# tensor products
#
# e3nn-jax computes every path (x chunk, y chunk, output irrep) with one einsum that XLA
# lowers to a batched matrix product of tiny matrices per row: on a CPU that is the slowest
# part of the network. Here all the paths of one x chunk are one matrix product: the outer
# product of the chunk with the y components it meets, times the Clebsch-Gordan
# coefficients of all those paths side by side (e3nn's own, with its normalisation and its
# output order, so the results are the same to float32 round-off).


def _cg(l1: int, l2: int, ir_out: e3nn.Irrep) -> np.ndarray:
    """e3nn's path coefficients with the "component" irrep normalisation, ``[d1, d2, d_out]``."""
    if e3nn.config("irrep_normalization") != "component":
        raise NotImplementedError("only the component irrep normalisation")
    return e3nn.clebsch_gordan(l1, l2, ir_out.l) * np.sqrt(ir_out.dim)


def _block(xc: jax.Array, yc: jax.Array, coef: np.ndarray) -> jax.Array:
    """``einsum("rui,r...j,ijn->run")`` as one matrix product: ``xc`` ``[rows, u, d1]``,
    ``yc`` ``[rows, d2]`` (shared by every copy) or ``[rows, u, d2]`` (one per copy)."""
    rows, u, d1 = xc.shape
    y = yc[:, None, None, :] if yc.ndim == 2 else yc[:, :, None, :]
    outer = (xc[:, :, :, None] * y).reshape(rows * u, d1 * yc.shape[-1])
    return (outer @ jnp.asarray(coef.reshape(d1 * yc.shape[-1], -1), xc.dtype)).reshape(rows, u, -1)


def _plain(x: e3nn.IrrepsArray, y: e3nn.IrrepsArray) -> bool:
    """Whether the fast forms apply: ``[rows, dim]`` arrays without known-zero chunks
    (otherwise e3nn's own forms run: broadcasting and zero chunks are theirs)."""
    return x.ndim == 2 and y.ndim == 2 and not any(x.zero_flags) and not any(y.zero_flags)


def tensor_product(
    x: e3nn.IrrepsArray, y: e3nn.IrrepsArray, filter_ir_out: e3nn.Irreps
) -> e3nn.IrrepsArray:
    """``e3nn.tensor_product(x, y, filter_ir_out=filter_ir_out)`` (outputs sorted and
    regrouped, as e3nn's), one matrix product per chunk of ``x``."""
    keep = {ir for _, ir in e3nn.Irreps(filter_ir_out)}
    if not _plain(x, y):
        return e3nn.tensor_product(x, y, filter_ir_out=filter_ir_out)
    x, y = x.regroup(), y.regroup()
    rows = x.shape[0]
    paths: list[tuple[e3nn.Irrep, jax.Array]] = []  # in e3nn's path order
    for (mul_1, ir_1), x1 in zip(x.irreps, x.chunks, strict=True):
        # every path of this x chunk: (y chunk, output irrep) with its column block
        blocks, layout = [], []
        for (mul_2, ir_2), sl in zip(y.irreps, y.irreps.slices(), strict=True):
            for ir_out in ir_1 * ir_2:
                if ir_out not in keep:
                    continue
                cg = _cg(ir_1.l, ir_2.l, ir_out)  # [d1, d2, d_out]
                # columns (y copy v, m) for this path; y components sl
                coef = np.zeros((ir_1.dim, y.irreps.dim, mul_2, ir_out.dim))
                for v in range(mul_2):
                    start = sl.start + v * ir_2.dim
                    coef[:, start : start + ir_2.dim, v, :] = cg
                blocks.append(coef.reshape(ir_1.dim, y.irreps.dim, -1))
                layout.append((mul_2, ir_out))
        if not blocks:
            continue
        z = _block(x1, y.array, np.concatenate(blocks, axis=-1))  # [rows, mul_1, n]
        offset = 0
        for mul_2, ir_out in layout:
            width = mul_2 * ir_out.dim
            chunk = z[:, :, offset : offset + width].reshape(rows, mul_1 * mul_2, ir_out.dim)
            paths.append((ir_out, chunk))
            offset += width
    # e3nn sorts the paths by irrep (stably) and merges equal neighbours
    order = sorted(range(len(paths)), key=lambda i: (paths[i][0], i))
    irreps, chunks = [], []
    for i in order:
        ir, chunk = paths[i]
        if irreps and irreps[-1][1] == ir:
            irreps[-1] = (irreps[-1][0] + chunk.shape[1], ir)
            chunks[-1].append(chunk)
        else:
            irreps.append((chunk.shape[1], ir))
            chunks.append([chunk])
    merged = [c[0] if len(c) == 1 else jnp.concatenate(c, axis=1) for c in chunks]
    return e3nn.from_chunks(e3nn.Irreps(irreps), merged, (rows,), x.dtype)


def elementwise_tensor_product(
    x: e3nn.IrrepsArray, y: e3nn.IrrepsArray, filter_ir_out: e3nn.Irreps
) -> e3nn.IrrepsArray:
    """``e3nn.elementwise_tensor_product(x, y, filter_ir_out=filter_ir_out)``: copy q of
    ``x`` with copy q of ``y`` (outputs in e3nn's order, not sorted), one matrix product
    per aligned chunk."""
    keep = {ir for _, ir in e3nn.Irreps(filter_ir_out)}
    if not _plain(x, y) or x.irreps.num_irreps != y.irreps.num_irreps:
        return e3nn.elementwise_tensor_product(x, y, filter_ir_out=filter_ir_out)
    rows = x.shape[0]

    def segments(irreps: e3nn.Irreps) -> list[tuple[int, int, int]]:
        """(chunk, first copy, copy count after it) at every copy boundary."""
        return [(c, v, mul) for c, (mul, _) in enumerate(irreps) for v in range(mul)]

    sx, sy = segments(x.irreps), segments(y.irreps)
    irreps, chunks = [], []
    q = 0
    while q < len(sx):
        cx, vx, mx = sx[q]
        cy, vy, my = sy[q]
        n = min(mx - vx, my - vy)  # copies until either chunk ends
        ir_1, ir_2 = x.irreps[cx].ir, y.irreps[cy].ir
        outs = [ir for ir in ir_1 * ir_2 if ir in keep]
        if outs:
            coef = np.concatenate([_cg(ir_1.l, ir_2.l, ir) for ir in outs], axis=-1)
            z = _block(x.chunks[cx][:, vx : vx + n], y.chunks[cy][:, vy : vy + n], coef)
            offset = 0
            for ir in outs:
                irreps.append((n, ir))
                chunks.append(z[:, :, offset : offset + ir.dim])
                offset += ir.dim
        q += n
    return e3nn.from_chunks(e3nn.Irreps(irreps), chunks, (rows,), x.dtype)
