"""Ingestion: convert source datasets into :class:`~stag_sim.scene_log.SceneLog` (and back out again).

* :mod:`stag_sim.ingest.nuscenes` reads a nuScenes scene through the real nuscenes-devkit (the ``nuscenes``
  extra; imported lazily there and nowhere else).
* :mod:`stag_sim.ingest.nuscenes_export` writes any SceneLog as a small nuScenes-format dataset; it needs no
  devkit.
"""

from stag_sim.ingest.nuscenes_export import export_nuscenes

__all__ = ["export_nuscenes"]
