"""persp3d.train: configs, the training loop, checkpoints, evaluation and the command line."""

__all__: list[str] = []
