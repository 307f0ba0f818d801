"""An OUT that holds another run's outputs is refused in one line that says what to do, so two
runs never mix unnoticed; the same pipeline and seed (a resumed run, another shard) may write."""

from __future__ import annotations

import pytest
from augment_helpers import make_class_folder, output_files

SPEC = "Fliplr(0.5); Affine(rotate=(-20, 20))"


@pytest.fixture
def src(tmp_path):
    make_class_folder(tmp_path / "src")
    return tmp_path / "src"


def test_a_second_run_into_the_same_out_is_refused(src, tmp_path, invoke):
    out = tmp_path / "out"
    first = invoke("augment", src, out, "--aug", SPEC, "--seed", "1", "--workers", "1")
    assert first.exit_code == 0, first.output
    kept = output_files(out)
    record = (out / "pipeline.yaml").read_text()
    for args, why in [(("--aug", SPEC, "--seed", "2"), "seed 1, not 2"),
                      (("--preset", "light", "--seed", "1"), "another pipeline"),
                      (("--aug", SPEC), "seed 1"),  # a random seed: another run
                      (("--aug", SPEC, "--seed", "2", "--format", "webp"), "seed 1")]:
        result = invoke("augment", src, out, *args, "--workers", "1")
        assert result.exit_code == 1, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert lines[0].startswith(f"error: {out} already holds") and why in lines[0], lines
        assert "--skip-existing" in lines[1] and "--overwrite" in lines[1]
        assert output_files(out) == kept and (out / "pipeline.yaml").read_text() == record
    # The same pipeline and seed is the same run: it may write there (resume, other shards).
    again = invoke("augment", src, out, "--aug", SPEC, "--seed", "1", "--skip-existing",
                   "--workers", "1")
    assert again.exit_code == 0 and output_files(out) == kept
    resumed = invoke("augment", src, out, "--aug", SPEC, "--skip-existing", "--workers", "1")
    assert resumed.exit_code == 0, resumed.output  # the recorded seed is taken
    # --overwrite writes over it, and the record then describes the new run.
    forced = invoke("augment", src, out, "--aug", SPEC, "--seed", "2", "--overwrite",
                    "--workers", "1")
    assert forced.exit_code == 0, forced.output
    assert "seed: 2" in (out / "pipeline.yaml").read_text()


def test_an_out_with_unrecorded_files_is_refused(src, tmp_path, invoke):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = invoke("augment", src, out, "--seed", "0", "--workers", "1")
    assert result.exit_code == 1 and "files that no tb augment run recorded" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert invoke("augment", src, empty, "--seed", "0", "--workers", "1").exit_code == 0
