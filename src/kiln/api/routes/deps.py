"""Dependencies shared by the route modules."""

from __future__ import annotations

from fastapi import Request

from kiln.api.plane import ControlPlane


def plane(request: Request) -> ControlPlane:
    return request.app.state.plane
