"""The README's picture, cut from a run's report: the best and the median objects (network
input, ground-truth and predicted silhouettes, the predicted volume beside the ground truth
in 3D) under a line with the run's headline figures.

    python scripts/readme_figure.py runs/default --out docs/report.png   # make readme-figure

Reads ``RUN/report.json`` and the pictures in ``RUN/report_files/`` (``persp3d report RUN``
writes them; ``make train`` runs it) and writes a palette PNG (kept under 300 KB).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MAX_BYTES = 300_000
WIDTH = 1000


def _crop(picture, margin: int = 8):
    """``picture`` cut to its non-white content plus ``margin`` pixels."""
    import numpy as np

    ink = (np.asarray(picture) < 245).any(axis=2)  # (H, W)
    if not ink.any():
        return picture
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    return picture.crop(
        (
            max(0, cols[0] - margin),
            max(0, rows[0] - margin),
            min(picture.width, cols[-1] + 1 + margin),
            min(picture.height, rows[-1] + 1 + margin),
        )
    )


def _training(run: Path, step: int) -> str:
    """``"15 min, 799 steps on procedural-quick"``: how long, and on which data."""
    import csv

    import yaml

    parts = []
    steps = run / "steps.csv"
    if steps.is_file():
        with open(steps, newline="") as f:
            rows = list(csv.DictReader(f))
        if rows:
            parts.append(f"{float(rows[-1]['seconds']) / 60:.0f} min")
    parts.append(f"{step} steps")
    config = (
        yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
    )
    root = (config.get("data") or {}).get("root")
    kind = (config.get("data") or {}).get("kind", "procedural")
    return ", ".join(parts) + f" on {Path(root).name if root else kind}"


def compose(run: Path, out: Path, picks: tuple[str, ...] = ("best", "median")) -> Path:
    """Write the figure of ``run`` to ``out``; returns ``out``."""
    from PIL import Image, ImageDraw, ImageFont

    report_json = run / "report.json"
    if not report_json.is_file():
        raise FileNotFoundError(
            f"{report_json}: no report in {run}; make one with `persp3d report {run}` "
            "(make train writes it)"
        )
    report = json.loads(report_json.read_text())
    files = run / "report_files"
    rows = []
    for label in picks:
        sheet = Image.open(files / f"sheet_{label}.png").convert("RGB")
        snap = _crop(Image.open(files / f"snapshot_{label}.png").convert("RGB"))
        snap = snap.resize((round(snap.width * sheet.height / snap.height), sheet.height))
        row = Image.new("RGB", (sheet.width + snap.width, sheet.height), "white")
        row.paste(sheet, (0, 0))
        row.paste(snap, (sheet.width, 0))
        scale = WIDTH / row.width
        rows.append(row.resize((WIDTH, round(row.height * scale)), Image.LANCZOS))
    head = report["headline"]
    lines = [
        f"Trained from silhouettes only ({_training(run, head['step'])}): test 3D IoU "
        f"{head['iou_3d']:.3f}, silhouette IoU {head['sil_iou']:.3f}, visual-hull bound "
        f"{head['hull_iou_3d']:.3f}.",
        "Per object: the network's input; ground-truth (top) and predicted (bottom) "
        "silhouettes; the prediction (blue) beside the ground truth (green) in 3D.",
    ]
    font = ImageFont.load_default(size=14)
    strip = 12 + 20 * len(lines)
    figure = Image.new("RGB", (WIDTH, strip + sum(r.height for r in rows)), "white")
    draw = ImageDraw.Draw(figure)
    for k, line in enumerate(lines):
        draw.text((8, 6 + 20 * k), line, fill=(30, 35, 48), font=font)
    y = strip
    for row in rows:
        figure.paste(row, (0, y))
        y += row.height
    out.parent.mkdir(parents=True, exist_ok=True)
    for colours in (256, 128, 64):
        figure.quantize(colours, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
        if out.stat().st_size <= MAX_BYTES:
            break
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder with a report (persp3d report RUN)")
    parser.add_argument("--out", type=Path, default=Path("docs/report.png"), help="PNG to write")
    args = parser.parse_args(argv)
    try:
        out = compose(args.run, args.out)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({out.stat().st_size // 1000} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
