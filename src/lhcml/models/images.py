"""Jet-image tagger: the pixelisation and preprocessing run inside the model.

``jet_image_cnn`` takes the raw ``flow`` constituents (``pt``, ``deta``, ``dphi`` found by name)
and builds the jet image in the graph, so the trained and the exported (ONNX) model take
constituents and no separate image dataset has to be stored or kept in sync:

1. **centring**: the pT-weighted centroid of (Δη, Δφ) is moved to the origin;
2. **rotation**: the principal axis of the pT-weighted (Δη, Δφ) covariance is made vertical
   (along the Δφ' axis), using the leading eigenvector (no trigonometric functions);
3. **flip**: the image is mirrored so that the half with the larger summed pT lies at positive
   Δη' and at positive Δφ' (the two flips fix the sign ambiguities of step 2);
4. **pixelisation**: ``n_pixels × n_pixels`` over ``[-half_width, half_width]²`` of the pT,
   rows = Δφ', columns = Δη';
5. **normalisation**: pixel intensities divided by the total constituent pT (a jet's image sums
   to the pT fraction inside the window, 1 for a fully contained jet).

The CNN follows DeepTop (Kasieczka, Plehn, Russell, Schell, JHEP 05 (2017) 006): two blocks of
two 4×4 convolutions with 8 feature maps and ReLU, each followed by 2×2 max pooling, then fully
connected layers (64, 256, 256) and the multi-class output; a BatchNorm on the one-channel input
(our addition) rescales the O(1/n_pixels²) intensities. The numpy wrappers and plots live in
:mod:`lhcml.tasks.boosted.images`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from lhcml.errors import ConfigError
from lhcml.models.base import JetClassificationHead, TaggerModel
from lhcml.models.registry import register_model

_EPS = 1e-12


def preprocess_coordinates(
    pt: Tensor, deta: Tensor, dphi: Tensor, valid: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Centred, rotated and flipped coordinates ``(x, y)`` and weights ``w = pT/ΣpT`` (B, N).

    Padded constituents get weight 0 (their coordinates are irrelevant).
    """
    w = torch.where(valid, pt, torch.zeros_like(pt))
    w = w / w.sum(dim=1, keepdim=True).clamp(min=_EPS)
    x0 = torch.where(valid, deta, torch.zeros_like(deta))
    y0 = torch.where(valid, dphi, torch.zeros_like(dphi))
    x = x0 - (w * x0).sum(dim=1, keepdim=True)
    y = y0 - (w * y0).sum(dim=1, keepdim=True)
    sxx = (w * x * x).sum(dim=1, keepdim=True)
    syy = (w * y * y).sum(dim=1, keepdim=True)
    sxy = (w * x * y).sum(dim=1, keepdim=True)
    # leading eigenvector (vx, vy) of [[sxx, sxy], [sxy, syy]]
    lam = 0.5 * (sxx + syy) + torch.sqrt((0.5 * (sxx - syy)) ** 2 + sxy**2)
    vx, vy = lam - syy, sxy
    alt_x, alt_y = sxy, lam - sxx
    use_alt = (vx**2 + vy**2) < (alt_x**2 + alt_y**2)
    vx = torch.where(use_alt, alt_x, vx)
    vy = torch.where(use_alt, alt_y, vy)
    norm = torch.sqrt(vx**2 + vy**2)
    degenerate = norm < 1e-20
    vx = torch.where(degenerate, torch.zeros_like(vx), vx / norm.clamp(min=1e-30))
    vy = torch.where(degenerate, torch.ones_like(vy), vy / norm.clamp(min=1e-30))
    # rotate: the principal axis v becomes the vertical axis
    yr = vx * x + vy * y
    xr = vy * x - vx * y
    right = (w * (xr > 0).to(w.dtype)).sum(dim=1, keepdim=True)
    left = (w * (xr < 0).to(w.dtype)).sum(dim=1, keepdim=True)
    up = (w * (yr > 0).to(w.dtype)).sum(dim=1, keepdim=True)
    down = (w * (yr < 0).to(w.dtype)).sum(dim=1, keepdim=True)
    xr = torch.where(left > right, -xr, xr)
    yr = torch.where(down > up, -yr, yr)
    return xr, yr, w


def pixelise(x: Tensor, y: Tensor, w: Tensor, n_pixels: int, half_width: float) -> Tensor:
    """Sum the weights ``w`` (B, N) into ``(B, 1, n_pixels, n_pixels)`` images (rows = y)."""
    b = x.shape[0]
    pix = 2.0 * half_width / n_pixels
    ix = torch.floor((x + half_width) / pix)
    iy = torch.floor((y + half_width) / pix)
    inside = (ix >= 0) & (ix < n_pixels) & (iy >= 0) & (iy < n_pixels)
    flat = (iy * n_pixels + ix).clamp(0, n_pixels * n_pixels - 1).long()
    flat = torch.where(inside, flat, torch.zeros_like(flat))
    wt = torch.where(inside, w, torch.zeros_like(w))
    img = torch.zeros(b, n_pixels * n_pixels, dtype=w.dtype, device=w.device)
    img = img.scatter_add(1, flat, wt)
    return img.reshape(b, 1, n_pixels, n_pixels)


def jet_images_torch(
    pt: Tensor, deta: Tensor, dphi: Tensor, valid: Tensor, n_pixels: int = 40, half_width: float = 1.0
) -> Tensor:
    """Preprocessed, normalised jet images ``(B, 1, n_pixels, n_pixels)`` (see module docstring)."""
    x, y, w = preprocess_coordinates(pt, deta, dphi, valid)
    return pixelise(x, y, w, n_pixels, half_width)


@register_model("jet_image_cnn")
class JetImageCNN(TaggerModel):
    """DeepTop-style CNN on jet images built in the graph from the ``flow`` constituents.

    Parameters
    ----------
    n_pixels, half_width
        Image size (pixels per side) and half-extent in Δη' and Δφ' (default 40 over ±1.0).
    conv_blocks
        Feature maps per convolution, grouped in blocks; each block ends with 2×2 max pooling.
    kernel_size
        Convolution kernel (4 as DeepTop; 'same' padding).
    fc_sizes, dropout
        Fully connected layers after flattening.
    """

    def __init__(
        self,
        n_classes: int,
        input_dims: Mapping[str, int],
        n_pixels: int = 40,
        half_width: float = 1.0,
        conv_blocks: Sequence[Sequence[int]] = ((8, 8), (8, 8)),
        kernel_size: int = 4,
        fc_sizes: Sequence[int] = (64, 256, 256),
        dropout: float = 0.0,
    ) -> None:
        super().__init__(n_classes, input_dims, required=("flow",))
        if n_pixels < 4 or half_width <= 0:
            raise ConfigError("jet_image_cnn needs n_pixels >= 4 and half_width > 0")
        self.n_pixels = n_pixels
        self.half_width = float(half_width)
        self.kin: dict[str, int] = {}
        # input BatchNorm (our addition): pixel intensities are O(1/n_pixels²) after the pT
        # normalisation, which stalls the first layers; BN rescales them (folded into ONNX)
        layers: list[nn.Module] = [nn.BatchNorm2d(1)]
        prev, size = 1, n_pixels
        for block in conv_blocks:
            for c in block:
                layers += [nn.Conv2d(prev, c, kernel_size, padding="same"), nn.ReLU()]
                prev = c
            layers.append(nn.MaxPool2d(2))
            size //= 2
        if size < 1:
            raise ConfigError(f"too many pooling blocks for {n_pixels} pixels")
        self.cnn = nn.Sequential(*layers, nn.Flatten())
        self.heads["jet_classification"] = JetClassificationHead(
            prev * size * size, n_classes, hidden=list(fc_sizes), act="relu", dropout=dropout
        )

    def configure_inputs(self, variables: Mapping[str, Sequence[str]]) -> None:
        super().configure_inputs(variables)
        names = list(variables.get("flow", []))
        missing = [v for v in ("pt", "deta", "dphi") if v not in names]
        if missing:
            raise ConfigError(f"jet_image_cnn needs {missing} in data.inputs.flow (got {names})")
        self.kin = {v: names.index(v) for v in ("pt", "deta", "dphi")}

    def images(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """The preprocessed jet images of a batch."""
        if not self.kin:
            raise RuntimeError("call configure_inputs(variables) before using jet_image_cnn")
        flow, valid = inputs["flow"].float(), inputs["flow_valid"]
        col = {k: torch.where(valid, flow[..., i], torch.zeros_like(flow[..., i])) for k, i in self.kin.items()}
        return jet_images_torch(col["pt"], col["deta"], col["dphi"], valid, self.n_pixels, self.half_width)

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {"logits": self.heads["jet_classification"](self.cnn(self.images(inputs)))}
