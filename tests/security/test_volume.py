"""A tenant shaping their volume to read what is not theirs: absolute paths, `..`, /proc/self, symlinks.

The claim is a folder under tmp_path; beside it sits `outside/`, standing for the node's and the
worker's own files. Nothing there may ever be listed or read.
"""

import os
from pathlib import Path

import pytest

from headrace.model import VolumeSource
from headrace.worker.errors import DocumentError
from headrace.worker.sources.base import DocumentRef
from headrace.worker.sources.volume import OutsideRoot, VolumeFiles, open_beneath

SECRET = b"the worker's service account token"


@pytest.fixture
def claim(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "token").write_bytes(SECRET)
    root = tmp_path / "claim"
    (root / "docs" / "deep" / "deeper").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("a document")
    (root / "docs" / "deep" / "deeper" / "b.txt").write_text("a deep document")
    return root


def source(root: Path, path: str = "docs") -> VolumeFiles:
    return VolumeFiles(VolumeSource(path=path), root=root)


async def listed(files: VolumeFiles) -> list[str]:
    return [ref.uri for page in [p async for p in files.pages()] for ref in page]


async def read(files: VolumeFiles, uri: str) -> bytes:
    return (await files.fetch(DocumentRef(uri=uri), max_bytes=1 << 20)).data


async def test_absolute_path_is_taken_beneath_the_mount(claim: Path) -> None:
    with pytest.raises(DocumentError, match=r"source\.volume\.path"):
        await listed(source(claim, str(claim.parent / "outside")))  # the node's path, beneath the claim: absent
    with pytest.raises(DocumentError, match=r"source\.volume\.path"):
        await listed(source(claim, "/outside"))  # not the node's /outside: the claim has none
    assert sorted(await listed(source(claim, "/"))) == ["docs/a.txt", "docs/deep/deeper/b.txt"]


async def test_proc_self_is_not_the_workers_own(claim: Path) -> None:
    with pytest.raises(DocumentError, match=r"source\.volume\.path"):
        await listed(source(claim, "/proc/self"))
    (claim / "docs" / "proc").symlink_to("/proc/self")
    files = source(claim)
    assert "proc/environ" not in await listed(files)
    with pytest.raises(OutsideRoot):
        await read(files, "proc/environ")


@pytest.mark.parametrize("uri", ["../outside/token", "deep/../../../outside/token", "/../outside/token"])
async def test_dot_dot_cannot_climb_out(claim: Path, uri: str) -> None:
    with pytest.raises(OutsideRoot):
        await read(source(claim), uri)


@pytest.mark.parametrize("depth", ["", "deep/", "deep/deeper/"])
@pytest.mark.parametrize("target", ["absolute", "relative"])
async def test_symlinks_out_at_every_depth_are_neither_listed_nor_read(claim: Path, depth: str, target: str) -> None:
    folder = claim / "docs" / depth
    outside = claim.parent / "outside"
    link_target = outside if target == "absolute" else Path("../" * (depth.count("/") + 2) + "outside")
    (folder / "escape").symlink_to(link_target)  # a folder link
    (folder / "token.txt").symlink_to(link_target / "token")  # a file link
    files = source(claim)
    uris = await listed(files)
    assert not any("escape" in u or "token" in u for u in uris)
    for uri in (f"{depth}escape/token", f"{depth}token.txt"):
        with pytest.raises(OutsideRoot):
            await read(files, uri)


async def test_a_symlinked_parent_of_the_source_folder_is_refused(claim: Path) -> None:
    (claim / "linked").symlink_to(claim.parent / "outside")
    with pytest.raises(DocumentError, match=r"source\.volume\.path"):
        await listed(source(claim, "linked"))


async def test_symlinks_within_the_folder_still_work(claim: Path) -> None:
    (claim / "docs" / "alias.txt").symlink_to("deep/deeper/b.txt")
    (claim / "docs" / "deep" / "up.txt").symlink_to("../a.txt")
    files = source(claim)
    assert {"alias.txt", "deep/up.txt"} <= set(await listed(files))
    assert await read(files, "alias.txt") == b"a deep document"
    assert await read(files, "deep/up.txt") == b"a document"


async def test_a_file_swapped_for_a_symlink_after_listing_is_refused(claim: Path) -> None:
    files = source(claim)
    assert "a.txt" in await listed(files)
    (claim / "docs" / "a.txt").unlink()
    (claim / "docs" / "a.txt").symlink_to(claim.parent / "outside" / "token")
    with pytest.raises(OutsideRoot):
        await read(files, "a.txt")


async def test_a_folder_swapped_for_a_symlink_after_listing_is_refused(claim: Path) -> None:
    files = source(claim)
    assert "deep/deeper/b.txt" in await listed(files)
    deep = claim / "docs" / "deep"
    deep.rename(claim / "moved")
    deep.symlink_to(claim.parent / "outside")
    (claim.parent / "outside" / "deeper").mkdir()
    (claim.parent / "outside" / "deeper" / "b.txt").write_bytes(SECRET)
    with pytest.raises(OutsideRoot):
        await read(files, "deep/deeper/b.txt")


def test_open_beneath_checks_every_component(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_text("x")
    (tmp_path / "a" / "loop").symlink_to("loop")
    root = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = open_beneath(root, "a/./b//f", directory=False)
        os.close(fd)
        with pytest.raises(DocumentError, match="symlinks"):
            open_beneath(root, "a/loop", directory=False)
        with pytest.raises(DocumentError, match="not a folder"):
            open_beneath(root, "a/b/f/g", directory=False)
    finally:
        os.close(root)
