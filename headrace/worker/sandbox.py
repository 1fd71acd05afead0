"""Extraction in a child process, so hostile input cannot hang or bloat the worker.

PDFium, lxml and the decompressors are C code: a deadline checked between Python statements cannot
interrupt them, and their memory is not the worker's to reclaim. So every fetched object is handed to
a long-lived child process (`python -m headrace.worker.sandbox`) that runs `pipeline.process` under
its own address-space limit and streams messages back. If no message arrives within
`limits.extractionTimeoutSeconds`, or the child dies, the worker kills it, records the document in
progress as failed with the reason, and resumes the rest of the object in a fresh child.

Wire format, both ways: a 4-byte big-endian length and a JSON header; requests are followed by an
8-byte length and the object's raw bytes.
"""

import asyncio
import json
import logging
import resource
import signal
import struct
import sys
from collections.abc import AsyncGenerator
from typing import BinaryIO

from headrace.worker.pipeline import Message, Request, process

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
_DATA = struct.Struct(">Q")

# How long a fresh child may take to start (interpreter, PDFium, lxml) before it says it is ready.
# Kept apart from limits.extractionTimeoutSeconds, which bounds the work on a document, not a
# cold start on a busy node.
STARTUP_TIMEOUT_SECONDS = 120.0


class Sandbox:
    """The worker's handle on its extraction child; the child is started on first use."""

    def __init__(self, *, memory_bytes: int | None = None, command: list[str] | None = None) -> None:
        self.memory_bytes = memory_bytes
        self.command = command or [sys.executable, "-m", "headrace.worker.sandbox"]
        self._child: asyncio.subprocess.Process | None = None
        self._mid_request = False  # a caller stopped reading before `end`: the child's output is stale

    async def _start(self) -> asyncio.subprocess.Process:
        if self._mid_request:
            await self.close()
        if self._child is None or self._child.returncode is not None:
            args = ["--memory-bytes", str(self.memory_bytes)] if self.memory_bytes else []
            child = await asyncio.create_subprocess_exec(
                *self.command,
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            assert child.stdout is not None
            try:
                ready = await asyncio.wait_for(_read_message(child.stdout), STARTUP_TIMEOUT_SECONDS)
            except BaseException:
                child.kill()
                await child.wait()
                raise
            if ready.get("type") != "ready":
                child.kill()
                raise RuntimeError(f"extraction sandbox spoke before it was ready: {ready!r}")
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
        """The messages of `pipeline.process` for this object, with a `failed` message in place of
        whatever the child was doing when it stayed silent for `silence_seconds` or died."""
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
                    message = await asyncio.wait_for(_read_message(child.stdout), silence_seconds)
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


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """The child's loop: one request in, its messages out, until stdin closes."""
    _write(stdout, {"type": "ready"})
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

    stdout = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print() from a library must not corrupt the protocol
    serve(sys.stdin.buffer, stdout)


if __name__ == "__main__":
    main()
