"""Validation helpers used at persp3d's public boundary.

Every public function checks its inputs once, here, and raises ``ValueError`` (or
``TypeError``) naming the argument, what was expected and what came.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["check_finite", "check_image_size", "check_shape", "check_tensor"]


def check_tensor(x: object, name: str) -> torch.Tensor:
    """Raise ``TypeError`` unless ``x`` is a floating-point tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
    return x


def check_shape(x: torch.Tensor, spec: str, name: str) -> dict[str, int]:
    """Check ``x`` against a declarative shape ``spec`` and return the named sizes.

    ``spec`` is a space-separated list of dimension names: an integer literal must match
    exactly, a name binds the size (the same name twice must agree), and a leading ``...``
    accepts any number of leading dimensions. Example: ``check_shape(K, "... 3 3", "K")``,
    ``check_shape(volume, "B C D H W", "volume")``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    tokens = spec.split()
    variadic = bool(tokens) and tokens[0] == "..."
    fixed = tokens[1:] if variadic else tokens
    shape = tuple(x.shape)
    pretty = "(" + ", ".join(tokens) + ")"
    if (variadic and len(shape) < len(fixed)) or (not variadic and len(shape) != len(fixed)):
        raise ValueError(f"{name} must have shape {pretty}; got shape {shape}")
    sizes: dict[str, int] = {}
    for token, size in zip(fixed, shape[len(shape) - len(fixed) :]):
        if token.isdigit():
            if size != int(token):
                raise ValueError(f"{name} must have shape {pretty}; got shape {shape}")
        elif token in sizes and sizes[token] != size:
            raise ValueError(
                f"{name} must have shape {pretty} with equal sizes for {token}; got shape {shape}"
            )
        else:
            sizes[token] = size
    return sizes


def check_finite(x: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or infinite values."""
    if not bool(torch.isfinite(x).all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(f"{name} must be finite; got {n_nan} NaN and {n_inf} infinite values")


def check_image_size(image_size: object, name: str = "image_size") -> tuple[int, int]:
    """Return ``image_size`` as ``(H, W)`` positive ints, or raise ``ValueError``.

    Accepts an int (square), a pair of ints (Python or NumPy), or a 1-D tensor or array of
    two integers.
    """
    if isinstance(image_size, torch.Tensor) or type(image_size).__module__ == "numpy":
        image_size = image_size.tolist()  # tensors, arrays and NumPy integers
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    if not isinstance(image_size, Sequence) or len(image_size) != 2:
        raise ValueError(f"{name} must be (H, W) or an int; got {image_size!r}")
    out = []
    for value in image_size:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if type(value).__module__ == "numpy" and not isinstance(value, (bool, float)):
            value = value.item()  # a NumPy integer, e.g. from a metadata array
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name} must hold integers (H, W); got {image_size!r}")
        if value <= 0:
            raise ValueError(f"{name} must be positive (H, W); got {tuple(image_size)!r}")
        out.append(value)
    return out[0], out[1]
