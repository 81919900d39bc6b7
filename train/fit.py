"""``persp3d fit``: shape from silhouettes, one object at a time.

    persp3d fit --data DIR --id ID [--resolution 64] [--refine-cameras] [--box CX,CY,CZ,SIZE]
        [--holdout 1,5,9] --out DIR

Fits a dense volume to the object's calibrated silhouettes by gradient descent through the
perspective transformer (:func:`persp3d.fitting.fit_volume`), computes the classical visual
hull of the same views as the reference, and reports the fitted volume's 3D IoU against the
ground truth next to the hull's, and against the hull itself. Every option of the fit is a
field of :class:`persp3d.fitting.FitConfig`, and its flag is made from the field (name,
default and help): the defaults live there only.

``--box`` sets the volume's box (else the dataset sample's own ``box``, as imported captures
carry, else ``VolumeBox()``). ``--holdout 1,5,9`` leaves those views out of the fit and out of
the visual hull, and reports how well each one's silhouette is matched by the fit's
projection and by the hull carved from the training views. ``--perturb-rotation`` and
``--perturb-translation`` start from disturbed cameras (for demonstrations and tests);
``--refine-cameras`` corrects them jointly with the volume; ``--reference-fit`` also fits
with the true cameras, so that the silhouette IoU the refinement reaches can be compared
with what the true cameras give. Writes ``volume.npz`` (occupancy, logits, box, cameras),
``visual_hull.npz`` and ``report.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import json
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

import numpy as np
import torch

from persp3d.cameras import Cameras
from persp3d.checking import check_projections
from persp3d.fitting import FitConfig, FitResult, fit_volume, perturb_cameras, visual_hull
from persp3d.metrics import iou_3d
from persp3d.train.check import find_sample
from persp3d.volume import VolumeBox

__all__ = [
    "add_arguments",
    "add_config_arguments",
    "camera_errors",
    "config_from_args",
    "field_docs",
    "fit",
    "parse_box",
    "parse_views",
    "run",
    "save_volume",
]


# -- a dataclass's fields as command-line flags ---------------------------------------------
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of the dataclass ``cls`` (read from its source), with
    its lines joined."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected integers like 100,60; got {text!r}") from err


def _flag_type(hint: Any) -> tuple[Any, bool]:
    """``(kind, optional)`` of a field's type hint: kind is ``bool``, ``int``, ``float``,
    ``str`` or ``tuple`` (comma-separated integers)."""
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        if len(args) != 1:
            raise TypeError(f"no flag for the type {hint!r}")
        hint = args[0]
    if typing.get_origin(hint) is tuple:
        return tuple, optional
    if hint in (bool, int, float, str):
        return hint, optional
    raise TypeError(f"no flag for the type {hint!r}")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of the dataclass ``cls``: ``--field-name`` with the field's default
    and docstring; booleans get ``--name`` / ``--no-name``; tuples of ints are written
    ``1,2,3``. The values land on ``args.<field_name>``."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} options")
    for f in dataclasses.fields(cls):
        kind, _ = _flag_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        text = docs.get(f.name, "").replace("%", "%%") + f" (default: {shown})"
        if kind is bool:
            group.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                help=text,
            )  # fmt: skip
        else:
            parse = _int_list if kind is tuple else kind
            group.add_argument(flag, dest=f.name, type=parse, default=default, help=text)


def config_from_args(args: argparse.Namespace, cls: type = FitConfig) -> Any:
    """The dataclass ``cls`` from the flags :func:`add_config_arguments` made (values are
    checked by ``cls`` itself: ``ValueError`` naming the field)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


# -- the command ----------------------------------------------------------------------------
def camera_errors(cameras: Cameras, reference: Cameras) -> dict[str, float]:
    """Mean and largest rotation angle (degrees) and centre distance between two ``(V,)``
    camera sets (no alignment: a joint fit may also move the whole scene a little)."""
    with torch.no_grad():
        rel = cameras.R.double() @ reference.R.double().transpose(-1, -2)
        cos = ((rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
        angle = torch.rad2deg(torch.arccos(cos))
        shift = (cameras.centers.double() - reference.centers.double()).norm(dim=-1)
    return {
        "rotation_deg_mean": float(angle.mean()),
        "rotation_deg_max": float(angle.max()),
        "centre_mean": float(shift.mean()),
        "centre_max": float(shift.max()),
    }


def save_volume(path: str | Path, result: FitResult, up: Any = None) -> Path:
    """Write a fit as ``.npz``: ``occupancy``, ``logits`` ``(R, R, R)``, the box and the
    cameras it was fitted with, through :func:`persp3d.datasets.volumes.save_volume` when
    that module is there (else ``occupancy``, ``logits``, ``box_center``, ``box_size``,
    ``K``, ``R``, ``t``, ``image_size``); ``persp3d check`` and ``persp3d view`` read it.
    ``up`` (3,), the capture's up direction, goes into the file's meta for the viewer."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cams = result.cameras.detach().cpu()
    occupancy = result.occupancy[0, 0].cpu().numpy().astype(np.float32)
    logits = result.logits[0, 0].cpu().numpy().astype(np.float32)
    try:
        from persp3d.datasets import volumes
    except ImportError:
        volumes = None  # type: ignore[assignment]
    if volumes is not None and hasattr(volumes, "save_volume"):
        return Path(
            volumes.save_volume(
                path, occupancy, result.box, logits=logits, cameras=cams,
                meta={
                    "source": "persp3d fit",
                    "fit": result.config.to_dict(),
                    **({} if up is None else {"up": [float(u) for u in np.asarray(up).ravel()]}),
                },
            )
        )  # fmt: skip
    np.savez_compressed(
        path,
        occupancy=occupancy,
        logits=logits,
        box_center=np.asarray(result.box.center, dtype=np.float64),
        box_size=np.asarray(result.box.size, dtype=np.float64),
        K=cams.K.numpy(),
        R=cams.R.numpy(),
        t=cams.t.numpy(),
        image_size=np.asarray(cams.image_size),
    )
    return path


def parse_box(text: str | VolumeBox | None) -> VolumeBox | None:
    """``"cx,cy,cz,size"`` as a :class:`VolumeBox` (a cube), ``None`` as ``None``."""
    if text is None or isinstance(text, VolumeBox):
        return text
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or not all(np.isfinite(values)) or values[3] <= 0:
        raise ValueError(f"--box must be CX,CY,CZ,SIZE with a finite size > 0; got {text!r}")
    return VolumeBox(center=tuple(values[:3]), size=values[3])


def parse_views(text: str | list[int] | tuple[int, ...] | None, n_views: int) -> list[int]:
    """Held-out view indices from ``"1,5,9"`` (or a list), checked against ``n_views``: each
    in ``[0, n_views)``, none repeated, at least one view left to fit."""
    if text is None or text == "" or text == []:
        return []
    if isinstance(text, str):
        try:
            views = [int(v) for v in text.split(",")]
        except ValueError as err:
            raise ValueError(f"--holdout must be view indices like 1,5,9; got {text!r}") from err
    else:
        views = [int(v) for v in text]
    bad = [v for v in views if not 0 <= v < n_views]
    if bad:
        raise ValueError(f"--holdout views must be in [0, {n_views}); got {bad}")
    if len(set(views)) != len(views):
        raise ValueError(f"--holdout views must not repeat; got {views}")
    if len(views) >= n_views:
        raise ValueError(f"--holdout leaves no view to fit ({len(views)} of {n_views} held out)")
    return sorted(views)


def _silhouette_means(volume, cameras, silhouettes, box) -> dict[str, float]:
    return check_projections(volume, cameras, silhouettes, box).mean


def _holdout_report(
    result: FitResult, hull: torch.Tensor, cams: Cameras, sil: torch.Tensor, views: list[int]
) -> dict[str, Any]:
    """Silhouette IoU of the fit and of the training views' hull in the held-out views."""
    fit_scores = check_projections(result.occupancy, cams, sil, result.box).scores["iou"]
    hull_scores = check_projections(hull, cams, sil, result.box).scores["iou"]
    return {
        "views": views,
        "fit": {"mean": float(fit_scores.mean()), "per_view": fit_scores.tolist()},
        "visual_hull": {"mean": float(hull_scores.mean()), "per_view": hull_scores.tolist()},
        "fit_minus_visual_hull": float(fit_scores.mean() - hull_scores.mean()),
    }


def fit(
    data: str | Path,
    item_id: str,
    out: str | Path | None = None,
    *,
    config: FitConfig | None = None,
    box: VolumeBox | str | None = None,
    holdout: str | list[int] | None = None,
    perturb_rotation: float = 0.0,
    perturb_translation: float = 0.0,
    perturb_seed: int = 0,
    reference_fit: bool = False,
    threads: int | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Fit object ``item_id`` of ``data``; write the volume, the hull and the report to
    ``out`` (default ``fit-<id>``) and return the report.

    Args:
        config: the fit's options (default ``FitConfig()``); ``overrides`` change fields of
            it (``resolution=32``, ``refine_cameras=True``...).
        box: the volume box (or ``"cx,cy,cz,size"``); default the sample's ``box``, else
            ``VolumeBox()``.
        holdout: views (indices) left out of the fit and of the visual hull; the report's
            ``holdout`` scores them.
        perturb_rotation, perturb_translation, perturb_seed: disturb the fit's cameras (see
            :func:`persp3d.fitting.perturb_cameras`).
        reference_fit: also fit with the true cameras on the same schedule.
        threads: torch CPU threads.
    """
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1; got {threads}")
        torch.set_num_threads(threads)
    cfg = config if config is not None else FitConfig()
    if overrides:
        cfg = cfg.replace(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
        )
    sample = find_sample(data, item_id)
    all_true, all_sil = sample["cameras"], sample["silhouettes"]
    V = int(all_sil.shape[0])
    held = parse_views(holdout, V)
    train_views = [v for v in range(V) if v not in held]
    box_ = parse_box(box) or sample.get("box") or VolumeBox()
    true_cams, sil = all_true[train_views], all_sil[train_views]
    all_cams = all_true
    perturbed = bool(perturb_rotation or perturb_translation)
    if perturbed:
        all_cams = perturb_cameras(
            all_true, perturb_rotation, perturb_translation, target=box_.center, seed=perturb_seed
        )
    cams = all_cams[train_views]
    # The schedule made explicit, so that the reference fit runs the same one.
    cfg = cfg.replace(
        steps=tuple(cfg.stage_steps()),
        views_per_step=(0 if cfg.refine_cameras else 8)
        if cfg.views_per_step is None
        else cfg.views_per_step,
    )
    result = fit_volume(cams, sil, box=box_, config=cfg)
    resolution = cfg.resolution
    # The reference hull carves with the cameras the fit ended with (refined ones, if any).
    hull = visual_hull(result.cameras, sil, resolution, box_)
    occupancy = result.occupancy
    report: dict[str, Any] = {
        "data": str(data),
        "id": item_id,
        "category": sample.get("category"),
        "views": len(train_views),
        "image_size": list(sil.shape[-2:]),
        "box": {"center": list(box_.center), "size": list(box_.size)},
        "settings": {**cfg.to_dict(), "threads": torch.get_num_threads()},
        "refine_cameras": cfg.refine_cameras,
        "seconds": result.seconds,
        "steps": len(result.history),
        "misfit": result.misfit,
        "iou_vs_visual_hull": float(iou_3d(occupancy, hull)[0]),
        "silhouettes": {
            "fit": _silhouette_means(occupancy, result.cameras, sil, box_),
            "visual_hull": _silhouette_means(hull, result.cameras, sil, box_),
        },
        "loss": [
            {"step": h["step"], "resolution": h["resolution"], "loss": h["loss"]}
            for h in result.history[:: max(1, len(result.history) // 50)]
        ],
    }
    if held:
        # Held-out views keep the cameras they were given (no correction was fitted there).
        report["holdout"] = _holdout_report(result, hull, all_cams[held], all_sil[held], held)
    if "voxels" in sample:
        gt = sample["voxels"][None]
        report["iou_3d"] = {
            "fit": float(iou_3d(occupancy, gt)[0]),
            "visual_hull": float(iou_3d(hull, gt)[0]),
            "ground_truth_resolution": int(gt.shape[-1]),
        }
    if perturbed:
        report["perturbation"] = {
            "rotation_deg": perturb_rotation,
            "translation": perturb_translation,
            "seed": perturb_seed,
            "start_error": camera_errors(cams, true_cams),
            "final_error": camera_errors(result.cameras, true_cams),
        }
        if result.correction is not None:
            report["perturbation"]["correction"] = result.correction.summary()
        if "voxels" in sample:
            # What the hull of the disturbed cameras would give, and the hull of the truth.
            for name, c in (
                ("visual_hull_start_cameras", cams),
                ("visual_hull_true_cameras", true_cams),
            ):
                report["iou_3d"][name] = float(iou_3d(visual_hull(c, sil, resolution, box_), gt)[0])
    if reference_fit:
        ref = fit_volume(true_cams, sil, box=box_, config=cfg.replace(refine_cameras=False))
        ref_sil = _silhouette_means(ref.occupancy, true_cams, sil, box_)
        report["reference_fit"] = {
            "seconds": ref.seconds,
            "silhouettes": ref_sil,
            "silhouette_iou_gap": ref_sil["iou"] - report["silhouettes"]["fit"]["iou"],
            **({"iou_3d": float(iou_3d(ref.occupancy, gt)[0])} if "voxels" in sample else {}),
        }
    out_dir = Path(out) if out is not None else Path(f"fit-{item_id}")
    up = sample.get("up")
    save_volume(out_dir / "volume.npz", result, None if up is None else torch.as_tensor(up).cpu())
    np.savez_compressed(
        out_dir / "visual_hull.npz",
        occupancy=hull[0, 0].numpy().astype(np.uint8),
        box_center=np.asarray(box_.center),
        box_size=np.asarray(box_.size),
    )
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _summary(report: dict[str, Any]) -> str:
    lines = [
        f"{report['id']}: fitted {report['settings']['resolution']}^3 in "
        f"{report['seconds']:.1f} s ({report['steps']} steps)",
        f"  3D IoU vs visual hull: {report['iou_vs_visual_hull']:.4f}",
    ]
    if "iou_3d" in report:
        lines.append(
            f"  3D IoU vs ground truth: fit {report['iou_3d']['fit']:.4f}, "
            f"visual hull {report['iou_3d']['visual_hull']:.4f}"
        )
    sil = report["silhouettes"]
    lines.append(
        f"  mean silhouette IoU: fit {sil['fit']['iou']:.4f}, "
        f"visual hull {sil['visual_hull']['iou']:.4f}"
    )
    if "holdout" in report:
        h = report["holdout"]
        lines.append(
            f"  held-out views {','.join(map(str, h['views']))}: silhouette IoU fit "
            f"{h['fit']['mean']:.4f}, visual hull {h['visual_hull']['mean']:.4f}"
        )
    if "perturbation" in report:
        p = report["perturbation"]
        lines.append(
            f"  cameras vs true: rotation {p['start_error']['rotation_deg_mean']:.2f} -> "
            f"{p['final_error']['rotation_deg_mean']:.2f} deg, centre "
            f"{p['start_error']['centre_mean']:.4f} -> {p['final_error']['centre_mean']:.4f}"
        )
    if "reference_fit" in report:
        r = report["reference_fit"]
        lines.append(
            f"  with the true cameras: silhouette IoU {r['silhouettes']['iou']:.4f} "
            f"(gap {r['silhouette_iou_gap']:+.4f})"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="dataset folder holding the object")
    parser.add_argument("--id", required=True, dest="item_id", help="the object's id")
    parser.add_argument("--out", help="output folder (default: fit-<ID>)")
    parser.add_argument(
        "--box",
        help="the volume box CX,CY,CZ,SIZE in the cameras' world (default: the dataset's box "
        "for the object, else the unit box at the origin)",
    )
    parser.add_argument(
        "--holdout",
        help="views left out of the fit and of the visual hull, e.g. 1,5,9; report.json "
        "scores both in them",
    )
    parser.add_argument(
        "--perturb-rotation", type=float, default=0.0, help="disturb each camera by DEG degrees"
    )
    parser.add_argument(
        "--perturb-translation",
        type=float,
        default=0.0,
        help="move each camera centre by this fraction of its distance to the box",
    )
    parser.add_argument("--perturb-seed", type=int, default=0, help="seed of the disturbance")
    parser.add_argument(
        "--reference-fit",
        action="store_true",
        help="also fit with the true cameras and report the silhouette IoU gap",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    add_config_arguments(parser, FitConfig)


def run(args: argparse.Namespace) -> int:
    try:
        report = fit(
            args.data,
            args.item_id,
            args.out,
            config=config_from_args(args),
            box=args.box,
            holdout=args.holdout,
            perturb_rotation=args.perturb_rotation,
            perturb_translation=args.perturb_translation,
            perturb_seed=args.perturb_seed,
            reference_fit=args.reference_fit,
            threads=args.threads,
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(_summary(report))
    out = Path(args.out) if args.out else Path(f"fit-{args.item_id}")
    print(f"wrote {out / 'volume.npz'}, {out / 'visual_hull.npz'} and {out / 'report.json'}")
    return 0
