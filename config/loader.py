"""Layered configuration: built-in defaults, then a config directory, then ATIENDE_* variables.

Every problem is reported with where it came from (file and line, or variable name) so
`atiende config validate` can list them all at once instead of stopping at the first.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from config.models import SECTIONS, Settings

DEFAULTS_DIR = Path(__file__).parent / "defaults"
ENV_PREFIX = "ATIENDE_"
# Variables that are not config keys (read by the CLI or tests).
_ENV_NOT_KEYS = {"ATIENDE_CONFIG"}
_ENV_SHORTCUTS = {"ATIENDE_REDIS_URL": ("redis", "url")}


@dataclass(frozen=True)
class Issue:
    where: str  # "dir/intents.yaml:12", "ATIENDE_SIP__PORT", "calendar.yaml"
    key: str  # dotted path, "" for the whole file
    reason: str

    def __str__(self) -> str:
        loc = f"{self.where}" + (f" [{self.key}]" if self.key else "")
        return f"{loc}: {self.reason}"

    def to_dict(self) -> dict[str, str]:
        return {"where": self.where, "key": self.key, "reason": self.reason}


class ConfigError(Exception):
    def __init__(self, issues: list[Issue]) -> None:
        super().__init__("; ".join(str(i) for i in issues))
        self.issues = issues


@dataclass
class _Source:
    label: str  # file path or env var name
    lines: dict[tuple[str | int, ...], int] = field(default_factory=dict)


@dataclass
class Loaded:
    settings: Settings
    version: str  # content hash of the effective document
    document: dict[str, Any]


def _node_to_python(node: yaml.Node, path: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for k_node, v_node in node.value:
            key = yaml.safe_load(yaml.serialize(k_node))
            lines[(*path, key)] = k_node.start_mark.line + 1
            out[key] = _node_to_python(v_node, (*path, key), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_node_to_python(n, (*path, i), lines) for i, n in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node))


def read_yaml(path: Path, issues: list[Issue]) -> tuple[Any, _Source] | None:
    src = _Source(str(path))
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        issues.append(Issue(f"{path}{line}", "", f"invalid YAML: {exc.problem or exc}"))
        return None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        issues.append(Issue(str(path), "", f"cannot read: {exc}"))
        return None
    if node is None:
        return {}, src
    return _node_to_python(node, (), src.lines), src


def _read_csv(path: Path, issues: list[Issue], where: str) -> list[dict[str, Any]] | None:
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            return [dict(row) for row in csv.DictReader(fh)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        issues.append(Issue(where, "", f"cannot read CSV {path}: {exc}"))
        return None


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base.get(k), v) if k in base else v
        return out
    return over


def _load_dir(directory: Path, issues: list[Issue]) -> tuple[dict[str, Any], dict[str, _Source]]:
    doc: dict[str, Any] = {}
    sources: dict[str, _Source] = {}
    if not directory.is_dir():
        issues.append(Issue(str(directory), "", "config directory does not exist"))
        return doc, sources
    for path in sorted(directory.glob("*.y*ml")):
        section = path.stem
        if section not in SECTIONS:
            issues.append(Issue(str(path), "", f"unknown section {section!r}; expected one of {', '.join(SECTIONS)}"))
            continue
        got = read_yaml(path, issues)
        if got is None:
            continue
        data, src = got
        if not isinstance(data, dict):
            issues.append(Issue(f"{path}:1", "", "the file must hold a mapping of keys"))
            continue
        if section == "knowledge":
            for key, value in list(data.items()):
                if isinstance(value, str) and value.endswith(".csv"):
                    rows = _read_csv(directory / value, issues, f"{path}:{src.lines.get((key,), 1)}")
                    if rows is not None:
                        data[key] = rows
                        for i in range(len(rows)):
                            # CSV row i is on line i+2 (header first); reported against the CSV file.
                            src.lines[(key, i)] = -(i + 2)
                        src.label = str(path)
                        sources.setdefault(f"csv:{key}", _Source(str(directory / value)))
        doc[section] = data
        sources[section] = src
    return doc, sources


def _env_overrides(env: Mapping[str, str], issues: list[Issue]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    out: dict[str, Any] = {}
    origin: dict[tuple[str, ...], str] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name in _ENV_NOT_KEYS:
            continue
        if name in _ENV_SHORTCUTS:
            path: tuple[str, ...] = _ENV_SHORTCUTS[name]
        else:
            path = tuple(p.lower() for p in name[len(ENV_PREFIX):].split("__") if p)
        if len(path) < 2 or path[0] not in SECTIONS:
            issues.append(Issue(name, "", "not a configuration variable (use ATIENDE_<SECTION>__<KEY>)"))
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        cur = out
        for p in path[:-1]:
            cur = cur.setdefault(p, {})
        cur[path[-1]] = value
        origin[path] = name
    return out, origin


def _locate(loc: tuple[Any, ...], sources: dict[str, list[_Source]], env_origin: dict[tuple[str, ...], str]) -> str:
    key = tuple(str(x) for x in loc)
    for n in range(len(key), 0, -1):
        if key[:n] in env_origin:
            return env_origin[key[:n]]
    if not loc:
        return "config"
    section, rest = str(loc[0]), tuple(loc[1:])
    for src in reversed(sources.get(section, [])):
        for n in range(len(rest), -1, -1):
            line = src.lines.get(rest[:n])
            if line is not None:
                if line < 0 and len(rest) >= 1:
                    csv_src = sources.get(f"csv:{rest[0]}")
                    if csv_src:
                        return f"{csv_src[-1].label}:{-line}"
                return f"{src.label}:{line}"
    return f"{section}.yaml" if not sources.get(section) else sources[section][-1].label


def load(config_dir: Path | str | None = None, env: Mapping[str, str] | None = None) -> Loaded:
    """Build the effective configuration or raise ConfigError with every issue found."""
    env = os.environ if env is None else env
    if config_dir is None and env.get("ATIENDE_CONFIG"):
        config_dir = env["ATIENDE_CONFIG"]
    issues: list[Issue] = []
    doc, defaults_src = _load_dir(DEFAULTS_DIR, issues)
    sources: dict[str, list[_Source]] = {k: [v] for k, v in defaults_src.items()}
    if config_dir is not None:
        user_doc, user_src = _load_dir(Path(config_dir), issues)
        doc = _merge(doc, user_doc)
        for k, v in user_src.items():
            sources.setdefault(k, []).append(v)
    env_doc, env_origin = _env_overrides(env, issues)
    doc = _merge(doc, env_doc)
    try:
        settings = Settings.model_validate(doc)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            issues.append(Issue(_locate(loc, sources, env_origin), ".".join(str(x) for x in loc), err["msg"]))
        settings = None
    if issues or settings is None:
        raise ConfigError(issues)
    canonical = json.dumps(settings.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    version = hashlib.sha256(canonical.encode()).hexdigest()[:12]
    return Loaded(settings=settings, version=version, document=doc)
