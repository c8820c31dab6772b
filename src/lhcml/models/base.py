"""Base class of lhcml taggers: normalisation inside the model, a backbone and task heads.

A :class:`TaggerModel` holds

* one :class:`~lhcml.models.layers.Normaliser` per input group (``jets``, ``tracks``, ...), whose
  buffers are filled from the preprocessing's ``norm_dict.yaml`` and saved with the weights, so a
  trained (and exported) model takes raw features;
* a backbone written by the subclass (:meth:`TaggerModel.forward`);
* task heads (:class:`TaskHead`), each owning its output key, its label field(s), its loss
  and its loss weight. The jet-classification head writes ``"logits"``; auxiliary heads (track
  origin, vertexing) write their own keys. :meth:`TaggerModel.losses` returns the weighted loss
  of every active head.

Inputs follow the registry contract: ``inputs["jets"]`` ``(B, F)``, ``inputs["tracks"]``
``(B, N, F)``, ``inputs["tracks_valid"]`` ``(B, N)`` bool (True = real track). Targets come in the
batch under ``"labels"`` (class index), ``"weights"`` (per-jet sample weight) and
``"<group>_<field>"`` for the per-object label fields a head declares in ``label_fields``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lhcml.errors import ConfigError
from lhcml.models.layers import MLP, Normaliser, activation, zero_padded


class TaskHead(nn.Module):
    """A task head: network, output key, label fields, loss and loss weight.

    Subclasses set ``output_key`` and ``label_fields`` (``{group: [field, ...]}`` to be loaded by
    the datamodule as ``batch["<group>_<field>"]``) and implement ``forward`` and ``loss``.
    """

    output_key: str = ""
    label_fields: dict[str, list[str]] = {}

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = float(weight)

    def loss(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def set_class_weights(self, weights: Sequence[float]) -> None:
        """Per-class loss weights (>= 0, not all 0), for heads with a ``class_weights`` buffer."""
        cw = getattr(self, "class_weights", None)
        if cw is None:
            raise ConfigError(f"head {type(self).__name__} has no class weights")
        w = torch.as_tensor(list(weights), dtype=torch.float32)
        if w.shape != cw.shape or not bool(torch.all(w >= 0)) or not bool(torch.any(w > 0)):
            raise ConfigError(
                f"class weights must be {cw.numel()} non-negative numbers (not all 0), got {list(weights)}"
            )
        cw.copy_(w)


def weighted_mean(values: Tensor, weights: Tensor | None) -> Tensor:
    """``sum(w * v) / sum(w)`` (plain mean without weights)."""
    if weights is None:
        return values.mean()
    return (values * weights).sum() / weights.sum().clamp(min=torch.finfo(values.dtype).tiny)


class JetClassificationHead(TaskHead):
    """Multi-class jet head writing ``"logits"``; weighted cross-entropy on ``batch["labels"]``.

    The loss is ``sum_j w_j * CE_j / sum_j w_j`` with ``w_j`` the sample weight times the class
    weight of the jet's class (class weights via :meth:`set_class_weights`).
    """

    output_key = "logits"

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        hidden: Sequence[int] = (),
        act: str = "relu",
        dropout: float = 0.0,
        weight: float = 1.0,
    ) -> None:
        super().__init__(weight)
        self.net = MLP(in_dim, n_classes, hidden=list(hidden), act=act, dropout=dropout)
        self.register_buffer("class_weights", torch.ones(n_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def loss(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        logits = outputs[self.output_key].float()
        labels = batch["labels"]
        ce = F.cross_entropy(logits, labels, reduction="none")
        w = self.class_weights[labels]
        if "weights" in batch:
            w = w * batch["weights"]
        return weighted_mean(ce, w)


class TrackOriginHead(TaskHead):
    """Per-track classification of ``ftagTruthOriginLabel`` (8 ATLAS classes), as GN1.

    Cross-entropy over valid tracks with a known label (label >= 0), each track weighted by its
    jet's sample weight times its class weight (GN1 weights the origins by inverse frequency:
    ``loss.class_dict`` from preprocessing).
    """

    output_key = "track_origin_logits"
    label_fields = {"tracks": ["ftagTruthOriginLabel"]}

    def __init__(
        self,
        in_dim: int,
        n_classes: int = 8,
        hidden: Sequence[int] = (),
        act: str = "relu",
        weight: float = 0.5,
    ) -> None:
        super().__init__(weight)
        self.net = MLP(in_dim, n_classes, hidden=list(hidden), act=act)
        self.register_buffer("class_weights", torch.ones(n_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def loss(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        logits = outputs[self.output_key].float()  # (B, N, C)
        target = batch["tracks_ftagTruthOriginLabel"].long()
        use = batch["tracks_valid"] & (target >= 0) & (target < logits.shape[-1])
        ce = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), target.clamp(min=0).reshape(-1), reduction="none"
        ).reshape(target.shape)
        w = use.float() * self.class_weights[target.clamp(min=0, max=logits.shape[-1] - 1)]
        if "weights" in batch:
            w = w * batch["weights"].unsqueeze(1)
        return self._reduce(ce, w)

    def _reduce(self, values: Tensor, w: Tensor) -> Tensor:
        """How the weighted per-track losses become one number (a subclass may normalise per jet)."""
        return weighted_mean(values, w)


class TrackVertexHead(TaskHead):
    """Track-pair vertexing (GN1): does a pair of tracks come from the same truth vertex?

    For each pair (i, j) a network on the concatenated embeddings ``[x_i, x_j]`` gives a logit;
    the output is symmetrised (average of both orderings). The first layer is applied to the
    two halves separately (``W [x_i, x_j] = W_a x_i + W_b x_j``), which is the same function
    without building the ``(B, N, N, 2D)`` tensor. Target: ``ftagTruthVertexIndex`` equal and
    ``>= 0``; binary cross-entropy over valid pairs with ``i != j``.
    """

    output_key = "track_vertex_logits"
    label_fields = {"tracks": ["ftagTruthVertexIndex"]}

    def __init__(
        self, in_dim: int, hidden: Sequence[int] = (64,), act: str = "relu", weight: float = 1.5
    ) -> None:
        super().__init__(weight)
        hidden = list(hidden)
        if not hidden:
            raise ConfigError("the vertexing head needs at least one hidden layer")
        self.first_a = nn.Linear(in_dim, hidden[0])
        self.first_b = nn.Linear(in_dim, hidden[0], bias=False)
        self.rest = MLP(hidden[0], 1, hidden=hidden[1:], act=act)
        self.act = activation(act)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.first_a(x), self.first_b(x)  # (B, N, H)
        r = self.rest(self.act(a.unsqueeze(2) + b.unsqueeze(1))).squeeze(-1)  # f(x_i, x_j)
        return 0.5 * (r + r.transpose(1, 2))  # (B, N, N), symmetric

    def loss(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        logits = outputs[self.output_key].float()
        vtx = batch["tracks_ftagTruthVertexIndex"].long()
        valid = batch["tracks_valid"]
        n = vtx.shape[1]
        target = ((vtx.unsqueeze(2) == vtx.unsqueeze(1)) & (vtx.unsqueeze(2) >= 0)).float()
        offdiag = ~torch.eye(n, dtype=torch.bool, device=vtx.device)
        use = valid.unsqueeze(2) & valid.unsqueeze(1) & offdiag
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        w = use.float()
        if "weights" in batch:
            w = w * batch["weights"][:, None, None]
        return weighted_mean(bce, w)


class TaggerModel(nn.Module):
    """Base of all lhcml NN taggers (see the module docstring).

    Subclasses call ``super().__init__(n_classes, input_dims, required, optional)`` declaring
    the input groups they use, build ``self.heads`` (a ``ModuleDict`` whose entry
    ``"jet_classification"`` is the main head) and implement ``forward``.
    """

    registry_name: str = ""

    def __init__(
        self,
        n_classes: int,
        input_dims: Mapping[str, int],
        required: Sequence[str] = (),
        optional: Sequence[str] = (),
    ) -> None:
        super().__init__()
        name = self.registry_name or type(self).__name__
        missing = [g for g in required if g not in input_dims]
        if missing:
            raise ConfigError(
                f"model '{name}' needs input group(s) {missing} in data.inputs (got {sorted(input_dims)})"
            )
        extra = [g for g in input_dims if g not in (*required, *optional)]
        if extra:
            raise ConfigError(
                f"model '{name}' does not use input group(s) {extra}; it takes "
                f"{[*required, *optional]}: remove them from data.inputs"
            )
        if n_classes < 2:
            raise ConfigError(f"model '{name}' needs at least 2 classes, got {n_classes}")
        self.n_classes = n_classes
        self.input_dims = dict(input_dims)
        #: input groups in a fixed order (the order of the exported ONNX inputs)
        self.input_groups = tuple(g for g in (*required, *optional) if g in input_dims)
        self.normalisers = nn.ModuleDict({g: Normaliser(input_dims[g]) for g in self.input_groups})
        self.heads = nn.ModuleDict()
        #: compute auxiliary-head outputs (off for prediction and export: jet outputs only)
        self.with_aux = True

    # -- configuration after construction (no I/O) ------------------------------------------
    def configure_inputs(self, variables: Mapping[str, Sequence[str]]) -> None:
        """Hook receiving the variable names per group (e.g. to find a sort variable)."""
        for g in self.input_groups:
            if g in variables and len(variables[g]) != self.input_dims[g]:
                raise ConfigError(
                    f"group '{g}' has {len(variables[g])} variables but the model was built for "
                    f"{self.input_dims[g]}"
                )

    def set_normalisation(self, group: str, mean: Sequence[float], std: Sequence[float]) -> None:
        """Fill the normaliser of ``group`` (in the order of the group's variables)."""
        if group not in self.normalisers:
            raise ConfigError(f"no input group '{group}' in this model ({list(self.normalisers)})")
        self.normalisers[group].set(torch.as_tensor(mean), torch.as_tensor(std))

    def set_head_weights(self, weights: Mapping[str, float]) -> None:
        """Set loss weights by head name; weight 0 disables a head's loss (and its labels)."""
        for k, w in weights.items():
            if k not in self.heads:
                raise ConfigError(
                    f"unknown head '{k}' in loss.head_weights for model "
                    f"'{self.registry_name}' (heads: {', '.join(self.heads)})"
                )
            if w < 0:
                raise ConfigError(f"loss weight of head '{k}' must be >= 0, got {w}")
            self.heads[k].weight = float(w)

    def label_fields(self) -> dict[str, list[str]]:
        """Per-object label fields the active heads need, ``{group: [field, ...]}``."""
        out: dict[str, list[str]] = {}
        for head in self.heads.values():
            if head.weight > 0:
                for g, fields in head.label_fields.items():
                    out.setdefault(g, [])
                    out[g] += [f for f in fields if f not in out[g]]
        return out

    # -- forward helpers --------------------------------------------------------------------
    def normalise(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Scaled copies of the input groups; padded objects are set to 0 (NaN-safe)."""
        out: dict[str, Tensor] = {}
        for g in self.input_groups:
            x = self.normalisers[g](inputs[g].float())
            if f"{g}_valid" in inputs:
                x = zero_padded(x, inputs[f"{g}_valid"])
            out[g] = x
        return out

    def losses(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Weighted loss of every head with weight > 0, keyed by head name."""
        return {
            name: head.weight * head.loss(outputs, batch)
            for name, head in self.heads.items()
            if head.weight > 0
        }

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:  # pragma: no cover
        raise NotImplementedError
