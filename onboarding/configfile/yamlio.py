"""Reading and writing the configuration YAML.

Reading: YAML 1.2-style scalars, so ``no``/``on`` stay strings (a country code ``NO`` is not
``false``) and ``2026-01-01`` stays a string (segments parse dates themselves); duplicate keys are
an error rather than "last one wins". Writing: block style for objects, one line per step and per
condition (flow style), as in DESIGN §3.4, keys in a fixed order, so exports diff cleanly.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.resolver import BaseResolver

_BOOL = "tag:yaml.org,2002:bool"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class Loader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, list | dict):
                    continue  # unhashable: let the base class report it
                if key in seen:
                    raise ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL, _TIMESTAMP)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class Inline(dict):
    """A mapping written on one line: ``{name: Signed up, event: Signed Up}``."""


class Literal(str):
    """A multi-line text written as a ``|`` block (falls back to quoting when YAML cannot)."""


class Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        # Indent list items under their key, as in DESIGN §3.4.
        super().increase_indent(flow, False)


def _represent_inline(dumper: Dumper, data: Inline) -> yaml.Node:
    return dumper.represent_mapping(BaseResolver.DEFAULT_MAPPING_TAG, data, flow_style=True)


def _represent_literal(dumper: Dumper, data: Literal) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(data), style=style)


Dumper.add_representer(Inline, _represent_inline)
Dumper.add_representer(Literal, _represent_literal)


def load(text: str) -> Any:
    return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass


def dump(data: Any) -> str:
    return yaml.dump(
        data,
        Dumper=Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=10_000,
    )
