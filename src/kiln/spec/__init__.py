"""The workflow YAML: parsing, validation with located errors, and the models both sides share.

Pure: no I/O beyond reading the file in :func:`load_workflow`, and no kiln imports except
:mod:`kiln.errors`. The control plane and the runner both depend on these models; their JSON
form (``model_dump(mode="json")``) validates again unchanged.
"""

from kiln.spec.models import Job, Limits, Step, Workflow
from kiln.spec.parsing import load_workflow, parse_workflow
from kiln.spec.schema import workflow_json_schema
from kiln.spec.units import format_duration, format_size, parse_duration, parse_size

__all__ = [
    "Job",
    "Limits",
    "Step",
    "Workflow",
    "format_duration",
    "format_size",
    "load_workflow",
    "parse_duration",
    "parse_size",
    "parse_workflow",
    "workflow_json_schema",
]
