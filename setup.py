"""Build hook: the repository's ``configs/`` ship inside the package as ``lhcml/configs/``, its trained
models ``models/`` (e.g. ``models/tracking/seed_filter.ckpt``) as ``lhcml/shipped_models/``.

The shipped recipes stay at the repository root (where the README, tests and benchmarks name
them, ``configs/ftag/gn.yaml``); a built wheel carries a copy as package data, found at run time
by :func:`lhcml.config.shipped_config` (models: :func:`lhcml.config.resolve_model_path`). Everything else about the build is in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


#: (source folder, pattern, folder inside the package)
#: (the JSON files are the ACTS chain's geometry selections and digitisation, configs/tracking/*.json)
COPIES = (("configs", "*.yaml", "configs"), ("configs", "*.json", "configs"), ("models", "*.ckpt", "shipped_models"))


class BuildPyWithConfigs(build_py):
    """``build_py`` that also copies ``configs/**/*.yaml`` and ``configs/**/*.json`` to ``<build>/lhcml/configs/`` and
    ``models/**/*.ckpt`` to ``<build>/lhcml/shipped_models/``."""

    def run(self) -> None:
        super().run()
        for folder, pattern, inside in COPIES:
            src = ROOT / folder
            if not src.is_dir():  # neither a checkout nor an sdist (both carry configs/ and models/)
                continue
            for f in sorted(src.rglob(pattern)):
                target = Path(self.build_lib) / "lhcml" / inside / f.relative_to(src)
                self.mkpath(str(target.parent))
                self.copy_file(str(f), str(target))


setup(cmdclass={"build_py": BuildPyWithConfigs})
