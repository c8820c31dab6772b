"""The seed classifier of ``ml-seeds+ckf``: which ACTS triplet seeds are worth a CKF run.

ACTS's grid triplet seeding (``lhcml.tasks.tracking.seed_filter``) proposes up to
``max_seeds_per_spm`` seeds per middle space point; at ⟨μ⟩ = 200 most of them combine hits of
several particles, and the CKF spends ~75 % of the reconstruction time following them. The
classifier scores each seed from its three space points alone (:func:`seed_features`): the
helix through them (pT, transverse impact parameter, z0, the top point's z residual from the
straight r–z line of the two others, the bending-angle difference), the points' radii and z, the
number of seeds that share each point (competition) and the number of measurements on the middle
point's module (local density). A seed is *true* when its three measurements come from one
particle (truth ``particle_id``, noise excluded).

Seed files (``<event directory>/seeds-<name>/event{N:09d}-seeds.npz``, written by
``lhcml.tasks.tracking.seed_filter.write_seed_files``) hold per seed ``triplets`` (measurement
indices, bottom-middle-top), ``features`` and, for simulated events, the label ``y``; the
classifier trains on them with ``lhcml train configs/tracking/seed_filter.yaml`` (the tracking
registry of :mod:`lhcml.train.tracking`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lhcml.errors import CorruptFileError, InputNotFoundError, SchemaError
from lhcml.models.tracking.gnn import mlp, precision_recall

__all__ = ["FEATURE_NAMES", "SeedClassifier", "load_npz", "read_seed_file", "seed_features", "seed_file",
           "seed_init_args", "seed_prepare", "seed_setup", "seed_step"]  # fmt: skip

#: the per-seed features of :func:`seed_features`, in column order
FEATURE_NAMES = (
    "r_b", "r_m", "r_t", "z_b", "z_m", "z_t",  # mm
    "inv_pt",  # signed curvature as q/pT-like 1/GeV (sign: bending direction)
    "d0",  # mm, transverse distance of the circle from the beam line
    "z0",  # mm, z at r = 0 of the bottom-middle line
    "cot_theta",  # of the bottom-top line
    "dz_top",  # mm, top point's z minus the bottom-middle line's extrapolation to its radius
    "dcot",  # cot(theta) of middle-top minus that of bottom-middle
    "n_seeds_b", "n_seeds_m", "n_seeds_t",  # seeds of the event sharing each space point
    "n_meas_module_m",  # measurements on the middle point's module
)
#: B in tesla -> pT[GeV] = _PT_PER_TM * B * R[m]
_PT_PER_TM = 0.299792458


def seed_features(x: np.ndarray, y: np.ndarray, z: np.ndarray, geometry_id: np.ndarray,
                  triplets: np.ndarray, field_tesla: float = 2.0) -> np.ndarray:  # fmt: skip
    """Features ``(n, len(FEATURE_NAMES))`` float32 of seeds ``triplets`` ``(n, 3)`` (measurement
    indices into ``x, y, z, geometry_id``; any order: sorted by radius here)."""
    t = np.asarray(triplets, np.int64).reshape(-1, 3)
    r_all = np.hypot(x, y)
    t = np.take_along_axis(t, np.argsort(r_all[t], axis=1, kind="stable"), axis=1)
    px, py, pz, pr = x[t], y[t], z[t], r_all[t]
    # circle through the three points in the transverse plane
    ax, ay = px[:, 1] - px[:, 0], py[:, 1] - py[:, 0]
    bx, by = px[:, 2] - px[:, 0], py[:, 2] - py[:, 0]
    cross = ax * by - ay * bx
    a2, b2 = ax * ax + ay * ay, bx * bx + by * by
    with np.errstate(divide="ignore", invalid="ignore"):
        cx = (by * a2 - ay * b2) / (2 * cross)
        cy = (ax * b2 - bx * a2) / (2 * cross)
        radius = np.hypot(cx, cy)  # relative to the bottom point
        curv = np.where(np.abs(cross) > 0, 1.0 / radius, 0.0) * np.sign(cross)  # 1/mm, signed
        centre_x, centre_y = cx + px[:, 0], cy + py[:, 0]
        d0 = np.where(np.abs(cross) > 0, np.abs(np.hypot(centre_x, centre_y) - radius), 0.0)
        inv_pt = curv * 1000.0 / (_PT_PER_TM * field_tesla)  # 1/GeV
        dr_bm, dr_mt, dr_bt = pr[:, 1] - pr[:, 0], pr[:, 2] - pr[:, 1], pr[:, 2] - pr[:, 0]
        cot_bm = (pz[:, 1] - pz[:, 0]) / dr_bm
        cot_mt = (pz[:, 2] - pz[:, 1]) / dr_mt
        cot_bt = (pz[:, 2] - pz[:, 0]) / dr_bt
    z0 = pz[:, 0] - cot_bm * pr[:, 0]
    dz_top = pz[:, 2] - (pz[:, 1] + cot_bm * dr_mt)
    flat = t.ravel()
    uses = np.bincount(flat, minlength=len(x))
    gid = np.asarray(geometry_id, np.uint64) >> np.uint64(8)  # the module (sensitive surface) without the extra bits
    _, inv, counts = np.unique(gid, return_inverse=True, return_counts=True)
    per_module = counts[inv]
    out = np.column_stack([pr[:, 0], pr[:, 1], pr[:, 2], pz[:, 0], pz[:, 1], pz[:, 2], inv_pt, d0, z0, cot_bt,
                           dz_top, cot_mt - cot_bm, uses[t[:, 0]], uses[t[:, 1]], uses[t[:, 2]],
                           per_module[t[:, 1]]]).astype(np.float32)  # fmt: skip
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def seed_file(source: str, event_id: int, name: str) -> Path:
    """``<event directory>/seeds-<name>/event{N:09d}-seeds.npz`` (``source``: the event's
    :attr:`lhcml.data.trackml.TrackMLEvent.source`, ``<directory>/event{N:09d}``)."""
    return Path(source).parent / f"seeds-{name}" / f"event{int(event_id):09d}-seeds.npz"


def load_npz(path: Path, what: str, hint: str) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file (no pickles); :class:`InputNotFoundError` (with ``hint``) if absent,
    :class:`CorruptFileError` if unreadable; ``what`` names the file in messages."""
    if not path.is_file():
        raise InputNotFoundError(f"no {what} {path}: {hint}")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError) as err:
        raise CorruptFileError(f"{what} {path} is unreadable ({err}); write it again") from None


def read_seed_file(path: str | Path) -> dict[str, np.ndarray]:
    """A seed file's arrays; :class:`InputNotFoundError` / :class:`CorruptFileError` if absent or bad."""
    path = Path(path)
    data = load_npz(path, "seed file", "write the seeds first (lhcml tracking write-seeds EVENT_DIR --name NAME)")
    missing = [k for k in ("triplets", "features", "feature_names") if k not in data]
    if missing:
        raise SchemaError(f"seed file {path} lacks {', '.join(missing)}; write it again with lhcml tracking write-seeds")
    if data["features"].shape != (len(data["triplets"]), len(data["feature_names"])):
        raise SchemaError(f"seed file {path}: features {data['features'].shape} do not match "
                          f"{len(data['triplets'])} seeds x {len(data['feature_names'])} names; write it again")  # fmt: skip
    return data


class SeedClassifier(nn.Module):
    """MLP seed classifier: standardised features -> logit that the seed's three hits share a particle.

    Parameters
    ----------
    feature_names:
        the input columns (from the seed files; :data:`FEATURE_NAMES`).
    hidden, n_layers:
        width and depth of the MLP (configs/tracking/seed_filter.yaml; our choice).
    """

    def __init__(self, feature_names: list[str] | tuple[str, ...] = FEATURE_NAMES, hidden: int = 64,
                 n_layers: int = 3) -> None:  # fmt: skip
        super().__init__()
        self.feature_names = [str(n) for n in feature_names]
        k = len(self.feature_names)
        self.register_buffer("mean", torch.zeros(k))
        self.register_buffer("std", torch.ones(k))
        self.net = mlp(k, hidden, 1, n_layers, output_activation=False)

    def set_normalisation(self, features: np.ndarray) -> None:
        """Mean and standard deviation of the training features (log1p of the counts first)."""
        f = self._transform(torch.as_tensor(np.asarray(features, np.float32)))
        self.mean.copy_(f.mean(0))
        self.std.copy_(f.std(0).clamp(min=1e-6))

    def _transform(self, x: Tensor) -> Tensor:
        counts = torch.tensor([n.startswith("n_") for n in self.feature_names], device=x.device)
        return torch.where(counts, torch.log1p(x.clamp(min=0)), x)

    def forward(self, features: Tensor) -> Tensor:
        """Logits ``(n,)`` of ``features`` ``(n, k)``."""
        if features.shape[-1] != len(self.feature_names):
            raise SchemaError(f"seed features have {features.shape[-1]} columns, the classifier expects "
                              f"{len(self.feature_names)} ({', '.join(self.feature_names)})")  # fmt: skip
        return self.net((self._transform(features) - self.mean) / self.std).squeeze(-1)

    def onnx_signature(self) -> dict[str, Any]:
        """Names, dynamic axes and descriptions of the ONNX input and output (``lhcml export``)."""
        return {
            "inputs": ["features"], "outputs": ["logit"],
            "dynamic_axes": {"features": {0: "seeds"}, "logit": {0: "seeds"}},
            "description": {"features": f"(n, {len(self.feature_names)}) seed features: {', '.join(self.feature_names)}",
                            "logit": "(n,) logit; sigmoid = score that the seed's three hits come from one particle"},
        }  # fmt: skip

    def example_inputs(self, n: int, seed: int = 0) -> dict[str, Tensor]:
        """``n`` random seeds around the training features (counts non-negative)."""
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, len(self.feature_names), generator=g) * self.std + self.mean
        counts = torch.tensor([n_.startswith("n_") for n_ in self.feature_names])
        return {"features": torch.where(counts, torch.expm1(z.clamp(min=0, max=8)), z)}

    @torch.no_grad()
    def score(self, features: np.ndarray) -> np.ndarray:
        """Probabilities ``(n,)`` float64 (eval mode, no gradient)."""
        self.eval()
        return torch.sigmoid(self(torch.as_tensor(np.asarray(features, np.float32)))).double().numpy()


# --------------------------------------------------------------------- training-registry functions
def seed_prepare(event: Any, opts: Any) -> dict[str, Any]:
    """``prepare`` of the seed classifier: the event's seed file ``opts.seeds`` with its labels."""
    data = read_seed_file(seed_file(event.source, event.event_id, opts.seeds))
    if "y" not in data:
        raise SchemaError(f"seeds of event {event.event_id} have no labels (written from events without truth); "
                          "training needs simulated events with truth")  # fmt: skip
    return {"features": data["features"].astype(np.float32), "y": data["y"].astype(np.float32),
            "feature_names": [str(n) for n in data["feature_names"]]}  # fmt: skip


def seed_init_args(sample: dict[str, Any]) -> dict[str, Any]:
    """The feature names come from the seed files."""
    return {"feature_names": list(sample["feature_names"])}


def seed_setup(model: SeedClassifier, samples: list[dict[str, Any]]) -> None:
    """Feature normalisation from the training seeds."""
    model.set_normalisation(np.concatenate([np.asarray(s["features"]) for s in samples]))


def seed_step(model: SeedClassifier, s: dict[str, Any], generator: Any, training: bool) -> dict[str, Any]:
    """Binary cross-entropy of one event's seeds; at validation also precision and recall at 0.5."""
    logits = model(s["features"])
    y = s["y"].to(logits.dtype)
    terms = {"loss": nn.functional.binary_cross_entropy_with_logits(logits, y)}
    if not training:
        terms.update(precision_recall(logits, y))
    return terms
