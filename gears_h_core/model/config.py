"""Model hyper-parameters: one frozen dataclass, validated by the training config (pydantic).

Kept in the core (not in `training`) because the model bundle stores it and the predictor
rebuilds the network from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


def _doc(text: str) -> dict[str, str]:
    return {"description": text}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the equivariant Hamiltonian network (all lengths in Å)."""

    # read by pydantic when the training config validates this dataclass: unknown keys fail
    __pydantic_config__ = {"extra": "forbid"}  # noqa: RUF012

    edge_cutoff: float = field(
        default=5.0, metadata=_doc("interaction (message-passing) cutoff radius, Å")
    )
    n_interactions: int = field(default=2, metadata=_doc("number of interaction layers (>= 1)"))
    # the default widths are half of those of the first default model: 2.5x cheaper per pair
    # (the cost that dominates large structures) for ~25 % more error at a fixed CPU budget
    node_irreps: str = field(
        default="16x0e+8x1o+8x1e+4x2e+4x2o+2x3o+2x3e+2x4e",
        metadata=_doc("hidden node features (e3nn irreps; only even scalars 0e)"),
    )
    pair_irreps: str = field(
        default="16x0e+8x1o+8x1e+4x2e+4x2o+2x3o+2x3e+2x4e",
        metadata=_doc("hidden hopping-pair features (e3nn irreps)"),
    )
    sh_lmax: int = field(default=4, metadata=_doc("max l of edge/pair spherical harmonics"))
    n_radial: int = field(default=8, metadata=_doc("number of Bessel radial basis functions"))
    radial_hidden: int = field(default=32, metadata=_doc("width of radial MLPs"))
    species_embedding: int = field(default=32, metadata=_doc("width of the species embedding"))
    avg_num_neighbors: float = field(
        default=20.0,
        metadata=_doc("constant message normaliser (set from `analyze`; never batch-dependent)"),
    )
    overlap_channels: int = field(
        default=8, metadata=_doc("radial channels per harmonic in the two-centre overlap readout")
    )
    predict_overlap: bool = field(default=True, metadata=_doc("also predict S"))
    two_centre_basis: int = field(
        default=16,
        metadata=_doc(
            "Bessel functions per species pair and output slot of the two-centre terms: S "
            "(its two-centre part), and the H hopping baseline the network corrects (least-squares fitted "
            "before training); 0: the earlier radial-MLP overlap readout and no H baseline"
        ),
    )

    # measured on the 20-minute h-BN benchmark (bench/RESULTS.md): validation H MAE 3.69 ->
    # 3.02 meV, on-site 15.0 -> 5.95 meV, for ~9 % fewer structures per second
    onsite_field_basis: int = field(
        default=8,
        metadata=_doc(
            "Bessel functions per species pair and on-site slot of the on-site crystal-field "
            "term: a sum over the interaction neighbours of two-centre functions of the "
            "neighbour vector, added to the on-site H (least-squares fitted before training); "
            "0: none"
        ),
    )

    onsite_overlap_field: bool = field(
        default=True,
        metadata=_doc(
            "with onsite_field_basis > 0: an on-site crystal field for S too (GPAW's PAW "
            "overlap adds the neighbours' projector terms to an atom's own block), "
            "least-squares fitted before training"
        ),
    )
    overlap_correction: bool = field(
        default=True,
        metadata=_doc(
            "with two_centre_basis > 0: the hopping readout also predicts a correction to the "
            "two-centre S (GPAW's PAW overlap has three-centre projector terms); trained with "
            "the S loss"
        ),
    )

    @property
    def has_fitted_terms(self) -> bool:
        """Whether training fits terms by least squares before the first step and keeps them
        fixed (the two-centre terms, the on-site crystal field)."""
        return self.two_centre_basis > 0 or self.onsite_field_basis > 0

    @property
    def has_onsite_s_field(self) -> bool:
        """Whether on-site S gets the least-squares crystal field (the model adds it, training
        fits it)."""
        return self.predict_overlap and self.onsite_field_basis > 0 and self.onsite_overlap_field

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"model config: unknown field(s) {unknown}")
        # bundles written before the two-centre terms existed use the radial-MLP overlap
        # and those written before the on-site crystal fields or the overlap correction have
        # none
        defaults = {
            "two_centre_basis": 0,
            "onsite_field_basis": 0,
            "onsite_overlap_field": False,
            "overlap_correction": False,
        }
        return cls(**{**defaults, **data})
