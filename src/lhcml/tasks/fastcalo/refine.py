"""``lhcml fastcalo refine`` / ``refine-export``: classifier-refined sampling of a fast-calo generator (opt-in).

:func:`refine_generator` trains the refinement classifier (:mod:`lhcml.models.fastcalo.refine`,
:func:`lhcml.train.fastcalo_refine.fit_refinement`) on a file of detailed **training** showers against the
generator's own showers (after its correction chain, ``after``) drawn at the same conditions, checks on the held-out
pairs that the weights ``w = exp(logit)`` move the generated high-level features onto the detailed ones, and writes
the classifier. :func:`export_refined` writes the ONNX sampling graph generator + chain + ``k``-candidate SIR (the
interface :mod:`lhcml.sim.fastcalo` runs, with ``noise`` ``(N, k * noise_dim + 1)``).
:func:`generate_refined_sample` is the in-memory twin for evaluations (:func:`candidate_samples`,
:func:`refinement_logits`, :func:`sir_select` its steps, so that one set of candidates serves several ``k``).
:func:`distill_refiner` (``lhcml fastcalo refine-distill``) trains a classifier that scores the raw candidates so that
the chain runs on the kept shower only (:mod:`lhcml.models.fastcalo.refine`, "Scoring before the correction chain").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lhcml.errors import ConfigError

#: the high-level features whose weighted held-out histograms are checked (:func:`refine_generator`)
CHECK_FEATURES = ("E_ratio", "E_{first}", "E_{middle}", "width_eta_{middle}", "width_phi_{middle}", "width_eta_{first}")
#: noise-seed offset between candidates (candidate ``j`` uses ``seed + j * CANDIDATE_SEED_STEP``; ``j = 0`` is
#: the plain generator's sample at ``seed``)
CANDIDATE_SEED_STEP = 7919


def _model_and_binning(checkpoint: str | Path, binning: str | Path | None) -> tuple[Any, Any]:
    from lhcml.data.calochallenge import parse_binning, read_binning
    from lhcml.train.fastcalo import load_generator

    model, meta = load_generator(checkpoint)
    if binning is None and not meta.get("binning_xml"):
        raise ConfigError(f"{checkpoint} stores no binning: pass the binning XML it was trained with (--binning)")
    b = read_binning(binning) if binning is not None else parse_binning(meta["binning_xml"], source=str(checkpoint))
    if list(b.layer_sizes) != [int(x) for x in model.layer_sizes]:
        raise ConfigError(f"binning layers {list(b.layer_sizes)} differ from {checkpoint}'s {list(model.layer_sizes)}")
    return model, b


def _correction(after: str | Path | None, model: Any) -> Any:
    if after is None:
        return None
    from lhcml.tasks.fastcalo.dataset import _loaded_for

    return _loaded_for(after, model)


def file_sha256(path: str | Path | None) -> str:
    """sha256 of a file's bytes (``""`` for ``None``): the identity of a correction file a classifier was built on."""
    from lhcml.export.quantize import sha256_file

    return "" if path is None else sha256_file(path)


def check_chain(classifier: Any, after: str | Path | None) -> None:
    """A ``stage="raw"`` classifier needs the very correction file it was distilled through (``after``)."""
    if getattr(classifier, "stage", "corrected") != "raw":
        return
    if after is None:
        raise ConfigError("this refinement classifier scores raw showers (stage 'raw', lhcml fastcalo refine-distill): "
                          "pass the correction chain it was distilled through with --after")  # fmt: skip
    sha = file_sha256(after)
    if classifier.chain_sha256 and sha != classifier.chain_sha256:
        raise ConfigError(f"--after {after} (sha256 {sha[:12]}...) is not the correction chain this refinement "
                          f"classifier was distilled through (sha256 {classifier.chain_sha256[:12]}...); pass that "
                          "file, or distill again through this one")  # fmt: skip


def model_condition(model: Any, sample: Any) -> np.ndarray:
    """``(N, C)`` the generator's condition encoding (:meth:`FastCaloGenerator.condition`) of a sample's showers
    (its energies and, as the model takes them, its |eta| and phi)."""
    import torch

    e = torch.as_tensor(np.asarray(sample.energies, np.float32))
    eta = phi = None
    if model.conditions_on_eta:
        if sample.eta is None:
            raise ConfigError("the generator is conditioned on |eta| but the sample has no incident_eta")
        eta = torch.as_tensor(np.asarray(sample.eta, np.float32))
    if model.conditions_on_phi:
        if sample.phi is None:
            raise ConfigError("the generator is told phi but the sample has no incident_phi")
        phi = torch.as_tensor(np.asarray(sample.phi, np.float32))
    with torch.no_grad():
        return model.condition(e, eta, phi).numpy()


def refinement_logits(classifier: Any, model: Any, sample: Any, batch: int = 20000) -> np.ndarray:
    """``(N,)`` the refinement classifier's logits (``log w``) of a sample's showers."""
    import torch

    cond = model_condition(model, sample)
    out = []
    with torch.no_grad():
        for i in range(0, len(sample), batch):
            sl = slice(i, i + batch)
            out.append(classifier(torch.as_tensor(sample.showers[sl], dtype=torch.float32),
                                  torch.as_tensor(np.asarray(sample.energies[sl], np.float32)),
                                  torch.as_tensor(cond[sl])).numpy())  # fmt: skip
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def candidate_samples(model: Any, reference: Any, seed: int, k: int, correction: Any = None) -> list[Any]:
    """``k`` generated samples at ``reference``'s conditions, candidate ``j`` with noise seed
    ``seed + j * CANDIDATE_SEED_STEP`` (candidate 0 is :func:`generate_sample` at ``seed``)."""
    from lhcml.models.fastcalo.refine import check_candidates
    from lhcml.tasks.fastcalo.dataset import generate_sample

    k, _ = check_candidates(k)
    return [generate_sample(model, reference, seed + j * CANDIDATE_SEED_STEP, correction=correction) for j in range(k)]


def sir_select(candidates: Sequence[Any], logits: np.ndarray, u: np.ndarray, w_max: float | None = None,
               power: float = 1.0) -> tuple[Any, np.ndarray]:  # fmt: skip
    """``(sample, index)``: per shower the candidate :func:`lhcml.models.fastcalo.refine.sir_choice` keeps
    (``logits`` ``(k, N)``, ``u`` ``(N,)`` uniform, the weights to the ``power``), as one :class:`CaloSample` with the
    candidates' conditions."""
    import torch

    from lhcml.data.calochallenge import CaloSample
    from lhcml.models.fastcalo.refine import check_candidates, check_power, sir_choice

    k, w_max = check_candidates(len(candidates), w_max)
    power = check_power(power)
    lg = np.asarray(logits, np.float32).reshape(k, -1)
    idx = sir_choice(torch.as_tensor(lg), torch.as_tensor(np.asarray(u, np.float32)), w_max, power).numpy()
    stack = np.stack([c.showers for c in candidates])
    showers = stack[idx, np.arange(stack.shape[1])]
    c0 = candidates[0]
    return CaloSample(energies=c0.energies.copy(), showers=showers, binning=c0.binning, eta=c0.eta, phi=c0.phi), idx


def generate_refined_sample(model: Any, reference: Any, seed: int, classifier: Any, k: int,
                            w_max: float | None = None, correction: Any = None,
                            power: float = 1.0) -> tuple[Any, np.ndarray]:  # fmt: skip
    """The refined generator's sample at ``reference``'s conditions (:func:`candidate_samples` +
    :func:`refinement_logits` + :func:`sir_select`, the choice's uniforms seeded by ``[seed, 3]``, the weights to the
    ``power``)."""
    from lhcml.data.calochallenge import CaloSample
    from lhcml.models.fastcalo.refine import check_candidates, check_classifier

    k, w_max = check_candidates(k, w_max)
    check_classifier(classifier, model, reference.binning.sha256)
    raw_stage = getattr(classifier, "stage", "corrected") == "raw"
    if raw_stage and correction is None:
        raise ConfigError("a refinement classifier of stage 'raw' needs the correction chain it was distilled through")
    cands = candidate_samples(model, reference, seed, k, None if raw_stage else correction)
    logits = np.stack([refinement_logits(classifier, model, c) for c in cands])
    u = np.random.default_rng([seed, 3]).random(len(reference))
    sample, idx = sir_select(cands, logits, u, w_max, power)
    if raw_stage:  # the chain on the kept showers only
        sample = CaloSample(energies=sample.energies, showers=corrected_showers(correction, sample),
                            binning=sample.binning, eta=sample.eta, phi=sample.phi)  # fmt: skip
    return sample, idx


def corrected_showers(correction: Any, sample: Any) -> np.ndarray:
    """The correction chain applied to a generated sample's showers (as :func:`generate_sample` applies it, negative
    cells set to zero after it)."""
    out = correction.apply(sample.showers, sample.energies, sample.eta)
    out[out < 0.0] = 0.0
    return out


def reweighting_check(reference: Any, generated: Any, weights: np.ndarray,
                      names: Sequence[str] = CHECK_FEATURES) -> dict[str, dict[str, float]]:  # fmt: skip
    """Per high-level feature, the separation power of the generated sample against the reference unweighted
    and weighted with ``weights`` (:func:`lhcml.train.fastcalo_refine.weighted_separation`); ``{first}`` /
    ``{middle}`` in a name stand for the binning's first / second layer."""
    from lhcml.tasks.fastcalo.evaluate import features_of
    from lhcml.train.fastcalo_refine import weighted_separation

    lay = reference.binning.layer_names
    fr, fg = features_of(reference), features_of(generated)
    out = {}
    for raw in names:
        name = raw.format(first=lay[0], middle=lay[min(1, len(lay) - 1)])
        if name in fr:
            out[name] = {"unweighted": weighted_separation(fr[name], fg[name]),
                         "weighted": weighted_separation(fr[name], fg[name], weights)}  # fmt: skip
    return out


def refine_generator(
    checkpoint: str | Path, showers: str | Path, output: str | Path, *, after: str | Path | None = None,
    binning: str | Path | None = None, max_showers: int | None = None, seed: int = 202, epochs: int = 20,
    hidden: Sequence[int] | None = None, force: bool = False, log: Callable[[str], None] | None = None,
    calibrate: bool = False, input_clip: float | None = None,
) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """Train and write the refinement classifier of ``checkpoint`` (+ the correction file ``after``) on the detailed
    training showers ``showers`` against the generator's showers at their conditions (noise seed ``seed``; module
    docstring; ``calibrate`` / ``input_clip``: :func:`~lhcml.train.fastcalo_refine.fit_refinement`'s). Returns
    ``(classifier, info)`` with the held-out AUC, the best epoch and :func:`reweighting_check`
    on the held-out pairs (weights ``exp(logit)`` normalised to mean 1)."""
    from lhcml.data.calochallenge import CaloSample, read_showers
    from lhcml.tasks.fastcalo.dataset import generate_sample
    from lhcml.train.fastcalo_refine import fit_refinement

    output = Path(output)
    if output.exists() and not force:
        raise FileExistsError(f"{output} exists; pass --force to overwrite it")
    model, b = _model_and_binning(checkpoint, binning)
    corr = _correction(after, model)
    ref = read_showers(showers, b, max_showers=max_showers)
    gen = generate_sample(model, ref, seed, correction=corr)
    cond = model_condition(model, gen)
    clf, hist = fit_refinement(ref.showers, gen.showers, ref.energies, cond, b.layer_sizes,
                               np.stack(b.voxel_centres()), binning_sha256=b.sha256, hidden=hidden, epochs=epochs,
                               seed=seed, log=log, calibrate=calibrate, input_clip=input_clip)  # fmt: skip
    va = hist["val_index"]

    def part(s: Any) -> Any:
        return CaloSample(energies=s.energies[va], showers=s.showers[va], binning=b,
                          eta=None if s.eta is None else s.eta[va], phi=None if s.phi is None else s.phi[va])

    gen_va = part(gen)
    w = np.exp(refinement_logits(clf, model, gen_va).astype(np.float64))
    check = reweighting_check(part(ref), gen_va, w / w.mean())
    info = {"checkpoint": str(checkpoint), "training_file": str(showers), "after": None if after is None else str(after),
            "after_sha256": file_sha256(after), "seed": int(seed), "n_pairs": len(ref), "n_train": hist["n_train"], "n_val": hist["n_val"],
            "best_epoch": hist["best_epoch"], "val_auc": hist["val_auc"], "temperature": hist["temperature"],
            "val_loss": float(min(hist["val_loss"])) if hist["val_loss"] else None,
            "weights_held_out": {"mean": float(w.mean()), "max_over_mean": float(w.max() / w.mean()),
                                 "ess_fraction": float(w.sum() ** 2 / np.sum(w * w) / len(w))},
            "reweighting_check": check}  # fmt: skip
    clf.save(output, info, force=force)
    return clf, info


def distill_refiner(
    checkpoint: str | Path, teacher: str | Path, showers: str | Path, output: str | Path, *,
    after: str | Path | None = None, binning: str | Path | None = None, max_showers: int | None = None,
    rounds: int = 2, seed: int = 303, epochs: int = 30, hidden: Sequence[int] | None = None, force: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """Train and write a ``stage="raw"`` refinement classifier of ``checkpoint``: ``rounds`` samples of the
    generator's raw showers at the conditions of the file ``showers`` (noise seeds ``seed + r *
    CANDIDATE_SEED_STEP``; only the file's energies, |eta| and phi are used), each run through the correction chain
    ``after`` and scored by the corrected-stage classifier ``teacher``; the student regresses those logits from the
    raw showers (:func:`lhcml.train.fastcalo_refine.fit_distilled`). Returns ``(student, info)`` with the held-out
    R^2 and correlation and, on the held-out showers, how often a 3-candidate choice by the student's weights keeps
    the teacher's (paired uniforms)."""
    import torch

    from lhcml.data.calochallenge import CaloSample, read_showers
    from lhcml.models.fastcalo.refine import check_classifier, load_refinement, sir_choice
    from lhcml.tasks.fastcalo.dataset import generate_sample
    from lhcml.train.fastcalo_refine import fit_distilled

    output = Path(output)
    if output.exists() and not force:
        raise FileExistsError(f"{output} exists; pass --force to overwrite it")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"--rounds must be an integer >= 1 (samples of the generator per condition), got {rounds!r}")
    if after is None:
        raise ConfigError("distillation moves the scoring in front of a correction chain: pass the chain the teacher "
                          "was trained after (--after CHAIN.qmap.npz)")  # fmt: skip
    model, b = _model_and_binning(checkpoint, binning)
    corr = _correction(after, model)
    chain_sha = file_sha256(after)
    tclf, tmeta = load_refinement(teacher)
    if tclf.stage != "corrected":
        raise ConfigError(f"{teacher} scores raw showers already (stage {tclf.stage!r}); the teacher must be a "
                          "classifier of the corrected showers (lhcml fastcalo refine)")  # fmt: skip
    check_classifier(tclf, model, b.sha256)
    if tmeta.get("after_sha256") and tmeta["after_sha256"] != chain_sha:
        raise ConfigError(f"{teacher} was trained after another correction chain ({tmeta.get('after')}) than "
                          f"--after {after}; pass that chain")  # fmt: skip
    ref = read_showers(showers, b, max_showers=max_showers)
    raws, logits, energies, conds = [], [], [], []
    for r in range(rounds):
        raw = generate_sample(model, ref, seed + r * CANDIDATE_SEED_STEP)
        fixed = CaloSample(energies=raw.energies, showers=corrected_showers(corr, raw), binning=b, eta=raw.eta,
                          phi=raw.phi)  # fmt: skip
        raws.append(raw.showers)
        logits.append(refinement_logits(tclf, model, fixed))
        energies.append(raw.energies)
        conds.append(model_condition(model, raw))
        if log is not None:
            log(f"round {r + 1}/{rounds}: {len(raw)} raw showers through the chain, teacher logits mean "
                f"{float(np.mean(logits[-1])):+.3f}, sd {float(np.std(logits[-1])):.3f}")
    raw_all, t_all = np.concatenate(raws), np.concatenate(logits)
    e_all, c_all = np.concatenate(energies), np.concatenate(conds)
    del raws
    student, hist = fit_distilled(raw_all, t_all, e_all, c_all, b.layer_sizes, np.stack(b.voxel_centres()),
                                  binning_sha256=b.sha256, chain_sha256=chain_sha, hidden=hidden, epochs=epochs,
                                  seed=seed, log=log)  # fmt: skip
    # the choice agreement: held-out showers in groups of 3 (any conditions), one uniform per group
    va = hist["val_index"]
    with torch.no_grad():
        s_lg = student(torch.as_tensor(raw_all[va]), torch.as_tensor(e_all[va].astype(np.float32)),
                       torch.as_tensor(c_all[va])).numpy()  # fmt: skip
    m = (len(va) // 3) * 3
    agree = float("nan")
    if m >= 3:
        u = torch.as_tensor(np.random.default_rng([seed, 5]).random(m // 3).astype(np.float32))
        pick_t = sir_choice(torch.as_tensor(t_all[va][:m].reshape(3, -1)), u)
        pick_s = sir_choice(torch.as_tensor(s_lg[:m].reshape(3, -1)), u)
        agree = float((pick_t == pick_s).float().mean())
    info = {"checkpoint": str(checkpoint), "teacher": str(teacher), "conditions_file": str(showers),
            "after": str(after), "after_sha256": chain_sha, "training_file": tmeta.get("training_file"),
            "val_auc": tmeta.get("val_auc"), "seed": int(seed), "rounds": int(rounds), "n_showers": int(len(t_all)),
            "n_train": hist["n_train"], "n_val": hist["n_val"], "best_epoch": hist["best_epoch"],
            "val_r2": hist["val_r2"], "val_corr": hist["val_corr"], "val_choice_agreement_k3": agree,
            "teacher_logit_sd": float(np.std(t_all))}  # fmt: skip
    student.save(output, info, force=force)
    return student, info


def export_refined(
    checkpoint: str | Path, refiner: str | Path, output: str | Path, *, after: str | Path | None = None,
    candidates: int = 2, w_max: float | None = None, force: bool = False, timing: bool = False, power: float = 1.0,
) -> Any:  # fmt: skip
    """Export the sampling graph ``checkpoint`` + correction ``after`` + ``candidates``-candidate SIR with the
    refinement classifier file ``refiner``, the weights to the ``power`` (:func:`lhcml.export.fastcalo.export_checkpoint`)."""
    from lhcml.export.fastcalo import export_checkpoint
    from lhcml.models.fastcalo.refine import check_candidates, check_power, load_refinement

    k, w_max = check_candidates(candidates, w_max)
    power = check_power(power)
    clf, meta = load_refinement(refiner)
    from lhcml.train.fastcalo import load_generator

    model, _ = load_generator(checkpoint)
    check_chain(clf, after)
    corr = _correction(after, model)
    return export_checkpoint(checkpoint, output, force=force, timing=timing, correction=corr, refiner=clf,
                             candidates=k, w_max=w_max, power=power, refiner_meta={"file": str(refiner), **{
                                 key: meta.get(key) for key in ("training_file", "seed", "val_auc", "after", "val_r2")}})  # fmt: skip


__all__ = ["candidate_samples", "check_chain", "corrected_showers", "distill_refiner", "export_refined",
           "file_sha256", "generate_refined_sample", "model_condition", "refine_generator", "refinement_logits",
           "reweighting_check", "sir_select"]
