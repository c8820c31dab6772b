"""The configuration of ``lhcml evaluate`` (samples, taggers, working points, outputs).

Example config::

    label_scheme: flavour
    signal: bjets
    taggers: [GN2, {name: DL1r, fractions: {cjets: 0.018, ujets: 0.982}}]
    reference: DL1r
    fractions: {cjets: 0.2, ujets: 0.8}
    weight: mcEventWeight          # optional
    samples:
      - {name: ttbar, kind: ttbar, files: ["preds/ttbar_*.h5"]}
      - {name: zprime, kind: zprime, files: ["preds/zprime_*.h5"]}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lhcml.config import StrictModel
from lhcml.metrics.decorrelation import DEFAULT_JSD_BINS
from lhcml.metrics.rejection import MODES
from lhcml.metrics.working_points import DEFAULT_WORKING_POINTS

#: sample presets: pT range and rejection-vs-pT bins in GeV (ATLAS flavour-tagging conventions)
SAMPLE_PRESETS: dict[str, dict[str, Any]] = {
    "ttbar": {
        "pt_range": (20.0, 250.0),
        "pt_bins": [20, 30, 40, 60, 85, 110, 140, 175, 250],
        "text": "$t\\bar{t}$, $20 < p_\\mathrm{T} < 250$ GeV",
    },
    "zprime": {
        "pt_range": (250.0, 6000.0),
        "pt_bins": [250, 400, 600, 800, 1000, 1500, 2000, 3000, 4000, 6000],
        "text": "$Z'$, $250 < p_\\mathrm{T} < 6000$ GeV",
    },
    "generic": {"pt_range": None, "pt_bins": None, "text": ""},
}


class TaggerConfig(StrictModel):
    """One tagger to evaluate.

    ``name`` is the column prefix (``<name>_pb`` ...); ``score`` names a single column used
    directly as the discriminant instead (a BDT score, a cut-based tagger's output).
    """

    name: str
    label: str | None = None
    fractions: dict[str, float] | None = None
    score: str | None = None
    colour: str | None = None


class SampleConfig(StrictModel):
    """One test sample (files and its selection)."""

    name: str
    files: list[str] = Field(min_length=1)
    kind: Literal["ttbar", "zprime", "generic"] = "generic"
    pt_range: tuple[float, float] | None = None  # GeV
    abs_eta_max: float | None = None
    cuts: list[str] = Field(default_factory=list)
    pt_bins: list[float] | None = None  # GeV
    max_jets: int | None = Field(default=None, gt=0)
    text: str | None = None

    def resolved_pt_range(self) -> tuple[float, float] | None:
        """pT range in GeV: explicit, else the preset's."""
        return self.pt_range if self.pt_range is not None else SAMPLE_PRESETS[self.kind]["pt_range"]

    def resolved_pt_bins(self) -> list[float] | None:
        """Rejection-vs-pT bins in GeV: explicit, else the preset's."""
        return self.pt_bins if self.pt_bins is not None else SAMPLE_PRESETS[self.kind]["pt_bins"]


class BinnedVariable(StrictModel):
    """An extra variable to show rejection in bins of (as for pT), e.g. ``<μ>``.

    ``var`` is read from the evaluated dataset and multiplied by ``scale`` (file units to the
    units of ``bins``); ``label`` is the plot's x-axis label (default: ``var``).
    """

    var: str
    bins: list[float] = Field(min_length=2)
    label: str | None = None
    scale: float = 1.0

    @field_validator("bins")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if any(b >= a for a, b in zip(v[1:], v[:-1], strict=False)):
            raise ValueError(f"bins must be strictly increasing, got {v}")
        return v


class PublishedValue(StrictModel):
    """A published rejection to show next to lhcml's numbers in the report (for context only:
    a different detector and simulation)."""

    label: str
    working_point: float = Field(gt=0, lt=1)
    rejection: dict[str, float]
    source: str
    sample: str | None = None  # None: shown for every sample


class EvaluateConfig(StrictModel):
    """Configuration of ``lhcml evaluate``."""

    title: str | None = None
    label_scheme: str = "flavour"
    dataset: str = "jets"
    signal: str = "bjets"
    backgrounds: list[str] | None = None
    taggers: list[TaggerConfig] = Field(min_length=1)
    reference: str | None = None
    fractions: dict[str, float] | None = None
    discriminant: Literal["auto", "log_ratio", "probability"] = "auto"
    working_points: list[float] = Field(default_factory=lambda: list(DEFAULT_WORKING_POINTS))
    weight: str | None = None
    pt_var: str = "pt"
    pt_scale: float = 1e-3  # file units (MeV) -> GeV
    rejection_vs_pt_wp: float | None = None  # default: the WP closest to 77 %
    rejection_vs_pt_modes: list[Literal["fixed_cut", "flat_per_bin"]] = Field(
        default_factory=lambda: list(MODES)
    )
    rejection_vs: list[BinnedVariable] = Field(default_factory=list)  # e.g. averageInteractionsPerCrossing
    fixed_sig_effs: list[float] = Field(default_factory=lambda: [0.3, 0.5])
    roc_sig_eff: tuple[float, float, int] = (0.4, 1.0, 121)
    significance: Literal["ams", "asimov", "s_over_sqrt_b", "s_over_sqrt_s_plus_b"] | None = None
    mass_var: str | None = None
    mass_scale: float = 1e-3  # MeV -> GeV
    mass_bins: int | list[float] = DEFAULT_JSD_BINS
    samples: list[SampleConfig] = Field(min_length=1)
    published: list[PublishedValue] = Field(default_factory=list)
    output_dir: str = "evaluation"
    plots: bool = True
    plot_format: Literal["png", "svg", "pdf"] = "png"
    plot_style: Literal["ATLAS", "CMS", "ROOT"] = "ATLAS"  # mplhep style (lhcml.plots.style)

    @field_validator("taggers", mode="before")
    @classmethod
    def _names_to_taggers(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"name": t} if isinstance(t, str) else t for t in v]
        return v

    @field_validator("working_points", "fixed_sig_effs")
    @classmethod
    def _effs_in_range(cls, v: list[float]) -> list[float]:
        bad = [e for e in v if not 0 < e < 1]
        if bad:
            raise ValueError(f"efficiencies must be in (0, 1), got {bad}")
        return v

    @model_validator(mode="after")
    def _check(self) -> EvaluateConfig:
        from lhcml.labels import get_scheme

        scheme = get_scheme(self.label_scheme)
        scheme.get(self.signal)
        for b in self.backgrounds or []:
            scheme.get(b)
        names = [t.name for t in self.taggers]
        if len(set(names)) != len(names):
            raise ValueError(f"tagger names must be unique, got {names}")
        if self.reference is not None and self.reference not in names:
            raise ValueError(f"reference tagger '{self.reference}' is not among the taggers {names}")
        for fr in [self.fractions, *(t.fractions for t in self.taggers)]:
            for k in fr or {}:
                scheme.get(k)
        rvars = [v.var for v in self.rejection_vs]
        if len(set(rvars)) != len(rvars) or self.pt_var in rvars:
            raise ValueError(
                f"rejection_vs variables must be unique and differ from pt_var '{self.pt_var}' "
                f"(rejection vs pT is always made from pt_bins), got {rvars}"
            )
        snames = [s.name for s in self.samples]
        if len(set(snames)) != len(snames):
            raise ValueError(f"sample names must be unique, got {snames}")
        return self
