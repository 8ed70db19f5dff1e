"""YAML text → plain Python data, plus where every key and value was written.

We compose ruamel.yaml's node graph and build the data ourselves instead of calling ``load``:

- every duplicate key is reported (with the position of the repeated one) and parsing goes on,
  where ruamel's constructor stops at the first;
- mapping keys are always their source text, so a job called ``2024:`` is the name ``"2024"``,
  not an integer that fails validation;
- numbers keep the text they were written as (:class:`YamlInt`, :class:`YamlFloat`), so
  ``env: {PYTHON: 3.10}`` can become ``"3.10"`` rather than ``"3.1"``;
- the result holds only dict, list, str, int, float, bool and None: no ruamel types leak into
  pydantic or into error messages;
- every string is valid Unicode: a ``"\\ud800"`` escape (a lone UTF-16 surrogate, which YAML
  accepts and no UTF-8 text can hold) is a located problem, and the value goes on with U+FFFD in
  its place, so that nothing later (pydantic, the database, a terminal) fails to encode it.

Positions are 1-based (line, column), the form editors and :class:`kiln.errors.SpecProblem` use.
The YAML version is ruamel's default, 1.2: ``yes``/``no``/``on``/``off`` are strings, not booleans.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from kiln.errors import SpecProblem, WorkflowInvalid

__all__ = ["Document", "Loc", "Mark", "YamlFloat", "YamlInt", "format_loc", "load_yaml"]

Loc = tuple[str | int, ...]

_TAG = "tag:yaml.org,2002:"
_MAP, _SEQ, _MERGE = f"{_TAG}map", f"{_TAG}seq", f"{_TAG}merge"
_STR, _NULL, _BOOL, _INT, _FLOAT = (f"{_TAG}{t}" for t in ("str", "null", "bool", "int", "float"))
# The format has no dates; an unquoted `2024-01-01` stays the text the user wrote.
_TIMESTAMP = f"{_TAG}timestamp"

# A workflow is a few hundred nodes. The budget counts alias expansions too, so a "billion laughs"
# document is refused here instead of making validation walk an exponential tree.
_MAX_NODES = 100_000
_MAX_DEPTH = 64

_SURROGATE = re.compile("[\ud800-\udfff]")
# The line breaks YAML counts lines by (ruamel's reader does the same).
_LINE_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


def format_loc(loc: Loc) -> str:
    """Show a path as users read it: ``("jobs", "lint", "steps", 0)`` → ``jobs.lint.steps[0]``."""
    shown = ""
    for part in loc:
        shown += f"[{part}]" if isinstance(part, int) else f".{part}" if shown else part
    return shown


class YamlInt(int):
    """An int that remembers its YAML text (``0x1F``, ``1_000``, ``010``)."""

    text: str

    def __new__(cls, value: int, text: str) -> YamlInt:
        self = super().__new__(cls, value)
        self.text = text
        return self

    def __reduce__(self) -> tuple[type[YamlInt], tuple[int, str]]:
        return (YamlInt, (int(self), self.text))  # copy and pickle need the text too


class YamlFloat(float):
    """A float that remembers its YAML text (``3.10``, ``1e3``)."""

    text: str

    def __new__(cls, value: float, text: str) -> YamlFloat:
        self = super().__new__(cls, value)
        self.text = text
        return self

    def __reduce__(self) -> tuple[type[YamlFloat], tuple[float, str]]:
        return (YamlFloat, (float(self), self.text))


@dataclass(frozen=True)
class Mark:
    """A position in the file, 1-based."""

    line: int
    column: int


@dataclass
class Document:
    """The data of one YAML document and the positions of its keys and values."""

    filename: str
    data: Any
    #: Where the value at a path starts (for an empty value: where its key is).
    values: dict[Loc, Mark] = field(default_factory=dict)
    #: Where the key that names the value at a path is written (mappings only).
    keys: dict[Loc, Mark] = field(default_factory=dict)
    #: Problems found while reading that do not stop the validation: duplicate keys, odd tags.
    problems: list[SpecProblem] = field(default_factory=list)

    def mark(self, loc: Loc, *, key: bool = False) -> Mark:
        """Return the position of the node at ``loc``, or of its nearest existing ancestor.

        Parameters
        ----------
        loc
            A path in the document; parts that do not exist (a missing key, a pydantic tag) are
            skipped by falling back to the longest prefix that does.
        key
            Prefer the position of the key over that of the value, e.g. for an unknown key.

        Returns
        -------
        Mark
            The position; ``1:1`` if nothing on the path is known.
        """
        if key and loc in self.keys:
            return self.keys[loc]
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.values:
                return self.values[loc[:end]]
        return Mark(1, 1)

    def problem(self, loc: Loc, mark: Mark, message: str) -> SpecProblem:
        """Build a problem located in this document."""
        return SpecProblem(self.filename, mark.line, mark.column, loc, message)


class _TooComplex(Exception):
    """The document exceeds the node or depth budget."""


def load_yaml(text: str, filename: str) -> Document:
    """Read one YAML document, recording the position of every key and value.

    Parameters
    ----------
    text
        The YAML text.
    filename
        The name problems are reported under.

    Returns
    -------
    Document
        The data (``None`` for an empty document) and positions. Problems that do not prevent
        reading the rest (duplicate keys, unsupported tags) are in ``Document.problems``.

    Raises
    ------
    WorkflowInvalid
        The text is not YAML (a syntax error), holds several documents, or is too large or
        nested too deeply to be a workflow. Nothing after such an error can be trusted, so this
        is the only problem reported.
    """
    yaml = YAML(typ="safe", pure=True)
    try:
        root = yaml.compose(text)
    except MarkedYAMLError as exc:
        raise WorkflowInvalid([_syntax_problem(exc, filename)]) from exc
    except ReaderError as exc:
        raise WorkflowInvalid([_reader_problem(exc, text, filename)]) from exc
    except YAMLError as exc:
        raise WorkflowInvalid([SpecProblem(filename, 1, 1, (), f"invalid YAML: {exc}")]) from exc

    doc = Document(filename=filename, data=None)
    if root is None:
        return doc
    builder = _Builder(doc, yaml)
    try:
        doc.data = builder.build(root, (), None, depth=0)
    except _TooComplex as exc:
        raise WorkflowInvalid([doc.problem((), _mark(root), str(exc))]) from exc
    return doc


def _syntax_problem(exc: MarkedYAMLError, filename: str) -> SpecProblem:
    where = exc.problem_mark or exc.context_mark
    line, column = (where.line + 1, where.column + 1) if where is not None else (1, 1)
    message = f"invalid YAML: {exc.problem or exc.context}"
    context = exc.context_mark
    if exc.context and exc.problem and context is not None:
        message += f" ({exc.context} at line {context.line + 1}, column {context.column + 1})"
    return SpecProblem(filename, line, column, (), message)


def _reader_problem(exc: ReaderError, text: str, filename: str) -> SpecProblem:
    """A character YAML does not allow in its text (a control character, a lone surrogate)."""
    position = exc.position if isinstance(exc.position, int) else 0
    before = text[:position]
    breaks = list(_LINE_BREAK.finditer(before))
    line = len(breaks) + 1
    column = position - (breaks[-1].end() if breaks else 0) + 1
    character = exc.character if isinstance(exc.character, int) else 0
    kind = "a lone surrogate, not a character" if 0xD800 <= character <= 0xDFFF else "not allowed in YAML"
    return SpecProblem(filename, line, column, (), f"invalid YAML: character U+{character:04X} is {kind}")


def _valid_text(text: str) -> tuple[str, str | None]:
    """``text`` with every lone surrogate replaced by U+FFFD, and the message naming the first."""
    found = _SURROGATE.search(text)
    if found is None:
        return text, None
    message = (
        f"`\\u{ord(found.group()):04x}` is a lone surrogate escape, not a character; "
        "write the character itself or escape it whole (`\\U0001F600`)"
    )
    return _SURROGATE.sub("\ufffd", text), message


def _mark(node: Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


def _short(tag: str) -> str:
    """Write a standard tag the way it is written in YAML: ``!!binary``."""
    return "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag


def _is_empty(node: Node) -> bool:
    """True for a value that is not written at all (``key:`` followed by nothing)."""
    return isinstance(node, ScalarNode) and node.tag == _NULL and node.value == ""


class _Builder:
    def __init__(self, doc: Document, yaml: YAML) -> None:
        self.doc = doc
        self.constructor = yaml.constructor
        self.budget = _MAX_NODES
        self.active: set[int] = set()  # ids of collections being built: an alias to one recurses

    def build(self, node: Node, loc: Loc, key_mark: Mark | None, *, depth: int) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise _TooComplex(f"the document is too large (over {_MAX_NODES} values, aliases expanded)")
        if depth > _MAX_DEPTH:
            raise _TooComplex(f"the document is nested more than {_MAX_DEPTH} levels deep")
        # An empty value's own mark is wherever the scanner stopped (often the next line): the key
        # is where the user looks.
        self.doc.values[loc] = key_mark if key_mark is not None and _is_empty(node) else _mark(node)
        if isinstance(node, ScalarNode):
            return self._scalar(node, loc)
        if id(node) in self.active:
            self._report(loc, node, "an alias refers to itself")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                self._check_tag(node, _MAP, loc)
                return self._mapping(node, loc, depth)
            self._check_tag(node, _SEQ, loc)
            assert isinstance(node, SequenceNode)
            return [self.build(item, (*loc, i), None, depth=depth + 1) for i, item in enumerate(node.value)]
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: MappingNode, loc: Loc, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        # Merges first, so that the keys written in this mapping override them, values and marks.
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                self._merge(result, value_node, loc, depth)
        explicit: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                continue
            if not isinstance(key_node, ScalarNode):
                self._report(loc, key_node, "a key must be a plain name, not a list or a mapping")
                continue
            key, invalid = _valid_text(str(key_node.value))
            if invalid is not None:
                self._report((*loc, key), key_node, invalid)
            if key in explicit:
                first = self.doc.keys[(*loc, key)]
                self.doc.problems.append(
                    self.doc.problem(
                        (*loc, key),
                        _mark(key_node),
                        f"duplicate key `{key}` (first defined at line {first.line}, column {first.column})",
                    )
                )
                continue
            explicit.add(key)
            self.doc.keys[(*loc, key)] = _mark(key_node)
            result[key] = self.build(value_node, (*loc, key), _mark(key_node), depth=depth + 1)
        return result

    def _merge(self, result: dict[str, Any], value: Node, loc: Loc, depth: int) -> None:
        """Apply a YAML merge key (``<<: *defaults``); merged keys keep the marks of their anchor."""
        sources = value.value if isinstance(value, SequenceNode) else [value]
        own_mark = self.doc.values[loc]
        # In `<<: [*a, *b]` the earlier mapping wins, so apply them last to first.
        for source in reversed(sources):
            if not isinstance(source, MappingNode):
                self._report(loc, source, "`<<` must merge a mapping")
                continue
            merged = self.build(source, loc, None, depth=depth)
            if isinstance(merged, dict):  # None when the source is the mapping itself (reported)
                result.update(merged)
        self.doc.values[loc] = own_mark  # building the source recorded the anchor's position here

    def _report(self, loc: Loc, node: Node, message: str) -> None:
        self.doc.problems.append(self.doc.problem(loc, _mark(node), message))

    def _check_tag(self, node: Node, expected: str, loc: Loc) -> None:
        if node.tag != expected:
            self._report(loc, node, f"unsupported YAML tag `{_short(node.tag)}`")

    def _scalar(self, node: ScalarNode, loc: Loc) -> Any:
        tag, text = node.tag, node.value
        if tag in (_STR, _TIMESTAMP):
            text, invalid = _valid_text(text)
            if invalid is not None:
                self._report(loc, node, invalid)
            return text
        if tag not in (_NULL, _BOOL, _INT, _FLOAT):
            self._report(loc, node, f"unsupported YAML tag `{_short(tag)}`")
            return text
        try:
            value = self.constructor.construct_object(node, deep=True)
        except (YAMLError, ValueError):
            # Only an explicit tag (`!!int abc`) gets here: implicit ones match by pattern.
            self._report(loc, node, f"`{text}` is not a valid `{_short(tag)}`")
            return text
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int):
            return YamlInt(value, text)
        return YamlFloat(value, text)
