"""Data-set analysis: species, basis, pair ranges, block statistics, scale/shift.

``gears_h analyze`` writes the result as JSON into the run/cache directory (never into the
data set). Training uses it for the per-species-pair hopping cutoffs, the message
normaliser and the per-channel scale/shift of the network outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gears_h_core.basis.orbitals import OrbitalBasis
from gears_h_core.graph.neighbors import (
    neighbor_pairs,
    pair_cutoff_from_json,
    pair_cutoff_to_json,
)
from gears_h_core.model.layout import OutputLayout
from gears_h_core.model.scale_shift import Statistics
from gears_h_core.types import BlockMatrix
from training.data.snapshot import LabeledStructure

CUTOFF_MARGIN = 0.25  # Å added to the largest stored distance of a species pair
# Molecule data whose blocks have not decayed at a species pair's largest distance (the
# molecule ends before Gaussian orbitals do) get TRUNCATED_MARGIN more, so that the cutoff
# envelope of the radial bases does not force the fitted functions towards zero where there
# are data. Truncated: the largest |S| element of the rows within TAIL_WIDTH of the largest
# distance is above TRUNCATED_TAIL (butanol def2-SVP: C–C 0.11, C–O 3e-3, C–H 1.4e-3; GPAW
# h-BN dzp, whose orbitals end at their cutoff radii: at most 5e-6). Measured on butanol
# (24 training snapshots, the least-squares S before any step): S max error 4.5e-3 -> 1.9e-3,
# and S at Γ of the 6 validation snapshots positive definite (one had a negative eigenvalue).
TRUNCATED_MARGIN = 1.5  # Å
TRUNCATED_TAIL = 1e-4
TAIL_WIDTH = 0.5  # Å
SCALE_FLOOR = 1e-6  # below this a channel is treated as constant


class AnalysisError(ValueError):
    """Data that cannot be analysed (e.g. the same element with two different bases)."""


def merge_bases(structures: Sequence[LabeledStructure]) -> OrbitalBasis:
    """One basis for all structures; the same element must have the same shells everywhere."""
    shells: dict[int, tuple[int, ...]] = {}
    where: dict[int, str] = {}
    for s in structures:
        basis = s.hamiltonian.basis
        for z in s.hamiltonian.structure.species:
            ells = basis.shells[z]
            if z in shells and shells[z] != ells:
                raise AnalysisError(
                    f"element {z} has shells {list(shells[z])} in {where[z]} but {list(ells)} "
                    f"in {s.name}: one model needs one basis per element"
                )
            shells.setdefault(z, ells)
            where.setdefault(z, s.name)
    return OrbitalBasis(shells)


def _key(a: int, b: int) -> str:
    return f"{min(a, b)}-{max(a, b)}"


@dataclass
class Analysis:
    """Result of `analyze` (JSON-serialisable via `to_json`)."""

    n_structures: int
    basis: OrbitalBasis
    species: tuple[int, ...]
    edge_cutoff: float
    avg_num_neighbors: float
    pair_cutoff: dict[tuple[int, int], float]
    pair_rows: dict[str, int]
    distance_histogram: dict[str, list[int]]
    histogram_edges: list[float]
    block_stats: dict[str, dict[str, float | bool]]
    atom_counts: dict[str, int]
    gamma_only: bool
    statistics: Statistics | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        stats = None
        if self.statistics is not None:
            stats = {k: v.tolist() for k, v in self.statistics.to_numpy().items()}
        return {
            "n_structures": self.n_structures,
            "basis": self.basis.to_json_dict(),
            "species": list(self.species),
            "edge_cutoff": self.edge_cutoff,
            "avg_num_neighbors": self.avg_num_neighbors,
            "pair_cutoff": pair_cutoff_to_json(self.pair_cutoff),
            "pair_rows": self.pair_rows,
            "distance_histogram": self.distance_histogram,
            "histogram_edges": self.histogram_edges,
            "block_stats": self.block_stats,
            "atom_counts": self.atom_counts,
            "gamma_only": self.gamma_only,
            "statistics": stats,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Analysis:
        stats = data.get("statistics")
        return cls(
            n_structures=int(data["n_structures"]),
            basis=OrbitalBasis.from_json_dict(data["basis"]),
            species=tuple(int(z) for z in data["species"]),
            edge_cutoff=float(data["edge_cutoff"]),
            avg_num_neighbors=float(data["avg_num_neighbors"]),
            pair_cutoff=pair_cutoff_from_json(data["pair_cutoff"]),
            pair_rows=dict(data["pair_rows"]),
            distance_histogram=dict(data["distance_histogram"]),
            histogram_edges=list(data["histogram_edges"]),
            block_stats=dict(data["block_stats"]),
            atom_counts=dict(data["atom_counts"]),
            gamma_only=bool(data["gamma_only"]),
            statistics=None
            if stats is None
            else Statistics.from_numpy({k: np.asarray(v) for k, v in stats.items()}),
        )


def _slot_scale(x: np.ndarray, layout_irreps: Any, mask: np.ndarray) -> np.ndarray:
    """RMS per irrep slot (same value on the 2l+1 components), ``[n, dim] -> [dim]``."""
    out = np.zeros(x.shape[1], np.float64)
    offset = 0
    for mul, ir in layout_irreps:
        for _ in range(mul):
            sl = slice(offset, offset + ir.dim)
            if x.shape[0] and mask[sl].all():
                out[sl] = np.sqrt(np.mean(x[:, sl].astype(np.float64) ** 2))
            offset += ir.dim
    return out


def _scalar_slots(layout_irreps: Any) -> np.ndarray:
    mask = []
    for mul, ir in layout_irreps:
        mask.extend([ir.l == 0 and ir.p == 1] * (mul * ir.dim))
    return np.asarray(mask, bool)


def compute_statistics(
    structures: Sequence[LabeledStructure],
    layout: OutputLayout,
    pair_cutoff: dict[tuple[int, int], float],
) -> Statistics:
    """Per-channel scale/shift in the universal layout (float32)."""
    n_s, n_k = layout.n_species, layout.n_species_pairs
    d_on, d_hop = layout.onsite_irreps.dim, layout.hopping_irreps.dim
    scalar_on = _scalar_slots(layout.onsite_irreps)

    def collect(which: str) -> tuple[dict[int, list[np.ndarray]], dict[int, list[np.ndarray]]]:
        onsite: dict[int, list[np.ndarray]] = {}
        hopping: dict[int, list[np.ndarray]] = {}
        for s in structures:
            bm: BlockMatrix | None = getattr(s.hamiltonian, which)
            if bm is None:
                continue
            for g in bm.onsite:
                onsite.setdefault(layout.species_index(g.z), []).append(
                    layout.encode_onsite(g.z, g.blocks)
                )
            for h in bm.hopping:
                hopping.setdefault(layout.pair_index(h.z_i, h.z_j), []).append(
                    layout.encode_hopping(h.z_i, h.z_j, h.blocks)
                )
        return onsite, hopping

    def onsite_stats(data: dict[int, list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        shift = np.zeros((n_s, d_on), np.float32)
        scale = np.zeros((n_s, d_on), np.float32)
        for s, parts in data.items():
            x = np.concatenate(parts)
            mask = layout.onsite_mask[s]
            mean = np.where(scalar_on & mask, x.mean(axis=0), 0.0)
            shift[s] = mean
            scale[s] = np.maximum(_slot_scale(x - mean, layout.onsite_irreps, mask), 0.0)
        return shift, scale

    def hopping_scale(data: dict[int, list[np.ndarray]]) -> np.ndarray:
        scale = np.zeros((n_k, d_hop), np.float32)
        for k, parts in data.items():
            x = np.concatenate(parts)
            scale[k] = _slot_scale(x, layout.hopping_irreps, layout.hopping_mask[k])
        return scale

    on_h, hop_h = collect("H")
    on_s, hop_s = collect("S")
    onsite_shift, onsite_scale = onsite_stats(on_h)
    overlap_onsite, _ = onsite_stats(on_s)
    h_scale = hopping_scale(hop_h)
    s_scale = hopping_scale(hop_s)
    # channels with (almost) no variance still get a small scale so they can be learnt
    for arr, mask in ((onsite_scale, layout.onsite_mask), (h_scale, layout.hopping_mask)):
        arr[:] = np.where(mask, np.maximum(arr, 1e-3), 0.0)
    s_scale[:] = np.where(layout.hopping_mask, np.maximum(s_scale, 1e-4), 0.0)
    cut = np.zeros(n_k, np.float32)
    for (a, b), rc in pair_cutoff.items():
        if a in layout.species and b in layout.species:
            cut[layout.pair_index(a, b)] = rc
            cut[layout.pair_index(b, a)] = rc
    # kinds without data: a positive dummy cutoff (no pair of that kind is ever built)
    cut = np.where(cut > 0, cut, 1.0).astype(np.float32)
    return Statistics(
        onsite_shift=onsite_shift,
        onsite_scale=onsite_scale,
        hopping_scale=h_scale,
        overlap_onsite=overlap_onsite,
        overlap_scale=s_scale,
        pair_cutoff=cut,
    )


def analyze(
    structures: Sequence[LabeledStructure],
    *,
    edge_cutoff: float = 5.0,
    margin: float = CUTOFF_MARGIN,
    n_bins: int = 40,
    with_statistics: bool = True,
) -> Analysis:
    """Analyse labelled structures (see module docstring)."""
    if not structures:
        raise AnalysisError("no structures to analyse")
    basis = merge_bases(structures)
    species = tuple(sorted({z for s in structures for z in s.hamiltonian.structure.species}))
    max_dist: dict[tuple[int, int], float] = {}
    dists: dict[str, list[np.ndarray]] = {}
    rows: dict[str, int] = {}
    block_stats: dict[str, dict[str, float | bool]] = {}
    abs_sums: dict[str, list[float]] = {}
    atom_counts: dict[str, int] = {}
    s_rows: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]] = {}
    n_edges = 0
    n_atoms = 0
    for s in structures:
        st = s.hamiltonian.structure
        for z in st.numbers:
            atom_counts[str(int(z))] = atom_counts.get(str(int(z)), 0) + 1
        n_atoms += st.n_atoms
        n_edges += int(neighbor_pairs(st, edge_cutoff)[0].shape[0])
        for g in s.hamiltonian.H.hopping:
            vec = st.positions[g.j] + g.shift @ st.cell - st.positions[g.i]
            d = np.linalg.norm(vec, axis=1)
            key = (min(g.z_i, g.z_j), max(g.z_i, g.z_j))
            name = _key(*key)
            if d.size:
                max_dist[key] = max(max_dist.get(key, 0.0), float(d.max()))
            dists.setdefault(name, []).append(d)
            rows[name] = rows.get(name, 0) + int(d.size)
            abs_sums.setdefault(name, []).append(float(np.abs(g.blocks).mean()) if d.size else 0.0)
        # molecules only: a periodic structure's stored range is the DFT code's, and PAW's
        # three-centre overlap terms can leave |S| above the threshold at its very end
        molecule = s.hamiltonian.S is not None and not np.any(st.pbc)
        for g in s.hamiltonian.S.hopping if molecule else ():
            if len(g.i):
                vec = st.positions[g.j] + g.shift @ st.cell - st.positions[g.i]
                key = (min(g.z_i, g.z_j), max(g.z_i, g.z_j))
                s_rows.setdefault(key, []).append(
                    (np.linalg.norm(vec, axis=1), np.abs(g.blocks).max(axis=(1, 2)))
                )
        for g in s.hamiltonian.H.onsite:
            name = f"{g.z}"
            abs_sums.setdefault(f"onsite-{name}", []).append(float(np.abs(g.blocks).mean()))
    all_d = np.concatenate([np.concatenate(v) for v in dists.values()]) if dists else np.zeros(1)
    edges = np.linspace(0.0, float(all_d.max()) + 1e-9, n_bins + 1)
    hist = {k: np.histogram(np.concatenate(v), bins=edges)[0].tolist() for k, v in dists.items()}
    for k, v in abs_sums.items():
        block_stats[k] = {"mean_abs_eV": float(np.mean(v))}
    pair_cutoff = {}
    for key, dist in max_dist.items():
        tail = max(
            (float(m[d > dist - TAIL_WIDTH].max(initial=0.0)) for d, m in s_rows.get(key, [])),
            default=0.0,
        )
        truncated = tail > TRUNCATED_TAIL
        pair_cutoff[key] = dist + margin + (TRUNCATED_MARGIN if truncated else 0.0)
        if key in s_rows:
            block_stats.setdefault(_key(*key), {}).update(
                {"s_tail_max_abs": tail, "truncated": truncated}
            )
    result = Analysis(
        n_structures=len(structures),
        basis=basis,
        species=species,
        edge_cutoff=edge_cutoff,
        avg_num_neighbors=max(n_edges / max(n_atoms, 1), 1.0),
        pair_cutoff=pair_cutoff,
        pair_rows=rows,
        distance_histogram=hist,
        histogram_edges=edges.tolist(),
        block_stats=block_stats,
        atom_counts=atom_counts,
        gamma_only=any(s.gamma_only for s in structures),
    )
    if with_statistics:
        layout = OutputLayout.create(basis, species)
        result.statistics = compute_statistics(structures, layout, pair_cutoff)
    return result
