"""Edge classifiers of the GNN track-finding pipeline: the edge-filter MLP and the interaction network.

Both take one event's hit graph — node features ``x`` ``(N, F_node)``, directed edges
``edge_index`` ``(2, E)`` (int64, source row 0, target row 1) and edge features ``edge_attr``
``(E, F_edge)`` — and return one logit per edge (``(E,)``), the score that the edge joins two
consecutive hits of one particle (features: :mod:`lhcml.tasks.tracking.graph`).

* :class:`EdgeFilter` — Exa.TrkX's filter stage (Ju et al. 2021, docs/references.md §22): an MLP
  on the features of the two end hits and of the edge, applied edge by edge; it removes most
  fake edges cheaply before the GNN.
* :class:`InteractionNetwork` — the interaction network of Battaglia et al. 2016 as Exa.TrkX and
  acorn use it for edge classification (docs/references.md §22): node and edge encoders, then
  ``n_iterations`` message-passing steps, each an edge update from (source node, target node, edge)
  and a node update from (node, sum of incoming edge messages, sum of outgoing edge messages),
  both residual, and an edge-wise output MLP. Aggregation is a sum with ``scatter_add_`` (no
  torch_scatter; ``index_add_`` exports to a wrong ONNX graph when indices repeat), so the network is permutation-equivariant: permuting nodes and edges permutes
  the outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lhcml.errors import CorruptFileError, InputNotFoundError, SchemaError

__all__ = ["EdgeFilter", "InteractionNetwork", "edge_loss", "edge_step", "graph_file", "graph_prepare", "mlp", "precision_recall", "read_graph"]


def mlp(n_in: int, hidden: int, n_out: int, n_layers: int = 2, *, layer_norm: bool = True, output_activation: bool = True) -> nn.Sequential:
    """``n_layers`` linear layers (``n_in -> hidden -> ... -> n_out``) with LayerNorm + ReLU after
    each hidden layer (and after the last with ``output_activation``), as acorn's ``make_mlp``.

    Not :class:`lhcml.models.layers.MLP`: the interaction network needs the LayerNorm after each
    layer (summed messages over many edges otherwise grow with the node degree), which that MLP
    does not offer (it has BatchNorm, wrong for one graph of varying size per step)."""
    layers: list[nn.Module] = []
    sizes = [n_in] + [hidden] * (n_layers - 1) + [n_out]
    for i in range(n_layers):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        last = i == n_layers - 1
        if not last or output_activation:
            if layer_norm:
                layers.append(nn.LayerNorm(sizes[i + 1]))
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class EdgeFilter(nn.Module):
    """MLP edge filter: logit = MLP([x_src, x_dst, edge_attr]).

    Parameters
    ----------
    node_features, edge_features:
        input widths (3 and 6 for :mod:`lhcml.tasks.tracking.graph`'s features).
    hidden, n_layers:
        width and depth of the MLP (configs/tracking/edge_filter.yaml; our choice).
    """

    def __init__(self, node_features: int = 3, edge_features: int = 6, hidden: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        self.node_features, self.edge_features = int(node_features), int(edge_features)
        self.net = mlp(2 * node_features + edge_features, hidden, 1, n_layers, output_activation=False)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        """Edge logits ``(E,)``."""
        src, dst = edge_index[0], edge_index[1]
        return self.net(torch.cat([x[src], x[dst], edge_attr], dim=1)).squeeze(-1)

    def onnx_module(self) -> nn.Module:
        """The module :mod:`lhcml.export.tracking` exports (:class:`EdgeMajor`)."""
        return EdgeMajor(self)


class InteractionNetwork(nn.Module):
    """Interaction-network edge classifier (Battaglia et al. 2016; Exa.TrkX / acorn's InteractionGNN).

    Encoders: ``h = MLP_n(x)``, ``e = MLP_e([h_src, h_dst, edge_attr])``. Each of ``n_iterations``
    steps: ``e <- e + MLP_edge([h_src, h_dst, e])``; ``m_in = Σ_{edges into i} e``,
    ``m_out = Σ_{edges out of i} e``; ``h <- h + MLP_node([h, m_in, m_out])``. Output:
    ``logit = MLP_out([h_src, h_dst, e])``. Sums use ``scatter_add_`` (exported to ONNX as ScatterElements with reduction ``add``).
    """

    def __init__(self, node_features: int = 3, edge_features: int = 6, hidden: int = 32,
                 n_iterations: int = 4, n_layers: int = 2) -> None:  # fmt: skip
        super().__init__()
        self.node_features, self.edge_features = int(node_features), int(edge_features)
        self.n_iterations = n_iterations
        self.node_encoder = mlp(node_features, hidden, hidden, n_layers)
        self.edge_encoder = mlp(2 * hidden + edge_features, hidden, hidden, n_layers)
        self.edge_network = mlp(3 * hidden, hidden, hidden, n_layers)
        self.node_network = mlp(3 * hidden, hidden, hidden, n_layers)
        self.output = mlp(3 * hidden, hidden, 1, n_layers, output_activation=False)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        """Edge logits ``(E,)``."""
        src, dst = edge_index[0], edge_index[1]
        h = self.node_encoder(x)
        e = self.edge_encoder(torch.cat([h[src], h[dst], edge_attr], dim=1))
        src_e, dst_e = src[:, None].expand_as(e), dst[:, None].expand_as(e)
        for _ in range(self.n_iterations):
            e = e + self.edge_network(torch.cat([h[src], h[dst], e], dim=1))
            m_in = torch.zeros_like(h).scatter_add_(0, dst_e, e)
            m_out = torch.zeros_like(h).scatter_add_(0, src_e, e)
            h = h + self.node_network(torch.cat([h, m_in, m_out], dim=1))
        return self.output(torch.cat([h[src], h[dst], e], dim=1)).squeeze(-1)

    def onnx_module(self) -> nn.Module:
        """The module :mod:`lhcml.export.tracking` exports (:class:`EdgeMajor`)."""
        return EdgeMajor(self)


def edge_loss(logits: Tensor, y: Tensor, pos_weight: float | None = None) -> Tensor:
    """Binary cross-entropy of edge logits against edge labels (1 = true edge).

    ``pos_weight`` weights the true edges (default: #fake/#true of the graph, so that the rare true
    edges weigh as much as the fakes; acorn's weighted BCE, our choice of weight).
    """
    y = y.to(logits.dtype)
    if pos_weight is None:
        n_pos = y.sum().clamp(min=1.0)
        pos_weight = float(((y.numel() - n_pos) / n_pos).clamp(min=1.0))
    return nn.functional.binary_cross_entropy_with_logits(logits, y, pos_weight=torch.tensor(pos_weight, dtype=logits.dtype))


# ---------------------------------------------------------------- training hooks (lhcml.train.tracking)

#: arrays of a graph file, written by :func:`lhcml.tasks.tracking.gnn_pipeline.write_graphs`
GRAPH_ARRAYS = ("x", "edge_index", "edge_attr", "y", "hit_id")


def precision_recall(logits: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Precision and recall of a binary classifier's logits at score 0.5 (logit 0) against labels ``y``
    (> 0: true); 0 where nothing is predicted or nothing is true."""
    pred = logits.detach() > 0
    tp = (pred & (y > 0)).sum().float()
    return {"precision": tp / pred.sum().clamp(min=1), "recall": tp / (y > 0).sum().clamp(min=1)}


def graph_file(source: str, event_id: int, graph: str) -> Path:
    """Where the graph ``graph`` of an event lives: ``<event directory>/graphs-<graph>/event{N:09d}-graph.npz``.

    ``source`` is :attr:`lhcml.data.trackml.TrackMLEvent.source` (``<directory>/event{N:09d}``).
    """
    return Path(source).parent / f"graphs-{graph}" / f"event{int(event_id):09d}-graph.npz"


def read_graph(path: str | Path) -> dict[str, np.ndarray]:
    """Read a graph file; :class:`lhcml.errors.InputNotFoundError` / :class:`CorruptFileError` if absent or bad."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"no graph file {path}: build the graphs first (lhcml tracking build-graphs EVENT_DIR --graph NAME ...)")
    try:
        with np.load(path, allow_pickle=False) as f:
            g = {k: f[k] for k in f.files}
    except (OSError, ValueError) as err:
        raise CorruptFileError(f"{path}: not a graph file ({err}); rebuild it with lhcml tracking build-graphs") from None
    missing = [k for k in ("x", "edge_index", "edge_attr", "hit_id") if k not in g]
    if missing:
        raise CorruptFileError(f"{path}: graph file lacks {', '.join(missing)}; rebuild it with lhcml tracking build-graphs")
    return g


def graph_prepare(event: Any, opts: Any) -> dict[str, Any]:
    """``prepare`` of the edge classifiers: the event's graph file ``opts.graph`` with its labels."""
    g = read_graph(graph_file(event.source, event.event_id, opts.graph))
    if "y" not in g:
        raise SchemaError(f"graph of event {event.event_id} has no edge labels (built from events without truth); "
                          "training needs simulated events with truth")  # fmt: skip
    return {k: g[k] for k in ("x", "edge_index", "edge_attr", "y")}


def graph_init_args(sample: dict[str, Any]) -> dict[str, Any]:
    """The feature widths come from the graphs."""
    return {"node_features": int(sample["x"].shape[1]), "edge_features": int(sample["edge_attr"].shape[1])}


def edge_step(model: nn.Module, s: dict[str, Any], generator: Any, training: bool) -> dict[str, Any]:
    """Loss of one event's graph; at validation also precision and recall of the edges at score 0.5."""
    logits = model(s["x"], s["edge_index"], s["edge_attr"])
    y = s["y"].to(logits.dtype)
    terms = {"loss": edge_loss(logits, y)}
    if not training:
        terms.update(precision_recall(logits, y))
    return terms


class EdgeMajor(nn.Module):
    """ONNX face of an edge classifier: edges as ``(E, 2)`` (both axes dynamic), for
    :func:`lhcml.export.tracking.export_tracking_model`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.registry_name = getattr(model, "registry_name", type(model).__name__)

    def forward(self, x: Tensor, edges: Tensor, edge_attr: Tensor) -> Tensor:
        """Edge logits ``(E,)``."""
        return self.model(x, edges.t(), edge_attr)

    def onnx_signature(self) -> dict[str, Any]:
        """Names, dynamic axes and descriptions of the ONNX inputs and output."""
        return {
            "inputs": ["x", "edges", "edge_attr"],
            "outputs": ["logit"],
            "dynamic_axes": {"x": {0: "nodes"}, "edges": {0: "edges"}, "edge_attr": {0: "edges"}, "logit": {0: "edges"}},
            "description": {"x": "(N, 3) node features r/1000 mm, phi/pi, z/1000 mm (lhcml.tasks.tracking.graph.node_features)",
                            "edges": "(E, 2) int64 source, target node index",
                            "edge_attr": "(E, 6) edge features (lhcml.tasks.tracking.graph.edge_features)",
                            "logit": "(E,) edge logit; sigmoid = score that the edge joins consecutive hits of one particle"},
        }  # fmt: skip

    def example_inputs(self, n: int, seed: int = 0) -> dict[str, Tensor]:
        """``n`` nodes and ``n`` edges where edge k joins nodes <= k, so that any prefix is a graph."""
        g = torch.Generator().manual_seed(seed)
        k = torch.arange(n)
        src = (torch.rand(n, generator=g) * (k + 1)).long().clamp(max=k)
        dst = (torch.rand(n, generator=g) * (k + 1)).long().clamp(max=k)
        nf, ef = self.model.node_features, self.model.edge_features
        x = torch.rand(n, nf, generator=g)
        x[:, :3] = x[:, :3] * torch.tensor([1.0, 2.0, 6.0]) - torch.tensor([0.0, 1.0, 3.0])  # r/1000, phi/pi, z/1000 ranges
        return {"x": x, "edges": torch.stack([src, dst], 1), "edge_attr": torch.randn(n, ef, generator=g)}
