"""Flavour-tagging neural networks: DL1/DL1r, RNNIP, DIPS and GN (GN1/GN2-style).

All are :class:`~lhcml.models.base.TaggerModel` subclasses: they take raw inputs (normalisation
is inside the model), and the jet-classification head writes ``"logits"``.

* ``dl1``   — DL1 (ATL-PHYS-PUB-2017-013): a deep fully connected network with batch
  normalisation on jet-level inputs (kinematics + the low-level taggers IP2D/IP3D/SV1/JetFitter/
  SMT). DL1r is the same network with the RNNIP outputs among the inputs: a config difference.
* ``rnnip`` — RNNIP (ATL-PHYS-PUB-2017-003): an LSTM reading the tracks of a jet as a sequence
  ordered by decreasing |signed d0 significance|; the last hidden state feeds a dense network.
* ``dips``  — DIPS (ATL-PHYS-PUB-2020-014): Deep Sets; a per-track network φ, a masked sum over
  tracks and a network F on the sum. Exactly invariant to track order.
* ``gn``    — GN1/GN2-style (ATL-PHYS-PUB-2022-027): jet features concatenated to each track, a
  per-track initialiser, a transformer encoder with key-padding masks, attention pooling, a
  jet-flavour head and two auxiliary heads: track origin (8 ``ftagTruthOriginLabel`` classes)
  and track-pair vertexing (same truth vertex or not), with multi-task loss weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lhcml.data.schema import TRUTH_ORIGIN
from lhcml.errors import ConfigError
from lhcml.models.base import (
    JetClassificationHead,
    TaggerModel,
    TrackOriginHead,
    TrackVertexHead,
    weighted_mean,
)
from lhcml.models.layers import MLP, AttentionPooling, TransformerEncoder, masked_sum, zero_padded
from lhcml.models.registry import register_model


@register_model("dl1")
class DL1(TaggerModel):
    """DL1/DL1r: multi-class DNN on jet-level inputs.

    Parameters
    ----------
    n_classes, input_dims
        Number of output classes; ``{"jets": n_jet_features}``.
    hidden
        Hidden layer sizes (ATLAS DL1r: 8 layers narrowing to 6 nodes).
    activation, dropout, batch_norm
        As in :class:`~lhcml.models.layers.MLP`.
    """

    def __init__(
        self,
        n_classes: int,
        input_dims: Mapping[str, int],
        hidden: Sequence[int] = (256, 128, 60, 48, 36, 24, 12, 6),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(n_classes, input_dims, required=("jets",))
        hidden = list(hidden)
        if not hidden:
            raise ConfigError("dl1 needs at least one hidden layer (model.hidden)")
        self.backbone = MLP(
            input_dims["jets"], hidden[-1], hidden=hidden[:-1], act=activation,
            dropout=dropout, batch_norm=batch_norm, final_act=True,
        )  # fmt: skip
        self.heads["jet_classification"] = JetClassificationHead(hidden[-1], n_classes)

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        x = self.normalise(inputs)["jets"]
        return {"logits": self.heads["jet_classification"](self.backbone(x))}


@register_model("rnnip")
class RNNIP(TaggerModel):
    """RNNIP: LSTM over the tracks ordered by decreasing |signed d0 significance|.

    The ordering is done inside the model on the raw ``sort_by`` variable (so exported models
    take tracks in any order); padded tracks go last and are never read: the output is the
    LSTM state after the last valid track (an LSTM is causal), zero for a jet without tracks.

    Parameters
    ----------
    lstm_hidden
        LSTM hidden size.
    dense
        Hidden sizes of the dense network after the LSTM.
    sort_by
        Track variable whose absolute value orders the sequence (must be among the inputs).
    """

    def __init__(
        self,
        n_classes: int,
        input_dims: Mapping[str, int],
        lstm_hidden: int = 100,
        lstm_layers: int = 1,
        dense: Sequence[int] = (20,),
        activation: str = "relu",
        sort_by: str = "IP3D_signed_d0_significance",
    ) -> None:
        super().__init__(n_classes, input_dims, required=("tracks",))
        self.sort_by = sort_by
        self.sort_index = -1
        self.lstm = nn.LSTM(input_dims["tracks"], lstm_hidden, num_layers=lstm_layers, batch_first=True)
        self.lstm_hidden = lstm_hidden
        self.heads["jet_classification"] = JetClassificationHead(
            lstm_hidden, n_classes, hidden=list(dense), act=activation
        )

    def configure_inputs(self, variables: Mapping[str, Sequence[str]]) -> None:
        super().configure_inputs(variables)
        names = list(variables.get("tracks", []))
        if self.sort_by not in names:
            raise ConfigError(
                f"rnnip orders tracks by '{self.sort_by}' (model.sort_by), which is not among "
                f"data.inputs.tracks {names}"
            )
        self.sort_index = names.index(self.sort_by)

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if self.sort_index < 0:
            raise RuntimeError("call configure_inputs(variables) before using rnnip")
        valid = inputs["tracks_valid"]
        raw_key = inputs["tracks"][..., self.sort_index].float().abs()
        key = torch.where(valid, raw_key, torch.full_like(raw_key, -1.0))
        order = torch.argsort(key, dim=1, descending=True)
        x = self.normalise(inputs)["tracks"]
        x = torch.gather(x, 1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        out, _ = self.lstm(x)  # (B, N, H)
        n_valid = valid.sum(dim=1)
        idx = (n_valid - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, self.lstm_hidden)
        last = torch.gather(out, 1, idx).squeeze(1)
        last = torch.where((n_valid > 0).unsqueeze(-1), last, torch.zeros_like(last))
        return {"logits": self.heads["jet_classification"](last)}


@register_model("dips")
class DIPS(TaggerModel):
    """DIPS (Deep Impact Parameter Sets): ``F(sum_i φ(track_i))`` over valid tracks.

    Parameters
    ----------
    phi_hidden
        Layer sizes of the per-track network φ (the last one is the latent size).
    f_hidden
        Hidden sizes of the network F acting on the summed latent vector.
    """

    def __init__(
        self,
        n_classes: int,
        input_dims: Mapping[str, int],
        phi_hidden: Sequence[int] = (100, 100, 128),
        f_hidden: Sequence[int] = (100, 100, 100, 30),
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(n_classes, input_dims, required=("tracks",))
        phi_hidden = list(phi_hidden)
        if not phi_hidden:
            raise ConfigError("dips needs at least one φ layer (model.phi_hidden)")
        self.phi = MLP(
            input_dims["tracks"], phi_hidden[-1], hidden=phi_hidden[:-1], act=activation, final_act=True
        )
        self.heads["jet_classification"] = JetClassificationHead(
            phi_hidden[-1], n_classes, hidden=list(f_hidden), act=activation, dropout=dropout
        )

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        valid = inputs["tracks_valid"]
        x = self.normalise(inputs)["tracks"]
        pooled = masked_sum(self.phi(x), valid)
        return {"logits": self.heads["jet_classification"](pooled)}


#: Track origins from heavy-flavour decays (b, b→c, c): their pairs carry the displaced vertices
HF_ORIGINS = (TRUTH_ORIGIN["fromB"], TRUTH_ORIGIN["fromBC"], TRUTH_ORIGIN["fromC"])


class _JetNormalisedLoss:
    """Track/pair loss normalised per jet instead of per batch (``model.aux_loss_norm: jet``).

    The plain weighted mean ``sum(w l) / sum(w)`` gives each track (pair) of a batch the weight
    ``1 / sum(w)`` of *its* batch. With random batches ``sum(w)`` is nearly the same in every
    batch; with length buckets it is not (a batch of 2-track jets has ~100× fewer pairs than a
    batch of 20-track jets), so the tracks of short jets weigh far more than in random batches.
    ``jet`` divides by ``n_jets × m`` instead, with ``m`` a running mean (momentum 0.01, training
    batches only) of ``sum(w) / n_jets``: every track (pair) weighs the same in every batch, as in
    random batches, whatever the batching.
    """

    def _init_norm(self, aux_loss_norm: str) -> None:
        if aux_loss_norm not in ("batch", "jet"):
            raise ConfigError(f"model.aux_loss_norm must be 'batch' or 'jet', got '{aux_loss_norm}'")
        self.aux_loss_norm = aux_loss_norm
        self.register_buffer("w_per_jet", torch.zeros(()), persistent=False)

    def _reduce(self, values: Tensor, w: Tensor) -> Tensor:
        if self.aux_loss_norm == "batch":
            return weighted_mean(values, w)
        n_jets = w.shape[0]
        per_jet = (w.sum() / n_jets).detach()
        if self.training:
            if float(self.w_per_jet) == 0.0:
                self.w_per_jet.copy_(per_jet)
            else:
                self.w_per_jet.mul_(0.99).add_(0.01 * per_jet)
        ref = self.w_per_jet if float(self.w_per_jet) > 0 else per_jet
        return (values * w).sum() / (n_jets * ref).clamp(min=torch.finfo(values.dtype).tiny)


class GNOriginHead(_JetNormalisedLoss, TrackOriginHead):
    """:class:`~lhcml.models.base.TrackOriginHead` with the ``aux_loss_norm`` choice."""

    def __init__(self, *args, aux_loss_norm: str = "batch", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_norm(aux_loss_norm)


class HFWeightedVertexHead(_JetNormalisedLoss, TrackVertexHead):
    """GN vertexing head whose loss weights pairs of heavy-flavour tracks by ``hf_pair_weight``.

    A pair (i, j) whose tracks both have a b/c-decay ``ftagTruthOriginLabel`` (fromB, fromBC,
    fromC) counts ``hf_pair_weight`` times in the weighted mean of the pair losses; other pairs
    count once. Salt's GN2 vertexing task doubles these pairs (weight 2); 1 is the plain mean of
    :class:`~lhcml.models.base.TrackVertexHead`. ``aux_loss_norm`` as :class:`GNOriginHead`.
    """

    label_fields = {"tracks": ["ftagTruthVertexIndex", "ftagTruthOriginLabel"]}

    def __init__(self, *args, hf_pair_weight: float = 1.0, aux_loss_norm: str = "batch", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if hf_pair_weight <= 0:
            raise ConfigError(f"model.vertex_hf_weight must be > 0, got {hf_pair_weight}")
        self.hf_pair_weight = float(hf_pair_weight)
        self._init_norm(aux_loss_norm)

    def loss(self, outputs, batch) -> Tensor:
        if self.hf_pair_weight == 1.0 and self.aux_loss_norm == "batch":
            return super().loss(outputs, batch)
        logits = outputs[self.output_key].float()
        vtx = batch["tracks_ftagTruthVertexIndex"].long()
        origin = batch["tracks_ftagTruthOriginLabel"].long()
        valid = batch["tracks_valid"]
        n = vtx.shape[1]
        target = ((vtx.unsqueeze(2) == vtx.unsqueeze(1)) & (vtx.unsqueeze(2) >= 0)).float()
        offdiag = ~torch.eye(n, dtype=torch.bool, device=vtx.device)
        use = valid.unsqueeze(2) & valid.unsqueeze(1) & offdiag
        hf = torch.isin(origin, torch.tensor(HF_ORIGINS, device=origin.device))
        hf_pair = (hf.unsqueeze(2) & hf.unsqueeze(1)).float()
        w = use.float() * (1.0 + (self.hf_pair_weight - 1.0) * hf_pair)
        if "weights" in batch:
            w = w * batch["weights"][:, None, None]
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return self._reduce(bce, w)


@register_model("gn")
class GN(TaggerModel):
    """GN1/GN2-style transformer tagger with auxiliary track-origin and vertexing heads.

    Parameters
    ----------
    embed_dim
        Track embedding size in the encoder.
    init_hidden
        Hidden sizes of the per-track initialiser (tracks ⊕ jet features -> embedding).
    num_layers, num_heads, ff_mult, dropout
        Transformer encoder: layers, attention heads, feed-forward width multiple, dropout.
    pool_heads
        Heads of the attention pooling.
    jet_hidden, origin_hidden, vertex_hidden
        Hidden sizes of the jet-flavour, track-origin and vertexing heads.
    n_origin_classes
        Track-origin classes (8 ``ftagTruthOriginLabel`` values).
    origin_weight, vertex_weight
        Default loss weights of the auxiliary heads (GN1: 0.5 and 1.5; the jet head has 1);
        ``loss.head_weights`` in the training config overrides them, 0 disables a head.
    vertex_hf_weight
        Weight of heavy-flavour track pairs in the vertexing loss (:class:`HFWeightedVertexHead`;
        1: every pair alike, Salt's GN2: 2).
    aux_loss_norm
        ``batch``: the track-origin and vertexing losses are means over the batch's tracks and
        pairs; ``jet``: their sums divided by a batch-independent number per jet
        (:class:`_JetNormalisedLoss`), so length-bucketed batches weigh tracks as random ones do.
    """

    def __init__(
        self,
        n_classes: int,
        input_dims: Mapping[str, int],
        embed_dim: int = 128,
        init_hidden: Sequence[int] = (128,),
        num_layers: int = 4,
        num_heads: int = 8,
        ff_mult: int = 2,
        dropout: float = 0.0,
        pool_heads: int = 1,
        jet_hidden: Sequence[int] = (128, 64, 32),
        origin_hidden: Sequence[int] = (128, 64),
        vertex_hidden: Sequence[int] = (128, 64),
        n_origin_classes: int = 8,
        activation: str = "silu",
        origin_weight: float = 0.5,
        vertex_weight: float = 1.5,
        vertex_hf_weight: float = 1.0,
        aux_loss_norm: str = "batch",
    ) -> None:
        super().__init__(n_classes, input_dims, required=("tracks",), optional=("jets",))
        in_dim = input_dims["tracks"] + input_dims.get("jets", 0)
        self.init = MLP(in_dim, embed_dim, hidden=list(init_hidden), act=activation, final_act=True)
        self.encoder = TransformerEncoder(embed_dim, num_layers, num_heads, ff_mult, dropout, activation)
        self.pool = AttentionPooling(embed_dim, pool_heads)
        self.heads["jet_classification"] = JetClassificationHead(
            embed_dim, n_classes, hidden=list(jet_hidden), act=activation
        )
        self.heads["track_origin"] = GNOriginHead(
            2 * embed_dim, n_origin_classes, hidden=list(origin_hidden), act=activation,
            weight=origin_weight, aux_loss_norm=aux_loss_norm,
        )  # fmt: skip
        self.heads["track_vertexing"] = HFWeightedVertexHead(
            2 * embed_dim, hidden=list(vertex_hidden), act=activation, weight=vertex_weight,
            hf_pair_weight=vertex_hf_weight, aux_loss_norm=aux_loss_norm,
        )  # fmt: skip

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        valid = inputs["tracks_valid"]
        x = self.normalise(inputs)
        tracks = x["tracks"]
        if "jets" in x:
            jets = x["jets"].unsqueeze(1).expand(-1, tracks.shape[1], -1)
            tracks = zero_padded(torch.cat([tracks, jets], dim=-1), valid)
        h = self.encoder(self.init(tracks), valid)
        pooled = self.pool(h, valid)
        out = {"logits": self.heads["jet_classification"](pooled)}
        if self.with_aux:
            cond = torch.cat([h, pooled.unsqueeze(1).expand_as(h)], dim=-1)
            if self.heads["track_origin"].weight > 0:
                out["track_origin_logits"] = zero_padded(self.heads["track_origin"](cond), valid)
            if self.heads["track_vertexing"].weight > 0:
                pair = valid.unsqueeze(2) & valid.unsqueeze(1)
                v = self.heads["track_vertexing"](cond)
                out["track_vertex_logits"] = torch.where(pair, v, torch.zeros_like(v))
        return out
