"""Model cards: README.md YAML front matter, validated against config/model-card.schema.json.

Pure functions over bytes: the push rules, post-receive, deployments and the API all parse cards
the same way, and tests need no git.
"""

import functools
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

class _CardLoader(yaml.SafeLoader):
    """SafeLoader without anchors and aliases: a model card has no use for them, and expanding
    them is how a few hundred bytes of YAML become gigabytes (the 'billion laughs')."""

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a model card",
                                              event.start_mark)
        event = self.peek_event()
        if getattr(event, "anchor", None):
            raise yaml.composer.ComposerError(None, None, "anchors (&name) are not allowed in a model card",
                                              event.start_mark)
        return super().compose_node(parent, index)


# The same front matter shape huggingface_hub recognises (repocard.py).
_FRONT_MATTER = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")
MAX_CARD_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ModelCard:
    metadata: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    errors: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.errors


def schema_path() -> Path:
    try:
        p = resources.files("modelrepo").joinpath("_config/model-card.schema.json")
        if p.is_file():
            return Path(str(p))
    except (FileNotFoundError, OSError, ModuleNotFoundError):
        pass
    return Path(__file__).resolve().parents[3] / "config" / "model-card.schema.json"


@functools.lru_cache(maxsize=4)
def _validator(path: str) -> jsonschema.protocols.Validator:
    schema = json.loads(Path(path).read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _where(error: jsonschema.ValidationError) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p))
                   for i, p in enumerate(error.absolute_path)) or "(front matter)"


def _deepest(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For oneOf/anyOf failures, the branch error that says the most (inference.resources.gpu:
    "-1 is less than the minimum of 0" rather than "not valid under any of the schemas")."""
    while error.context:
        error = max(error.context, key=lambda e: (len(e.absolute_path), e.validator != "type"))
    return error


def card_body(text: str) -> str:
    """README text without its front matter: what a reader of the card sees."""
    m = _FRONT_MATTER.match(text)
    return text[m.end():] if m else text


def parse_card(readme: bytes | None, schema_file: Path | None = None) -> ModelCard:
    """Front matter as metadata (validated), first paragraph of the body as summary."""
    if readme is None:
        return ModelCard()
    if len(readme) > MAX_CARD_BYTES:
        return ModelCard(errors=(f"README.md: larger than {MAX_CARD_BYTES} bytes",))
    text = readme.decode("utf-8", errors="replace")
    m = _FRONT_MATTER.match(text)
    body = text[m.end():] if m else text
    summary = _first_paragraph(body)
    if not m:
        return ModelCard(summary=summary)
    try:
        data = yaml.load(m.group(2), Loader=_CardLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 2}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return ModelCard(summary=summary, errors=(f"README.md: front matter is not valid YAML{where}: {problem}",))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return ModelCard(summary=summary, errors=("README.md: front matter must be a YAML mapping (key: value)",))
    data = json.loads(json.dumps(data, default=str))  # YAML dates etc. → JSON-safe values
    validator = _validator(str(schema_file or schema_path()))
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    messages = tuple(f"README.md: metadata field {_where(d)}: {d.message[:300]}" for d in map(_deepest, errors))
    return ModelCard(metadata=data, summary=summary, errors=messages)


def _first_paragraph(body: str) -> str:
    para: list[str] = []
    for line in body.splitlines():
        stripped = line.strip()
        if not stripped:
            if para:
                break
            continue
        if stripped.startswith("#") and not para:
            continue  # a heading is a title, not the summary
        if stripped.startswith(("<!--", "![", "[![")) and not para:
            continue
        para.append(stripped)
    return " ".join(para)[:1000]
