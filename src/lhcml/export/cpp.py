"""Build and run ``lhcml-infer``, the C++ evaluation of exported taggers (``cpp/``), and check it.

``lhcml-infer MODEL.onnx INPUT.h5 OUTPUT.h5`` (``cpp/README.md``) loads an ONNX file written by
``lhcml export`` (:mod:`lhcml.export.onnx`: raw variables in, normalisation folded into the graph,
lhcml's ``metadata_props``) with ONNX Runtime's C++ API, reads the model's input variables from an
lhcml flat file with the HDF5 C API and writes one float32 column per model output.

* :func:`build_infer` configures and builds it with CMake into ``build/cpp/release`` of the
  checkout (ignored by git; rebuilt only when a source changed). The ONNX Runtime library is the
  one of the installed ``onnxruntime`` wheel, the headers come from ``cpp/fetch_deps.sh``.
* :func:`run_infer` runs the binary; a non-zero exit raises :class:`CppInferError` with the
  program's message and exit code (2 = bad input, as ``lhcml`` itself).
* :func:`cpp_check` compares its scores with Python onnxruntime on the same jets (the ones
  :class:`lhcml.train.datamodule.H5JetDataset` reads), to ``atol`` (default 1e-5).

The sources live in the checkout (``cpp/`` beside ``src/``), not in the Python package: a wheel
install cannot build it and says so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lhcml.errors import LhcmlError

#: the checkout's root (``cpp/`` and ``build/`` live there)
ROOT = Path(__file__).resolve().parents[3]
CPP_DIR = ROOT / "cpp"
#: CMake build folder (``build/`` is ignored by git)
BUILD_DIR = ROOT / "build" / "cpp" / "release"
#: where ``cpp/fetch_deps.sh`` puts the ONNX Runtime headers
ORT_INCLUDE = ROOT / "build" / "cpp" / "deps" / "onnxruntime" / "usr" / "include" / "onnxruntime"


class CppToolchainError(LhcmlError, RuntimeError):
    """The C++ program cannot be built: a tool, a library or the ONNX Runtime headers are missing."""


class CppInferError(LhcmlError, RuntimeError):
    """``lhcml-infer`` exited with an error (``returncode`` 2: bad input, its message says which)."""

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise CppToolchainError(f"{what} failed ({' '.join(cmd)}):\n{tail}")


def ort_library() -> Path:
    """The ONNX Runtime shared library (C API) of the installed ``onnxruntime`` wheel."""
    try:
        import onnxruntime
    except ImportError as err:
        raise CppToolchainError("onnxruntime is not installed: pip install 'lhcml[ml]'") from err
    libs = sorted((Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so.1*"))
    if not libs:
        raise CppToolchainError(f"no libonnxruntime.so.1* in {Path(onnxruntime.__file__).parent / 'capi'}: "
                                "this onnxruntime build does not ship the C library")  # fmt: skip
    return libs[-1]


def build_infer(build_dir: str | Path | None = None, jobs: int = 2) -> Path:
    """Configure and (incrementally) build ``lhcml-infer``; return the path of the binary.

    Raises
    ------
    CppToolchainError
        Not a checkout with ``cpp/``, ``cmake`` or a C++ compiler missing, the ONNX Runtime headers
        not fetched (``bash cpp/fetch_deps.sh``), HDF5/nlohmann-json missing (Debian
        ``libhdf5-dev nlohmann-json3-dev``) or a compile error; the message says which.
    """
    build = Path(build_dir) if build_dir is not None else BUILD_DIR
    if not (CPP_DIR / "CMakeLists.txt").is_file():
        raise CppToolchainError(f"no cpp/CMakeLists.txt beside {ROOT / 'src'}: lhcml-infer is built from a checkout of lhcml")
    missing = [t for t in ("cmake", "c++") if shutil.which(t) is None]
    if missing:
        raise CppToolchainError(f"{', '.join(missing)} not found: install Debian's cmake and g++ (see .ci/run)")
    if not (ORT_INCLUDE / "onnxruntime_cxx_api.h").is_file():
        raise CppToolchainError(f"ONNX Runtime headers missing in {ORT_INCLUDE}: run `bash cpp/fetch_deps.sh` (cpp/README.md)")
    # configured every time (about a second): a new onnxruntime wheel re-points the library link
    _run(["cmake", "-S", str(CPP_DIR), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
          f"-DORT_INCLUDE_DIR={ORT_INCLUDE}", f"-DORT_LIBRARY={ort_library()}"], "configuring cpp/ with cmake")  # fmt: skip
    _run(["cmake", "--build", str(build), "-j", str(jobs)], "building lhcml-infer")
    return build / "lhcml-infer"


def run_infer(
    model: str | Path, input_file: str | Path, output: str | Path, *, batch: int = 1000, threads: int = 1,
    max_jets: int | None = None, timing: bool = False, force: bool = False, binary: str | Path | None = None,
) -> subprocess.CompletedProcess:  # fmt: skip
    """Run ``lhcml-infer`` (``binary``, default: :func:`build_infer`'s) and return the finished process.

    Raises
    ------
    CppInferError
        The program failed; the message is its own (e.g. a missing variable), ``returncode`` its exit code.
    """
    exe = Path(binary) if binary is not None else build_infer()
    cmd = [str(exe), str(model), str(input_file), str(output), "--batch", str(batch), "--threads", str(threads)]
    cmd += ["--max-jets", str(max_jets)] if max_jets else []
    cmd += ["--timing"] if timing else []
    cmd += ["--force"] if force else []
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CppInferError(proc.stderr.strip() or f"lhcml-infer exited with {proc.returncode}", proc.returncode)
    return proc


def read_scores(path: str | Path) -> tuple[np.ndarray, list[str], dict[str, str]]:
    """Scores ``(n_jets, n_outputs)``, output names and attributes of an ``lhcml-infer`` output."""
    from lhcml.data.checks import open_h5

    with open_h5(path) as f:
        jets = f["jets"][()]
        names = list(jets.dtype.names)
        attrs = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in f.attrs.items()}
    scores = np.stack([jets[n] for n in names], 1) if len(jets) else np.zeros((0, len(names)), np.float32)
    return scores.astype(np.float32), names, attrs


def python_scores(model: str | Path, input_file: str | Path, n_jets: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Python onnxruntime's scores ``(n, n_outputs)`` for the first ``n_jets`` jets of a file, with the
    inputs read as lhcml's datamodule reads them (the reference of :func:`cpp_check`)."""
    from lhcml.data.checks import open_h5
    from lhcml.export.onnx import inference_session, read_metadata
    from lhcml.train.datamodule import H5JetDataset, inspect_inputs

    meta = read_metadata(model)
    inputs = json.loads(meta["inputs"])
    variables = {v["group"]: v["variables"] for v in inputs.values()}
    specs = inspect_inputs(input_file, variables)
    with open_h5(input_file) as f:
        total = int(f[next(iter(variables))].shape[0])
    n = total if n_jets is None else min(n_jets, total)
    sess = inference_session(Path(model))
    masks = {i.name: i.type == "tensor(bool)" for i in sess.get_inputs()}
    out: list[np.ndarray] = []
    for batch in H5JetDataset([input_file], specs, labels=None, batch_size=10_000, num_jets=n):
        feed = {}
        for name, is_mask in masks.items():
            g = inputs[name]["group"]
            feed[name] = batch[f"{g}_valid" if is_mask else g].numpy()
        out.append(np.stack(sess.run(None, feed), 1))
    scores = np.concatenate(out) if out else np.zeros((0, len(json.loads(meta["outputs"]))), np.float32)
    return scores, json.loads(meta["outputs"])


@dataclass
class CppCheckReport:
    """What :func:`cpp_check` compared."""

    n_jets: int
    outputs: list[str]
    max_abs_diff: float
    cpp_scores: np.ndarray
    python_scores: np.ndarray


def cpp_check(
    model: str | Path, input_file: str | Path, output: str | Path, *, n_jets: int | None = None,
    atol: float = 1e-5, batch: int = 1000, binary: str | Path | None = None,
) -> CppCheckReport:  # fmt: skip
    """Evaluate ``model`` on ``input_file`` with ``lhcml-infer`` and with Python onnxruntime; the
    largest absolute difference of the scores must not exceed ``atol``.

    Raises
    ------
    lhcml.export.onnx.ExportCheckError
        The two disagree by more than ``atol``, or on the jet count / output names.
    """
    from lhcml.export.onnx import ExportCheckError

    run_infer(model, input_file, output, batch=batch, max_jets=n_jets, force=True, binary=binary)
    cpp, names, _ = read_scores(output)
    ref, ref_names = python_scores(model, input_file, n_jets)
    if names != ref_names or cpp.shape != ref.shape:
        raise ExportCheckError(f"lhcml-infer wrote {names} {cpp.shape}, Python onnxruntime gives {ref_names} {ref.shape}")
    diff = float(np.max(np.abs(cpp - ref))) if cpp.size else 0.0
    if not np.isfinite(diff) or diff > atol:
        raise ExportCheckError(f"lhcml-infer and Python onnxruntime disagree by {diff:.3g} (> {atol:g}) for {model}")
    return CppCheckReport(len(cpp), names, diff, cpp, ref)
