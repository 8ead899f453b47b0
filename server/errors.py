"""Engine errors to tool errors: the agent sees the engine's message, nothing is swallowed."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from mcp.server.mcpserver.exceptions import ToolError

from autoopt.tools.errors import AutooptError

P = ParamSpec("P")
R = TypeVar("R")
log = logging.getLogger("autoopt")


def tool_errors(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Re-raise AutooptError as ToolError (shown to the model); log anything else."""

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await func(*args, **kwargs)
        except AutooptError as exc:
            raise ToolError(str(exc)) from exc
        except ToolError:
            raise
        except Exception as exc:
            log.exception("tool %s failed", func.__name__)
            raise ToolError(
                f"{func.__name__} failed unexpectedly: {type(exc).__name__}: {exc}. "
                "This is a bug in autoopt; the server log has the traceback."
            ) from exc

    return wrapper
