"""The CPU demo as a newcomer runs it: one-line argument errors before the model loads, labelled outputs,
every file written logged."""

import logging

import numpy as np
import pytest
import torch

from framepack_shapes import demo, world


@pytest.fixture
def no_model_load(monkeypatch):
    """Argument errors must come before the model loads: loading fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(demo, "load_transformer", refuse)


@pytest.mark.parametrize("argv, expected", [
    (["--seconds", "-3"], ["argument --seconds", "'-3'", "positive number of seconds", "--seconds 10"]),
    (["--seconds", "nan"], ["argument --seconds", "'nan'"]),
    (["--steps", "0"], ["argument --steps", "'0'", "positive whole number of sampling steps", "--steps 2"]),
    (["--threads", "0"], ["argument --threads", "'0'", "--threads 1"]),
    (["--clip", "-1"], ["argument --clip", "'-1'", ">= 0"]),
    (["--model", "no/such/model.safetensors"], ["argument --model", "no/such/model.safetensors", "is not a file"]),
])
def test_bad_arguments_are_one_line_errors_with_status_2(no_model_load, tmp_path, capsys, argv, expected):
    with pytest.raises(SystemExit) as stopped:
        demo.main(argv + ["--out", str(tmp_path / "out")])
    assert stopped.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("python -m framepack_shapes.demo: error: ")
    for part in expected:
        assert part in message


def test_an_unwritable_out_folder_is_refused_before_the_model_loads(no_model_load, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as stopped:
        demo.main(["--out", str(blocker / "videos")])
    assert stopped.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument --out: cannot write to {blocker / 'videos'}" in message and "--out demo_out" in message


def test_help_says_any_clip_number_names_a_held_out_clip(capsys):
    with pytest.raises(SystemExit):
        demo.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "any number >= 0 names a clip of the test split, which the model never saw" in text


def videos(frames=7):
    spec = world.sample_clip(0, "test")
    truth = demo.to_images(world.render_clip(spec, frames))
    return spec, {"ground_truth": truth, "vanilla": truth.flip(2)}


def test_the_contact_sheet_carries_row_names_frame_times_and_caption():
    spec, rows = videos()
    grid = demo.contact_sheet(list(rows.values()), columns=4)
    sheet = torch.from_numpy(np.array(demo.labelled_sheet(rows, spec.caption, columns=4)))
    assert sheet.shape[0] > grid.shape[0] + 20 and sheet.shape[1] > grid.shape[1] + 40
    left_margin = sheet[-grid.shape[0]:, :sheet.shape[1] - grid.shape[1] - demo.LABEL_PAD]
    top_margin = sheet[:sheet.shape[0] - grid.shape[0] - demo.LABEL_PAD]
    assert (left_margin < 128).any() and (top_margin < 128).any()  # dark text on the white margins


def test_every_comparison_frame_shows_its_time():
    spec, rows = videos()
    frames = demo.labelled_comparison(rows, spec.caption)
    assert len(frames) == 7 and frames[0].size == frames[6].size
    strip = demo.side_by_side(list(rows.values()))
    assert frames[0].size[1] > strip.shape[1]
    tops = [torch.from_numpy(np.array(f))[:frames[0].size[1] - strip.shape[1]] for f in frames]
    assert not torch.equal(tops[0], tops[6])  # "t = 0.0 s" against "t = 0.8 s"


def test_the_demo_writes_and_logs_every_file(tmp_path, caplog):
    model = demo.load_transformer(demo.DEFAULT_MODEL)
    with caplog.at_level(logging.INFO, logger="framepack_shapes.demo"):
        demo.run_demo(model, world.sample_clip(1, "test"), tmp_path, num_sections=1, steps=1)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted([f"{name}.gif" for name in demo.ROWS] + ["comparison.gif", "contact_sheet.png"])
    for name in written:
        assert any(str(tmp_path / name) in record.getMessage() for record in caplog.records), name
    assert any("section 1 of 1" in record.getMessage() for record in caplog.records)
