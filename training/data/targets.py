"""Training examples: a labelled structure as a neighbour graph plus targets in irreps layout.

The hopping pairs of the graph come from the model's per-species-pair cutoffs (what the
model will see at inference). Stored rows are matched to graph pairs by (i, j, shift); graph
pairs without a stored row get a zero target (their blocks were below the data set's storage
threshold). Stored rows outside the cutoffs are counted in ``n_rows_outside``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gears_h_core.graph.neighbors import build_neighbor_graph, pair_keys
from gears_h_core.model.layout import OutputLayout
from gears_h_core.types import BlockMatrix, NeighborGraph
from training.data.snapshot import LabeledStructure


@dataclass(frozen=True, eq=False)
class TrainingExample:
    """One structure ready for batching.

    Attributes:
        name: snapshot name.
        graph: neighbour graph (hopping pairs from the model's cutoffs).
        onsite_h, onsite_s: float32 ``[n_atoms, onsite_dim]`` (S may be None).
        hopping_h, hopping_s: float32 ``[n_pairs, hopping_dim]`` (S may be None).
        n_rows_outside: stored rows beyond the model's hopping cutoffs (not learnt).
        eigvecs: float32 ``[N, N]`` reference eigenvectors at Γ for the eigenbasis loss
            (`training.eigen_basis`), or None.
    """

    name: str
    graph: NeighborGraph
    onsite_h: np.ndarray
    hopping_h: np.ndarray
    onsite_s: np.ndarray | None
    hopping_s: np.ndarray | None
    n_rows_outside: int
    eigvecs: np.ndarray | None = None


def _onsite_targets(bm: BlockMatrix, layout: OutputLayout, n_atoms: int) -> np.ndarray:
    out = np.zeros((n_atoms, layout.onsite_irreps.dim), np.float32)
    for group in bm.onsite:
        out[group.atoms] = layout.encode_onsite(group.z, group.blocks)
    return out


def _hopping_targets(
    bm: BlockMatrix, layout: OutputLayout, graph: NeighborGraph
) -> tuple[np.ndarray, int]:
    n = graph.n_atoms
    keys = pair_keys(n, graph.pair_i, graph.pair_j, graph.pair_shift)
    order = np.argsort(keys)
    sorted_keys = keys[order]
    out = np.zeros((graph.n_pairs, layout.hopping_irreps.dim), np.float32)
    outside = 0
    for group in bm.hopping:
        row_keys = pair_keys(n, group.i, group.j, group.shift)
        pos = np.minimum(np.searchsorted(sorted_keys, row_keys), max(len(sorted_keys) - 1, 0))
        found = sorted_keys[pos] == row_keys if len(sorted_keys) else np.zeros(len(row_keys), bool)
        outside += int((~found).sum())
        if found.any():
            out[order[pos[found]]] = layout.encode_hopping(
                group.z_i, group.z_j, group.blocks[found]
            )
    return out, outside


def make_example(
    labeled: LabeledStructure,
    layout: OutputLayout,
    edge_cutoff: float,
    pair_cutoff: Mapping[tuple[int, int], float],
) -> TrainingExample:
    """Graph + targets of one labelled structure."""
    sh = labeled.hamiltonian
    graph = build_neighbor_graph(sh.structure, edge_cutoff, pair_cutoff)
    hop_h, outside = _hopping_targets(sh.H, layout, graph)
    onsite_s = hop_s = None
    if sh.S is not None:
        onsite_s = _onsite_targets(sh.S, layout, graph.n_atoms)
        hop_s, _ = _hopping_targets(sh.S, layout, graph)
    return TrainingExample(
        name=labeled.name,
        graph=graph,
        onsite_h=_onsite_targets(sh.H, layout, graph.n_atoms),
        hopping_h=hop_h,
        onsite_s=onsite_s,
        hopping_s=hop_s,
        n_rows_outside=outside,
    )
