"""The image `make image` builds, run as a container runtime runs it, with no daemon.

`BuiltImage.build()` runs `make image` (buildah's layer cache makes it quick when nothing changed),
then `buildah mount`s a working container of the image: `rootfs` is its root filesystem on this
machine and `config` the image's OCI config (entrypoint, env, user, labels).

`container_command` is the command line that runs a program inside that root filesystem as a
container would: in a mount namespace of its own (`unshare --mount`), the root filesystem bound
read-only, the pod's volumes bound at their mount paths, a fresh /proc, a /dev holding only the
usual devices, an /etc/hosts of the caller's names (the in-cluster API server's), then chroot, the pod's uid and gid,
and exec. The program keeps this machine's network (loopback), as pods of the stand-in kubelet do.
The launcher (this file's `main`) runs as root up to the exec, which is why the tests run as root.
"""

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
IMAGE_NAME = os.environ.get("HEADRACE_TEST_IMAGE", "localhost/headrace:dev")
"""The tag `make image` gives (its default IMAGE), unless the environment names another."""

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


@dataclass
class BuiltImage:
    name: str
    id: str
    container: str
    rootfs: Path
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, name: str = IMAGE_NAME) -> "BuiltImage":
        subprocess.run(["make", "--no-print-directory", "image", f"IMAGE={name}"], cwd=ROOT, check=True)
        inspect = json.loads(_buildah("inspect", "--type", "image", name))
        container = _buildah("from", "--pull-never", "--name", f"headrace-test-{os.getpid()}", name)
        rootfs = Path(_buildah("mount", container))
        return cls(name, inspect["FromImageID"], container, rootfs, inspect["OCIv1"]["config"])

    def remove(self) -> None:
        _buildah("rm", self.container)

    @property
    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.config.get("Env", []))

    @property
    def user(self) -> tuple[int, int]:
        uid, _, gid = self.config.get("User", "0").partition(":")
        return int(uid), int(gid or uid)

    def which(self, program: str, path: str) -> str | None:
        """Where `program` is inside the image, looked up on `path` (the container's PATH)."""
        if "/" in program:
            return program if (self.rootfs / program.lstrip("/")).exists() else None
        for folder in path.split(":"):
            if folder and os.access(self.rootfs / folder.lstrip("/") / program, os.X_OK):
                return f"{folder.rstrip('/')}/{program}"
        return None

    def command(
        self,
        argv: list[str],
        *,
        at: Path,
        binds: Sequence[tuple[Path, str, bool]] = (),
        tmpfs: Sequence[str] = (),
        user: tuple[int, int] | None = None,
        workdir: str = "/",
        hosts: dict[str, str] | None = None,
    ) -> list[str]:
        """The command line running `argv` in the image (see the module); `at` is an empty folder to mount on.

        `binds` are (folder or file on this machine, path in the container, read-only); `tmpfs` paths get an
        empty writable tmpfs; `hosts` (name -> address) are /etc/hosts' lines beside localhost. The environment
        is the caller's (Popen's `env`), passed through unchanged."""
        uid, gid = user or self.user
        spec = {
            "rootfs": str(self.rootfs), "at": str(at), "argv": argv, "uid": uid, "gid": gid, "workdir": workdir,
            "binds": [[str(source), target, read_only] for source, target, read_only in binds], "tmpfs": list(tmpfs),
            "hosts": "127.0.0.1 localhost\n::1 localhost\n" + "".join(f"{a} {n}\n" for n, a in (hosts or {}).items()),
        }  # fmt: skip
        launcher = [sys.executable, "-I", __file__, json.dumps(spec)]
        return ["unshare", "--mount", "--propagation", "private", "--", *launcher]


def _buildah(*args: str) -> str:
    return subprocess.run(["buildah", *args], check=True, capture_output=True, text=True).stdout.strip()


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def inside(at: Path, path: str) -> Path:
    """Where the container's `path` is on this machine, its symlinks resolved within `at` as after chroot.

    Debian's /var/run is a link to /run: followed on this machine, a mount at /var/run/secrets would
    land in this machine's /run instead of the image's."""
    current, parts, hops = at, list(Path(path).parts[1:]), 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = current.parent if current != at else at
            continue
        candidate = current / part
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                raise OSError(f"{path}: too many levels of symbolic links in the image")
            link = os.readlink(candidate)
            parts = list(Path(link).parts[1:] if link.startswith("/") else Path(link).parts) + parts
            current = at if link.startswith("/") else current
            continue
        current = candidate
    return current


def _mount_point(path: Path, like: Path | None) -> None:
    """A folder (or, for a file or socket, an empty file) to mount on."""
    if like is not None and not like.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    else:
        path.mkdir(parents=True, exist_ok=True)


def main(spec: dict[str, Any]) -> None:
    """In a fresh mount namespace, as root: assemble the container's filesystem, drop to its user, exec."""
    at = Path(spec["at"])
    at.mkdir(parents=True, exist_ok=True)
    _mount("--bind", spec["rootfs"], str(at))
    mounts = [(Path(p), None, False, "tmpfs") for p in spec["tmpfs"]]
    mounts += [(Path(target), Path(source), ro, "bind") for source, target, ro in spec["binds"]]
    # Shorter paths first: a socket's folder under /tmp is bound after the /tmp volume, on top of it.
    for target, source, read_only, kind in sorted(mounts, key=lambda entry: len(entry[0].parts)):
        point = inside(at, str(target))
        _mount_point(point, source)
        if kind == "tmpfs":
            _mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", str(point))
            continue
        _mount("--bind", str(source), str(point))
        if read_only:
            _mount("-o", "remount,bind,ro", str(point))
    _mount("-t", "proc", "proc", str(at / "proc"))
    _mount("-t", "tmpfs", "-o", "mode=755,nosuid", "tmpfs", str(at / "dev"))
    for device in DEVICES:
        (at / "dev" / device).touch()
        _mount("--bind", f"/dev/{device}", str(at / "dev" / device))
    (at / "dev" / "shm").mkdir()
    _mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", str(at / "dev" / "shm"))
    hosts = at.with_name(at.name + ".hosts")
    hosts.write_text(spec["hosts"])
    _mount_point(inside(at, "/etc/hosts"), hosts)
    _mount("--bind", str(hosts), str(inside(at, "/etc/hosts")))
    _mount("-o", "remount,bind,ro", str(inside(at, "/etc/hosts")))
    _mount("-o", "remount,bind,ro", str(at))  # the read-only root; the mounts above keep their own modes

    os.chroot(at)
    os.chdir(spec["workdir"])
    os.setgroups([spec["gid"]])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    argv = spec["argv"]
    os.execvpe(argv[0], argv, dict(os.environ))  # looked up on the container's PATH, inside the chroot


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
