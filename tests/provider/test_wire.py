"""Parsing the provider's task results: the documented example and every disagreement seen."""

from __future__ import annotations

import json

import pytest

from batchgen.provider.wire import parse_task_result

# The response example of the provider's API documentation (getting a task's result), verbatim.
API_MD_EXAMPLE = """
{
  "extra": {"seed": "158881667", "enable_nsfw_detection": false,
            "debug_info": {"request_info": "", "submit_time_ms": "", "execute_time_ms": "", "complete_time_ms": ""}},
  "task": {"task_id": "830d9c90-d53f-4c5a-8009-xxx", "status": "TASK_STATUS_SUCCEED", "reason": "",
           "task_type": "TXT_TO_IMG", "eta": 0, "progress_percent": 0},
  "images": [{"image_url": "https://faas-output-image.s3.ap-southeast-1.amazonaws.com/prod/xxx",
              "image_url_ttl": 3600, "image_type": "jpeg", "nsfw_detection_result": {}}],
  "videos": [], "audios": []
}
"""


def test_the_documented_example_parses() -> None:
    result = parse_task_result(json.loads(API_MD_EXAMPLE))
    assert result.succeeded and result.finished and not result.failed
    assert result.extra.seed == 158881667
    assert result.task.task_id == "830d9c90-d53f-4c5a-8009-xxx"
    assert result.images[0].image_type == "jpeg" and result.images[0].image_url_ttl == 3600
    assert result.provider_duration() is None  # empty debug_info strings are "unknown"


@pytest.mark.parametrize(("seed", "expected"), [
    ("158881667", 158881667), (158881667, 158881667), (" 42 ", 42), ("", None), (None, None),
    ("abc", None), (3.0, 3), (3.5, None), (True, None)])
def test_seed_as_string_int_or_garbage(seed, expected) -> None:
    assert parse_task_result({"extra": {"seed": seed}}).extra.seed == expected


@pytest.mark.parametrize(("eta", "expected"), [(3, 3.0), (2.5, 2.5), ("4", 4.0), ("", None), (None, None), (-1, None)])
def test_eta_int_float_string_or_missing(eta, expected) -> None:
    assert parse_task_result({"task": {"status": "TASK_STATUS_PROCESSING", "eta": eta}}).task.eta == expected


def test_numeric_debug_info_gives_the_provider_duration() -> None:
    result = parse_task_result({"extra": {"debug_info": {"submit_time_ms": "1000", "complete_time_ms": 3500}}})
    assert result.provider_duration() == 2.5


def test_unknown_fields_wrong_shapes_and_full_nsfw_results_are_tolerated() -> None:
    result = parse_task_result({
        "task": {"status": "TASK_STATUS_CANCELED", "new_field": {"x": 1}},
        "extra": {"debug_info": "not an object", "more": [1, 2]},
        "images": [{"image_url": "https://x/y", "nsfw_detection_result": {"valid": True, "confidence": 0.1}},
                   "garbage"],
        "brand_new": True,
    })
    assert result.status == "TASK_STATUS_CANCELED" and not result.finished
    assert len(result.images) == 1 and result.extra.debug_info == {}


@pytest.mark.parametrize("data", [None, [], "text", {"task": "x", "images": "y", "extra": 3}])
def test_answers_of_the_wrong_shape_are_empty_not_crashes(data) -> None:
    result = parse_task_result(data)
    assert result.status == "" and not result.finished and result.images == []


@pytest.mark.parametrize("value", [10 ** 400, "1e999", "nan", "inf", float("inf"), "-inf"])
def test_absurd_numbers_are_unknown_not_crashes(value) -> None:
    result = parse_task_result({"task": {"eta": value, "progress_percent": value}, "extra": {"seed": value}})
    assert result.task.eta is None and result.task.progress_percent is None and result.extra.seed is None
