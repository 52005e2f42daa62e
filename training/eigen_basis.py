"""The H error in the eigenbasis of the reference: a loss term that sees eigenvalues.

An element MAE of a few meV can still move eigenvalues by eV. In a localised basis with
nearly linearly dependent orbitals (butanol's def2-SVP S has eigenvalues down to ~0.002), an
H error along an almost-null direction v of S shifts that direction's energy by
vᵀ δH v / λ_v: measured on runs/butanol_more (H MAE 8.9 meV), the orthogonalised error reaches
25–90 eV there, spurious states enter the window around E_F and the window eigenvalues are off
by 1.4 eV on average.

With C the reference generalised eigenvectors at Γ (H C = S C diag ε, Cᵀ S C = 1),

    E = Cᵀ (H_pred − H_ref) C,

is the H error seen by the eigenvalue problem: E_nn is the first-order shift of state n, E_nm
mixes states n and m, and the rows of almost-null S directions carry the 1/λ amplification.
The term is the mean |E_nm| (or E_nm² with the squared loss) over all states, in eV; its
weight is ``loss.eigen_h`` (0, off, by default). The same idea as the wavefunction-alignment
loss of Li et al. (ICLR 2025) for molecular Hamiltonians.

Only structures with S, at most ``loss.eigen_max_orbitals`` orbitals, take part: E needs the
dense Γ matrices (a periodic structure's blocks of all lattice shifts fold into Γ). Rows the
model does not predict (beyond its cutoffs) are left out, as in the element loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from gears_h_core.assemble.sparse import gamma_fold
from gears_h_core.graph.padding import GraphBatch
from gears_h_core.model.hamiltonian import HamiltonianIrreps
from gears_h_core.model.layout import OutputLayout
from training.data.batching import TargetBatch
from training.data.snapshot import LabeledStructure


def reference_eigenvectors(labeled: LabeledStructure, max_orbitals: int) -> np.ndarray | None:
    """C (float32 ``[N, N]``, columns ordered by eigenvalue) of the stored H and S folded to Γ;
    None without S or above ``max_orbitals`` orbitals."""
    sh = labeled.hamiltonian
    if sh.S is None:
        return None
    numbers = sh.structure.numbers
    n = int(sh.basis.orbital_offsets(numbers)[-1])
    if n > max_orbitals:
        return None
    h = gamma_fold(sh.H, sh.basis, numbers).toarray()
    s = gamma_fold(sh.S, sh.basis, numbers).toarray()
    try:
        _, c = scipy.linalg.eigh(0.5 * (h + h.T), 0.5 * (s + s.T))
    except np.linalg.LinAlgError as exc:
        raise ValueError(f"{labeled.path}: stored S at Γ is not positive definite") from exc
    return c.astype(np.float32)


@dataclass(frozen=True)
class EigenTables:
    """Host constants of the term: the layout's padded block decoders and species table."""

    onsite: np.ndarray  # [n_species, onsite_dim, n·n]
    hopping: np.ndarray  # [n_species², hopping_dim, n·n]
    n_orb: int
    species_table: np.ndarray  # [119]

    @classmethod
    def create(cls, layout: OutputLayout) -> EigenTables:
        onsite, hopping, n = layout.padded_decoders()
        return cls(onsite, hopping, n, layout.species_table)


def _blocks(x: jax.Array, kind: jax.Array, decoders: np.ndarray, n: int) -> jax.Array:
    """``[rows, dim]`` irreps -> ``[rows, n, n]`` padded blocks, each row with its kind's
    decoder (one matrix product per kind, masked)."""
    out = jnp.zeros((x.shape[0], n * n), x.dtype)
    for k in range(decoders.shape[0]):
        out = out + jnp.where((kind == k)[:, None], x @ jnp.asarray(decoders[k]), 0.0)
    return out.reshape(-1, n, n)


def eigenbasis_error(
    out: HamiltonianIrreps,
    batch: GraphBatch,
    targets: TargetBatch,
    tables: EigenTables,
) -> jax.Array:
    """E = Cᵀ δH C of every graph of the batch, float32 ``[n_graphs, N, N]`` (zero for graphs
    without eigenvectors); ``targets`` made with ``eigen_size`` > 0."""
    t = targets
    c = t.eig_vectors  # [G, N, N]
    g_count, size = c.shape[0], c.shape[1]
    n = tables.n_orb
    species = jnp.asarray(tables.species_table)[batch.numbers]
    n_species = tables.onsite.shape[0]
    d_on = (out.onsite_h - t.onsite_h) * t.onsite_weight
    d_hop = (out.hopping_h - t.hopping_h) * t.hopping_weight
    kind = species[batch.pair_i] * n_species + species[batch.pair_j]
    b_on = _blocks(d_on, species, tables.onsite, n)
    b_hop = _blocks(d_hop, kind, tables.hopping, n)
    a = jnp.arange(n)
    offset = t.orbital_offset

    def scatter(dense: jax.Array, g: jax.Array, oi: jax.Array, oj: jax.Array, blocks: jax.Array):
        rows = oi[:, None, None] + a[None, :, None]
        cols = oj[:, None, None] + a[None, None, :]
        rows = jnp.broadcast_to(rows, blocks.shape)
        cols = jnp.broadcast_to(cols, blocks.shape)
        graph = jnp.broadcast_to(g[:, None, None], blocks.shape)
        # padded orbital rows and columns hold exact zeros; beyond the matrix they are dropped
        return dense.at[graph, rows, cols].add(blocks, mode="drop")

    dense = jnp.zeros((g_count, size, size), d_on.dtype)
    dense = scatter(dense, batch.node_graph, offset, offset, b_on)
    pair_graph = batch.node_graph[batch.pair_i]
    dense = scatter(dense, pair_graph, offset[batch.pair_i], offset[batch.pair_j], b_hop)
    return jnp.einsum("gak,gal->gkl", c, jnp.einsum("gab,gbl->gal", dense, c))


def eigen_sums(
    out: HamiltonianIrreps,
    batch: GraphBatch,
    targets: TargetBatch,
    tables: EigenTables,
    error: str,
) -> tuple[jax.Array, jax.Array]:
    """(sum of |E| or E², number of entries) over the graphs that carry eigenvectors."""
    e = eigenbasis_error(out, batch, targets, tables)
    err = jnp.abs(e) if error == "absolute" else e**2
    return jnp.sum(err), jnp.sum(targets.eig_count)
