"""The commands and manifests of a Markdown document, so a test can run what the docs tell users to run."""

import re
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    """One fenced block: its language tag and text, and the line it starts on (for messages)."""

    lang: str
    text: str
    where: str


def blocks(path: Path) -> list[Block]:
    markdown = path.read_text()
    return [
        Block(m[1], m[2], f"{path.name}:{markdown.count(chr(10), 0, m.start()) + 1}") for m in FENCE.finditer(markdown)
    ]


def shell_commands(block: Block) -> dict[str, list[str]]:
    """The commands of a `sh` block, each with the comment lines right after it (the docs show sample
    output so): continuation lines joined, here-documents kept whole."""
    commands: dict[str, list[str]] = {}
    output: list[str] = []
    lines = iter(block.text.splitlines())
    for line in lines:
        if line.lstrip().startswith("#"):
            output.append(line.lstrip()[1:].strip())
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        command = line
        while command.endswith("\\"):
            command = command[:-1] + next(lines).strip()
        if heredoc := re.search(r"<<-?'?(\w+)'?", command):
            body = []
            for body_line in lines:
                body.append(body_line)
                if body_line.strip() == heredoc[1]:
                    break
            command += "\n" + "\n".join(body)
        output = commands[command] = []
    return commands


class Doc:
    """A document's shell commands and YAML manifests, looked up by how they start."""

    def __init__(self, path: Path) -> None:
        self.path = path
        found = blocks(path)
        self.outputs = {c: out for b in found if b.lang in ("sh", "bash") for c, out in shell_commands(b).items()}
        self.commands = list(self.outputs)
        self.manifests = [b for b in found if b.lang == "yaml"]

    def command(self, start: str, *, containing: str = "") -> str:
        """The one command starting with `start` (and containing `containing`); fails naming the doc if none."""
        found = [c for c in self.commands if c.startswith(start) and containing in c]
        assert found, f"{self.path.name} no longer has a command starting with {start!r} containing {containing!r}"
        assert len(found) == 1, f"{self.path.name} has {len(found)} commands starting with {start!r}: {found}"
        return found[0]

    def manifest(self, filename: str) -> str:
        """The YAML block whose first line is `# <filename>`."""
        for block in self.manifests:
            if block.text.startswith(f"# {filename}\n"):
                return block.text
        raise AssertionError(f"{self.path.name} no longer shows a manifest `# {filename}`")

    def output(self, command: str) -> list[str]:
        """The sample output the doc shows after `command` (its comment lines)."""
        return self.outputs[command]
