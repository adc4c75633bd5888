"""The one way the gateway reads YAML: safe (no Python objects) and strict about duplicate
keys. PyYAML's own loaders keep the last of two equal keys, so `pii: true` followed by
`pii: false`, or a `sha256:` pin followed by `sha256: null`, would silently remove a
protection; here the second key is refused with the lines of both.

Scanning and parsing are libyaml's (PyYAML's C parser, in its wheels), where it is there:
it read the bundled card contract in 0.5 ms against 7 ms for the pure-Python parser, a
time every CLI command paid once or twice at start-up; and it refuses nesting past 1,000
levels itself. The constructor is the same either way; the parsers differ at the edges
of the spec (libyaml takes a tab inside a plain scalar, and reads an empty node tagged `!`
as "" where the Python parser gives None), and validation judges what either gives."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

from schemas.errors import ConfigError

__all__ = ["StrictKeys", "StrictSafeLoader", "load_yaml"]


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping names one key twice; `line` and `first_line` are 1-based."""

    def __init__(self, key: Any, line: int, first_line: int, mark: yaml.Mark) -> None:
        super().__init__(None, None, f"duplicate key {key!r} (first on line {first_line})", mark)
        self.key = key
        self.line = line
        self.first_line = first_line


if TYPE_CHECKING:
    _SafeLoader = yaml.SafeLoader
else:  # PyYAML built without libyaml has the pure-Python parser only
    _SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class StrictKeys(yaml.constructor.SafeConstructor):
    """The safe constructor that refuses a key given twice in one mapping (put before a
    loader: `StrictSafeLoader`)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in first_line:
                    raise DuplicateKeyError(key, line, first_line[key], key_node.start_mark)
                first_line[key] = line
            except TypeError:  # an unhashable key: the base constructor reports it
                break
        return super().construct_mapping(node, deep=deep)


class StrictSafeLoader(StrictKeys, _SafeLoader):
    """`yaml.SafeLoader`, on libyaml's parser, that refuses a key given twice in one mapping."""


def load_yaml(text: str, source: str, error: type[ConfigError] = ConfigError) -> Any:
    """The document in `text`; `error` (naming `source` and the line) for invalid YAML or a
    duplicate key."""
    try:
        doc = yaml.load(text, Loader=StrictSafeLoader)  # a SafeLoader subclass: no Python objects
        _check_expanded_size(doc, source, error)
        return doc
    except DuplicateKeyError as exc:
        raise error(f"{source}:{exc.line}: duplicate key {exc.key!r} (first on line {exc.first_line}); "
                    "only one may stay, a second would silently replace the first") from None
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML: {exc}".replace("\n", " ")) from None
    except UnicodeEncodeError as exc:  # libyaml takes UTF-8: a lone surrogate has none
        raise error(f"{source}: not valid YAML: character {exc.object[exc.start]!r} at position {exc.start} "
                    "is not Unicode text (a lone surrogate)") from None
    except ValueError as exc:  # PyYAML lets some scanner errors out as they are: "\U0011FFFF" -> chr() out of range
        raise error(f"{source}: not valid YAML: {exc} (a character escape past U+10FFFF?)") from None
    except RecursionError:
        raise error(f"{source}: not valid YAML: collections nested too deeply") from None


MAX_EXPANDED_VALUES = 1_000_000


def _check_expanded_size(doc: Any, source: str, error: type[ConfigError]) -> None:
    """Aliases share one object, so a few lines can stand for a billion values ("billion
    laughs"): whatever walks the document as a tree later (validation, docs) would take that
    long. Count the values as a tree walk sees them, and stop at the limit."""
    seen, stack = 0, [doc]
    while stack:
        value = stack.pop()
        seen += 1
        if seen > MAX_EXPANDED_VALUES:
            raise error(f"{source}: its aliases expand to more than {MAX_EXPANDED_VALUES:,} values; refused")
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
