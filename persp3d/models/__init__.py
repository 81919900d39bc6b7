"""Networks: image encoders and 3D occupancy decoders (they never import the transformer)."""

__all__: list[str] = []
