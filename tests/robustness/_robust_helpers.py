"""Helpers of the robustness suite (imported by its conftest and tests)."""

from __future__ import annotations

import json
from pathlib import Path

# Config overrides of a training run that takes well under a second per step.
TINY_TRAIN = [
    "data.kind=folder",
    "model.image_size=16",
    "model.resolution=8",
    "model.width=4",
    "model.latent_dim=8",
    "model.decoder_width=8",
    "train.batch_size=2",
    "train.views_per_step=2",
    "train.projection_size=8",
    "train.depth_samples=8",
    "train.val_objects=2",
    "train.eval_every=4",
    "train.checkpoint_every=2",
    "train.log_every=2",
    "train.progress=false",
    "train.threads=1",
    "data.voxel_resolution=8",
    "train.projection_backend=reference",  # no kernel compilation in each fresh process
]


def make_tiny_dataset(root: Path, per_category: int = 4) -> Path:
    from persp3d.datasets.procedural import ProceduralConfig, generate_procedural

    config = ProceduralConfig(
        categories=("mug", "table"),
        per_category=per_category,
        n_views=4,
        image_size=16,
        voxel_resolutions=(8,),
        store_depth=False,
        splits=(0.5, 0.25, 0.25),
    )
    generate_procedural(root, config, workers=0, progress=False)
    return root


def manifest_of(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())
