"""weaver network config: weaver's ParticleNet on the inputs of lhcml_top.yaml (written by
benchmarks/boosted_weaver.py). Sizes as the comparison table there (shrunk for 2 CPU cores)."""

import torch
from weaver.nn.model.ParticleNet import ParticleNet


class _Wrapper(torch.nn.Module):
    def __init__(self, n_features, n_classes):
        super().__init__()
        self.mod = ParticleNet(n_features, n_classes, conv_params=[(16, (32, 32, 32)), (16, (64, 64, 64))],
                               fc_params=[(64, 0.1)], use_fusion=False)

    def forward(self, points, features, lorentz_vectors, mask):
        return self.mod(points, features, mask)


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
