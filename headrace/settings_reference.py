"""docs/settings.md: every setting of every command, generated from the settings classes so it cannot drift.

A setting shared by several commands (logging, the database URL, the listening address, the Kubernetes API
server) is listed once, under the base class that declares it, with the commands that read it; each role's
own settings follow under its command. Flags are read from the commands themselves. `python
scripts/gen-settings.py` writes the file; a test fails when the committed copy differs.
"""

import importlib
from dataclasses import dataclass

import click
from pydantic_settings import BaseSettings

from headrace.cli import Configured, main
from headrace.model.reference import FieldRow, field_rows
from headrace.settings import variables


@dataclass(frozen=True)
class Section:
    title: str
    settings: str
    """The class, as "module:Class"."""
    about: str
    shared: bool = False
    """Declared by a base class: its fields are listed here only, not again under each role."""


SECTIONS = [
    Section(
        "Every command",
        "headrace.settings:CliSettings",
        "How the `headrace` command logs and reports errors, whatever the subcommand; the flags go before it "
        "(`headrace --log-level DEBUG run ...`).",
        shared=True,
    ),
    Section(
        "The database",
        "headrace.settings:DatabaseSettings",
        "Where Headrace keeps its state. Local mode's commands use their embedded Postgres (under `--data-dir`)"
        " when none is given; `demo` and `api --local` always do.",
        shared=True,
    ),
    Section(
        "The listening address",
        "headrace.settings:ListenSettings",
        "Where the search API serves. Names avoid `HEADRACE_PORT` and `HEADRACE_API_PORT`: Kubernetes injects "
        "variables of that shape for Services named `headrace` or `headrace-api` into every pod of the namespace.",
        shared=True,
    ),
    Section(
        "The Kubernetes API server",
        "headrace.kubeapi:KubeSettings",
        "Where the services that ask it about their callers (TokenReview, SubjectAccessReview) find it.",
        shared=True,
    ),
    Section("`headrace api`", "headrace.api.settings:ApiSettings", "The search API ([api.md](api.md))."),
    Section(
        "`headrace ingest-api`",
        "headrace.ingest.settings:IngestSettings",
        "The worker API, which worker pods call instead of the database ([worker-api.md](worker-api.md)).",
    ),
    Section(
        "`headrace operator`",
        "headrace.operator.settings:OperatorSettings",
        "The operator ([operator.md](operator.md)); the chart sets these from its values.",
    ),
    Section(
        "`headrace operator`: leader election",
        "headrace.operator.leader:ElectionSettings",
        "Which of the operator's replicas works ([operator.md](operator.md#leader-election)).",
    ),
    Section(
        "`headrace worker`",
        "headrace.worker.settings:WorkerSettings",
        "A worker pod (the operator's pod template sets these) or one of `headrace run`'s worker processes.",
    ),
]


def _load(name: str) -> type[BaseSettings]:
    module, _, attribute = name.partition(":")
    loaded: type[BaseSettings] = getattr(importlib.import_module(module), attribute)
    return loaded


def _readers() -> dict[str, list[type[BaseSettings]]]:
    """Each configured command (`api`, `local status`, ...) and the settings classes it reads."""
    found: dict[str, list[type[BaseSettings]]] = {}

    def walk(group: click.Group, prefix: str) -> None:
        for name, command in sorted(group.commands.items()):
            if isinstance(command, click.Group):
                walk(command, f"{prefix}{name} ")
            elif isinstance(command, Configured) and command.settings:
                found[f"{prefix}{name}"] = command.settings_classes()

    walk(main, "")
    return found


def _flags(field: str, commands: list[str]) -> str:
    """The flags that set `field` on `commands` (and on `headrace` itself)."""
    found: dict[str, None] = {}
    for command in [main, *(main.commands[name.split()[0]] for name in commands)]:
        for param in command.params:
            if param.name == field and isinstance(param, click.Option):
                long = [opt for opt in param.opts if opt.startswith("--")]
                found["/".join([*long, *param.secondary_opts])] = None
    return ", ".join(f"`{flag}`" for flag in found)


def _default(settings: type[BaseSettings], field: str, row: FieldRow) -> str:
    if row.required:
        return "required"
    if settings.model_fields[field].default_factory is not None:
        return "computed at start"
    if row.default.startswith('`"'):
        return f"`{row.default[2:-2]}`"  # a string as a variable holds it, without JSON's quotes
    return row.default or "unset"


def _rows(settings: type[BaseSettings], skip: set[str]) -> list[tuple[str, FieldRow]]:
    """(field, row) of the settings' top-level fields, but those in `skip` (listed under a base already)."""
    schema = settings.model_json_schema()
    by_key = {key: field for field in settings.model_fields for key in (field, *variables(settings, field))}
    rows = field_rows(schema, schema.get("$defs", {}), "")
    top = [(by_key[row.path[1:]], row) for row in rows if row.path.count(".") == 1]
    return [(field, row) for field, row in top if field not in skip]


def _commands(names: list[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def reference_markdown() -> str:
    """The whole docs/settings.md."""
    readers = _readers()
    shared: set[str] = set()
    lines = [
        "# Settings",
        "",
        "<!-- Generated by scripts/gen-settings.py from the settings classes; do not edit by hand. -->",
        "",
        "Every Headrace process is configured by environment variables (the chart sets them; add your own with",
        "the chart's `extraEnv` values). A command's flags override them. Field `x_y` of a settings class is read",
        "from `HEADRACE_X_Y`; a missing or refused value stops the command at start with one line naming it.",
        "Each command's `--help` lists the variables it reads.",
    ]
    for section in SECTIONS:
        settings = _load(section.settings)
        rows = _rows(settings, shared)
        if section.shared:
            shared |= {field for field, _ in rows}
        fields = {field for field, _ in rows}
        reading = [name for name, classes in readers.items() if any(fields <= set(c.model_fields) for c in classes)]
        lines += ["", f"## {section.title}", "", section.about]
        if section.shared:
            required = [field for field, row in rows if row.required]
            optional = [
                name
                for name in reading
                if any(
                    not c.model_fields[f].is_required() for c in readers[name] for f in required if f in c.model_fields
                )
            ]
            needed = [name for name in reading if name not in optional]
            who = "every command" if section.settings.endswith(":CliSettings") else _commands(needed)
            lines += ["", f"Read by {who}{f'; optional for {_commands(optional)}' if optional else ''}."]
        lines += ["", "| Variable | Flag | Default | Accepts | Meaning |", "|---|---|---|---|---|"]
        for field, row in rows:
            names = " or ".join(f"`{name}`" for name in variables(settings, field))
            accepts = "; ".join(part for part in (row.type, row.bounds) if part).replace("|", "\\|")
            default = _default(settings, field, row)
            lines.append(f"| {names} | {_flags(field, reading)} | {default} | {accepts} | {row.description} |")
    return "\n".join(lines) + "\n"
