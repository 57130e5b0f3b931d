"""Which of a trial's pictures become its MLflow images (at most MAX_IMAGES): the similarity
matrix first, then the module grids in module order (module0, module1, ..., module10: numbers
compared as numbers, not as text)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from pipeline.record.tracking import MAX_IMAGES, Tracker, picture_order

MODULES = [f"layer4_module{m}.png" for m in range(12)]


def test_similarity_first_then_modules_by_number() -> None:
    names = sorted([*MODULES, "layer4_similarity.png", "layer4_unsynchronised.png"])  # text order, as globbed
    assert names[:4] == ["layer4_module0.png", "layer4_module1.png", "layer4_module10.png", "layer4_module11.png"]
    assert [p.name for p in picture_order(Path(n) for n in names)] == [
        "layer4_similarity.png", *MODULES, "layer4_unsynchronised.png",
    ]  # fmt: skip


def test_two_layers_keep_both_similarities_first() -> None:
    names = ["b_module10.png", "a_module2.png", "b_similarity.png", "a_similarity.png", "b_module9.png"]
    assert [p.name for p in picture_order(Path(n) for n in names)] == [
        "a_similarity.png", "b_similarity.png", "a_module2.png", "b_module9.png", "b_module10.png",
    ]  # fmt: skip


class _Client:
    def __init__(self) -> None:
        self.keys: list[str] = []

    def log_image(self, run_id: str, image: Any, *, key: str, step: int, synchronous: bool) -> None:
        self.keys.append(key)


def test_the_logged_images_are_the_first_in_that_order(tmp_path: Path) -> None:
    paths = []
    for name in [*MODULES, "layer4_similarity.png"]:
        Image.new("RGB", (4, 4)).save(tmp_path / name)
        paths.append(tmp_path / name)
    tracker = Tracker.__new__(Tracker)  # no store: only the client's calls are looked at
    tracker.client = _Client()
    assert tracker.log_images("run", sorted(paths)) == MAX_IMAGES == 8
    assert tracker.client.keys == ["layer4_similarity", *(f"layer4_module{m}" for m in range(7))]
