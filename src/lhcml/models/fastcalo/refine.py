"""Classifier-refined sampling of a fast-calo generator (opt-in): sampling-importance-resampling (SIR).

A *refinement classifier* is trained to tell detailed showers (label 1) from the generator's (label 0, after its
correction chain) at the same conditions. At balanced classes its output ``p`` gives the density ratio
``w = p / (1 - p) = exp(logit)`` of detailed over generated showers (the DCTR-GAN idea, Diefenbacher et al.,
arXiv:2009.03796). :func:`sir_sampler` turns the weights into *unweighted* showers: for each requested shower it
draws ``k`` candidates at the same condition, scores them, and keeps candidate ``i`` with probability
``w_i / sum_j w_j`` (``w`` optionally clipped at ``w_max``), the choice made by one extra uniform number that is
part of the graph's noise input (a standard-normal column mapped through its CDF). The output is a deterministic
function of the inputs, costs exactly ``k`` generations and ``k`` classifier calls, and, as ``k`` grows, tends to
the reweighted distribution ``w x p_gen``. Whole showers are picked: each shower is one of the generator's, so
anything the generator conserves per shower (the layer energies of the correction chain) holds unchanged.

The classifier sees what the CaloChallenge's classifiers see (:func:`classifier_features`): the generator's
condition encoding (:meth:`FastCaloGenerator.condition`: log E, |eta|, the impact phases), the voxels over the
incident energy, and the high-level features (log10 of the layer energies, the per-layer centroids and widths in
both coordinates), standardised inside the module (the mean and spread of the training inputs are buffers), so it
takes raw GeV showers. Training: :func:`lhcml.train.fastcalo_refine.fit_refinement`.

**Sharper choices** (``power`` ``b``, opt-in; default 1): with a finite ``k`` SIR corrects only part of the way to
``w x p_gen`` (a shower of weight 10 among k = 7 candidates of weight ~1 is kept with probability ~0.6, not 1).
Keeping candidate ``i`` with probability ``w_i^b / sum_j w_j^b``, ``b > 1``, moves further at the same ``k`` and the
same cost; as ``k`` grows it tends to ``w^b x p_gen``, which overshoots, so ``b`` is a finite-``k`` setting to be
chosen on a validation sample (docs/benchmarks/fastcalo.md, thirty-seventh version).

**Scoring before the correction chain** (``stage="raw"``, opt-in): every candidate of the plain SIR graph carries the
whole correction chain, which costs more than the generator itself. The chain is a deterministic per-shower map
``x -> C(x)`` (at fixed condition), so the weight ``w(C(x))`` that the classifier gives a corrected shower is a
function of the raw shower ``x`` alone. A *distilled* classifier (:func:`lhcml.train.fastcalo_refine.fit_distilled`)
learns that function from the raw showers: trained to regress the corrected-stage classifier's logit of ``C(x)`` from
``x``, it lets the graph score the k raw candidates, keep one, and run the chain on the kept shower only. The kept
showers then follow the same distribution as the plain SIR graph's, up to the distillation's error, at the cost of
``k`` generations, ``k`` small classifier calls and **one** chain (``sir_sampler(..., post=chain)``). The file
records the stage and the sha256 of the correction file it was distilled through, and the export refuses another.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lhcml.errors import ConfigError

#: the refinement file's format tag (:meth:`RefinementClassifier.save`)
FORMAT = "lhcml-fastcalo-refinement-1"
#: what a refinement classifier scores: ``corrected`` showers (after the correction chain; trained by
#: :func:`~lhcml.train.fastcalo_refine.fit_refinement`) or the generator's ``raw`` showers (before the chain;
#: distilled by :func:`~lhcml.train.fastcalo_refine.fit_distilled`, module docstring)
STAGES = ("corrected", "raw")
#: hidden layers of the refinement classifier (our choice: wider than the evaluation's 2 x 512 costs more
#: per candidate; 3 x 256 LeakyReLU is < 0.3 M multiply-adds per shower)
DEFAULT_HIDDEN = (256, 256, 256)
#: the suggested clamp of the standardised inputs (``input_clip``, opt-in; default none): a voxel at a window edge
#: that the training showers rarely hit has a tiny spread, and one hit there feeds the network a value of hundreds and
#: gets an extrapolated, extreme weight (cuph4: held-out logits up to +24 without it). With SIR only the weights of a
#: shower's k candidates relative to each other count, and on cuph4 the clamp plus a temperature made the refinement
#: weaker (h33a: 40 000-per-class AUC k=3 0.595 / 0.595 against 0.566 / 0.594 without)
SUGGESTED_INPUT_CLIP = 5.0


def check_candidates(k: Any, w_max: Any = None) -> tuple[int, float | None]:
    """``(k, w_max)`` checked: ``k`` an integer >= 1, ``w_max`` ``None`` or a number > 1."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or int(k) < 1:
        raise ConfigError(f"--candidates must be an integer >= 1 (candidates drawn per shower), got {k!r}")
    if w_max is not None:
        try:
            w = float(w_max)
        except (TypeError, ValueError):
            raise ConfigError(f"--w-max must be a number > 1 (the largest weight p/(1-p) kept), got {w_max!r}") from None
        if not (math.isfinite(w) and w > 1.0):
            raise ConfigError(f"--w-max must be a number > 1 (the largest weight p/(1-p) kept), got {w_max!r}")
        return int(k), w
    return int(k), None


def check_power(power: Any) -> float:
    """``power`` checked: a finite number > 0 (the exponent of the weights in :func:`sir_choice`; 1: plain SIR)."""
    msg = f"--weight-power must be a number > 0 (1: plain SIR, > 1: sharper choices), got {power!r}"
    if isinstance(power, bool):
        raise ConfigError(msg)
    try:
        b = float(power)
    except (TypeError, ValueError):
        raise ConfigError(msg) from None
    if not (math.isfinite(b) and b > 0.0):
        raise ConfigError(msg)
    return b


def classifier_features(showers: Any, energy: Any, cond: Any, layer_slices: Sequence[tuple[int, int]],
                        centres: Any) -> Any:  # fmt: skip
    """The refinement classifier's raw inputs ``(N, F)`` (torch): ``cond``, the voxels over the incident energy,
    ``log10(E_layer + 1e-8)`` per layer and per layer and coordinate the energy-weighted centroid and width (the
    CaloChallenge's high-level features, :func:`lhcml.metrics.fastcalo.high_level_features`, negative voxels carrying
    no weight). ``centres``: ``(2, V)`` voxel centres (:meth:`Binning.voxel_centres`)."""
    s = showers.to(torch.float32)
    e = energy.reshape(-1, 1).to(torch.float32)
    cols = [cond.to(torch.float32), s / e]
    w = torch.clamp(s, min=0.0)
    e_layers, moments = [], []
    for a, b in layer_slices:
        wl = w[:, a:b]
        tot = wl.sum(1, keepdim=True)
        e_layers.append(torch.log10(torch.clamp(s[:, a:b].sum(1, keepdim=True), min=0.0) + 1e-8))
        safe = torch.where(tot > 0, tot, torch.ones_like(tot))
        for c in (centres[0:1, a:b], centres[1:2, a:b]):
            m1 = (wl * c).sum(1, keepdim=True) / safe
            m2 = (wl * c * c).sum(1, keepdim=True) / safe
            width = torch.sqrt(torch.clamp(m2 - m1 * m1, min=0.0))
            has = tot > 0
            moments += [torch.where(has, m1, torch.zeros_like(m1)), torch.where(has, width, torch.zeros_like(width))]
    return torch.cat(cols + e_layers + moments, 1)


class RefinementClassifier(nn.Module):
    """Detailed-vs-generated classifier on raw showers: ``forward(showers, energy, cond) -> logit (N,)``,
    ``logit = log w`` (module docstring). ``layer_sizes`` and ``centres`` fix the binning; ``cond_dim`` the
    generator's condition encoding; ``mean``/``std`` standardise the features (set by the training)."""

    def __init__(self, layer_sizes: Sequence[int], centres: Any, cond_dim: int,
                 hidden: Sequence[int] = DEFAULT_HIDDEN, binning_sha256: str = "",
                 input_clip: float | None = None, stage: str = "corrected", chain_sha256: str = "") -> None:  # fmt: skip
        super().__init__()
        if stage not in STAGES:
            raise ConfigError(f"unknown refinement stage {stage!r}; choose one of {', '.join(STAGES)}")
        self.stage, self.chain_sha256 = str(stage), str(chain_sha256)
        self.input_clip = None if input_clip is None else float(input_clip)
        self.layer_sizes = [int(x) for x in layer_sizes]
        self.cond_dim, self.hidden, self.binning_sha256 = int(cond_dim), [int(h) for h in hidden], str(binning_sha256)
        edges = np.concatenate([[0], np.cumsum(self.layer_sizes)]).astype(int)
        self.slices = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        c = torch.as_tensor(np.asarray(centres, np.float64), dtype=torch.float32)
        if c.shape != (2, int(edges[-1])):
            raise ConfigError(f"centres must be (2, {int(edges[-1])}) voxel centres, got {tuple(c.shape)}")
        self.register_buffer("centres", c)
        n_in = self.cond_dim + int(edges[-1]) + len(self.layer_sizes) * 5
        self.n_features = n_in
        self.register_buffer("mean", torch.zeros(n_in))
        self.register_buffer("std", torch.ones(n_in))
        layers: list[nn.Module] = []
        width = n_in
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    @property
    def n_voxels(self) -> int:
        return int(sum(self.layer_sizes))

    def features(self, showers: Tensor, energy: Tensor, cond: Tensor) -> Tensor:
        return classifier_features(showers, energy, cond, self.slices, self.centres)

    def forward(self, showers: Tensor, energy: Tensor, cond: Tensor) -> Tensor:
        x = (self.features(showers, energy, cond) - self.mean) / self.std
        if self.input_clip is not None:
            x = torch.clamp(x, -self.input_clip, self.input_clip)
        return self.net(x).squeeze(1)

    def config(self) -> dict[str, Any]:
        return {"format": FORMAT, "layer_sizes": self.layer_sizes, "cond_dim": self.cond_dim,
                "hidden": self.hidden, "binning_sha256": self.binning_sha256, "input_clip": self.input_clip,
                "stage": self.stage, "chain_sha256": self.chain_sha256, "centres": self.centres.tolist()}  # fmt: skip

    def save(self, path: str | Path, meta: dict[str, Any] | None = None, force: bool = False) -> Path:
        """Write the classifier (state dict + config + ``meta``, plain types only) with torch.save, atomically;
        refused if ``path`` exists unless ``force``."""
        from lhcml.atomic import atomic_path

        path = Path(path)
        if path.exists() and not force:
            raise FileExistsError(f"{path} exists; pass force=True (--force) to overwrite it")
        blob = {"config": self.config(), "meta": dict(meta or {}),
                "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}  # fmt: skip
        with atomic_path(path) as tmp:
            torch.save(blob, str(tmp))
        return path



def load_refinement(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """``(classifier in eval mode, meta)`` of a file written by ``RefinementClassifier.save``
    (``torch.load(weights_only=True)``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"refinement file {path} does not exist")
    try:
        blob = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (any unreadable file is the same user error)
        # the loader's own text (a pickle opcode, advice to drop weights_only) helps nobody here
        raise ConfigError(f"{path} is not a refinement file: it cannot be read as a torch file "
                          f"({type(exc).__name__}); write one with `lhcml fastcalo refine`") from None
    cfg = blob.get("config", {}) if isinstance(blob, dict) else {}
    if cfg.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a refinement file (format {cfg.get('format')!r}, expected {FORMAT!r})")
    if cfg.get("stage", "corrected") not in STAGES:
        raise ConfigError(f"{path} scores showers at an unknown stage {cfg.get('stage')!r} (a newer lhcml?); "
                          f"this version knows {', '.join(STAGES)}")  # fmt: skip
    clf = RefinementClassifier(cfg["layer_sizes"], np.asarray(cfg["centres"]), cfg["cond_dim"], cfg["hidden"],
                               cfg.get("binning_sha256", ""), cfg.get("input_clip"), cfg.get("stage", "corrected"),
                               cfg.get("chain_sha256", ""))  # fmt: skip
    clf.load_state_dict(blob["state_dict"], strict=True)
    return clf.eval(), dict(blob.get("meta", {}))


def check_classifier(classifier: Any, model: Any, binning_sha256: str | None = None) -> None:
    """Raise :class:`ConfigError` if ``classifier`` was not built for ``model``'s voxels, layers, condition encoding
    or (when both are known) binning."""
    if list(classifier.layer_sizes) != [int(x) for x in model.layer_sizes]:
        raise ConfigError(f"the refinement classifier's layers {list(classifier.layer_sizes)} differ from the "
                          f"generator's {list(model.layer_sizes)} (another binning)")  # fmt: skip
    if int(classifier.cond_dim) != int(model.cond_dim):
        raise ConfigError(f"the refinement classifier takes a condition of {classifier.cond_dim} columns, the "
                          f"generator gives {model.cond_dim} (another generator)")  # fmt: skip
    if binning_sha256 and classifier.binning_sha256 and classifier.binning_sha256 != binning_sha256:
        raise ConfigError(f"the refinement classifier's binning (sha256 {classifier.binning_sha256[:12]}...) is not the "
                          f"generator's ({binning_sha256[:12]}...)")  # fmt: skip


def sir_choice(logits: Any, u: Any, w_max: float | None = None, power: float = 1.0) -> Any:
    """Index ``(N,)`` (int64) of the candidate kept per shower: ``logits`` ``(k, N)`` (``log w``), ``u`` ``(N,)``
    uniform in [0, 1). Candidate ``i`` is kept when ``u`` falls in its slice of the cumulative normalised weights
    ``w_i / sum_j w_j`` (``w`` clipped at ``w_max`` if given): probability ``w_i / sum_j w_j``.

    ``power`` (opt-in, ``b``; module docstring "Sharper choices"): the weights raised to it, ``w_i^b / sum_j w_j^b``
    (after the clip); 1 is plain SIR."""
    lg = logits.to(torch.float32)
    if w_max is not None:
        lg = torch.clamp(lg, max=math.log(float(w_max)))
    if power != 1.0:
        lg = lg * float(power)
    p = torch.softmax(lg, dim=0)
    cdf = torch.cumsum(p, dim=0)
    # the number of the first k - 1 cumulative weights at or below u: 0 .. k - 1 (k = 1: no rows, always 0)
    return (cdf[:-1] <= u.reshape(1, -1).to(torch.float32)).to(torch.int64).sum(0)


def uniform_from_normal(z: Any) -> Any:
    """The standard-normal CDF of ``z`` (torch; ONNX Erf): a uniform number from a standard-normal draw."""
    return 0.5 * (1.0 + torch.erf(z.to(torch.float32) / math.sqrt(2.0)))


def sir_sampler(graph: Any, model: Any, classifier: Any, k: int, w_max: float | None = None,
                post: Any = None, power: float = 1.0) -> Any:  # fmt: skip
    """The SIR sampling module: ``graph`` (a sampling graph taking ``incident_energy``, [``eta``], [``phi``],
    ``noise`` ``(N, model.noise_dim)``, e.g. the generator + its correction chain) run on ``k`` candidates per
    shower, ``classifier`` scoring them, one kept (:func:`sir_choice`). Inputs as ``graph``'s with ``noise``
    ``(N, k * model.noise_dim + 1)``: candidate ``j``'s noise in columns ``j*d:(j+1)*d``, the last column the
    normal draw of the choice's uniform. ``k = 1`` is ``graph`` itself (the classifier is not called).

    ``post`` (with a ``stage="raw"`` classifier; module docstring): a module ``post(showers, energy, eta)`` (the
    correction chain's :meth:`~lhcml.models.fastcalo.quantile_map.QuantileCorrection.torch_module`) run on the kept
    shower only; ``graph`` is then the plain generator. ``power``: the weights' exponent (:func:`sir_choice`)."""
    k, w_max = check_candidates(k, w_max)
    power = check_power(power)
    check_classifier(classifier, model)
    if (post is not None) != (classifier.stage == "raw"):
        raise ConfigError("a refinement classifier of stage 'raw' scores the generator's showers before the "
                          "correction chain and needs the chain run after the choice (post); one of stage "
                          f"'corrected' scores the chain's output (no post): got stage {classifier.stage!r} "
                          f"{'with' if post is not None else 'without'} post")  # fmt: skip
    on_eta, on_phi = bool(getattr(model, "conditions_on_eta", False)), bool(getattr(model, "conditions_on_phi", False))
    d = int(model.noise_dim)

    class SIRSampler(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.graph, self.model, self.classifier, self.post = graph, model, classifier, post
            self.k, self.w_max, self.power, self.noise_dim = k, w_max, power, k * d + 1

        def _post(self, showers: Tensor, conds: Sequence[Tensor]) -> Tensor:
            if self.post is None:
                return showers
            return self.post(showers, conds[0].reshape(-1), conds[1].reshape(-1) if on_eta else None)

        def forward(self, *inputs: Tensor) -> Tensor:
            conds, noise = inputs[:-1], inputs[-1]
            if self.k == 1:
                return self._post(self.graph(*conds, noise[:, :d]), conds)
            n = noise.shape[0]
            rep = [c.reshape(-1, 1).repeat(self.k, 1) for c in conds]  # candidate-major: row j * N + i
            z = torch.cat([noise[:, j * d:(j + 1) * d] for j in range(self.k)], 0)
            showers = self.graph(*rep, z)
            e = rep[0].reshape(-1)
            eta = rep[1].reshape(-1) if on_eta else None
            phi = rep[1 + int(on_eta)].reshape(-1) if on_phi else None
            cond = self.model.condition(e, eta, phi)
            logits = self.classifier(showers, e, cond).reshape(self.k, n)
            idx = sir_choice(logits, uniform_from_normal(noise[:, -1]), self.w_max, self.power)
            rows = idx * n + torch.arange(n, dtype=torch.int64)
            return self._post(showers.index_select(0, rows), conds)

    return SIRSampler().eval()


__all__ = ["DEFAULT_HIDDEN", "FORMAT", "STAGES", "SUGGESTED_INPUT_CLIP", "RefinementClassifier", "check_candidates", "check_classifier", "check_power",
           "classifier_features", "load_refinement", "sir_choice", "sir_sampler", "uniform_from_normal"]
