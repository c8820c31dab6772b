"""``predict``: run a trained tagger on flat files and write its outputs back into them.

Convention (one, everywhere): the outputs go into the ``jets`` dataset as new float32 fields
``<tagger>_<output>`` with ``<output>`` from ``labels.yaml`` (``GN2_pb``, ``GN2_pc``, ``GN2_pu``),
in a **copy** of each input file (``<output_dir>/<input name>``; every other dataset and the file
attributes are copied unchanged). Without ``output_dir`` the input file itself is rewritten.
Either way every file is written under a hidden temporary name next to its destination
(``.<name>.<host>.<pid>.lhcml-tmp``) and all are renamed only when every input succeeded, so an
error leaves no output changed; the temporaries of a killed run are removed by the next run on
that host. Two inputs with the same file name are refused with ``output_dir`` (they would write
the same copy). Columns of the same name are replaced, so several taggers can be predicted into
the same file one after the other.

Before reading any jet, the checkpoint's input variables are checked against each file
(:class:`~lhcml.errors.CheckpointMismatchError` names what is missing) and, if a training config
is given, its data inputs, classes and model against the checkpoint's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm import tqdm

from lhcml.atomic import commit, prepare_output, remove_stale_temporaries, temp_path
from lhcml.data.files import expand_inputs
from lhcml.errors import CheckpointMismatchError, ConfigError, SchemaError


def load_any(checkpoint: str | Path) -> tuple[str, Any, dict[str, Any]]:
    """``(kind, model, meta)`` of a tagger's model file (a Lightning checkpoint or an mv2 model
    file), ``kind`` naming its trainer in :data:`lhcml.train.protocol.TRAINERS`.

    Raises
    ------
    ConfigError
        If the file is no tagger (the PAED denoiser writes images, not prediction columns).
    """
    from lhcml.train.protocol import trainer_for_artifact

    trainer = trainer_for_artifact(checkpoint)
    if trainer.kind not in ("lightning", "bdt"):
        raise ConfigError(f"{checkpoint} is a {trainer.kind} model, not a tagger: `lhcml predict` takes taggers "
                          "(use `lhcml photon denoise` for the PAED)")
    model, meta = trainer.load(Path(checkpoint))
    return trainer.kind, model, meta


def _specs_for(path: Path, checkpoint: Path, meta: dict[str, Any]) -> dict:
    import yaml

    from lhcml.train.checkpoint import meta_variables
    from lhcml.train.datamodule import inspect_inputs

    variables = meta_variables(meta)
    try:
        specs = inspect_inputs(path, variables)
    except SchemaError as err:
        raise CheckpointMismatchError(f"checkpoint {checkpoint} does not fit {path}: {err}") from None
    shapes = yaml.safe_load(meta["input_shapes_yaml"])
    for g, s in specs.items():
        if s.kind == "image" and list(s.shape) != list(shapes[g]):
            raise CheckpointMismatchError(
                f"checkpoint {checkpoint} expects '{g}' of shape {shapes[g]}, {path} has {list(s.shape)}"
            )
    return specs


def predict_arrays(kind: str, model: Any, batches: Any, n_jets: int, desc: str = "") -> np.ndarray:
    """Class probabilities ``(n_jets, n_classes)`` for an iterable of input batches (``kind``:
    the trainer of the model, from :func:`load_any`)."""
    from lhcml.train.protocol import TRAINERS

    trainer = TRAINERS[kind]
    out = []
    for batch in tqdm(batches, desc=desc, unit="batch", leave=False, disable=None):
        out.append(trainer.predict(model, batch))
    probs = np.concatenate(out) if out else np.zeros((0, 0), np.float32)
    if len(probs) != n_jets:
        raise RuntimeError(f"predicted {len(probs)} jets, expected {n_jets}")
    return probs.astype(np.float32)


def _with_columns(jets: np.ndarray, columns: dict[str, np.ndarray]) -> np.ndarray:
    kept = [(n, jets.dtype.fields[n][0]) for n in jets.dtype.names if n not in columns]
    dtype = np.dtype(kept + [(n, "f4") for n in columns])
    out = np.empty(jets.shape, dtype=dtype)
    for n, _ in kept:
        out[n] = jets[n]
    for n, v in columns.items():
        out[n] = v
    return out


def write_columns(src: Path, dst: Path, columns: dict[str, np.ndarray], replace: bool = True) -> Path:
    """Write ``src`` with ``columns`` added to ``jets`` to ``dst`` atomically (``dst`` may be ``src``).

    The copy is written to a hidden temporary next to ``dst`` and renamed onto ``dst``
    (``replace=False``: left under the temporary name, which is returned, for the caller to
    rename). Temporaries of killed earlier runs are removed first.
    """
    from lhcml.data.checks import open_h5, read_error, read_fields
    from lhcml.data.h5 import compression_kwargs

    prepare_output(dst)
    remove_stale_temporaries(dst)
    tmp = temp_path(dst)
    try:
        with open_h5(src) as fin, h5py.File(tmp, "w") as fout:
            for k, v in fin.attrs.items():
                fout.attrs[k] = v
            from lhcml.train.datamodule import main_table

            table = main_table(fin)
            for name in fin:
                if name != table:
                    try:
                        fin.copy(fin[name], fout, name=name)
                    except OSError as err:
                        n = fin[name].shape[0] if isinstance(fin[name], h5py.Dataset) and fin[name].shape else 0
                        raise read_error(src, name, (0, n), err) from None
            jets_in = fin[table]
            jets = _with_columns(read_fields(jets_in, None, 0, len(jets_in), src), columns)
            ds = fout.create_dataset(
                table, data=jets, maxshape=(None,), chunks=jets_in.chunks or (1000,),
                **compression_kwargs(jets_in),  # plugin filters (LZ4 of UPP/Salt files) too
            )  # fmt: skip
            for k, v in jets_in.attrs.items():
                ds.attrs[k] = v
        if not replace:
            return tmp
        commit(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dst


def _destinations(files: list[Path], output_dir: str | Path | None) -> list[Path]:
    """Where each input's copy goes; refuses two inputs that would land on the same file."""
    if output_dir is None:
        dsts = list(files)
    else:
        dsts = [Path(output_dir) / p.name for p in files]
        for p, d in zip(files, dsts, strict=True):
            if d.resolve() == p.resolve():
                raise ConfigError(f"output_dir {output_dir} is the input's folder; omit it to write in place")
    seen: dict[Path, Path] = {}
    for p, d in zip(files, dsts, strict=True):
        key = d.resolve()
        if key in seen:
            if seen[key].resolve() == p.resolve():
                raise ConfigError(f"{p} is given twice; give every input file once")
            raise ConfigError(
                f"inputs {seen[key]} and {p} have the same file name: their predictions would both be "
                f"written to {d}. Predict them into different --output-dir folders (one command each), "
                "or rename one of them"
            )
        seen[key] = p
    return dsts


def predict(
    checkpoint: str | Path,
    files: Sequence[str | Path],
    tagger_name: str | None = None,
    output_dir: str | Path | None = None,
    batch_size: int = 2000,
    config: Any | None = None,
) -> list[Path]:
    """Write ``<tagger>_<output>`` columns for every jet of ``files``.

    Parameters
    ----------
    checkpoint
        A training checkpoint (``.ckpt``) or an mv2 model file (``.json``).
    files
        Flat HDF5 files (e.g. ``test_ttbar.h5``); all jets are predicted, in file order.
    tagger_name
        Column prefix; default: the ``tagger_name`` stored in the checkpoint (the model name).
    output_dir
        Where the copies go; ``None`` rewrites the input files in place (atomically).
    batch_size
        Jets per forward pass.
    config
        Optional :class:`~lhcml.train.config.TrainConfig` that must match the checkpoint.

    Returns
    -------
    list[Path]
        The written files.
    """
    from lhcml.train.checkpoint import compare_configs, meta_config
    from lhcml.train.datamodule import H5JetDataset

    checkpoint = Path(checkpoint)
    kind, model, meta = load_any(checkpoint)
    if config is not None:
        compare_configs(meta_config(meta), config.model_dump(mode="json"), str(checkpoint))
    name = tagger_name or meta["tagger_name"]
    if not name or not name.replace("_", "").isalnum():
        raise ConfigError(f"tagger name '{name}' must be letters, digits and underscores")
    files = expand_inputs(files, context="(files to predict)")  # globs and directories too
    dsts = _destinations(files, output_dir)
    specs = {p: _specs_for(p, checkpoint, meta) for p in files}  # check all before writing any
    # every copy is complete under a temporary name before the first is renamed: an error in
    # any input leaves no output changed
    done: list[tuple[Path, Path]] = []
    try:
        for p, dst in zip(files, dsts, strict=True):
            ds = H5JetDataset([p], specs[p], labels=None, batch_size=batch_size, chunk_size=max(batch_size, 100_000))
            n = sum(e - s for _, s, e in ds.chunks())
            probs = predict_arrays(kind, model, ds, n, desc=p.name)
            cols = {f"{name}_{o}": probs[:, i] for i, o in enumerate(meta["outputs"])}
            done.append((write_columns(p, dst, cols, replace=False), dst))
    except BaseException:
        for tmp, _ in done:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, dst in done:
        commit(tmp, dst)
    return dsts
