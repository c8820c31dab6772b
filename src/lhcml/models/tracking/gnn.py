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
  both residual, and an edge-wise output MLP. Aggregation is a sum with ``index_add_`` (no
  torch_scatter), so the network is permutation-equivariant: permuting nodes and edges permutes
  the outputs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["EdgeFilter", "InteractionNetwork", "edge_loss", "mlp"]


def mlp(n_in: int, hidden: int, n_out: int, n_layers: int = 2, *, layer_norm: bool = True, output_activation: bool = True) -> nn.Sequential:
    """``n_layers`` linear layers (``n_in -> hidden -> ... -> n_out``) with LayerNorm + ReLU after
    each hidden layer (and after the last with ``output_activation``), as acorn's ``make_mlp``."""
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
        self.net = mlp(2 * node_features + edge_features, hidden, 1, n_layers, output_activation=False)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        """Edge logits ``(E,)``."""
        src, dst = edge_index[0], edge_index[1]
        return self.net(torch.cat([x[src], x[dst], edge_attr], dim=1)).squeeze(-1)


class InteractionNetwork(nn.Module):
    """Interaction-network edge classifier (Battaglia et al. 2016; Exa.TrkX / acorn's InteractionGNN).

    Encoders: ``h = MLP_n(x)``, ``e = MLP_e([h_src, h_dst, edge_attr])``. Each of ``n_iterations``
    steps: ``e <- e + MLP_edge([h_src, h_dst, e])``; ``m_in = Σ_{edges into i} e``,
    ``m_out = Σ_{edges out of i} e``; ``h <- h + MLP_node([h, m_in, m_out])``. Output:
    ``logit = MLP_out([h_src, h_dst, e])``. Sums use ``index_add_``.
    """

    def __init__(self, node_features: int = 3, edge_features: int = 6, hidden: int = 32,
                 n_iterations: int = 4, n_layers: int = 2) -> None:  # fmt: skip
        super().__init__()
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
        for _ in range(self.n_iterations):
            e = e + self.edge_network(torch.cat([h[src], h[dst], e], dim=1))
            m_in = torch.zeros_like(h).index_add_(0, dst, e)
            m_out = torch.zeros_like(h).index_add_(0, src, e)
            h = h + self.node_network(torch.cat([h, m_in, m_out], dim=1))
        return self.output(torch.cat([h[src], h[dst], e], dim=1)).squeeze(-1)


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
