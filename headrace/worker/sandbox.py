"""Extraction in a child process, so hostile input cannot hang or bloat the worker.

PDFium, lxml and the decompressors are C code: a deadline checked between Python statements cannot
interrupt them, and their memory is not the worker's to reclaim. So every fetched object is handed to
a long-lived child process (`python -m headrace.worker.sandbox`) that runs `conversion.process` under
its own address-space limit and streams messages back. If no message arrives within
`limits.extractionTimeoutSeconds`, or the child dies, the worker kills it, records the document in
progress as failed with the reason, and resumes the rest of the object in a fresh child.

The child gets nothing it does not need (a parser exploit in a crawled PDF runs there):
- an explicit, minimal environment (`minimal_environment`): no DATABASE_URL, no Secret, nothing the
  worker's pod spec or the Kubernetes service links put in the worker's;
- no network: a seccomp filter (installed by the child itself, unprivileged under no_new_privs)
  refuses every socket but AF_UNIX, and io_uring, on x86-64 and arm64; the child reports in its
  `ready` message whether the filter holds (`network: blocked`) or why not;
- no look into the worker: the worker makes itself non-dumpable first, so the child (same uid)
  cannot read `/proc/<worker>/environ` or its memory.

Wire format, both ways: a 4-byte big-endian length and a JSON header; requests are followed by an
8-byte length and the object's raw bytes.
"""

import asyncio
import ctypes
import errno
import json
import logging
import os
import platform
import resource
import signal
import struct
import sys
from collections.abc import AsyncGenerator
from typing import BinaryIO

from headrace.worker.conversion import Message, Request, process

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
_DATA = struct.Struct(">Q")

# How long a fresh child may take to start (interpreter, PDFium, lxml) before it says it is ready.
# Kept apart from limits.extractionTimeoutSeconds, which bounds the work on a document, not a
# cold start on a busy node.
STARTUP_TIMEOUT_SECONDS = 120.0

# What the child may inherit: nothing that names a database, a Secret or a service of the cluster.
_INHERITED = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "PYTHONPATH", "TZ")


def minimal_environment() -> dict[str, str]:
    """The child's whole environment: the few locale and path variables above, and nothing else."""
    env = {name: os.environ[name] for name in _INHERITED if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env["HOME"] = env.get("TMPDIR", "/tmp")  # a HOME for libraries that want one, writable
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
# Per architecture: AUDIT_ARCH value, and the numbers of socket() and io_uring_setup().
_SYSCALLS = {"x86_64": (0xC000003E, 41, 425), "aarch64": (0xC00000B7, 198, 425)}


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


_M_ARENA_MAX = -8  # glibc's malloc.h
MALLOC_ARENAS = 2
"""Heaps glibc's malloc may keep for a worker's threads (`cap_malloc_arenas`)."""


def cap_malloc_arenas(arenas: int = MALLOC_ARENAS) -> None:
    """Let glibc's malloc keep at most `arenas` heaps for all of this process's threads; call it before
    any thread starts. By default it keeps up to eight per core, each reserving 64 MiB of address space
    when a thread first allocates: a worker's few threads (source reads, the embedding model, the
    metrics server) reserved over 100 MiB they never used (tests/worker/test_hostile_corpus.py runs the
    worker under a 512 MiB address-space limit: 481 MiB at its peak, 355 MiB with two heaps). Does
    nothing where the C library has no such option."""
    if sys.platform == "linux" and (mallopt := getattr(_libc(), "mallopt", None)) is not None:
        mallopt(_M_ARENA_MAX, arenas)


def protect_from_children() -> None:
    """Make this process non-dumpable: a child of the same uid can then no longer read its
    /proc/<pid>/environ (DATABASE_URL) or memory."""
    if sys.platform == "linux":
        _libc().prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def confine_network() -> str:
    """Forbid this process every socket but AF_UNIX (and io_uring) with a seccomp filter.

    Returns `blocked`, or why the platform does not allow it (the child then runs with the network).
    """
    if sys.platform != "linux":
        return f"not blocked: no seccomp on {sys.platform}"
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        return f"not blocked: no filter for {platform.machine()}"
    arch, socket_nr, io_uring_nr = numbers
    load, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    deny, allow = 0x00050000 | errno.EACCES, 0x7FFF0000  # SECCOMP_RET_ERRNO | EACCES, SECCOMP_RET_ALLOW
    program = [
        (load, 0, 0, 4),  # 0: the architecture
        (jeq, 0, 6, arch),  # 1: another ABI (i386 socketcall, ...): deny
        (load, 0, 0, 0),  # 2: the syscall number
        (jge, 4, 0, 0x40000000),  # 3: the x32 ABI: deny
        (jeq, 3, 0, io_uring_nr),  # 4: io_uring could open sockets behind the filter's back: deny
        (jeq, 0, 3, socket_nr),  # 5: not socket(): allow
        (load, 0, 0, 16),  # 6: socket()'s domain (args[0], low word)
        (jeq, 1, 0, 1),  # 7: AF_UNIX: allow
        (ret, 0, 0, deny),  # 8
        (ret, 0, 0, allow),  # 9
    ]
    filters = (_SockFilter * len(program))(*(_SockFilter(*item) for item in program))
    fprog = _SockFprog(len(program), filters)
    libc = _libc()
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return f"not blocked: no_new_privs refused ({os.strerror(ctypes.get_errno())})"
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        return f"not blocked: seccomp refused ({os.strerror(ctypes.get_errno())})"
    return "blocked"


class Sandbox:
    """The worker's handle on its extraction child; the child is started on first use, and serves one
    object at a time: a second caller waits until the first has read the object's last message."""

    def __init__(self, *, memory_bytes: int | None = None, command: list[str] | None = None) -> None:
        self.memory_bytes = memory_bytes
        self.command = command or [sys.executable, "-m", "headrace.worker.sandbox"]
        self._child: asyncio.subprocess.Process | None = None
        self._mid_request = False  # a caller stopped reading before `end`: the child's output is stale
        self._turn = asyncio.Lock()  # the child's one request and reply stream
        self.network: str | None = None
        """What the last child said of its network: `blocked`, or why it is not."""

    async def _start(self) -> asyncio.subprocess.Process:
        if self._mid_request:
            await self.close()
        if self._child is None or self._child.returncode is not None:
            args = ["--memory-bytes", str(self.memory_bytes)] if self.memory_bytes else []
            protect_from_children()
            child = await asyncio.create_subprocess_exec(
                *self.command,
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=minimal_environment(),
                cwd="/",
            )
            assert child.stdout is not None
            try:
                async with asyncio.timeout(STARTUP_TIMEOUT_SECONDS):
                    ready = await _read_message(child.stdout)
            except BaseException:
                child.kill()
                await child.wait()
                raise
            if ready.get("type") != "ready":
                child.kill()
                raise RuntimeError(f"extraction sandbox spoke before it was ready: {ready!r}")
            if ready.get("network") != "blocked" and self.network != ready.get("network"):
                log.warning("Started extraction sandbox with network", extra={"reason": ready.get("network")})
            self.network = ready.get("network")
            self._child = child
        return self._child

    async def close(self) -> None:
        """Stop the child, if one runs."""
        child, self._child = self._child, None
        self._mid_request = False
        if child is not None and child.returncode is None:
            child.kill()
            await child.wait()

    async def process(self, request: Request, data: bytes, *, silence_seconds: float) -> AsyncGenerator[Message, None]:
        """The messages of `conversion.process` for this object, with a `failed` message in place of
        whatever the child was doing when it stayed silent for `silence_seconds` or died."""
        async with self._turn:
            skip = set(request.skip)
            while True:
                child = await self._start()
                assert child.stdin is not None and child.stdout is not None
                wire = Request(**{**request.__dict__, "skip": frozenset(skip)}).to_wire()
                header = json.dumps(wire).encode()
                in_progress: list[str] = []
                self._mid_request = True
                try:
                    child.stdin.write(_HEADER.pack(len(header)) + header + _DATA.pack(len(data)))
                    child.stdin.write(data)
                    await child.stdin.drain()
                    while True:
                        async with asyncio.timeout(silence_seconds):
                            message = await _read_message(child.stdout)
                        if message["type"] == "begin":
                            in_progress.append(message["uri"])
                            continue
                        if message["type"] == "end":
                            self._mid_request = False
                            return
                        if in_progress and in_progress[-1] == message["uri"]:
                            in_progress.pop()
                        skip.add(message["uri"])
                        yield message
                except TimeoutError:
                    reason = f"extraction took longer than limits.extractionTimeoutSeconds ({silence_seconds:g}s)"
                except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError):
                    reason = await self._death_reason(child)
                await self.close()
                current = in_progress[-1] if in_progress else request.uri
                log.warning("Killed extraction sandbox", extra={"uri": current, "reason": reason})
                skip.add(current)
                yield {"type": "failed", "uri": current, "reason": reason}
                if current == request.uri:
                    return

    async def _death_reason(self, child: asyncio.subprocess.Process) -> str:
        code = await child.wait()
        if code < 0 and -code == signal.SIGKILL:
            return "extractor process was killed (SIGKILL, most likely out of memory)"
        if code < 0:
            return f"extractor process died of signal {signal.Signals(-code).name}"
        return f"extractor process exited with code {code}"


async def _read_message(stream: asyncio.StreamReader) -> Message:
    (size,) = _HEADER.unpack(await stream.readexactly(_HEADER.size))
    message: Message = json.loads(await stream.readexactly(size))
    return message


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    parts, left = [], size
    while left:
        part = stream.read(left)
        if not part:
            return None
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _write(stream: BinaryIO, message: Message) -> None:
    body = json.dumps(message).encode()
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


def serve(stdin: BinaryIO, stdout: BinaryIO, *, network: str = "unknown") -> None:
    """The child's loop: one request in, its messages out, until stdin closes."""
    _write(stdout, {"type": "ready", "network": network, "environment": sorted(os.environ)})
    while True:
        head = _read_exactly(stdin, _HEADER.size)
        if head is None:
            return
        wire = json.loads(_read_exactly(stdin, _HEADER.unpack(head)[0]) or b"{}")
        size = _read_exactly(stdin, _DATA.size)
        data = _read_exactly(stdin, _DATA.unpack(size)[0]) if size else None
        if data is None:
            return
        request = Request.from_wire(wire)
        del wire
        for message in process(request, data):
            _write(stdout, message)
        del data
        _write(stdout, {"type": "end"})


def main() -> None:
    if "--memory-bytes" in sys.argv:
        limit = int(sys.argv[sys.argv.index("--memory-bytes") + 1])
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when this child stops
    # Import every extractor and load the language model now, before saying ready, so no document's
    # timeout pays for it.
    import headrace.worker.formats.data
    import headrace.worker.formats.docx
    import headrace.worker.formats.pdf  # noqa: F401
    from headrace.worker.metadata import detect_language

    detect_language("Loading the language model before the first document arrives.")

    network = confine_network()  # after the imports, before any document is seen
    stdout = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print() from a library must not corrupt the protocol
    serve(sys.stdin.buffer, stdout, network=network)


if __name__ == "__main__":
    main()
