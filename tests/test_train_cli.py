"""The command line: clear messages (exit status 2, no traceback) for bad arguments, and the README's
example end to end: one process, a resumed run, and two processes under torchrun."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from transformer_nb.checkpoint import read_checkpoint
from transformer_nb.train import apply_override, main, read_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.fixture
def run_files(tmp_path):
    (tmp_path / "text.txt").write_text("the cat sat on the mat. " * 30, encoding="utf-8")
    (tmp_path / "run.json").write_text(json.dumps({
        "model": {"l_max": 16, "d_e": 16, "H": 2, "L": 1},
        "train": {"max_steps": 3, "progress": False}, "data": {"batch_size": 4}}))
    return tmp_path


@pytest.mark.parametrize("extra, message", [
    (["--learning_rate=0.1"], "no table has a field 'learning_rate'"),
    (["--train.lr=fast"], "--train.lr: expected a float, got 'fast'"),
    (["--model.heads=2"], "DTransformerConfig has no field 'heads'"),
    (["--optim.lr=1"], "unknown table 'optim'"),
    (["--data=missing.txt"], "data file missing.txt does not exist"),
    (["--model.H=3"], "d_e = 16 is not divisible by the number of heads H = 3"),
    (["--warmup_steps=-1"], "warmup_steps must be at least 0"),
    (["--parallel=zero3"], "parallel must be one of"),
    (["--resume"], "there is no"),
    (["--lr"], "write overrides as --field=value"),
])
def test_bad_arguments_get_a_message_and_exit_status_2(run_files, capsys, extra, message):
    argv = [str(run_files / "run.json"), "--data", str(run_files / "text.txt"),
            "--out", str(run_files / "out"), *extra]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (run_files / "out" / "checkpoint.pt").exists()


def test_a_bad_config_file_is_named(run_files, capsys):
    (run_files / "bad.toml").write_text("[model]\nL = 'two'\n")
    with pytest.raises(SystemExit):
        main([str(run_files / "bad.toml"), "--out", str(run_files / "out")])
    assert "bad.toml [model] L: expected an int, got str 'two'" in capsys.readouterr().err


def test_the_readme_example_trains_in_one_and_two_processes(tmp_path):
    script = re.search(r"<!-- cli:start -->\s*```bash\n(.*?)```", README, re.S).group(1)
    bin_dir = str(Path(sys.executable).parent)  # python and torchrun of this environment
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"],
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 process(es)" in done.stdout and "2 process(es)" in done.stdout
    runs = tmp_path / "runs"
    one, two = (read_checkpoint(runs / r / "checkpoint.pt") for r in ("tiny", "tiny2"))
    assert one["step"] == 80 and two["step"] == 60
    history = json.loads((runs / "tiny" / "history.json").read_text())
    assert history["step"] == list(range(1, 81))  # the resumed run continued the record
    assert history["loss"][-1] < history["loss"][0] - 1  # it learned something
    two_history = json.loads((runs / "tiny2" / "history.json").read_text())
    gap = max(abs(a - b) for a, b in zip(two_history["loss"], history["loss"][:60]))
    assert gap < 1e-4  # 2 processes train as 1 (float32: reduction order only)


@pytest.mark.parametrize("option, field, value", [
    ("--model.qk_norm=all", "qk_norm", "all"),
    ("--model.qk_norm=true", "qk_norm", True),
    ("--model.embed_scale=exact", "embed_scale", "exact"),
    ("--model.embed_scale=no", "embed_scale", False),
    ("--model.window=none", "window", None),
])
def test_overrides_of_fields_that_take_a_flag_or_a_word(option, field, value):
    "qk_norm and embed_scale are True/False or a word ('all', 'exact'): both reach the config."
    settings = {"model": {}, "train": {}, "data": {}}
    apply_override(settings, option)
    assert settings["model"][field] == value and type(settings["model"][field]) is type(value)


def test_a_config_file_may_give_a_flag_or_a_word(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"model": {"qk_norm": "all",
                                                             "embed_scale": True}}))
    assert read_config(tmp_path / "run.json")["model"] == {"qk_norm": "all", "embed_scale": True}
    (tmp_path / "bad.json").write_text(json.dumps({"model": {"embed_scale": 2}}))
    with pytest.raises(ValueError, match="embed_scale: expected a bool|str"):
        read_config(tmp_path / "bad.json")
