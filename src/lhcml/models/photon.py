"""Photon identification networks on calorimeter images and shower shapes, and the PAED denoiser.

Inputs follow the registry contract; image groups are the datasets written by
:func:`lhcml.sim.photons.simulate_photon_events` (``images_strips`` (B, 56, 4),
``images_middle`` (B, 7, 11), ``images_back`` (B, 4, 11), ``images_had`` (B, 3, 4); a
channel axis ``(B, 1, H, W)`` is accepted too). Their sizes come from
:data:`DEFAULT_IMAGE_SHAPES` or the ``image_shapes`` hyperparameter.

``photon_cnn``
    The LAPP photon CNN (M. Belfkir, ML@ATLAS-LAPP 2021, seed talk 003): one convolutional
    branch per calorimeter layer (each layer on its own grid), merged after the convolutions,
    dense layers; He initialisation, SELU activations, 8 % dropout, class weights, cross-entropy
    and Adam at 1e-4 (set in ``configs/photon/cnn.yaml``). The output is two logits with softmax
    (identical to a sigmoid output with binary cross-entropy: ``softmax([0, z])[1] =
    sigmoid(z)``). About 1.5 M parameters with the default sizes (the talk quotes ~1.4 M).
``photon_resnet``
    A stronger modern option: per-layer residual branches (3×3 convolutions, batch norm, ReLU,
    two basic blocks), global average + max pooling, merged MLP.
``shower_dnn``
    A fully connected network on the shower-shape variables of the ``photons`` table
    (normalisation inside the model).
``paed``
    PileUp Auto-Encoder Denoising (seed 003): one convolutional autoencoder per sampling with a
    dense bottleneck (``latent_dim`` per layer); it maps an image with pile-up (MeV) to the
    pile-up-free image (MeV) as ``x - decoder(encoder(x))`` (the bottleneck codes the pile-up
    to remove). :meth:`PAED.encode` returns the concatenated latent representation. It is an
    image-to-image regression, trained by :mod:`lhcml.tasks.photon.denoise`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from lhcml.errors import ConfigError
from lhcml.models.base import JetClassificationHead, TaggerModel
from lhcml.models.registry import register_model

#: image sizes (eta x phi cells) written by lhcml.sim.clusters for the shipped geometry
DEFAULT_IMAGE_SHAPES: dict[str, tuple[int, int]] = {
    "images_strips": (56, 4),
    "images_middle": (7, 11),
    "images_back": (4, 11),
    "images_had": (3, 4),
    "images_presampler": (7, 4),
}


def _image_groups(input_dims: Mapping[str, int]) -> list[str]:
    """Image groups in a fixed (sorted) order: the merged feature order must not depend on the
    order of ``input_dims`` (a checkpoint is rebuilt from stored metadata)."""
    return sorted(g for g in input_dims if g.startswith("images_") or g.startswith("raw_"))


def _shapes(groups: Sequence[str], image_shapes: Mapping[str, Sequence[int]] | None) -> dict[str, tuple[int, int]]:
    out = {}
    for g in groups:
        if image_shapes and g in image_shapes:
            shp = tuple(int(x) for x in image_shapes[g])
        else:
            base = g.replace("_nopu", "").replace("raw_", "images_")
            if base not in DEFAULT_IMAGE_SHAPES:
                raise ConfigError(
                    f"no image size known for input group '{g}': give model.image_shapes: {{{g}: [H, W]}}"
                )
            shp = DEFAULT_IMAGE_SHAPES[base]
        if len(shp) != 2 or min(shp) < 1:
            raise ConfigError(f"image_shapes['{g}'] must be [H, W] with positive sizes, got {list(shp)}")
        out[g] = shp
    return out


def _as_nchw(x: Tensor, shape: tuple[int, int], group: str) -> Tensor:
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or tuple(x.shape[-2:]) != shape:
        raise ConfigError(
            f"input '{group}' has shape {tuple(x.shape)}, the model was built for (B, {shape[0]}, {shape[1]})"
        )
    return x.float()


def he_init(module: nn.Module) -> None:
    """He (Kaiming normal, fan-in) initialisation of conv and linear weights, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class _CNNBranch(nn.Module):
    """conv3x3(1->c1) SELU, conv3x3(c1->c2) SELU, max-pool (2 along axes >= 8 cells), dropout."""

    def __init__(self, shape: tuple[int, int], channels: Sequence[int], dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for c in channels:
            layers += [nn.Conv2d(c_in, c, kernel_size=3, padding=1), nn.SELU()]
            c_in = c
        ph, pw = (2 if shape[0] >= 8 else 1), (2 if shape[1] >= 8 else 1)
        if ph > 1 or pw > 1:
            layers.append(nn.MaxPool2d((ph, pw)))
        if dropout > 0:
            layers.append(nn.AlphaDropout(dropout))
        layers.append(nn.Flatten())
        self.net = nn.Sequential(*layers)
        self.out_dim = c_in * (shape[0] // ph) * (shape[1] // pw)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _ImageTagger(TaggerModel):
    """Shared plumbing of the image taggers (optional shower-shape group ``photons``)."""

    def _setup(self, n_classes: int, input_dims: Mapping[str, int], image_shapes) -> list[str]:
        groups = _image_groups(input_dims)
        if not groups:
            raise ConfigError(
                f"model '{self.registry_name}' needs at least one image group (images_strips, "
                f"images_middle, images_back, images_had) in data.inputs; got {sorted(input_dims)}"
            )
        optional = [*groups[1:], "photons"]
        TaggerModel.__init__(self, n_classes, input_dims, required=[groups[0]], optional=optional)
        self.image_groups = [g for g in self.input_groups if g != "photons"]
        self.image_shapes = _shapes(self.image_groups, image_shapes)
        return self.image_groups


@register_model("photon_cnn")
class PhotonCNN(_ImageTagger):
    """The LAPP multi-layer photon CNN (see the module docstring).

    Parameters
    ----------
    channels
        Feature maps of the two convolutions of each branch.
    dense
        Sizes of the dense layers after the merge.
    dropout
        Drop rate (8 % as published), AlphaDropout in the SELU branches, dropout in the dense part.
    image_shapes
        ``{group: [H, W]}`` for non-default image sizes.
    """

    def __init__(
        self,
        n_classes: int,
        input_dims: Mapping[str, int],
        channels: Sequence[int] = (32, 64),
        dense: Sequence[int] = (128, 64),
        dropout: float = 0.08,
        image_shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        groups = self._setup(n_classes, input_dims, image_shapes)
        self.branches = nn.ModuleDict(
            {g: _CNNBranch(self.image_shapes[g], list(channels), dropout) for g in groups}
        )
        merged = sum(b.out_dim for b in self.branches.values())
        if "photons" in self.input_groups:
            merged += input_dims["photons"]
        self.heads["jet_classification"] = JetClassificationHead(
            merged, n_classes, hidden=list(dense), act="selu", dropout=dropout
        )
        he_init(self)

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        feats = [self.branches[g](_as_nchw(inputs[g], self.image_shapes[g], g)) for g in self.image_groups]
        if "photons" in self.input_groups:
            feats.append(self.normalisers["photons"](inputs["photons"].float()))
        return {"logits": self.heads["jet_classification"](torch.cat(feats, dim=1))}


class _BasicBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
        )
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.body(x))


class _ResBranch(nn.Module):
    def __init__(self, channels: int, blocks: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU())
        self.blocks = nn.Sequential(*[_BasicBlock(channels) for _ in range(blocks)])
        self.out_dim = 2 * channels

    def forward(self, x: Tensor) -> Tensor:
        h = self.blocks(self.stem(x))
        return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)


@register_model("photon_resnet")
class PhotonResNet(_ImageTagger):
    """Per-layer residual CNN branches with global pooling, merged MLP head.

    Parameters
    ----------
    channels, blocks
        Width and number of residual blocks of each branch.
    dense, dropout
        Merged MLP sizes and dropout.
    """

    def __init__(
        self,
        n_classes: int,
        input_dims: Mapping[str, int],
        channels: int = 32,
        blocks: int = 2,
        dense: Sequence[int] = (128,),
        dropout: float = 0.1,
        image_shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        groups = self._setup(n_classes, input_dims, image_shapes)
        self.branches = nn.ModuleDict({g: _ResBranch(channels, blocks) for g in groups})
        merged = sum(b.out_dim for b in self.branches.values())
        if "photons" in self.input_groups:
            merged += input_dims["photons"]
        self.heads["jet_classification"] = JetClassificationHead(
            merged, n_classes, hidden=list(dense), act="relu", dropout=dropout
        )

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        feats = [self.branches[g](_as_nchw(inputs[g], self.image_shapes[g], g)) for g in self.image_groups]
        if "photons" in self.input_groups:
            feats.append(self.normalisers["photons"](inputs["photons"].float()))
        return {"logits": self.heads["jet_classification"](torch.cat(feats, dim=1))}


@register_model("shower_dnn")
class ShowerDNN(TaggerModel):
    """Fully connected network on the shower shapes (``photons`` group).

    Parameters
    ----------
    hidden, act, dropout
        Hidden layer sizes, activation and dropout.
    """

    def __init__(
        self,
        n_classes: int,
        input_dims: Mapping[str, int],
        hidden: Sequence[int] = (64, 64, 64),
        act: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(n_classes, input_dims, required=["photons"])
        self.heads["jet_classification"] = JetClassificationHead(
            input_dims["photons"], n_classes, hidden=list(hidden), act=act, dropout=dropout
        )

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        x = self.normalise(inputs)["photons"]
        return {"logits": self.heads["jet_classification"](x)}


class _AEBranch(nn.Module):
    def __init__(self, shape: tuple[int, int], channels: int, latent: int) -> None:
        super().__init__()
        h, w = shape
        self.shape = shape
        self.channels = channels
        self.enc = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(channels * h * w, latent), nn.ReLU(),
        )
        self.dec_fc = nn.Sequential(nn.Linear(latent, channels * h * w), nn.ReLU())
        self.dec = nn.Sequential(
            nn.Conv2d(channels + 1, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, 1, 3, padding=1),
        )

    def encode(self, x: Tensor) -> Tensor:
        return self.enc(x)

    def decode(self, z: Tensor, x: Tensor) -> Tensor:
        h = self.dec_fc(z).reshape(-1, self.channels, self.shape[0], self.shape[1])
        return self.dec(torch.cat([h, x], dim=1))


@register_model("paed")
class PAED(nn.Module):
    """PileUp Auto-Encoder Denoising: per-sampling convolutional autoencoders (module docstring).

    Parameters
    ----------
    n_classes
        Unused (registry signature); 0.
    input_dims
        Image groups (``raw_strips``, ``raw_middle``, ...; any names with known or given sizes).
    channels, latent_dim
        Convolution width and bottleneck size of each layer's autoencoder.
    energy_scale_mev
        Images are divided by this inside the model and multiplied back at the output, so the
        model takes and returns MeV.
    image_shapes
        ``{group: [H, W]}`` for non-default sizes.
    """

    registry_name = "paed"

    def __init__(
        self,
        n_classes: int = 0,
        input_dims: Mapping[str, int] | None = None,
        channels: int = 16,
        latent_dim: int = 32,
        energy_scale_mev: float = 1000.0,
        image_shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        input_dims = dict(input_dims or {})
        groups = _image_groups(input_dims)
        if not groups:
            raise ConfigError(f"paed needs image groups in its inputs, got {sorted(input_dims)}")
        if energy_scale_mev <= 0:
            raise ConfigError(f"paed energy_scale_mev must be > 0, got {energy_scale_mev}")
        self.groups = groups
        self.image_shapes = _shapes(groups, image_shapes)
        self.scale = float(energy_scale_mev)
        self.branches = nn.ModuleDict({g: _AEBranch(self.image_shapes[g], channels, latent_dim) for g in groups})
        # start as the identity map (no correction): zero the last decoder layer
        for b in self.branches.values():
            nn.init.zeros_(b.dec[-1].weight)
            nn.init.zeros_(b.dec[-1].bias)

    def encode(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """The latent representation ``(B, n_groups * latent_dim)`` of the images with pile-up."""
        z = [self.branches[g].encode(_as_nchw(inputs[g], self.image_shapes[g], g) / self.scale) for g in self.groups]
        return torch.cat(z, dim=1)

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        lat = []
        for g in self.groups:
            x = _as_nchw(inputs[g], self.image_shapes[g], g) / self.scale
            b = self.branches[g]
            z = b.encode(x)
            lat.append(z)
            out[g] = ((x - b.decode(z, x)) * self.scale).squeeze(1)
        out["latent"] = torch.cat(lat, dim=1)
        return out
