"""Undecodable frames in a prepared split (bit rot, a damaged copy): skipped, counted and listed,
up to a limit, then training stops with an error naming them.

`DecodePairSkippingCorrupt` marks a pair whose JPEG bytes do not decode, `DropCorrupt` filters it
out, so batches stay full and the order stays deterministic (a resumed run skips the same ones).
Every skip is appended to a JSONL file that the loader's worker processes share; the limit
applies to the distinct records listed there.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from typing import Any

import grain

from gsvit_jax.data.transforms import DecodePair
from gsvit_jax.errors import UserError, describe

log = logging.getLogger(__name__)
CORRUPT = 'corrupt'  # the marker field, removed by DropCorrupt
SKIPPED_FILE = 'skipped_records.jsonl'


class CorruptRecordsError(UserError):
    """More undecodable records than the configured limit."""


def record_name(element: dict[str, Any]) -> str:
    return f'{element.get("video_id", "?")}@{float(element.get("timestamp_s", -1)):.2f}s'


def skipped_records(path: str | pathlib.Path) -> list[str]:
    """Distinct records listed in a skipped-records file, in the order first seen."""
    path = pathlib.Path(path)
    if not path.is_file():
        return []
    names = []
    for line in path.read_text().splitlines():
        try:
            names.append(json.loads(line)['record'])
        except (ValueError, KeyError):  # a line cut short by a kill
            continue
    return list(dict.fromkeys(names))


@dataclasses.dataclass
class DecodePairSkippingCorrupt(DecodePair):
    """`DecodePair`, except that a pair that does not decode is marked (`corrupt`), logged and
    listed in `skipped_file`; more than `max_skipped` distinct ones raise `CorruptRecordsError`."""

    skipped_file: str = ''
    max_skipped: int = 100

    def map(self, element: dict[str, Any]) -> dict[str, Any]:
        try:
            return super().map(element)
        except (OSError, ValueError, SyntaxError) as e:  # PIL: unidentified or truncated image
            return self._skip(element, e)

    def _skip(self, element: dict[str, Any], error: Exception) -> dict[str, Any]:
        name = record_name(element)
        reason = describe(error)
        log.warning('skipping frame pair %s: it does not decode (%s)', name, reason)
        with open(self.skipped_file, 'a') as f:
            f.write(json.dumps({'record': name, 'error': reason}) + '\n')
        skipped = skipped_records(self.skipped_file)
        if len(skipped) > self.max_skipped:
            shown = ', '.join(skipped[:10]) + (', ...' if len(skipped) > 10 else '')
            raise CorruptRecordsError(
                f'{len(skipped)} frame pairs do not decode, more than data.max_corrupt_records='
                f'{self.max_skipped}: {shown} (all in {self.skipped_file}). The prepared split is '
                'damaged: prepare it again (python -m tfds_builders.build), or raise the limit')
        return {CORRUPT: True}


class DropCorrupt(grain.transforms.Filter):
    def filter(self, element: dict[str, Any]) -> bool:
        return CORRUPT not in element
