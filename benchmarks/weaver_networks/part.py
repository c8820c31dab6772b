"""weaver network config: weaver's ParticleTransformer on the inputs of lhcml_top.yaml (written by
benchmarks/boosted_weaver.py). Sizes as the comparison table there (shrunk for 2 CPU cores)."""

import torch
from weaver.nn.model.ParticleTransformer import ParticleTransformer


class _Wrapper(torch.nn.Module):
    def __init__(self, n_features, n_classes):
        super().__init__()
        self.mod = ParticleTransformer(n_features, n_classes, pair_input_dim=4, embed_dims=[64, 128, 64],
                                       pair_embed_dims=[32, 32], num_heads=4, num_layers=3,
                                       num_cls_layers=1, fc_params=[])

    def forward(self, points, features, lorentz_vectors, mask):
        return self.mod(features, v=lorentz_vectors, mask=mask)


def get_model(data_config, **kwargs):
    model = _Wrapper(len(data_config.input_dicts["pf_features"]), len(data_config.label_value))
    info = {
        "input_names": list(data_config.input_names),
        "input_shapes": {k: ((1,) + s[1:]) for k, s in data_config.input_shapes.items()},
        "output_names": ["softmax"],
        "dynamic_axes": {**{k: {0: "N", 2: "n_" + k.split("_")[0]} for k in data_config.input_names}, "softmax": {0: "N"}},
    }
    return model, info


def get_loss(data_config, **kwargs):
    return torch.nn.CrossEntropyLoss()
