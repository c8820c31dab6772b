"""Training of the generative fast-calorimeter models (``lhcml train configs/fastcalo/X.yaml``).

The models (:class:`lhcml.models.fastcalo.base.FastCaloGenerator`: ``fastcalo_vae``,
``fastcalo_gan``, ``fastcalo_flow``, ``fastcalo_fm``) learn showers of CaloChallenge-layout
files (:func:`lhcml.data.calochallenge.read_showers`, read into memory: a few 10⁴ showers of a
few hundred voxels). Why a module of its own beside the tagger loop of
:mod:`lhcml.train.trainer`: that loop is a classifier (labels, class weights, rejections, the
jet datamodule), while a generative model has no labels and a GAN steps two optimisers. The
Lightning machinery is the same: ``checkpoints/best-epoch=NN.ckpt`` (lowest ``val_loss``) and
``checkpoints/last.ckpt`` (every epoch), ``--resume``, early stopping, ``logs/metrics.csv``,
``epoch_hooks`` for ``lhcml tune``, ``--devices/--strategy ddp`` (Lightning's DDP, gloo on
CPU: every rank holds the sample, iterates over its own share of each epoch's permutation
(:class:`_RankShare`) and draws its own noise; gradients are averaged over the ranks, so
``data.batch_size`` is per rank; checked by ``tests/test_fastcalo_ddp.py``).

One training step (manual optimisation): for every phase of
:meth:`~lhcml.models.fastcalo.base.FastCaloGenerator.phases` due on this batch (phase ``k`` on
batches ``b`` with ``(b + 1) % every_n_batches == 0``, ``b`` counted over epochs) zero that
phase's gradients, back-propagate the sum of its :meth:`loss_terms`, clip
(``trainer.gradient_clip_val``) and step its optimiser. A likelihood model has one phase; the
WGAN-GP takes one critic step per batch and a generator step after every ``n_critic``-th.

Resume is exact: every step re-seeds torch's generator from ``(seed, batch, rank)`` and the
shuffling is a permutation seeded by ``(seed, epoch)``, so a run resumed from ``last.ckpt``
after a crash continues as the uninterrupted run would have (checked by
``tests/test_fastcalo_models.py``, and for a WGAN-GP on two DDP ranks by
``tests/test_fastcalo_ddp.py``). Validation draws its noise under a fixed seed in a forked RNG.

Checkpoints carry, under ``checkpoint["lhcml"]``: ``kind: fastcalo``, the resolved config,
the model's constructor arguments (``model_init_yaml``: ``n_voxels``, ``layer_sizes``, the
trained energy range and the hyper-parameters), the particle, the binning XML and its sha256;
:func:`load_generator` rebuilds the model from the registry and them.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import Field

from lhcml.atomic import atomic_write_text
from lhcml.config import StrictModel, validate_config
from lhcml.errors import CheckpointMismatchError, ConfigError
from lhcml.train.config import (
    ModelConfig,
    OptimizerConfig,
    SchedulerConfig,
    TrainerConfig,
    check_hyperparameters,
)

#: constructor arguments of every fast-calo model that come from the data, not from ``model:``
DATA_ARGUMENTS = ("n_voxels", "layer_sizes", "e_min_gev", "e_max_gev")
#: config keys a resumed checkpoint must share with the config
_MUST_MATCH = (
    ("model",),
    ("data", "binning"),
    ("data", "particle"),
    ("data", "e_min_gev"),
    ("data", "e_max_gev"),
)
#: seed of the validation noise (the same every epoch; our choice)
VALIDATION_SEED = 12345
#: state-dict prefix of the averaged weights (``ema_decay``) in a checkpoint, beside ``model.``
EMA_PREFIX = "ema_model."


class FastCaloDataConfig(StrictModel):
    """Shower files (CaloChallenge layout), their binning and the batching."""

    train_files: list[str]
    val_files: list[str]
    #: the binning XML the files were written with
    binning: str
    #: particle name in the binning file (when it describes several)
    particle: str | None = None
    max_showers_train: int | None = Field(None, gt=0)
    max_showers_val: int | None = Field(None, gt=0)
    batch_size: int = Field(128, gt=0)
    #: trained incident-energy range in GeV; default: the training sample's smallest/largest
    e_min_gev: float | None = Field(None, gt=0)
    e_max_gev: float | None = Field(None, gt=0)


class FastCaloModelConfig(ModelConfig):
    """``name`` (a registered fast-calo model) plus its hyper-parameters."""


class FastCaloTrainConfig(StrictModel):
    """The full configuration of a fast-calo training run."""

    data: FastCaloDataConfig
    model: FastCaloModelConfig
    optimizer: OptimizerConfig = Field(
        default_factory=lambda: OptimizerConfig(name="adam", lr=1e-3, weight_decay=0.0)
    )
    scheduler: SchedulerConfig = Field(default_factory=lambda: SchedulerConfig(name="none"))
    trainer: TrainerConfig = Field(default_factory=lambda: TrainerConfig(precision="32-true"))
    seed: int = 42
    output_dir: str = "runs/fastcalo"
    #: fine-tuning: start from this fast-calo checkpoint's weights (:func:`init_from_checkpoint`)
    #: instead of a random initialisation; a resumed run continues from its own ``last.ckpt``
    init_from: str | None = None
    #: exponential moving average of the weights (``None``: off, the old behaviour): after every
    #: optimiser step ``w_ema <- d w_ema + (1 - d) w``; validation (so ``best-*.ckpt``) uses the
    #: averaged weights, the checkpoint stores both (``ema_model.*`` beside ``model.*``) and
    #: :func:`load_generator` returns the averaged ones (:data:`EMA_PREFIX`)
    ema_decay: float | None = Field(None, gt=0.0, lt=1.0)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def fastcalo_config_from_dict(data: dict[str, Any], source: str = "config") -> FastCaloTrainConfig:
    """Validate a fast-calo training config given as a mapping."""
    return validate_config(FastCaloTrainConfig, data, source=source)


def is_fastcalo_model(name: str) -> bool:
    """Whether ``name`` is a registered :class:`FastCaloGenerator`."""
    from lhcml.models.fastcalo.base import FastCaloGenerator
    from lhcml.models.registry import get_model_class, list_models

    return name in list_models() and issubclass(get_model_class(name), FastCaloGenerator)


def _model_class(name: str) -> type:
    from lhcml.models.registry import get_model_class

    cls = get_model_class(name)
    if not is_fastcalo_model(name):
        raise ConfigError(
            f"model '{name}' is not a fast-calorimeter generator (fastcalo_vae, fastcalo_gan, ...)"
        )
    return cls


def build_generator(name: str, init: dict[str, Any]) -> Any:
    """A registered fast-calo model from its constructor arguments (no I/O)."""
    cls = _model_class(name)
    hyper = {k: v for k, v in init.items() if k not in DATA_ARGUMENTS}
    check_hyperparameters(cls, hyper, name)
    try:
        return cls(**init)
    except TypeError as err:
        raise ConfigError(f"bad hyperparameters for model '{name}': {err}") from None


def _read(
    files: list[str], binning: Any, max_showers: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(energies GeV, showers GeV, |eta| or None, phi or None)``: ``None`` unless every file has
    ``incident_eta`` (``incident_phi``)."""
    from lhcml.data.calochallenge import read_showers
    from lhcml.data.files import expand_inputs

    es, xs, etas, phis, left = [], [], [], [], max_showers
    for p in expand_inputs(files):
        s = read_showers(p, binning, max_showers=left)
        es.append(s.energies)
        xs.append(s.showers)
        etas.append(s.eta)
        phis.append(s.phi)
        if left is not None:
            left -= len(s)
            if left <= 0:
                break
    e, x = np.concatenate(es), np.concatenate(xs)
    if len(e) == 0:
        raise ConfigError(f"no showers in {files}")
    if not (np.all(np.isfinite(e)) and np.all(e > 0)) or not np.all(np.isfinite(x)):
        raise ConfigError(f"{files}: incident energies must be finite and > 0 and showers finite")
    eta = None if any(a is None for a in etas) else np.concatenate(etas).astype(np.float32)
    phi = None if any(a is None for a in phis) else np.concatenate(phis).astype(np.float32)
    return e.astype(np.float32), np.clip(x, 0.0, None).astype(np.float32), eta, phi


def check_eta_data(cfg: FastCaloTrainConfig, eta: np.ndarray | None, files: list[str]) -> np.ndarray | None:
    """The showers' |eta| an η-conditioned model (``model.eta_range``) trains on, else ``None``.

    Raises :class:`ConfigError` when the model asks for η and the files do not carry it, or
    their |eta| lies outside ``model.eta_range``."""
    rng = cfg.model.hyperparameters().get("eta_range")
    if rng is None:
        return None
    if eta is None:
        raise ConfigError(
            f"model.eta_range is set but {files} carry no incident_eta: simulate the showers with "
            "lhcml fastcalo simulate --eta-range lo,hi, or remove model.eta_range (energy-only model)"
        )
    lo, hi = (float(x) for x in rng)
    if eta.min() < lo - 1e-4 or eta.max() > hi + 1e-4:
        raise ConfigError(
            f"{files}: |eta| {eta.min():.3g}-{eta.max():.3g} lies outside model.eta_range {lo:g}-{hi:g}; widen it"
        )
    return eta


def check_phi_data(cfg: FastCaloTrainConfig, phi: np.ndarray | None, files: list[str]) -> np.ndarray | None:
    """The showers' φ a model with ``model.phi_cells`` trains on, else ``None``; raises
    :class:`ConfigError` when the model asks for φ and the files do not carry it."""
    if cfg.model.hyperparameters().get("phi_cells") is None:
        return None
    if phi is None:
        raise ConfigError(
            f"model.phi_cells is set but {files} carry no incident_phi: simulate the showers again with "
            "lhcml fastcalo simulate (which stores each shower's phi), or remove model.phi_cells"
        )
    return phi


def model_init(cfg: FastCaloTrainConfig, binning: Any, train_e: np.ndarray) -> dict[str, Any]:
    """Constructor arguments: the data's voxelisation and energy range plus ``model:``'s keys."""
    hyper = cfg.model.hyperparameters()
    clash = [k for k in DATA_ARGUMENTS if k in hyper]
    if clash:
        raise ConfigError(
            f"model.{clash[0]} comes from the data (binning file, data.e_min_gev/e_max_gev): remove it from 'model'"
        )
    lo = cfg.data.e_min_gev if cfg.data.e_min_gev is not None else float(train_e.min())
    hi = cfg.data.e_max_gev if cfg.data.e_max_gev is not None else float(train_e.max())
    if not lo < hi:
        raise ConfigError(
            f"the trained energy range needs e_min < e_max, got {lo:g}-{hi:g} GeV (one energy only?)"
        )
    if train_e.min() < lo * (1 - 1e-5) or train_e.max() > hi * (1 + 1e-5):
        raise ConfigError(
            f"training energies {train_e.min():g}-{train_e.max():g} GeV lie outside data.e_min_gev/e_max_gev = {lo:g}-{hi:g}"
        )
    return {
        "n_voxels": binning.n_voxels,
        "layer_sizes": list(binning.layer_sizes),
        "e_min_gev": lo,
        "e_max_gev": hi,
        **hyper,
    }


#: buffers of :class:`lhcml.models.fastcalo.flow.CaloFlowVariables` that a model with
#: ``energy_standardisation`` / ``eta_standardisation`` / ``first_layer_whitening`` has and an
#: ``init_from`` model without it lacks
NEW_STANDARDISATION_BUFFERS = ("v_mean_coef", "v_var_coef", "log_e_ref", "eta_ref", "white_enc", "white_dec")


def init_from_checkpoint(model: Any, path: str | Path) -> dict[str, int]:
    """Copy the weights of the fast-calo checkpoint ``path`` into ``model`` (``init_from``).

    Every tensor of the same name and shape is copied. A 2-D weight that is wider in its second
    dimension (a layer fed more inputs, e.g. ``model.eta_cells`` adds condition columns at the end
    of the velocity network's input) gets the stored columns first and zeros for the new ones, so
    the model starts as the stored one computes. The conditional standardisation's buffers
    (:data:`NEW_STANDARDISATION_BUFFERS`) that the stored model lacks keep the values
    ``model.prepare`` fitted (fine-tuning a model into ``eta_standardisation``). A model with
    ``model.strip_ratios`` starts only from one with it (and one without it only from one
    without): the strips' variables, and so the weights and their standardisation, mean
    something else; the same holds for ``model.strip_first_ratio`` between ratio models. A model with
    ``model.occupancy_layers`` starts from one without them (its velocity network widened by
    ``model.widen_state_dict``: the bits' input columns and output rows freshly initialised) or
    from one with the same ones, never the other way round. Returns
    ``{"copied": n, "widened": n, "kept": n}``.

    Raises
    ------
    CheckpointMismatchError
        Not a fast-calo checkpoint of the same model, or a tensor that fits neither rule.
    """
    import torch

    from lhcml.train.checkpoint import read_checkpoint, state_under

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"init_from: {p} does not exist (a fast-calo checkpoint, checkpoints/best-*.ckpt)")
    try:
        ckpt = read_checkpoint(p)
        meta = ckpt["lhcml"] if ckpt["lhcml"].get("kind") == "fastcalo" else None
    except (OSError, ValueError, KeyError, AttributeError):
        meta = None
    if meta is None:
        raise CheckpointMismatchError(f"init_from: {p} is not a fast-calo checkpoint (lhcml train configs/fastcalo/...)")
    if meta.get("model_name") != model.registry_name:
        raise CheckpointMismatchError(
            f"init_from: {p} holds a '{meta.get('model_name')}' model, this config trains '{model.registry_name}'"
        )
    # a run with ema_decay: start from its averaged weights (what load_generator samples with)
    prefix = EMA_PREFIX if any(k.startswith(EMA_PREFIX) for k in ckpt["state_dict"]) else "model."
    stored = state_under(ckpt["state_dict"], prefix)
    own = model.state_dict()
    if ("vars.ratio_enc" in stored) != ("vars.ratio_enc" in own):
        raise CheckpointMismatchError(
            f"init_from: {p} was trained {'with' if 'vars.ratio_enc' in stored else 'without'} model.strip_ratios "
            f"and this config sets it {'on' if 'vars.ratio_enc' in own else 'off'}: another strip representation "
            "(its weights and standardisation mean other variables); train from scratch or start from a model "
            "with the same model.strip_ratios"
        )
    if ("vars.middle_enc" in stored) != ("vars.middle_enc" in own) or (
        "vars.middle_enc" in own and stored["vars.middle_enc"].shape != own["vars.middle_enc"].shape
    ):
        raise CheckpointMismatchError(
            f"init_from: {p} was trained {'with' if 'vars.middle_enc' in stored else 'without'} model.middle_ratios "
            f"and this config sets {'another grid' if 'vars.middle_enc' in stored and 'vars.middle_enc' in own else ('it on' if 'vars.middle_enc' in own else 'it off')}: "
            "another middle-layer representation (its weights and standardisation mean other variables); train from "
            "scratch or start from a model with the same model.middle_ratios"
        )
    first_stored = (yaml.safe_load(meta.get("model_init_yaml") or "{}") or {}).get("strip_first_ratio", "free")
    first_own = getattr(getattr(model, "vars", None), "strip_first_ratio", "free")
    if "vars.ratio_enc" in own and first_stored != first_own:
        raise CheckpointMismatchError(
            f"init_from: {p} generates the strips' first outward ratios as '{first_stored}' and this config sets "
            f"model.strip_first_ratio: {first_own}: another strip representation (two of its variables mean "
            "something else); train from scratch or start from a model with the same model.strip_first_ratio"
        )
    occ_own, occ_stored = own.get("vars.occ_select"), stored.get("vars.occ_select")
    if occ_stored is not None and (occ_own is None or not torch.equal(occ_own, occ_stored)):
        raise CheckpointMismatchError(
            f"init_from: {p} was trained with model.occupancy_layers and this config sets "
            f"{'other ones' if occ_own is not None else 'none'}: its state has other variables; train from scratch or "
            "start from a model with the same model.occupancy_layers (or none: a model without them can be widened)"
        )
    if occ_own is not None and occ_stored is None:
        stored = {**model.widen_state_dict(stored), "vars.occ_select": occ_own}
    counts = {"copied": 0, "widened": 0, "kept": 0}
    bad = []
    with torch.no_grad():
        for k, v in own.items():
            w = stored.get(k)
            if w is None and k.startswith("vars.") and k.rsplit(".", 1)[-1] in NEW_STANDARDISATION_BUFFERS:
                counts["kept"] += 1  # a standardisation the stored model lacks: keep prepare()'s fit
            elif w is None:
                bad.append(f"{k} (absent)")
            elif w.shape == v.shape:
                v.copy_(w)
                counts["copied"] += 1
            elif v.ndim == 2 and w.ndim == 2 and w.shape[0] == v.shape[0] and w.shape[1] < v.shape[1]:
                v.zero_()
                v[:, : w.shape[1]] = w
                counts["widened"] += 1
            else:
                bad.append(f"{k} {tuple(w.shape)} vs {tuple(v.shape)}")
    if bad:
        raise CheckpointMismatchError(
            f"init_from: {p} does not fit this model ({'; '.join(bad[:3])}): the same model and voxelisation "
            "are needed, only more condition inputs (model.eta_cells, model.phi_cells) may be added"
        )
    model.load_state_dict(own)
    return counts


class _EpochPermutation:
    """Sampler: a permutation of ``range(n)`` seeded by ``(seed, epoch)`` (Lightning calls
    :meth:`set_epoch`), so shuffling survives a resume unchanged."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n


class _RankShare(_EpochPermutation):
    """Sampler: this rank's share of an :class:`_EpochPermutation` (of ``range(n)`` in order
    when ``shuffle`` is off): its positions ``rank, rank + world, ...``.

    The rank and the number of ranks are read from ``torch.distributed`` when the DataLoader
    asks for the order or the length (Lightning has set the group up by then; one process
    without a group is rank 0 of 1 and gets the whole permutation, as before DDP). With ``pad``
    the permutation is first extended by its own first entries to a multiple of the ranks, as
    torch's ``DistributedSampler`` does: under DDP every rank must take the same number of steps
    (each step averages the gradients of all ranks). Validation uses no padding (every shower
    once; Lightning's epoch mean of ``val_loss`` weights each rank by its showers).

    The trainer passes ``use_distributed_sampler=False`` to Lightning: Lightning's wrapper of a
    custom sampler does not forward ``set_epoch``, so every epoch would repeat epoch 0's order.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True, pad: bool = True) -> None:
        super().__init__(n, seed)
        self.shuffle, self.pad = shuffle, pad

    def indices(self, rank: int, world: int) -> list[int]:
        """The share of ``rank`` out of ``world`` in the current epoch."""
        order = list(super().__iter__()) if self.shuffle else list(range(self.n))
        if self.pad and len(order) % world:
            extra = world - len(order) % world
            order += (order * (extra // len(order) + 1))[:extra]
        return order[rank::world]

    def __iter__(self):
        from lhcml.train.datamodule import _dist_info

        return iter(self.indices(*_dist_info()))

    def __len__(self) -> int:
        from lhcml.train.datamodule import _dist_info

        rank, world = _dist_info()
        return -(-self.n // world) if self.pad else len(range(rank, self.n, world))


def _module_class():
    import lightning as L
    import torch

    class FastCaloModule(L.LightningModule):
        """Lightning wrapper of a fast-calo model: manual optimisation over its phases."""

        def __init__(self, model: Any, cfg: FastCaloTrainConfig, meta: dict[str, Any]) -> None:
            super().__init__()
            self.model = model
            self.cfg = cfg
            self.meta = dict(meta)
            self.automatic_optimization = False
            self.val_history: list[dict[str, float]] = []
            self.epoch_hooks: list[Any] = []
            self._phases = model.phases()
            #: the batches' columns after (E, showers): the model's conditions, in this order
            self.cond_names = [k for k, on in (("eta", model.conditions_on_eta),
                                               ("phi", model.conditions_on_phi)) if on]  # fmt: skip
            #: the averaged copy (``ema_decay``), a sub-module so that checkpoints and resume carry it
            self.ema_model = None
            if cfg.ema_decay is not None:
                import copy

                self.ema_model = copy.deepcopy(model).requires_grad_(False)

        @torch.no_grad()
        def update_ema(self) -> None:
            """``w_ema <- d w_ema + (1 - d) w`` for every parameter; buffers copied."""
            if self.ema_model is None:
                return
            d = float(self.cfg.ema_decay)
            for pe, p in zip(self.ema_model.parameters(), self.model.parameters(), strict=True):
                pe.lerp_(p.detach(), 1.0 - d)
            for be, b in zip(self.ema_model.buffers(), self.model.buffers(), strict=True):
                be.copy_(b)

        def training_step(self, batch: Any, batch_idx: int) -> None:
            e, x, *rest = batch
            cond = dict(zip(self.cond_names, rest, strict=True))
            opts = self.optimizers()
            opts = opts if isinstance(opts, list) else [opts]
            scheds = self.lr_schedulers()
            scheds = (
                scheds if isinstance(scheds, list) else ([scheds] if scheds is not None else [])
            )
            b = self.current_epoch * int(self.trainer.num_training_batches) + batch_idx
            # the step's noise from (seed, batch, rank) alone: whatever else drew from torch's
            # generator before (a DataLoader iterator, a resume), the step is the same
            torch.manual_seed(
                int(np.random.default_rng([self.cfg.seed, b, self.global_rank]).integers(2**62))
            )
            bs = int(e.shape[0])
            clip = self.cfg.trainer.gradient_clip_val
            for k, phase in enumerate(self._phases):
                if (b + 1) % phase.every_n_batches:
                    continue
                opt = opts[k]
                opt.zero_grad(set_to_none=True)
                terms = self.model.loss_terms(e, x, phase.name, **cond)
                loss = torch.stack(list(terms.values())).sum()
                self.manual_backward(loss)
                if clip:
                    self.clip_gradients(opt, gradient_clip_val=clip, gradient_clip_algorithm="norm")
                opt.step()
                if scheds:
                    scheds[k].step()
                name = "train_loss" if len(self._phases) == 1 else f"train_{phase.name}_loss"
                self.log(
                    name,
                    loss,
                    on_step=True,
                    on_epoch=True,
                    prog_bar=True,
                    batch_size=bs,
                    sync_dist=True,
                )
                if len(terms) > 1:
                    for t, v in terms.items():
                        self.log(
                            f"train_{t}",
                            v,
                            on_step=False,
                            on_epoch=True,
                            batch_size=bs,
                            sync_dist=True,
                        )
            self.update_ema()

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            e, x, *rest = batch
            cond = dict(zip(self.cond_names, rest, strict=True))
            with torch.random.fork_rng(devices=[] if e.device.type == "cpu" else [e.device]):
                torch.manual_seed(VALIDATION_SEED + batch_idx)
                net = self.model if self.ema_model is None else self.ema_model
                terms = net.validation_terms(e, x, **cond)
            bs = int(e.shape[0])
            for k, v in terms.items():
                key = "val_loss" if k == "loss" else f"val_{k}"
                self.log(key, v, on_epoch=True, prog_bar=k == "loss", batch_size=bs, sync_dist=True)

        def on_validation_epoch_end(self) -> None:
            if self.trainer.sanity_checking:
                return
            metrics = {
                k: float(v)
                for k, v in self.trainer.callback_metrics.items()
                if k.startswith("val_")
            }
            metrics["epoch"] = float(self.current_epoch)
            self.val_history.append(metrics)
            for hook in self.epoch_hooks:
                if hook(self.current_epoch, metrics) is True:
                    self.trainer.should_stop = True

        def configure_optimizers(self) -> Any:
            from lhcml.train.schedule import make_optimizer, make_scheduler

            o, s = self.cfg.optimizer, self.cfg.scheduler
            n_batches = self.trainer.estimated_stepping_batches  # = batches (manual optimisation)
            n_batches = int(n_batches) if np.isfinite(n_batches) else 10_000
            opts, scheds = [], []
            for phase in self._phases:
                lr = o.lr * phase.lr_scale
                opt = make_optimizer(phase.parameters, o, lr=lr, betas=phase.betas)
                opts.append(opt)
                sched = make_scheduler(opt, s, max(n_batches // phase.every_n_batches, 1) + 1, lr)
                if sched is not None:
                    scheds.append(sched)
            if not scheds:
                return opts
            return opts, [{"scheduler": sc, "interval": "step"} for sc in scheds]

        def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            checkpoint["lhcml"] = dict(self.meta)

    return FastCaloModule


def _compare(stored: dict[str, Any], current: dict[str, Any], source: str) -> None:
    from lhcml.train.checkpoint import compare_configs

    compare_configs(stored, current, source, must_match=_MUST_MATCH)


def _check_strategy(t: TrainerConfig) -> None:
    """Refuse ``ddp_spawn``: it pickles the Lightning module, and the trainer's module class is
    built inside a function (torch stays out of this module's import), which pickle cannot
    name."""
    if t.strategy == "ddp_spawn":
        raise ConfigError(
            "fast-calo models train on several processes with --strategy ddp, not ddp_spawn "
            "(which pickles the training module): use --strategy ddp"
        )


def _strategy(t: TrainerConfig, n_phases: int) -> Any:
    """Lightning's strategy for ``trainer.devices``/``trainer.strategy``.

    Several processes are Lightning's DDP (gloo on CPU). A model with several phases (the
    WGAN-GP's critic and generator) back-propagates through part of its parameters in each
    phase, so DDP has to find the unused ones (``find_unused_parameters``); a one-phase model
    uses all of them (``ddp_spawn`` is refused before: :func:`_check_strategy`)."""
    if t.devices == 1 and t.strategy == "auto":
        return "auto"
    from lightning.pytorch.strategies import DDPStrategy

    return DDPStrategy(find_unused_parameters=n_phases > 1)


def fit_fastcalo(
    cfg: FastCaloTrainConfig,
    resume: bool = False,
    devices: int | None = None,
    strategy: str | None = None,
    epoch_hooks: list | None = None,
) -> Path:
    """Train the fast-calo model of ``cfg``; return the best checkpoint (lowest ``val_loss``).

    Parameters
    ----------
    cfg
        Validated config (:func:`fastcalo_config_from_dict`).
    resume
        Continue from ``<output_dir>/checkpoints/last.ckpt`` (same config required).
    devices, strategy
        Override ``trainer.devices``/``trainer.strategy``.
    epoch_hooks
        Callables ``hook(epoch, metrics)`` after each validation epoch (tuning); returning
        ``True`` stops training after this epoch.
    """
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from lhcml import __version__
    from lhcml.data.calochallenge import read_binning
    from lhcml.train.checkpoint import check_state_dict, meta_config
    from lhcml.train.schedule import ScheduleLength
    from lhcml.train.trainer import _keep_metrics, _precision, override_devices, resume_checkpoint

    override_devices(cfg, devices, strategy)
    _check_strategy(cfg.trainer)
    if not cfg.data.train_files or not cfg.data.val_files:
        raise ConfigError("data.train_files and data.val_files must not be empty")
    out = Path(cfg.output_dir)
    last = out / "checkpoints" / "last.ckpt"
    resumed = resume_checkpoint(out, resume)
    if resumed is not None:
        if resumed["lhcml"].get("kind") != "fastcalo":
            raise CheckpointMismatchError(
                f"{last} is not a fast-calo checkpoint; use a new output_dir"
            )
        _compare(meta_config(resumed["lhcml"]), cfg.model_dump(mode="json"), str(last))
    hyper = cfg.model.hyperparameters()  # checked before the (slow) data reading
    check_hyperparameters(
        _model_class(cfg.model.name),
        {k: v for k, v in hyper.items() if k not in DATA_ARGUMENTS},
        cfg.model.name,
    )
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    binning = read_binning(cfg.data.binning, cfg.data.particle)
    train_e, train_x, train_eta, train_phi = _read(cfg.data.train_files, binning, cfg.data.max_showers_train)
    val_e, val_x, val_eta, val_phi = _read(cfg.data.val_files, binning, cfg.data.max_showers_val)
    train_eta = check_eta_data(cfg, train_eta, cfg.data.train_files)
    val_eta = check_eta_data(cfg, val_eta, cfg.data.val_files)
    train_phi = check_phi_data(cfg, train_phi, cfg.data.train_files)
    val_phi = check_phi_data(cfg, val_phi, cfg.data.val_files)
    init = model_init(cfg, binning, train_e)
    model = build_generator(cfg.model.name, init)
    if getattr(model, "prepare_takes_eta", False) and train_eta is not None:
        model.prepare(torch.from_numpy(train_e), torch.from_numpy(train_x), eta=torch.from_numpy(np.asarray(train_eta)))
    else:
        model.prepare(torch.from_numpy(train_e), torch.from_numpy(train_x))
    if cfg.init_from is not None and not resume:
        # after prepare: the stored model's standardisation comes with its weights
        init_from_checkpoint(model, cfg.init_from)
    meta = {
        "format_version": 1,
        "kind": "fastcalo",
        "lhcml_version": __version__,
        "config_yaml": cfg.to_yaml(),
        "model_name": cfg.model.name,
        "model_init_yaml": yaml.safe_dump(init, sort_keys=False),
        "particle": binning.particle,
        "binning_sha256": binning.sha256,
        # the file's own text: its sha256 is the binning's identity (lhcml.sim.fastcalo re-hashes it)
        "binning_xml": Path(cfg.data.binning).read_bytes().decode("utf-8"),
        "n_train_showers": len(train_e),
    }
    module = _module_class()(model, cfg, meta)
    module.epoch_hooks.extend(epoch_hooks or [])
    if resume:
        stored_init = yaml.safe_load(resumed["lhcml"]["model_init_yaml"])
        if stored_init != yaml.safe_load(meta["model_init_yaml"]):
            diff = sorted(
                k for k in set(stored_init) | set(init) if stored_init.get(k) != init.get(k)
            )
            raise CheckpointMismatchError(
                f"checkpoint {last} was trained on data with other {', '.join(diff)} "
                f"({', '.join(f'{k}: {stored_init.get(k)!r} vs {init.get(k)!r}' for k in diff)}); "
                "resume with the same files and binning or start a new output_dir"
            )
        check_state_dict(resumed["state_dict"], module.state_dict(), str(last),
                         "the model code changed since it was saved: start a new output_dir")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", meta["config_yaml"])

    # batches (E, showers[, |eta|][, phi]): the model's conditions (FastCaloModule.cond_names)
    data = torch.utils.data.TensorDataset(
        *(torch.from_numpy(a) for a in (train_e, train_x, train_eta, train_phi) if a is not None)
    )
    vdata = torch.utils.data.TensorDataset(
        *(torch.from_numpy(a) for a in (val_e, val_x, val_eta, val_phi) if a is not None)
    )
    bs = cfg.data.batch_size
    # each rank iterates over its own share (lhcml's samplers, not Lightning's: see _RankShare);
    # every rank holds the whole sample in memory: prepare() fits its normalisations on all of it
    train_dl = torch.utils.data.DataLoader(
        data, batch_size=bs, sampler=_RankShare(len(data), cfg.seed)
    )
    val_dl = torch.utils.data.DataLoader(
        vdata, batch_size=bs, sampler=_RankShare(len(vdata), cfg.seed, shuffle=False, pad=False)
    )

    ckpt_cb = ModelCheckpoint(dirpath=out / "checkpoints", filename="best-{epoch:02d}", monitor="val_loss",
                              mode="min", save_top_k=1)  # fmt: skip
    last_cb = ModelCheckpoint(dirpath=out / "checkpoints", filename="last", monitor=None, save_top_k=1,
                              every_n_epochs=1, enable_version_counter=False)  # fmt: skip
    callbacks: list[Any] = [ckpt_cb, last_cb, ScheduleLength()]
    t = cfg.trainer
    if t.patience is not None:
        callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=t.patience))
    csv_logger = CSVLogger(save_dir=out, name="logs", version="")
    if resume:
        _keep_metrics(csv_logger, int(resumed.get("epoch", -1)))
    trainer = L.Trainer(
        max_epochs=t.max_epochs, accelerator=t.accelerator, devices=t.devices,
        strategy=_strategy(t, len(module._phases)), use_distributed_sampler=False,
        precision=_precision(cfg), callbacks=callbacks, logger=[csv_logger],
        log_every_n_steps=t.log_every_n_steps, enable_progress_bar=t.enable_progress_bar,
        limit_train_batches=t.limit_train_batches, deterministic=False,
        enable_model_summary=t.enable_progress_bar,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(
            module, train_dl, val_dl, ckpt_path=str(last) if resume else None, weights_only=True
        )
    return Path(ckpt_cb.best_model_path) if ckpt_cb.best_model_path else last


def read_fastcalo_meta(path: str | Path) -> dict[str, Any] | None:
    """The ``lhcml`` metadata of a fast-calo checkpoint, or ``None`` for any other file."""
    from lhcml.train.checkpoint import read_kind_meta

    return read_kind_meta(path, "fastcalo")


def load_generator(path: str | Path, ema: bool = True) -> tuple[Any, dict[str, Any]]:
    """``(model in eval mode, metadata)`` of a fast-calo checkpoint.

    A checkpoint of a run with ``ema_decay`` holds the averaged weights beside the trained ones:
    ``ema=True`` (default) returns the averaged ones, ``ema=False`` the trained ones; without
    them both return the trained weights.

    Raises
    ------
    CheckpointMismatchError
        Not a fast-calo checkpoint, or its tensors do not fit the model its metadata describes.
    """
    from lhcml.train.checkpoint import (
        check_state_dict,
        load_kind_model,
        read_checkpoint,
        state_under,
    )

    model, meta = load_kind_model(
        path, "fastcalo", build_generator,
        "a fast-calorimeter checkpoint (trained by `lhcml train configs/fastcalo/...`)",
        "use the lhcml version that wrote it, or retrain",
    )  # fmt: skip
    if ema:
        sd = read_checkpoint(path)["state_dict"]
        averaged = state_under(sd, EMA_PREFIX)
        if averaged:
            check_state_dict(averaged, model.state_dict(), str(path),
                             "its averaged weights (ema_model.*) do not fit the model: retrain")  # fmt: skip
            model.load_state_dict(averaged, strict=True)
    return model.eval(), meta


def save_student(student: Any, teacher_checkpoint: str | Path, path: str | Path,
                 init_overrides: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """Write a distilled ``student`` (:mod:`lhcml.models.fastcalo.distill`) as a fast-calo checkpoint:
    the teacher's metadata with the student's ``steps`` and ``solver`` (and ``init_overrides``, e.g. a
    narrower ``hidden``), read by :func:`load_generator`. Written atomically (no partial file on a crash)."""
    from lhcml.train.checkpoint import read_checkpoint

    meta = dict(read_checkpoint(teacher_checkpoint).get("lhcml") or {})
    if meta.get("kind") != "fastcalo":
        raise ConfigError(f"{teacher_checkpoint} is not a fast-calorimeter checkpoint (trained by "
                          "`lhcml train configs/fastcalo/...`)")  # fmt: skip
    return _write_student(student, meta, path, init_overrides)


def _write_student(student: Any, meta: dict[str, Any], path: str | Path, init_overrides: dict[str, Any] | None) -> Path:
    """:func:`save_student` given the teacher's (checked) ``lhcml`` metadata."""
    import torch

    from lhcml.atomic import atomic_path

    meta = dict(meta)
    init = yaml.safe_load(meta["model_init_yaml"])
    init.update(init_overrides or {})
    init.update(steps=int(student.steps), solver=str(student.solver))
    meta["model_init_yaml"] = yaml.safe_dump(init, sort_keys=False)
    out = {"lhcml": meta, "state_dict": {f"model.{k}": v for k, v in student.state_dict().items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(out, tmp)
    return path


def resample_checkpoint(checkpoint: str | Path, output: str | Path, *, steps: int, solver: str = "midpoint") -> Path:
    """``lhcml fastcalo sampler``: a copy of the flow-matching checkpoint ``checkpoint`` whose sampler is ``steps``
    fixed steps of ``solver`` (``euler`` or ``midpoint``); the weights are the ones :func:`load_generator` returns
    (the moving average where the run kept one), the metadata the checkpoint's. The sampler is part of the
    exported ONNX graph, so a model is exported (``lhcml export``) with the step count it was resampled to.
    Written atomically; :class:`ConfigError` (nothing written) for another kind of generator, ``steps < 1``, an
    unknown solver, or ``output`` equal to ``checkpoint``."""
    if int(steps) < 1:
        raise ConfigError(f"the sampler needs steps >= 1, got {steps}")
    if solver not in ("euler", "midpoint"):
        raise ConfigError(f"unknown solver '{solver}' (valid: euler, midpoint)")
    if Path(output).resolve() == Path(checkpoint).resolve():
        raise ConfigError(f"{output} is the checkpoint itself: write the resampled copy to another file")
    model, meta = load_generator(checkpoint)
    if not hasattr(model, "integrate") or not hasattr(model, "solver"):
        raise ConfigError(f"{checkpoint} holds a {type(model).__name__}, not a flow-matching generator "
                          "(fastcalo_fm): only those have an ODE sampler to change")  # fmt: skip
    model.steps, model.solver = int(steps), str(solver)
    return _write_student(model, meta, output, None)


def distill_checkpoint(
    teacher_checkpoint: str | Path, showers: str | Path, output: str | Path, *, binning: str | Path | None = None,
    steps: int = 1, epochs: int = 10, max_showers: int | None = None, batch_size: int = 256, lr: float = 2e-4,
    seed: int = 11, time_budget_s: float | None = None, log: Any = None, hidden: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``lhcml fastcalo distill``: a ``steps``-step student of the flow-matching checkpoint
    ``teacher_checkpoint`` trained on the teacher's noise-to-shower map at the conditions (incident
    energy, |η|, φ where stored) of the CaloChallenge-layout file ``showers`` (the teacher's training
    photons; ``binning``: its binning XML, default the one stored in the teacher), written to ``output``
    (:func:`save_student`). ``hidden``: a student with this width of
    the velocity network instead of the teacher's (faster per call; its network trained from scratch,
    everything else — the variables' standardisation, the conditions — the teacher's). Returns the
    distillation history."""
    import torch

    from lhcml.data.calochallenge import parse_binning, read_binning, read_showers
    from lhcml.models.fastcalo.distill import distill, make_student

    teacher, meta = load_generator(teacher_checkpoint)
    make_student(teacher, steps)  # one clear error (not a flow-matching model, steps < 1) before reading data
    student, overrides = None, {}
    if hidden is not None:
        if hidden < 1:
            raise ConfigError(f"a distilled student needs --hidden >= 1, got {hidden}")
        overrides = {"hidden": int(hidden)}
        student = build_generator(meta["model_name"], {**yaml.safe_load(meta["model_init_yaml"]), **overrides})
        own = {k: v for k, v in teacher.state_dict().items() if not k.startswith("velocity.")}
        missing, unexpected = student.load_state_dict(own, strict=False)
        if unexpected or any(not k.startswith("velocity.") for k in missing):
            raise CheckpointMismatchError(f"{teacher_checkpoint}: a narrower student cannot take the teacher's "
                                          f"state ({(unexpected or missing)[:3]}); distil without --hidden")  # fmt: skip
    if binning is None and not meta.get("binning_xml"):
        raise ConfigError(f"{teacher_checkpoint} stores no binning: pass the binning XML it was trained with (--binning)")
    b = read_binning(binning) if binning is not None else parse_binning(meta["binning_xml"], source=str(teacher_checkpoint))
    data = read_showers(showers, b, max_showers=max_showers)

    def f32(a: Any, what: str, needed: bool) -> Any:
        if not needed:
            return None
        if a is None:
            raise ConfigError(f"{teacher_checkpoint} is conditioned on {what}, but {showers} has no incident_{what}: "
                              "distil on the teacher's own training file")  # fmt: skip
        return torch.as_tensor(np.asarray(a, np.float32)).reshape(-1)

    energies = f32(data.energies, "energies", True)
    eta = f32(None if data.eta is None else np.abs(data.eta), "eta", bool(teacher.conditions_on_eta))
    phi = f32(data.phi, "phi", bool(teacher.conditions_on_phi))
    student, hist = distill(teacher, energies, eta, phi, steps=steps, epochs=epochs, batch_size=batch_size,
                            lr=lr, seed=seed, time_budget_s=time_budget_s, log=log, student=student)  # fmt: skip
    _write_student(student, meta, output, overrides)
    return hist
