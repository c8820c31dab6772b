"""``lhcml photon ...``: the photon-ID application (dataset, cut menus, PAED, evaluation).

Each command calls one plain function of :mod:`lhcml.tasks.photon`; heavy imports are lazy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for it in items:
        if "=" not in it:
            raise typer.BadParameter(f"{what} expects name=value, got '{it}'")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


photon_app = typer.Typer(
    help=(
        "Photon identification: prompt photons vs jet fakes (pi0/eta -> gamma gamma) from "
        "LAr-calorimeter cell images and shower shapes.\n\n"
        "Order: `lhcml photon dataset` -> `lhcml photon cuts` (cut-based Loose/Tight menus) and "
        "`lhcml train configs/photon/*.yaml` -> `lhcml predict` -> `lhcml photon evaluate`. "
        "With pile-up: `lhcml photon paed` (train the denoising autoencoder) -> "
        "`lhcml photon denoise` (before training/predicting on the denoised images)."
    ),
    no_args_is_help=True,
)


@photon_app.command("dataset")
def dataset_cmd(
    output_dir: Path = typer.Argument(..., help="where photon_{train,val,test}.h5 go"),
    events: list[str] = typer.Option(["gamma_jet=2000", "dijet_photon=6000"], "--events", help="process=n_events"),
    mu: float = typer.Option(0.0, "--mu", help="mean pile-up"),
    pileup: Optional[Path] = typer.Option(None, "--pileup", help="pile-up library (.h5)"),  # noqa: UP045
    seed: int = typer.Option(1, "--seed", help="run seed"),
    raw_images: bool = typer.Option(False, "--raw-images", help="also store MeV images (for the PAED)"),
    em_filter: Optional[float] = typer.Option(  # noqa: UP045
        None, "--em-filter", help="JF17-style EM filter E_T (GeV) for dijets; default: the process's own "
        "(17 for dijet_photon, none for dijet_photon_unfiltered); 0: off"),
) -> None:
    """Simulate prompt photons and jet fakes and write train/val/test files."""
    from lhcml.tasks.photon.dataset import make_photon_dataset

    lib = None
    if pileup is not None:
        from lhcml.sim.pileup import PileupLibrary

        lib = PileupLibrary.load(pileup)
    n = {k: int(v) for k, v in _pairs(events, "--events").items()}
    for split, p in make_photon_dataset(output_dir, n, mu, seed, lib, raw_images,
                                        em_filter_et_gev="process" if em_filter is None else (em_filter or None),
                                        progress=True).items():
        typer.echo(f"{split}: {p}")

@photon_app.command("cuts")
def cuts_cmd(
    train_file: Path = typer.Argument(..., help="photon file to optimise on"),
    output: Path = typer.Argument(..., help="menu YAML to write"),
    target: float = typer.Option(0.85, "--target", help="photon efficiency per bin"),
    menu: str = typer.Option("tight", "--menu", help="tight or loose"),
) -> None:
    """Optimise a Loose/Tight cut menu to a fixed photon efficiency."""
    from lhcml.tasks.photon.cuts import LOOSE_VARIABLES, TIGHT_VARIABLES, optimise_menu
    from lhcml.tasks.photon.evaluate import load_photons

    if menu not in ("tight", "loose"):
        raise typer.BadParameter(f"--menu must be tight or loose, got '{menu}'")
    ph = load_photons([train_file])
    m = optimise_menu(ph, ph["isPromptPhoton"] == 1, target, LOOSE_VARIABLES if menu == "loose" else TIGHT_VARIABLES,
                      name=f"{menu}{int(round(target * 100))}")  # fmt: skip
    m.save(output)
    typer.echo(f"{output}: {m.achieved}")

@photon_app.command("paed")
def paed_cmd(config: Path = typer.Argument(..., help="PAED config (configs/photon/paed.yaml)")) -> None:
    """Train the pile-up denoising autoencoder."""
    from lhcml.train.paed import load_paed_config
    from lhcml.train.protocol import TRAINERS

    typer.echo(str(TRAINERS["paed"].fit(load_paed_config(config))))

@photon_app.command("denoise")
def denoise_cmd(
    paed: Path = typer.Argument(..., help="paed.pt from `lhcml photon paed`"),
    src: Path = typer.Argument(..., help="photon file with raw images"),
    dst: Path = typer.Argument(..., help="output file with denoised images"),
) -> None:
    """Write a copy of SRC whose images are PAED-denoised."""
    from lhcml.tasks.photon.denoise import denoise_file

    typer.echo(str(denoise_file(paed, src, dst)))

@photon_app.command("evaluate")
def evaluate_cmd(
    files: list[Path] = typer.Argument(..., help="photon test files with prediction columns"),
    output_dir: Path = typer.Option(Path("runs/photon/evaluation"), "--output-dir", "-o", help="report folder"),
    tagger: list[str] = typer.Option([], "--tagger", help="name=label (prediction column prefix)"),
    menu: list[Path] = typer.Option([], "--menu", help="cut menu YAML"),
) -> None:
    """Fake rejection at 80/90 % photon efficiency: cuts vs DNN vs CNN; HTML report."""
    from lhcml.tasks.photon.evaluate import evaluate_photon_id

    evaluate_photon_id(files, _pairs(tagger, "--tagger"), output_dir, menus=menu)
    typer.echo(str(output_dir / "report.html"))


def register(app: typer.Typer) -> None:
    """Add the ``photon`` group (dataset, cuts, paed, denoise, evaluate) to ``app``."""
    app.add_typer(photon_app, name="photon")
