"""Expansion: every matrix feature, job ids, file names, captions, laziness."""

from __future__ import annotations

import itertools
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from batchgen.errors import ManifestError
from batchgen.job import Job
from batchgen.manifest.loader import load_manifest
from batchgen.manifest.expand import job_hash
from batchgen.manifest.expand import _ENCODER, canonical

CASTLE = """\
name: castle-sweep
prompt: "a {style} painting of a castle on a hill at dusk"
output_format: png
matrix:
  style: [oil, watercolor]
  seed: [1, 2, 3]
  size: ["1024*1024", "768*1344"]
  loras:
    - []
    - [{path: "https://example.com/loras/ghibli.safetensors", scale: [0.5, 1.0]}]
"""


def jobs_of(folder: Path, text: str, files: dict[str, str | bytes] | None = None) -> list[Job]:
    return list(load(folder, text, files).jobs())


def load(folder: Path, text: str, files: dict[str, str | bytes] | None = None):  # type: ignore[no-untyped-def]
    for rel, content in (files or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            (folder / rel).write_bytes(content)
        else:
            (folder / rel).write_text(content, encoding="utf-8")
    path = folder / "m.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_manifest(path)


def test_core_manifest_expands_to_36_in_written_order(tmp_path: Path) -> None:
    jobs = jobs_of(tmp_path, CASTLE)
    assert len(jobs) == 36
    assert [j.index for j in jobs] == list(range(36))
    assert len({j.job_id for j in jobs}) == 36
    # first axis outermost, last innermost
    assert [j.axes["loras"] for j in jobs[:3]] == ["none", "ghibli@0.5", "ghibli@1"]
    assert jobs[0].axes == {"style": "oil", "seed": 1, "size": "1024*1024", "loras": "none"}
    assert jobs[-1].axes["style"] == "watercolor"
    assert jobs[1].request == {
        "prompt": "a oil painting of a castle on a hill at dusk", "seed": 1, "size": "1024*1024",
        "loras": [{"path": "https://example.com/loras/ghibli.safetensors", "scale": 0.5}],
        "output_format": "png", "enable_base64_output": False}
    assert jobs[0].extension == "png"


def test_request_defaults_and_optional_fields(tmp_path: Path) -> None:
    (job,) = jobs_of(tmp_path, 'prompt: "a cat"\n')
    assert job.request == {"prompt": "a cat", "seed": -1, "size": "1024*1024", "loras": [],
                           "output_format": "webp", "enable_base64_output": False}
    (job,) = jobs_of(tmp_path, """\
        model: z-image-turbo
        prompt: "a cat"
        image_url: "https://e.com/ref.png"
        strength: 1
        mask: "https://e.com/mask.png"
        """)
    assert "loras" not in job.request
    assert (job.request["image_url"], job.request["strength"], job.request["mask"]) == \
        ("https://e.com/ref.png", 1.0, "https://e.com/mask.png")
    assert isinstance(job.request["strength"], float)


def test_job_id_is_a_hash_of_the_canonical_request_the_same_everywhere(tmp_path: Path) -> None:
    (job,) = jobs_of(tmp_path, 'prompt: "a cat"\nseed: 1\n')
    # sha256 of {"model":...,"request":...} with sorted keys, compact, UTF-8: fixed forever
    assert job.job_id == "5cbedfbf8b50f7b4"
    (job,) = jobs_of(tmp_path, """\
        prompt: "un café, été"
        seed: 42
        size: "512*512"
        output_format: png
        loras: [{path: "https://example.com/loras/ghibli.safetensors", scale: 0.5}]
        """)
    assert job.job_id == "653986e1b4d92d21" == job_hash("z-image-turbo-lora", job.request)


def test_ids_are_stable_across_loads_and_passes(tmp_path: Path) -> None:
    m = load(tmp_path, CASTLE)
    first = [(j.job_id, j.request) for j in m.jobs()]
    assert [(j.job_id, j.request) for j in m.jobs()] == first
    assert [(j.job_id, j.request) for j in load(tmp_path, CASTLE).jobs()] == first


def test_changing_one_axis_value_changes_only_the_cells_it_touches(tmp_path: Path) -> None:
    before = {j.job_id: j.axes for j in jobs_of(tmp_path, CASTLE)}
    after = {j.job_id: j.axes for j in jobs_of(tmp_path, CASTLE.replace("seed: [1, 2, 3]",
                                                                         "seed: [1, 2, 4]"))}
    assert {i for i in before if i not in after} == {i for i, a in before.items() if a["seed"] == 3}
    assert {i for i in after if i not in before} == {i for i, a in after.items() if a["seed"] == 4}
    assert len(set(before) & set(after)) == 24


def test_numeric_ranges_are_inclusive_and_rounded(tmp_path: Path) -> None:
    jobs = jobs_of(tmp_path, """\
        prompt: "{w}"
        matrix:
          w: {from: 0, to: 1.5, step: 0.25}
        """)
    assert [j.axes["w"] for j in jobs] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    jobs = jobs_of(tmp_path, """\
        prompt: "x"
        image_url: "https://e.com/r.png"
        matrix:
          strength: {from: 0.1, to: 0.3, step: 0.1}
          seed: {from: 10, to: 16, step: 3}
        """)
    assert [(j.request["strength"], j.request["seed"]) for j in jobs] == [
        (0.1, 10), (0.1, 13), (0.1, 16), (0.2, 10), (0.2, 13), (0.2, 16),
        (0.3, 10), (0.3, 13), (0.3, 16)]


def test_random_seeds_are_reproducible_and_in_range(tmp_path: Path) -> None:
    text = 'prompt: "x"\nmatrix:\n  seed: {random: 50, base: 7}\n'
    seeds = [j.request["seed"] for j in jobs_of(tmp_path, text)]
    assert seeds == [j.request["seed"] for j in jobs_of(tmp_path, text)]
    assert seeds[:3] == [695425564, 2035525362, 323946139]  # random.Random(7), 31 bits each
    assert all(0 <= s <= 2147483647 for s in seeds) and len(set(seeds)) == 50
    other = [j.request["seed"] for j in jobs_of(tmp_path, text.replace("base: 7", "base: 8"))]
    assert other != seeds


def test_txt_file_values_are_literal_with_provenance(tmp_path: Path) -> None:
    jobs = jobs_of(tmp_path, """\
        prompt: "x"
        matrix:
          prompt: {file: data/prompts.txt}
          seed: [1, 2]
        """, {"data/prompts.txt": "a {not a template} cat\n\n  a dog  \n"})
    assert [j.request["prompt"] for j in jobs] == ["a {not a template} cat"] * 2 + ["a dog"] * 2
    assert jobs[2].axes == {"prompt": "a dog", "prompt_source": "data/prompts.txt:3", "seed": 1}


def test_txt_file_of_seeds_becomes_numbers(tmp_path: Path) -> None:
    jobs = jobs_of(tmp_path, 'prompt: "x"\nmatrix:\n  seed: {file: seeds.txt}\n',
                   {"seeds.txt": "5\n6\n"})
    assert [j.request["seed"] for j in jobs] == [5, 6]


def test_csv_rows_set_fields_and_variables(tmp_path: Path) -> None:
    jobs = jobs_of(tmp_path, """\
        prompt: "a {subject}, {style}"
        matrix:
          rows: {file: rows.csv}
        """, {"rows.csv": 'subject,seed,style\ncat,1,"oil, thick"\n\ndog,2,ink\n'})
    assert [(j.request["prompt"], j.request["seed"]) for j in jobs] == [
        ("a cat, oil, thick", 1), ("a dog, ink", 2)]
    assert jobs[1].axes == {"rows": {"subject": "dog", "seed": "2", "style": "ink"},
                            "rows_source": "rows.csv:4"}


def test_jsonl_rows(tmp_path: Path) -> None:
    jobs = jobs_of(tmp_path, """\
        matrix:
          rows: {file: rows.jsonl}
        """, {"rows.jsonl": '{"prompt": "a {x}", "seed": 3}\n\n{"prompt": "b", "seed": 4}\n'})
    assert [(j.request["prompt"], j.request["seed"]) for j in jobs] == [("a {x}", 3), ("b", 4)]
    assert jobs[1].axes["rows_source"] == "rows.jsonl:3"


def test_a_bad_data_row_raises_at_its_file_and_line_while_streaming(tmp_path: Path) -> None:
    m = load(tmp_path, 'prompt: "{subject}"\nmatrix:\n  rows: {file: r.csv}\n',
             {"r.csv": "subject,seed\ncat,1\ndog,x\n"})
    jobs = m.jobs()
    assert next(jobs).request["seed"] == 1
    with pytest.raises(ManifestError) as info:
        next(jobs)
    assert str(info.value).startswith(f"{tmp_path / 'r.csv'}:3: rows.seed: must be a whole number")


def test_inline_rows_and_zip(tmp_path: Path) -> None:
    rows = jobs_of(tmp_path, """\
        prompt: "a {subject}"
        matrix:
          pair:
            - {subject: cat, seed: 1}
            - {subject: dog, seed: 2}
          size: ["512*512", "768*768"]
        """)
    assert [(j.request["prompt"], j.request["seed"], j.request["size"]) for j in rows] == [
        ("a cat", 1, "512*512"), ("a cat", 1, "768*768"), ("a dog", 2, "512*512"), ("a dog", 2, "768*768")]
    assert rows[0].axes["pair"] == {"subject": "cat", "seed": 1}
    zipped = jobs_of(tmp_path, """\
        prompt: "a {subject}"
        matrix:
          pair: {zip: {subject: [cat, dog, owl], seed: [1, 2, 3]}}
        """)
    assert [(j.request["prompt"], j.request["seed"]) for j in zipped] == [
        ("a cat", 1), ("a dog", 2), ("a owl", 3)]


def test_named_sets_and_scale_ranges_expand_with_labels(tmp_path: Path) -> None:
    jobs = jobs_of(tmp_path, """\
        prompt: "x"
        matrix:
          loras:
            - []
            - [{path: "https://e.com/a/detail.safetensors?dl=1", scale: {from: 0, to: 1, step: 0.5}}]
            - name: mix
              loras:
                - {path: "https://e.com/ink.safetensors", scale: [0.5, 1]}
                - {path: "https://e.com/paper.safetensors"}
        """)
    assert [j.axes["loras"] for j in jobs] == [
        "none", "detail@0", "detail@0.5", "detail@1", "mix@0.5+1", "mix@1+1"]
    assert jobs[4].request["loras"] == [{"path": "https://e.com/ink.safetensors", "scale": 0.5},
                                        {"path": "https://e.com/paper.safetensors", "scale": 1.0}]


def test_include_adds_cells_and_exclude_drops_them(tmp_path: Path) -> None:
    jobs = jobs_of(tmp_path, """\
        prompt: "a {style} cat"
        seed: 9
        matrix:
          style: [oil, ink]
          loras:
            - []
            - {name: soft, loras: [{path: "https://e.com/s.safetensors", scale: [0.5, 1]}]}
        exclude:
          - {style: ink, loras: soft}
          - {style: oil, loras: "soft@1"}
        include:
          - {style: pencil, seed: 1, loras: "soft@1"}
          - {style: chalk}
        """)
    assert [(j.axes.get("style"), j.axes.get("loras"), j.request["seed"]) for j in jobs] == [
        ("oil", "none", 9), ("oil", "soft@0.5", 9), ("ink", "none", 9),
        ("pencil", "soft@1", 1), ("chalk", None, 9)]
    assert jobs[-1].request["prompt"] == "a chalk cat" and jobs[-1].request["loras"] == []


def test_exclude_by_row_variable(tmp_path: Path) -> None:
    jobs = jobs_of(tmp_path, """\
        prompt: "a {subject}"
        matrix:
          rows: [{subject: cat, seed: 1}, {subject: dog, seed: 2}]
          size: ["512*512", "768*768"]
        exclude:
          - {subject: dog, size: "768*768"}
        """)
    assert len(jobs) == 3 and jobs[-1].request["prompt"] == "a dog"


def test_repeat_gives_replica_ids(tmp_path: Path) -> None:
    jobs = jobs_of(tmp_path, 'prompt: "a cat"\nrepeat: 3\nmatrix:\n  seed: [1, 2]\n')
    h1, h2 = job_hash("z-image-turbo-lora", jobs[0].request), job_hash("z-image-turbo-lora", jobs[3].request)
    assert [j.job_id for j in jobs] == [h1, f"{h1}-1", f"{h1}-2", h2, f"{h2}-1", f"{h2}-2"]
    assert [j.replica for j in jobs] == [0, 1, 2, 0, 1, 2]
    assert jobs[0].request == jobs[1].request and jobs[0].request is not jobs[1].request


def test_identical_cells_become_replicas(tmp_path: Path) -> None:
    jobs = jobs_of(tmp_path, 'prompt: "a cat"\nfilename: "{job_id}_{take}"\nmatrix:\n  take: [a, b]\n')
    assert jobs[1].job_id == f"{jobs[0].job_id}-1" and jobs[1].replica == 1
    assert [j.name for j in jobs] == [f"{jobs[0].job_id}_a", f"{jobs[0].job_id}-1_b"]


def test_templates_vars_format_specs_and_escapes(tmp_path: Path) -> None:
    jobs = jobs_of(tmp_path, """\
        name: t
        prompt: "{{literal}} {adj} {style} cat, seed {seed}, {size}"
        vars: {adj: fluffy}
        filename: "{name}/{style}/{index:04d}-s{seed:>5}-r{replica}"
        caption: "{prompt} | {loras} | {job_id}"
        matrix:
          style: [oil]
          seed: [7]
        """)
    (job,) = jobs
    assert job.request["prompt"] == "{literal} fluffy oil cat, seed 7, 1024*1024"
    assert job.name == "t/oil/0000-s____7-r0"
    assert job.caption == f"{job.request['prompt']} | none | {job.job_id}"


def test_caption_true_writes_the_prompt(tmp_path: Path) -> None:
    (job,) = jobs_of(tmp_path, 'prompt: "a {x}"\ncaption: true\nvars: {x: cat}\n')
    assert job.caption == "a cat"
    (job,) = jobs_of(tmp_path, 'prompt: "a cat"\n')
    assert job.caption is None


def test_prompt_templates_in_a_matrix_list(tmp_path: Path) -> None:
    jobs = jobs_of(tmp_path, """\
        prompt: unused
        matrix:
          animal: [cat, dog]
          prompt: ["a {animal}", "two {animal}s"]
        """)
    assert [j.request["prompt"] for j in jobs] == ["a cat", "two cats", "a dog", "two dogs"]
    assert jobs[1].axes["prompt"] == "two {animal}s"


def test_filename_values_are_sanitized_and_stay_inside(tmp_path: Path) -> None:
    jobs = jobs_of(tmp_path, """\
        prompt: "x {where}"
        filename: "{where}/{long}"
        matrix:
          where: ["../../etc", "..", "a b/c:d", "ok"]
        vars:
          long: "%s"
        """ % ("y" * 150))
    names = [j.name for j in jobs]
    assert names[0].startswith("______etc/") and names[1].startswith("__/")
    assert names[2].startswith("a_b_c_d/")
    root = (tmp_path / "images").resolve()
    for name in names:
        assert (root / name).resolve().is_relative_to(root)
        assert all(0 < len(seg) <= 100 and seg not in (".", "..") for seg in name.split("/"))


def test_image_url_template_renders_per_job(tmp_path: Path) -> None:
    jobs = jobs_of(tmp_path, """\
        prompt: "x"
        image_url: "https://e.com/{ref}.png"
        strength: 0.5
        matrix:
          ref: [a, b]
        """)
    assert [j.request["image_url"] for j in jobs] == ["https://e.com/a.png", "https://e.com/b.png"]


def test_expansion_is_lazy(tmp_path: Path) -> None:
    start = time.perf_counter()
    m = load(tmp_path, 'prompt: "{w} {x}"\nmatrix:\n  w: {from: 1, to: 1000}\n'
                       '  x: {from: 1, to: 1000}\n')
    first = list(itertools.islice(m.jobs(), 3))
    assert time.perf_counter() - start < 2
    assert m.size == 1_000_000
    assert [j.request["prompt"] for j in first] == ["1 1", "1 2", "1 3"]


def test_data_file_not_utf8_is_located(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load(tmp_path, 'prompt: "{s}"\nmatrix:\n  s: {file: s.txt}\n', {"s.txt": b"ok\ncaf\xe9\n"})
    (problem,) = info.value.problems
    assert (problem.file, problem.line) == (str(tmp_path / "s.txt"), 2)


def test_an_inner_file_axis_is_reread_for_every_outer_value(tmp_path: Path) -> None:
    jobs = jobs_of(tmp_path, """\
        matrix:
          seed: [1, 2]
          rows: {file: r.jsonl}
        """, {"r.jsonl": '{"prompt": "a"}\n{"prompt": "b"}\n'})
    assert [(j.request["seed"], j.request["prompt"], j.axes["rows_source"]) for j in jobs] == [
        (1, "a", "r.jsonl:1"), (1, "b", "r.jsonl:2"), (2, "a", "r.jsonl:1"), (2, "b", "r.jsonl:2")]


def test_include_with_a_written_lora_set_and_label_in_file_name(tmp_path: Path) -> None:
    jobs = jobs_of(tmp_path, """\
        prompt: "x"
        filename: "{loras}/{job_id}"
        matrix:
          seed: [1]
        include:
          - {seed: 2, loras: [{path: "https://e.com/soft.safetensors", scale: 0.5}]}
        """)
    assert jobs[0].name.startswith("none/")
    assert jobs[1].name.startswith("soft_0p5/") and jobs[1].axes == {"seed": 2, "loras": "soft@0.5"}
    assert jobs[1].request["loras"] == [{"path": "https://e.com/soft.safetensors", "scale": 0.5}]


# -- the canonical JSON that job ids hash ----------------------------------------------------------

_FLOATS = st.floats(allow_nan=False, allow_infinity=False)
_REQUESTS = st.fixed_dictionaries(
    {"prompt": st.text(), "seed": st.integers(min_value=-(2**70), max_value=2**70), "size": st.text(max_size=12)},
    optional={"strength": _FLOATS,
              "loras": st.lists(st.fixed_dictionaries({"path": st.text(max_size=20), "scale": _FLOATS}),
                                max_size=3),
              "enable_base64_output": st.booleans(), "mask": st.none() | st.text(max_size=10)})


@settings(max_examples=200, deadline=None)
@given(_REQUESTS)
def test_the_canonical_json_is_byte_for_byte_what_json_writes(request: dict) -> None:
    try:
        expected = _ENCODER.encode({"model": "m", "request": request}).encode("utf-8")
    except UnicodeEncodeError:   # a lone surrogate: no encoder makes bytes of it
        return
    assert canonical("m", request) == expected


def test_small_and_huge_floats_and_big_ints_keep_their_ids() -> None:
    for request in ({"prompt": "p", "strength": 1e-05}, {"prompt": "p", "loras": [{"path": "x", "scale": 1e16}]},
                    {"prompt": "p", "seed": 2**65}):
        assert canonical("m", request) == _ENCODER.encode({"model": "m", "request": request}).encode()
