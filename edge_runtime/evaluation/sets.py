"""Which items an evaluation calibrates on and which it reports on, grouped by task.

Test files and calibration files are any JSONL files in the ``shared/data`` format; their items are grouped
by ``task`` and calibration items are matched to test items by task. Without calibration files each test
task's items are split in half by a seeded shuffle: one half calibrates, the other is reported.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fallback.errors import ConfigError
from fallback.tasks import TaskItem, load_items


@dataclass
class EvalSets:
    test: dict[str, list[TaskItem]]
    calibration: dict[str, list[TaskItem]]
    note: str

    def all_items(self) -> list[TaskItem]:
        """Calibration then test items, each task's items together (the local model reuses their prefix)."""
        return [item for task in self.test for item in self.calibration[task] + self.test[task]]


def load_files(paths: Sequence[str | Path], limit: int | None) -> list[TaskItem]:
    """The items of each file (the first ``limit`` of each when given); ConfigError on a missing file."""
    items: list[TaskItem] = []
    for path in paths:
        if not Path(path).is_file():
            raise ConfigError(f"{path}: no such file")
        loaded = load_items(path)
        if not loaded:
            raise ConfigError(f"{path}: no items")
        items += loaded[:limit] if limit is not None else loaded
    _check_unique_ids(items)
    return items


def _check_unique_ids(items: Sequence[TaskItem]) -> None:
    counts = Counter(item.id for item in items)
    repeated = sorted(item_id for item_id, count in counts.items() if count > 1)
    if repeated:
        raise ConfigError(f"item ids must be unique across files; repeated: {repeated[:5]}")


def by_task(items: Sequence[TaskItem]) -> dict[str, list[TaskItem]]:
    groups: dict[str, list[TaskItem]] = {}
    for item in items:
        groups.setdefault(item.task, []).append(item)
    return groups


def split_half(items: Sequence[TaskItem], seed: int) -> tuple[list[TaskItem], list[TaskItem]]:
    """(calibration, test): a seeded shuffle cut in half, each half back in file order."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    calibration = set(order[: len(items) // 2])
    return ([item for i, item in enumerate(items) if i in calibration],
            [item for i, item in enumerate(items) if i not in calibration])


def build_sets(test_paths: Sequence[str | Path], calibrate_paths: Sequence[str | Path],
               limit: int | None, seed: int) -> EvalSets:
    tested = by_task(load_files(test_paths, limit))
    if not calibrate_paths:
        halves = {task: split_half(items, seed) for task, items in tested.items()}
        note = f"no --calibrate files: each task's test items split 50/50 by a seeded shuffle (seed {seed})"
        return EvalSets({t: h[1] for t, h in halves.items()}, {t: h[0] for t, h in halves.items()}, note)
    calibration = by_task(load_files(calibrate_paths, limit))
    _check_disjoint(tested, calibration)
    missing = sorted(set(tested) - set(calibration))
    if missing:
        raise ConfigError(f"no calibration items for task(s) {missing}; calibration files have "
                          f"{sorted(calibration)} (or give no --calibrate to split the test items)")
    note = "calibrated on the --calibrate files, matched to test items by task"
    return EvalSets(tested, {task: calibration[task] for task in tested}, note)


def _check_disjoint(tested: dict[str, list[TaskItem]], calibration: dict[str, list[TaskItem]]) -> None:
    test_ids = {item.id for items in tested.values() for item in items}
    shared = sorted(test_ids & {item.id for items in calibration.values() for item in items})
    if shared:
        raise ConfigError(f"calibration and test items overlap ({len(shared)} ids, e.g. {shared[:3]}); "
                          "calibrating on test items would overstate the router")


def check_sizes(sets: EvalSets, minimum: int = 4) -> None:
    for task, items in sets.test.items():
        if len(items) < minimum or len(sets.calibration[task]) < minimum:
            raise ConfigError(f"task {task!r}: {len(sets.calibration[task])} calibration and {len(items)} test "
                              f"items; need at least {minimum} of each")
