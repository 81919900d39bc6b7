"""Fast projection kernels (fused CPU and GPU ray walkers); the pure-PyTorch path is the reference."""

__all__: list[str] = []
