"""The entry points: a workflow file or text → a validated :class:`~kiln.spec.models.Workflow`.

Every problem is collected before raising (YAML-level ones such as duplicate keys, cross-job
references, and every pydantic error), so a user fixes a file in one round trip, not one error
at a time. Only a YAML syntax error stops early: nothing after it can be trusted.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from kiln.errors import SpecProblem, UsageError, WorkflowInvalid
from kiln.spec.loader import format_loc, load_yaml
from kiln.spec.models import Workflow
from kiln.spec.problems import validation_problems
from kiln.spec.references import reference_problems

__all__ = ["load_workflow", "parse_workflow"]


def parse_workflow(text: str, filename: str = "kiln.yml") -> Workflow:
    """Parse and validate a workflow from YAML text.

    Parameters
    ----------
    text
        The YAML document.
    filename
        The name problems are reported under (``FILE:LINE:COL: message``).

    Returns
    -------
    Workflow
        The validated workflow; ``jobs`` keeps the file's order, which is the order they run in.

    Raises
    ------
    WorkflowInvalid
        With every problem found, in file order, each with its 1-based line and column.
    """
    doc = load_yaml(text, filename)
    if doc.data is None:
        raise WorkflowInvalid(
            [SpecProblem(filename, 1, 1, (), "the workflow is empty; it needs at least `name` and `jobs`")]
        )
    problems = list(doc.problems)
    problems += [
        doc.problem(loc, doc.mark(loc), f"{format_loc(loc)}: {message}")
        for loc, message in reference_problems(doc.data)
    ]
    try:
        # by_name=False: in YAML only the documented keys (`timeout`, `memory`) are valid; the
        # normalized field names (`timeout_s`) are for kiln's own JSON.
        workflow = Workflow.model_validate(doc.data, by_alias=True, by_name=False)
    except ValidationError as exc:
        problems += validation_problems(exc, doc, Workflow)
    if problems:
        raise WorkflowInvalid(_in_file_order(problems))
    return workflow


def load_workflow(path: str | Path) -> Workflow:
    """Read and validate a workflow file.

    Parameters
    ----------
    path
        The YAML file (UTF-8, with or without a byte-order mark).

    Returns
    -------
    Workflow
        The validated workflow.

    Raises
    ------
    WorkflowInvalid
        The file is not UTF-8 text or not a valid workflow; every problem is listed, located
        under ``str(path)``.
    UsageError
        The file cannot be read (missing, a directory, no permission).
    """
    filename = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the workflow file {filename}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        line, column = raw.count(b"\n", 0, exc.start) + 1, exc.start - line_start + 1
        message = f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x})"
        raise WorkflowInvalid([SpecProblem(filename, line, column, (), message)]) from exc
    return parse_workflow(text, filename)


def _in_file_order(problems: list[SpecProblem]) -> list[SpecProblem]:
    # The same node can be reached twice (a merged anchor, a duplicate seen by two checks).
    unique = {(p.line, p.column, p.message): p for p in problems}
    return sorted(unique.values(), key=lambda p: (p.line, p.column))
