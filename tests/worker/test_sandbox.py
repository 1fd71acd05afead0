"""The extraction sandbox: a child that hangs or dies costs one document, never the worker."""

import asyncio
import sys
import textwrap
from pathlib import Path

import pytest

from headrace.model import Chunking, Limits
from headrace.worker import sandbox as sandbox_module
from headrace.worker.conversion import Message, Request
from headrace.worker.sandbox import Sandbox
from tests.worker.samples import zip_file

# A stand-in child speaking the sandbox protocol, which hangs or dies on entries named so.
MISBEHAVING_CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from headrace.worker import conversion, sandbox

    real = conversion.process

    def process(request, data):
        for message in real(request, data):
            yield message
            if message["type"] == "begin" and "hang" in message["uri"]:
                time.sleep(3600)
            if message["type"] == "begin" and "die" in message["uri"]:
                os.kill(os.getpid(), signal.SIGKILL)

    sandbox.process = process
    sandbox.serve(sys.stdin.buffer, sys.stdout.buffer)
    """
)


async def collect(sandbox: Sandbox, data: bytes, uri: str = "box.zip", *, silence: float = 1) -> dict[str, Message]:
    request = Request(uri=uri, limits=Limits(), chunking=Chunking())
    return {m["uri"]: m async for m in sandbox.process(request, data, silence_seconds=silence)}


async def test_real_child_extracts_and_is_reused() -> None:
    sandbox = Sandbox(memory_bytes=768 * 1024 * 1024)
    try:
        first = await collect(sandbox, b"Words about harbours.", uri="a.txt")
        second = await collect(sandbox, b"More words about harbours.", uri="b.txt")
    finally:
        await sandbox.close()
    assert first["a.txt"]["type"] == second["b.txt"]["type"] == "document"


async def test_a_reader_cancelled_as_a_message_arrives_stops_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker told to stop cancels its ingest task whenever SIGTERM comes, also in the instant the sandbox's
    next message has been read. That cancellation must stop the reader: asyncio.wait_for (Python 3.11) handed
    it the message instead and dropped the cancellation, and the stopping worker waited for ever on stages
    already cancelled (CPython gh-86296)."""
    read = sandbox_module._read_message
    reader: asyncio.Task[list[Message]] | None = None

    async def read_then_cancel(stream: asyncio.StreamReader) -> Message:
        message = await read(stream)
        if message["type"] != "ready" and reader is not None:
            reader.cancel()  # lands as the message does
        return message

    monkeypatch.setattr(sandbox_module, "_read_message", read_then_cancel)
    sandbox = Sandbox(memory_bytes=768 * 1024 * 1024)
    request = Request(uri="a.txt", limits=Limits(), chunking=Chunking())

    async def consume() -> list[Message]:
        return [m async for m in sandbox.process(request, b"Words about harbours.", silence_seconds=30)]

    try:
        reader = asyncio.create_task(consume())
        with pytest.raises(asyncio.CancelledError):
            await reader
    finally:
        await sandbox.close()


async def test_a_hanging_entry_fails_naming_the_timeout_and_the_rest_resume(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(MISBEHAVING_CHILD)
    sandbox = Sandbox(command=[sys.executable, str(script)])
    data = zip_file({"a.txt": "alpha words", "hang.txt": "never done", "b.txt": "beta words", "die.txt": "gone"})
    try:
        found = await collect(sandbox, data)
    finally:
        await sandbox.close()
    assert found["box.zip!/a.txt"]["type"] == found["box.zip!/b.txt"]["type"] == "document"
    assert found["box.zip!/hang.txt"]["reason"] == "extraction took longer than limits.extractionTimeoutSeconds (1s)"
    assert "SIGKILL" in found["box.zip!/die.txt"]["reason"]
    assert found["box.zip"]["type"] == "container"


async def test_a_child_dying_on_a_plain_document_fails_that_document(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(MISBEHAVING_CHILD)
    sandbox = Sandbox(command=[sys.executable, str(script)])
    try:
        found = await collect(sandbox, b"text", uri="die.txt")
        after = await collect(sandbox, b"still working", uri="fine.txt")
    finally:
        await sandbox.close()
    assert found["die.txt"]["type"] == "failed"
    assert after["fine.txt"]["type"] == "document"


async def test_a_stream_abandoned_half_way_does_not_leak_into_the_next() -> None:
    sandbox = Sandbox()
    data = zip_file({f"{i}.txt": f"entry {i} words" for i in range(5)})
    request = Request(uri="box.zip", limits=Limits(), chunking=Chunking())
    try:
        messages = sandbox.process(request, data, silence_seconds=10)
        first = await anext(messages)
        await messages.aclose()  # as when storing the first document fails
        after = await collect(sandbox, b"fresh words", uri="next.txt")
    finally:
        await sandbox.close()
    assert first["uri"] == "box.zip!/0.txt"
    assert list(after) == ["next.txt"]


async def test_a_document_needing_more_memory_than_the_limit_fails_alone() -> None:
    sandbox = Sandbox(memory_bytes=300 * 1024 * 1024)
    flat = b"[" + b"1," * 20_000_000 + b"1]"  # 40 MB that flattens to 20 million text lines
    try:
        found = await collect(sandbox, flat, uri="wide.json", silence=300)
        after = await collect(sandbox, b"small words", uri="next.txt")
    finally:
        await sandbox.close()
    assert found["wide.json"]["type"] == "failed"
    assert "memory" in found["wide.json"]["reason"] or "extractor process" in found["wide.json"]["reason"]
    assert after["next.txt"]["type"] == "document"
