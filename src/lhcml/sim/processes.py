"""Registry of named Pythia 8 configurations (docs/simulation.md).

Each :class:`Process` is a frozen description of what to generate (Pythia settings), which jets
to build from it (``jet_kind``), the jet selection window, and how to weight the jets. The
registry is a plain dictionary: processes are found by name, never by importing strings.

All processes share :data:`COMMON_SETTINGS`: pp at 13.6 TeV, the Monash tune, particles with
cτ > 10 mm stable at generator level, and K0S/Λ stable in Pythia because the detector
simulation (:mod:`lhcml.sim.decays`) decays them along their flight path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lhcml.errors import ConfigError

#: Pythia's random seed must lie in [0, 900000000)
MAX_PYTHIA_SEED = 900_000_000

#: settings shared by every process
COMMON_SETTINGS: tuple[str, ...] = (
    "Beams:eCM = 13600",
    "Tune:pp = 14",  # Monash 2013
    "ParticleDecays:limitTau0 = on",
    "ParticleDecays:tau0Max = 10",  # mm/c: particles with c*tau > 10 mm are stable
    # K0S and Lambda are decayed by the detector simulation (displaced V0 tracks)
    "310:mayDecay = off",
    "3122:mayDecay = off",
    "-3122:mayDecay = off",
    # quiet output
    "Print:quiet = on",
    "Next:numberCount = 0",
    "Next:numberShowEvent = 0",
    "Next:numberShowProcess = 0",
    "Next:numberShowInfo = 0",
    "Next:numberShowLHA = 0",
    "Init:showChangedSettings = off",
    "Init:showChangedParticleData = off",
    "Init:showProcesses = off",
    "Init:showMultipartonInteractions = off",
    "Check:event = on",
)

_HADRONIC_W = ("24:onMode = off", "24:onIfAny = 1 2 3 4 5")
_HADRONIC_Z = ("23:onMode = off", "23:onIfAny = 1 2 3 4 5")
#: wide-pT boosted processes (jets 250-1500 GeV): pT-hat 200-1700 GeV sampled with the bias
#: (pT-hat / 200 GeV)^4, so the steeply falling spectrum reaches 1.5 TeV in a small sample; Pythia's
#: event weight (pT-hat / 200 GeV)^-4 undoes the bias and is stored as ``mcEventWeight``
_WIDE_PTHAT = (
    "PhaseSpace:pTHatMin = 200",
    "PhaseSpace:pTHatMax = 1700",
    "PhaseSpace:bias2Selection = on",
    "PhaseSpace:bias2SelectionPow = 4",
    "PhaseSpace:bias2SelectionRef = 200",
)
#: QCD dijets for fake photons (pT-hat > 20 GeV biased to high pT-hat; shared by the filtered and
#: unfiltered dijet_photon processes)
_DIJET_PHOTON_SETTINGS = (
    "HardQCD:all = on",
    "PhaseSpace:pTHatMin = 20",
    "PhaseSpace:bias2Selection = on",
    "PhaseSpace:bias2SelectionPow = 4",
    "PhaseSpace:bias2SelectionRef = 20",
)
_NARROW_PTHAT = ("PhaseSpace:pTHatMin = 500", "PhaseSpace:pTHatMax = 750")


# Boosted signal processes: one definition each, used with the narrow (550-650 GeV jets) and the
# wide (250-1500 GeV) pT-hat settings, in the order hard process, pT-hat, decays.
def _top_settings(pthat: tuple[str, ...]) -> tuple[str, ...]:
    return ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on", *pthat, *_HADRONIC_W)


def _wz_settings(pthat: tuple[str, ...]) -> tuple[str, ...]:
    return (
        "WeakBosonAndParton:qqbar2Wg = on",
        "WeakBosonAndParton:qg2Wq = on",
        "WeakBosonAndParton:qqbar2gmZg = on",
        "WeakBosonAndParton:qg2gmZq = on",
        "WeakZ0:gmZmode = 2",  # pure Z
        *pthat,
        *_HADRONIC_W,
        *_HADRONIC_Z,
    )


def _hbb_settings(pthat: tuple[str, ...]) -> tuple[str, ...]:
    return (
        "HiggsSM:gg2Hg(l:t) = on",
        "HiggsSM:qg2Hq(l:t) = on",
        "HiggsSM:qqbar2Hg(l:t) = on",
        "25:onMode = off",
        "25:onIfAny = 5",
        *pthat,
    )


@dataclass(frozen=True)
class Process:
    """A named Pythia 8 configuration and the jets made from it.

    Parameters
    ----------
    name
        Registry name (``ttbar``, ``zprime``, ...).
    kind
        ``"flavour"`` (small-R jets with tracks), ``"boosted"`` (large-R jets with constituents),
        ``"quark_gluon"`` (small-R jets labelled by parton), ``"photon"`` (photon candidates,
        simulated by :mod:`lhcml.sim.photons`) or ``"minbias"`` (pileup library only).
    settings
        Process-specific Pythia settings (added after :data:`COMMON_SETTINGS`).
    description
        One line for humans.
    jet_kind
        ``"small_r"`` (anti-kt 0.4), ``"large_r"`` (anti-kt :attr:`large_r_radius`) or
        ``"photon"``.
    jet_pt_min, jet_pt_max
        Jet selection window in GeV (``jet_pt_max=None``: no upper cut).
    jet_eta_max
        Jet selection ``|eta| <`` this.
    signal_labels
        For boosted signal processes: the ``R10TruthLabel`` values a jet must carry to be kept (jets
        whose decaying t/W/Z/H and all its decay quarks are not contained in the jet are
        dropped, as in the public top-tagging benchmark); ``None`` keeps every jet.
    flatten_pt
        ``(pt_min, pt_max, slope)`` in GeV: jets get a flattening weight that makes the weighted
        jet-pT spectrum approximately flat between ``pt_min`` and ``pt_max``. The raw spectrum
        of the process is modelled as ``exp(-pt / slope)`` (slope measured on the process, see
        ``docs/simulation.md``); the weight ``exp(+pt / slope)``, normalised to 1 at ``pt_min``,
        multiplies ``mcEventWeight``. ``None``: no flattening.
    keep_lepton_overlaps
        Small-R jets removed by the lepton overlap removal (:mod:`lhcml.sim.leptons`) stay in the
        jets dataset, flagged ``overlapsElectron``/``overlapsMuon`` (for studies); default: dropped.
    """

    name: str
    kind: str
    settings: tuple[str, ...]
    description: str
    jet_kind: str = "small_r"
    jet_pt_min: float = 20.0
    jet_pt_max: float | None = None
    jet_eta_max: float = 2.5
    signal_labels: tuple[int, ...] | None = None
    flatten_pt: tuple[float, float, float] | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)
    keep_lepton_overlaps: bool = False

    def pythia_settings(self, seed: int) -> tuple[str, ...]:
        """All Pythia settings for this process with ``seed`` (common + process + seed)."""
        if not 0 <= int(seed) < MAX_PYTHIA_SEED:
            raise ConfigError(
                f"Pythia seed {seed} out of range: it must be an integer in [0, {MAX_PYTHIA_SEED}); "
                "derive per-shard seeds below that bound"
            )
        return COMMON_SETTINGS + self.settings + ("Random:setSeed = on", f"Random:seed = {int(seed)}")


def _register(*processes: Process) -> dict[str, Process]:
    return {p.name: p for p in processes}


PROCESSES: dict[str, Process] = _register(
    Process(
        name="ttbar",
        kind="flavour",
        settings=("Top:gg2ttbar = on", "Top:qqbar2ttbar = on"),
        description="tt̄ with inclusive W decays (all-hadronic and non-all-hadronic mix): b, c and light jets, pT 20-250 GeV",
        jet_kind="small_r",
    ),
    Process(
        name="zprime",
        kind="flavour",
        settings=(
            "NewGaugeBoson:ffbar2gmZZprime = on",
            "Zprime:gmZmode = 3",  # pure Z', no gamma*/Z interference
            "32:m0 = 3000",
            "32:mWidth = 1500",
            "32:doForceWidth = on",
            "32:mMin = 500",
            "32:mMax = 6000",
            "32:onMode = off",
            "32:onIfAny = 1 2 3 4 5",  # Z' -> bb, cc, light qq
        ),
        description="Z' -> bb/cc/qq with a broad mass spectrum (0.5-6 TeV), jets weighted towards a flat pT spectrum",
        jet_kind="small_r",
        jet_pt_min=250.0,
        flatten_pt=(250.0, 3000.0, 400.0),
    ),
    Process(
        name="qcd",
        kind="flavour",
        settings=(
            "HardQCD:all = on",
            "PhaseSpace:pTHatMin = 20",
            "PhaseSpace:bias2Selection = on",
            "PhaseSpace:bias2SelectionPow = 4",
            "PhaseSpace:bias2SelectionRef = 20",
        ),
        description="QCD dijets, pT-hat > 20 GeV, biased towards high pT-hat and weighted back (mcEventWeight)",
        jet_kind="small_r",
    ),
    Process(
        name="minbias",
        kind="minbias",
        settings=("SoftQCD:inelastic = on",),
        description="inelastic minimum bias (pileup library)",
        jet_kind="small_r",
    ),
    Process(
        name="top",
        kind="boosted",
        settings=_top_settings(_NARROW_PTHAT),
        description="boosted all-hadronic tt̄ (pT-hat 500-750 GeV): contained top jets, pT 550-650 GeV",
        jet_kind="large_r",
        jet_pt_min=550.0,
        jet_pt_max=650.0,
        jet_eta_max=2.0,
        signal_labels=(1,),
    ),
    Process(
        name="wz",
        kind="boosted",
        settings=_wz_settings(_NARROW_PTHAT),
        description="boosted hadronic W and Z recoiling against a jet (pT-hat 500-750 GeV): contained W/Z jets",
        jet_kind="large_r",
        jet_pt_min=550.0,
        jet_pt_max=650.0,
        jet_eta_max=2.0,
        signal_labels=(2, 3),
    ),
    Process(
        name="hbb",
        kind="boosted",
        settings=_hbb_settings(_NARROW_PTHAT),
        description="boosted H -> bb recoiling against a jet (pT-hat 500-750 GeV): contained Hbb jets",
        jet_kind="large_r",
        jet_pt_min=550.0,
        jet_pt_max=650.0,
        jet_eta_max=2.0,
        signal_labels=(4,),
    ),
    Process(
        name="qcd_boosted",
        kind="boosted",
        settings=("HardQCD:all = on", *_NARROW_PTHAT),
        description="QCD dijets with pT-hat 500-750 GeV: background large-R jets, pT 550-650 GeV",
        jet_kind="large_r",
        jet_pt_min=550.0,
        jet_pt_max=650.0,
        jet_eta_max=2.0,
    ),
    Process(
        name="top_wide",
        kind="boosted",
        settings=_top_settings(_WIDE_PTHAT),
        description="boosted all-hadronic tt̄, pT-hat 200-1700 GeV biased to high pT-hat: contained top jets, "
        "pT 250-1500 GeV (weighted: mcEventWeight)",
        jet_kind="large_r",
        jet_pt_min=250.0,
        jet_pt_max=1500.0,
        jet_eta_max=2.0,
        signal_labels=(1,),
        tags=("wide",),
    ),
    Process(
        name="wz_wide",
        kind="boosted",
        settings=_wz_settings(_WIDE_PTHAT),
        description="boosted hadronic W and Z + jet, pT-hat 200-1700 GeV biased to high pT-hat: contained W/Z "
        "jets, pT 250-1500 GeV (weighted: mcEventWeight)",
        jet_kind="large_r",
        jet_pt_min=250.0,
        jet_pt_max=1500.0,
        jet_eta_max=2.0,
        signal_labels=(2, 3),
        tags=("wide",),
    ),
    Process(
        name="hbb_wide",
        kind="boosted",
        settings=_hbb_settings(_WIDE_PTHAT),
        description="boosted H -> bb + jet, pT-hat 200-1700 GeV biased to high pT-hat: contained Hbb jets, "
        "pT 250-1500 GeV (weighted: mcEventWeight)",
        jet_kind="large_r",
        jet_pt_min=250.0,
        jet_pt_max=1500.0,
        jet_eta_max=2.0,
        signal_labels=(4,),
        tags=("wide",),
    ),
    Process(
        name="qcd_wide",
        kind="boosted",
        settings=("HardQCD:all = on", *_WIDE_PTHAT),
        description="QCD dijets, pT-hat 200-1700 GeV biased to high pT-hat: background large-R jets, "
        "pT 250-1500 GeV (weighted: mcEventWeight)",
        jet_kind="large_r",
        jet_pt_min=250.0,
        jet_pt_max=1500.0,
        jet_eta_max=2.0,
        tags=("wide",),
    ),
    Process(
        name="qg",
        kind="quark_gluon",
        settings=("HardQCD:all = on", "PhaseSpace:pTHatMin = 450", "PhaseSpace:pTHatMax = 650"),
        description="QCD dijets for quark/gluon tagging: R=0.4 jets with pT 500-550 GeV, |eta| < 2.1",
        jet_kind="small_r",
        jet_pt_min=500.0,
        jet_pt_max=550.0,
        jet_eta_max=2.1,
    ),
    Process(
        name="gamma_jet",
        kind="photon",
        settings=("PromptPhoton:all = on", "PhaseSpace:pTHatMin = 20"),
        description="prompt photons (gamma + jet): signal photons",
        jet_kind="photon",
    ),
    Process(
        name="h_gamgam",
        kind="photon",
        settings=("HiggsSM:gg2H = on", "HiggsSM:ff2Hff(t:WW) = on", "25:onMode = off", "25:onIfAny = 22"),
        description="H -> gamma gamma (ggF + VBF)",
        jet_kind="photon",
    ),
    Process(
        name="dijet_photon",
        kind="photon",
        settings=_DIJET_PHOTON_SETTINGS,
        description="hard QCD dijets with a JF17-style EM filter (lhcml.sim.photons.EM_FILTER_DEFAULTS): "
        "pi0/eta -> gamma gamma fake photons (weighted)",
        jet_kind="photon",
    ),
    Process(
        name="dijet_photon_unfiltered",
        kind="photon",
        settings=_DIJET_PHOTON_SETTINGS,
        description="hard QCD dijets without the EM filter: all fake-photon candidates (weighted)",
        jet_kind="photon",
    ),
)


def list_processes() -> list[str]:
    """Names of all registered processes, sorted."""
    return sorted(PROCESSES)


def get_process(name: str) -> Process:
    """The registered :class:`Process` called ``name``.

    Raises
    ------
    ConfigError
        If ``name`` is not registered (the message lists the valid names).
    """
    try:
        return PROCESSES[name]
    except (KeyError, TypeError):
        import difflib

        hint = difflib.get_close_matches(str(name), PROCESSES, n=1)
        extra = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise ConfigError(
            f"unknown process '{name}'{extra}; valid processes: {', '.join(list_processes())}"
        ) from None
