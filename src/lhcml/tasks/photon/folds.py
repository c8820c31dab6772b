"""K-fold cross-fitting of photon-ID networks by event: out-of-fold scores for every candidate.

A closure test on a few hundred test fakes cannot measure a rejection of 50-250. Cross-fitting
uses every candidate once as a test candidate without simulating more: the events are split into
``K`` folds by a hash of the event number (:func:`fold_of`, the hash of
:func:`lhcml.tasks.photon.dataset.group_split`); the network of fold ``k`` trains on the other
folds (fold ``k + 1 mod K`` is its validation set, the remaining ``K - 2`` its training set: 60/20/20
for ``K = 5``, as the plain split) and scores fold ``k`` (:func:`fold_split`). Pooled over the
folds, every candidate has one score from a network that never saw its event.

Two samples of the same events (detailed and fast showers) fold alike, so the network of fold
``k`` trained on one calo scores fold ``k`` of the other: the cross-calo scores are paired with the
same-calo ones event by event. :func:`check_out_of_fold` verifies this on the event numbers of the
written files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from lhcml.errors import ConfigError


def fold_of(groups: np.ndarray, n_folds: int) -> np.ndarray:
    """Fold index ``0 .. n_folds - 1`` per entry from a hash of its group (e.g. ``eventNumber``):
    all entries of a group in one fold, the same group always in the same fold."""
    from lhcml.tasks.photon.dataset import group_uniform

    if int(n_folds) != n_folds or n_folds < 2:
        raise ConfigError(f"the number of folds must be an integer >= 2, got {n_folds}")
    return np.minimum((group_uniform(groups) * n_folds).astype(np.int64), n_folds - 1)


def fold_split(groups: np.ndarray, n_folds: int, fold: int) -> np.ndarray:
    """0/1/2 (train/val/test) per entry for the network of fold ``fold``: test = fold ``fold``,
    validation = fold ``fold + 1 mod n_folds``, training = the others."""
    if not 0 <= fold < n_folds:
        raise ConfigError(f"fold must be in 0 .. {n_folds - 1}, got {fold}")
    f = fold_of(groups, n_folds)
    out = np.zeros(len(f), dtype=np.int64)
    out[f == (fold + 1) % n_folds] = 1
    out[f == fold] = 2
    return out


def write_folds(
    data: Mapping[str, np.ndarray], output_dir: str | Path, n_folds: int, seed: int, prefix: str = "photon"
) -> list[Path]:
    """``output_dir/fold<k>/<prefix>_{train,val,test}.h5`` for every fold (split by the photons'
    ``eventNumber``, :func:`fold_split`); returns the fold folders."""
    from lhcml.tasks.photon.dataset import split_and_write

    groups = data["photons"]["eventNumber"]
    dirs = []
    for k in range(n_folds):
        out = Path(output_dir) / f"fold{k}"
        split_and_write(data, out, seed, prefix=prefix, split=fold_split(groups, n_folds, k))
        dirs.append(out)
    return dirs


def check_out_of_fold(trained_on: Sequence[np.ndarray], scored: Sequence[Sequence[np.ndarray]]) -> None:
    """Refuse scores that are not out of fold.

    Parameters
    ----------
    trained_on : sequence of np.ndarray
        Per fold ``k``: the event numbers the network of fold ``k`` saw (training and validation).
    scored : sequence of sequence of np.ndarray
        Per sample (e.g. the training calo and the other calo), per fold ``k``: the event numbers
        the network of fold ``k`` scored.

    Raises
    ------
    ConfigError
        If a network scores an event it saw, or an event is scored by two folds' networks
        within one sample, or an event of fold ``k`` in one sample is in another fold in another
        (the samples are then not paired fold by fold).
    """
    k_max = len(trained_on)
    fold_of_event: dict[int, int] = {}
    for s, per_fold in enumerate(scored):
        if len(per_fold) != k_max:
            raise ConfigError(f"sample {s} has scores of {len(per_fold)} folds, the networks {k_max}")
        seen: set[int] = set()
        for k, (train, test) in enumerate(zip(trained_on, per_fold, strict=True)):
            test_events = set(np.unique(test).tolist())
            leaked = test_events & set(np.unique(train).tolist())
            if leaked:
                raise ConfigError(f"sample {s}, fold {k}: the network scores {len(leaked)} event(s) it was "
                                  f"trained or validated on (e.g. eventNumber {min(leaked)})")  # fmt: skip
            twice = test_events & seen
            if twice:
                raise ConfigError(f"sample {s}: {len(twice)} event(s) scored by two folds (e.g. {min(twice)})")
            seen |= test_events
            for ev in test_events:
                if fold_of_event.setdefault(ev, k) != k:
                    raise ConfigError(f"event {ev} is in fold {fold_of_event[ev]} of one sample and fold {k} "
                                      "of another: the samples are not paired fold by fold")  # fmt: skip
