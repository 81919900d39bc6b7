"""ShapeNet names: synset ids of ShapeNetCore categories, and the layouts of its releases.

Used by the mesh-folder and R2N2 readers to name categories and find models.

Layouts:
    ShapeNetCore v1: ``ROOT/<synset>/<model_id>/model.obj``
    ShapeNetCore v2: ``ROOT/<synset>/<model_id>/models/model_normalized.obj``
    3D-R2N2:         ``ShapeNetRendering/<synset>/<model_id>/rendering/NN.png`` and
                     ``ShapeNetVox32/<synset>/<model_id>/model.binvox``
"""

from __future__ import annotations

import re

__all__ = ["R2N2_SYNSETS", "SYNSETS", "category_name", "is_synset"]

# ShapeNetCore's 55 categories (taxonomy.json); the 13 of 3D-R2N2 are R2N2_SYNSETS.
SYNSETS: dict[str, str] = {
    "02691156": "airplane",
    "02747177": "trash_bin",
    "02773838": "bag",
    "02801938": "basket",
    "02808440": "bathtub",
    "02818832": "bed",
    "02828884": "bench",
    "02843684": "birdhouse",
    "02871439": "bookshelf",
    "02876657": "bottle",
    "02880940": "bowl",
    "02924116": "bus",
    "02933112": "cabinet",
    "02942699": "camera",
    "02946921": "can",
    "02954340": "cap",
    "02958343": "car",
    "02992529": "cellphone",
    "03001627": "chair",
    "03046257": "clock",
    "03085013": "keyboard",
    "03207941": "dishwasher",
    "03211117": "display",
    "03261776": "earphone",
    "03325088": "faucet",
    "03337140": "file_cabinet",
    "03467517": "guitar",
    "03513137": "helmet",
    "03593526": "jar",
    "03624134": "knife",
    "03636649": "lamp",
    "03642806": "laptop",
    "03691459": "loudspeaker",
    "03710193": "mailbox",
    "03759954": "microphone",
    "03761084": "microwave",
    "03790512": "motorbike",
    "03797390": "mug",
    "03928116": "piano",
    "03938244": "pillow",
    "03948459": "pistol",
    "03991062": "pot",
    "04004475": "printer",
    "04074963": "remote",
    "04090263": "rifle",
    "04099429": "rocket",
    "04225987": "skateboard",
    "04256520": "sofa",
    "04330267": "stove",
    "04379243": "table",
    "04401088": "telephone",
    "04460130": "tower",
    "04468005": "train",
    "04530566": "watercraft",
    "04554684": "washer",
}

R2N2_SYNSETS: tuple[str, ...] = (
    "02691156", "02828884", "02933112", "02958343", "03001627", "03211117", "03636649",
    "03691459", "04090263", "04256520", "04379243", "04401088", "04530566",
)  # fmt: skip

_SYNSET = re.compile(r"^n?\d{8}$")


def is_synset(name: str) -> bool:
    """True for an 8-digit WordNet synset id such as ``"03001627"``."""
    return bool(_SYNSET.match(name))


def category_name(folder: str) -> str:
    """The category of a ShapeNet synset folder (``"03001627"`` -> ``"chair"``); other
    folder names are returned unchanged."""
    return SYNSETS.get(folder, folder)
