"""Networks: image encoders and 3D occupancy decoders (they never import the transformer)."""

from persp3d.models.occupancy import OccupancyPredictor, PredictorConfig

__all__ = ["OccupancyPredictor", "PredictorConfig"]
