from __future__ import annotations

from batchgen.core.jobs import JobSpec, job_key


def test_key_ignores_parameter_order() -> None:
    a = JobSpec("openai-sora-2-pro", {"prompt": "ox", "seconds": "4", "aspect_ratio": "landscape"})
    b = JobSpec("openai-sora-2-pro", {"aspect_ratio": "landscape", "seconds": "4", "prompt": "ox"})
    assert a.key == b.key


def test_key_changes_with_model_params_and_repeat() -> None:
    base = job_key("m", {"prompt": "ox"}, 0)
    assert job_key("m2", {"prompt": "ox"}, 0) != base
    assert job_key("m", {"prompt": "yak"}, 0) != base
    assert job_key("m", {"prompt": "ox"}, 1) != base
    assert job_key("m", {"prompt": "ox", "seconds": "4"}, 0) != base
    # a string "4" and an int 4 are different requests to the API
    assert job_key("m", {"prompt": "ox", "seconds": 4}, 0) != job_key("m", {"prompt": "ox", "seconds": "4"}, 0)
