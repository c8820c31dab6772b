"""Build hook: the repository's ``configs/`` ship inside the package as ``lhcml/configs/``.

The shipped recipes stay at the repository root (where the README, tests and benchmarks name
them, ``configs/ftag/gn.yaml``); a built wheel carries a copy as package data, found at run time
by :func:`lhcml.config.shipped_config`. Everything else about the build is in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithConfigs(build_py):
    """``build_py`` that also copies ``configs/**/*.yaml`` to ``<build>/lhcml/configs/``."""

    def run(self) -> None:
        super().run()
        src = ROOT / "configs"
        if not src.is_dir():  # neither a checkout nor an sdist (both carry configs/)
            return
        for f in sorted(src.rglob("*.yaml")):
            target = Path(self.build_lib) / "lhcml" / "configs" / f.relative_to(src)
            self.mkpath(str(target.parent))
            self.copy_file(str(f), str(target))


setup(cmdclass={"build_py": BuildPyWithConfigs})
