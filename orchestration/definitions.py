"""Dagster code location entry point (workspace.yaml: orchestration.definitions:defs)."""

from orchestration.repository import make_repository
from resources.control_plane import ControlPlaneResource

defs = make_repository(ControlPlaneResource())
