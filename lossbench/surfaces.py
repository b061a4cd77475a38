"""Moved to `lossbench.models.surfaces` (surfaces are model options); kept for old imports."""

from lossbench.models.surfaces import *  # noqa: F403
from lossbench.models.surfaces import __all__  # noqa: F401
