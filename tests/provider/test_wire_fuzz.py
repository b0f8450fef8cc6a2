"""The task-result parser takes any decoded JSON (random, or a real answer mutated) and never
raises: odd fields become "unknown", an unusable seed is noted, text stays text."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from batchgen.provider.wire import MAX_SEED, parse_task_result

REAL = {"task": {"task_id": "7f3a", "status": "TASK_STATUS_SUCCEED", "reason": "", "eta": 0,
                 "progress_percent": 100},
        "extra": {"seed": "158881667", "debug_info": {"submit_time_ms": "1", "complete_time_ms": 9}},
        "images": [{"image_url": "https://img.example/x.png", "image_url_ttl": "3600",
                    "image_type": "png"}]}

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                max_size=4),
                    max_leaves=20)
FUZZ = settings(max_examples=200, deadline=None)


def _holds(data) -> None:
    result = parse_task_result(data)
    assert isinstance(result.task.reason, str) and isinstance(result.status, str)
    seed = result.extra.seed
    assert seed is None or (isinstance(seed, int) and -1 <= seed <= MAX_SEED)
    json.dumps([seed, result.extra.seed_unusable, result.provider_duration(), result.task.eta,
                [(i.image_url, i.image_url_ttl) for i in result.images]])   # storable as JSON
    result.finished, result.succeeded, result.failed


@FUZZ
@given(JSON)
def test_any_json_parses_to_a_result(data) -> None:
    _holds(data)


@FUZZ
@given(st.sampled_from([("task",), ("extra",), ("images",), ("task", "status"), ("task", "reason"),
                        ("task", "eta"), ("extra", "seed"), ("extra", "debug_info"),
                        ("images", 0), ("images", 0, "image_url"), ("images", 0, "image_url_ttl")]),
       JSON | st.integers(min_value=2 ** 63) | st.text().map(lambda t: "9" * 30 + t))
def test_a_real_answer_with_any_field_replaced_parses(path, value) -> None:
    data = json.loads(json.dumps(REAL))
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    _holds(data)
