"""The one error hierarchy of stag_sim.

Every error the package raises on purpose derives from :class:`StagSimError`, so callers can catch
everything StagDrive-specific with one ``except``. Messages are one line: what was wrong (file, field,
value) and what was expected.
"""

from __future__ import annotations


class StagSimError(Exception):
    """Base class of every error raised on purpose by stag_sim."""


class ValidationError(StagSimError, ValueError):
    """A datatype or argument failed validation (wrong shape, NaN, non-unit quaternion, ...)."""


class SceneError(StagSimError):
    """A scene log or scene cache is missing, corrupt, of the wrong version, or inconsistent."""


class IngestError(SceneError):
    """A source dataset (nuScenes, ...) could not be converted into a scene cache."""


class ScenarioError(StagSimError):
    """A scenario file is malformed or refers to something that does not exist."""


class RendererError(StagSimError):
    """The renderer was given input it cannot render (bad pose, unknown object, ...)."""


class MetricsError(StagSimError, ValueError):
    """A metric was given a trace it cannot score (mismatched lengths, an unknown metric name, ...)."""


class AgentError(StagSimError):
    """An agent could not be built (unknown name, unimportable ``pkg.module:Class``, bad constructor)."""


class EvalError(StagSimError):
    """An evaluation, replay or export could not run (bad backend or worker count, not a run directory, ...)."""


class RefinerError(StagSimError):
    """The diffusion refiner could not be built, loaded, trained or run with the given settings or files."""


class OutputError(StagSimError):
    """A file (image, video, report, cache) could not be written."""


class BridgeError(StagSimError):
    """The CARLA bridge could not connect, or the server misbehaved."""


class MissingExtraError(StagSimError, ImportError):
    """An optional dependency is not installed; the message names the pip extra that provides it."""

    def __init__(self, module: str, extra: str, purpose: str = "") -> None:
        what = f" (needed for {purpose})" if purpose else ""
        super().__init__(
            f"optional dependency '{module}' is not installed{what}: "
            f"install it with  pip install 'stag-sim[{extra}]'"
        )
        self.module = module
        self.extra = extra
