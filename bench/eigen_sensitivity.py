"""How accurate must H be for eigenvalues near E_F? -> table (stdout) and bench/RESULTS.md.

For each validation structure and each k point with stored reference eigenvalues, the
model's H error δH = H_pred(k) − H_DFT(k) is scaled by a factor a and the problem
``(H_DFT + a δH) c = ε S c`` is solved densely, in two ways:

* full basis, with the DFT S(k): what ``gears_h evaluate`` measures (against the stored
  DFT levels);
* in the subspace of the DFT S(k) eigenvectors above ``--threshold`` (canonical
  orthogonalisation, what ``evaluate --overlap-threshold`` measures), against DFT projected
  the same way.

Since δH is linear in a, the H element MAE of row a is a × the model's MAE: the table reads
as "eigenvalue error at that H accuracy, with the error pattern of this model". Three
more rows split the model's own error into its H and S parts (DFT H with predicted S,
predicted H with DFT S, both predicted). Errors are over the states of the evaluate window
(±2 eV of E_F; HOMO − 2 eV … LUMO + 2 eV for molecules).

    uv run python bench/eigen_sensitivity.py default ../shared/data/hbn_pbe_dzp/valid --write
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.linalg as sla
from results_file import publish

from gears_h_core.assemble.sparse import hamiltonian_at_k
from training.data.snapshot import read_dataset
from training.evaluate import evaluate_predictions, window_states
from training.export import default_cache_dir, load_predictor


def _dense(m) -> np.ndarray:
    a = m.toarray()
    a = 0.5 * (a + a.conj().T)
    return a.real if not np.any(a.imag) else a


def _projected(H: np.ndarray, X: np.ndarray) -> np.ndarray:
    h = X.conj().T @ H @ X
    return np.linalg.eigvalsh(0.5 * (h + h.conj().T))


class Errors:
    """|Δε| of the window states, collected per row label (eV)."""

    def __init__(self) -> None:
        self.rows: dict[str, list[np.ndarray]] = {}
        self.failed: dict[str, int] = {}

    def add(self, label: str, eps: np.ndarray, ref: np.ndarray, window: np.ndarray) -> None:
        n = min(len(eps), len(ref), len(window))
        self.rows.setdefault(label, []).append(np.abs(eps[:n] - ref[:n])[window[:n]])

    def fail(self, label: str) -> None:
        self.failed[label] = self.failed.get(label, 0) + 1

    def mae_meV(self, label: str) -> str:
        parts = self.rows.get(label, [])
        e = np.concatenate(parts) if parts else np.zeros(0)
        text = f"{1000.0 * e.mean():.2f}" if e.size else "–"
        if self.failed.get(label):
            text += f" (S not PD in {self.failed[label]})"
        return text


def measure(model: str, dataset: Path, scales: list[float], threshold: float) -> str:
    labeled = read_dataset(dataset, limit=None)
    with tempfile.TemporaryDirectory() as tmp:
        predictor = load_predictor(model, Path(tmp), default_cache_dir())
        preds = [predictor.predict([s.hamiltonian.structure])[0] for s in labeled]
    summary = evaluate_predictions(list(zip(preds, labeled, strict=True)))
    h_mae = summary["H"]["mae_meV"]
    full, proj = Errors(), Errors()
    n_states = 0
    for pred, lab in zip(preds, labeled, strict=True):
        ref = lab.reference
        if ref is None or ref.e_fermi is None or lab.gamma_only:
            continue
        points = [(np.zeros(3), ref.eps_gamma)]
        if ref.k_test is not None and ref.eps_ktest is not None:
            points.append((np.asarray(ref.k_test), ref.eps_ktest))
        for k, eps in points:
            if eps is None:
                continue
            Hd, Sd = (_dense(m) for m in hamiltonian_at_k(lab.hamiltonian, k))
            Hp, Sp = (_dense(m) for m in hamiltonian_at_k(pred, k))
            window = window_states(eps, ref)
            n_states += int(window.sum())
            s, U = np.linalg.eigh(Sd)
            keep = s > threshold
            X = U[:, keep] / np.sqrt(s[keep])[None, :]
            dft_proj = _projected(Hd, X)
            for a in scales:
                H = Hd + a * (Hp - Hd)
                full.add(f"{a:g}", sla.eigh(H, Sd, eigvals_only=True), eps, window)
                proj.add(f"{a:g}", _projected(H, X), dft_proj, window)
            for label, H, S in (
                ("DFT H, predicted S", Hd, Sp),
                ("predicted H, DFT S", Hp, Sd),
                ("predicted H and S", Hp, Sp),
            ):
                try:
                    full.add(label, sla.eigh(H, S, eigvals_only=True), eps, window)
                except np.linalg.LinAlgError:
                    full.fail(label)
                # projected rows use the DFT subspace, as evaluate --overlap-threshold does
                Xs = X
                o = Xs.conj().T @ S @ Xs
                h = Xs.conj().T @ H @ Xs
                try:
                    e = sla.eigh(0.5 * (h + h.conj().T), 0.5 * (o + o.conj().T), eigvals_only=True)
                    proj.add(label, e, dft_proj, window)
                except np.linalg.LinAlgError:
                    proj.fail(label)
    lines = [
        f"### {dataset}",
        "",
        f"{len(labeled)} structures, {n_states} window states; model H element MAE "
        f"{h_mae:.2f} meV; projection onto DFT S(k) eigenvalues > {threshold:g}.",
        "",
        "| H error × a | H element MAE (meV) | eigenvalue MAE, full basis (meV) "
        "| eigenvalue MAE, projected (meV) |",
        "|---|---:|---:|---:|",
    ]
    for a in scales:
        label = f"{a:g}"
        lines.append(
            f"| {label} | {a * h_mae:.3g} | {full.mae_meV(label)} | {proj.mae_meV(label)} |"
        )
    for label in ("DFT H, predicted S", "predicted H, DFT S", "predicted H and S"):
        lines.append(f"| {label} | – | {full.mae_meV(label)} | {proj.mae_meV(label)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="bundle, run directory or 'default'")
    p.add_argument("datasets", nargs="+", type=Path, help="validation folders with eigenvalues")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.3, 0.1, 0.03, 0.01])
    p.add_argument("--threshold", type=float, default=1e-3, help="S(k) eigenvalue cut")
    p.add_argument("--note", default="", help="text put before the tables")
    p.add_argument("--title", default="Eigenvalue sensitivity to H errors")
    p.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = p.parse_args()
    parts = [measure(args.model, d, args.scales, args.threshold) for d in args.datasets]
    publish(args.title, args.note, parts, "eigen_sensitivity.py", args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
