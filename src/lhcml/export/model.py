"""The one export entry point: :func:`export_model` for every kind of trained model.

``lhcml export RUN_OR_MODEL OUTPUT`` and the Python API take a model file or a training output
directory, find its trainer (:func:`lhcml.train.protocol.resolve_artifact`) and call the exporter
of that kind (:data:`EXPORTERS`): Lightning taggers and the MV2-like BDT
(:mod:`lhcml.export.onnx`), the photon PAED denoiser (:mod:`lhcml.export.paed`), the fast-calorimeter
shower generators (:mod:`lhcml.export.fastcalo`). Every exporter
refuses to overwrite without ``force``, writes atomically, embeds the metadata and checks
onnxruntime against the original model; all return an :class:`~lhcml.export.onnx.ExportReport`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lhcml.errors import ConfigError
from lhcml.export.onnx import ExportReport


def _lightning(artifact: Path, output: Path, *, force: bool, check_file: Any, n_check: int,
               atol: float | None, timing: bool) -> ExportReport:  # fmt: skip
    from lhcml.export.onnx import export_onnx

    return export_onnx(artifact, output, force=force, check_file=check_file, n_check=n_check,
                       atol=1e-5 if atol is None else atol, timing=timing)  # fmt: skip


def _bdt(artifact: Path, output: Path, *, force: bool, check_file: Any, n_check: int,
         atol: float | None, timing: bool) -> ExportReport:  # fmt: skip
    from lhcml.export.onnx import export_bdt_onnx

    if output.exists() and not force:
        raise FileExistsError(f"{output} exists; pass force=True (--force) to overwrite it")
    return export_bdt_onnx(artifact, output, check_file, n_check, 1e-5 if atol is None else atol, timing)


def _paed(artifact: Path, output: Path, *, force: bool, check_file: Any, n_check: int,
          atol: float | None, timing: bool) -> ExportReport:  # fmt: skip
    from lhcml.export.paed import export_paed_onnx

    if check_file is not None:
        raise ConfigError("--check-file applies to taggers; the PAED export is checked on random images")
    return export_paed_onnx(artifact, output, force=force, atol=1e-4 if atol is None else atol)


def _fastcalo(artifact: Path, output: Path, *, force: bool, check_file: Any, n_check: int,
              atol: float | None, timing: bool, lean: bool = False) -> ExportReport:  # fmt: skip
    from lhcml.export.fastcalo import export_checkpoint

    if check_file is not None:
        raise ConfigError("--check-file applies to taggers; a shower generator is checked on random energies and noise")
    return export_checkpoint(artifact, output, force=force, atol=atol, timing=timing, lean=lean)


def _tracking(artifact: Path, output: Path, *, force: bool, check_file: Any, n_check: int,
              atol: float | None, timing: bool) -> ExportReport:  # fmt: skip
    from lhcml.export.tracking import export_checkpoint

    if check_file is not None:
        raise ConfigError("--check-file applies to taggers; a tracking model is checked on random hits")
    return export_checkpoint(artifact, output, force=force, atol=atol, timing=timing)


#: one exporter per trainer kind (:data:`lhcml.train.protocol.TRAINERS`)
EXPORTERS: dict[str, Callable[..., ExportReport]] = {
    "lightning": _lightning, "bdt": _bdt, "paed": _paed, "fastcalo": _fastcalo,
    "tracking": _tracking,
}  # fmt: skip


def export_model(
    run_or_model: str | Path,
    output: str | Path,
    *,
    force: bool = False,
    check_file: str | Path | None = None,
    n_check: int = 1000,
    atol: float | None = None,
    timing: bool = True,
    lean: bool = False,
) -> ExportReport:
    """Export any trained lhcml model to ONNX and check it against the original.

    Parameters
    ----------
    run_or_model
        A model file (``.ckpt``, mv2 ``.json``, PAED ``.pt``) or the ``output_dir`` of a training
        run (its best checkpoint / model file is exported).
    output
        The ``.onnx`` file to write.
    force
        Overwrite ``output`` if it exists (otherwise ``FileExistsError``).
    check_file
        Taggers: a flat file whose first ``n_check`` jets are also used for the check.
    atol
        Largest allowed difference (default: 1e-5 for taggers' probabilities, 1e-4 for the PAED's
        images in units of its energy scale).
    timing
        Measure latency and throughput (taggers).
    lean
        Flow-matching shower generators only: write the lean sampling graph
        (:mod:`lhcml.export.fastcalo_lean`; the same function with the solver's constants folded in
        and fewer decoding operations, checked against the PyTorch sampler like the traced one).

    Returns
    -------
    ExportReport
    """
    from lhcml.train.protocol import resolve_artifact

    trainer, artifact = resolve_artifact(run_or_model)
    extra: dict[str, Any] = {}
    if lean:
        if trainer.kind != "fastcalo":
            raise ConfigError(f"--lean applies to flow-matching shower generators; {artifact} is a {trainer.kind} "
                              "model, which has one exported graph: drop --lean")  # fmt: skip
        extra["lean"] = True
    return EXPORTERS[trainer.kind](artifact, Path(output), force=force, check_file=check_file,
                                   n_check=n_check, atol=atol, timing=timing, **extra)  # fmt: skip
