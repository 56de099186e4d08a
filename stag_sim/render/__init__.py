"""The point renderer: Scene4D clouds splatted into any camera, with objects at any pose (Stag-1's geometric core).

``from stag_sim.render import PointRenderer, RenderConfig`` — on the CPU, compiled numba kernels (the default when
numba imports; :mod:`stag_sim.render.kernels`, imported only then) or the vectorised numpy fallback
(``RenderConfig(backend="numpy")``); ``RenderConfig(backend="torch", device="cuda")`` runs the same algorithm with
torch (imported lazily, only then).
"""

from stag_sim.render.renderer import BACKENDS, PointRenderer, RenderConfig, RenderResult

__all__ = ["BACKENDS", "PointRenderer", "RenderConfig", "RenderResult"]
