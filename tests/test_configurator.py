"""configurator.py: the edge cases that break nanoGPT's configurator."""

import subprocess
import sys

import pytest

from configurator import configure
from tests.helpers import REPO


def defaults():
    return {"learning_rate": 6e-4, "batch_size": 32, "compile": "auto", "dataset": "synthetic_stories",
            "run_name": "run", "decay_lr": True, "lr_decay_iters": None}


def run(argv, ns=None):
    ns = ns or defaults()
    return configure(ns, argv=argv), ns


def test_int_accepted_for_float_and_types_kept():
    config, _ = run(["--learning_rate=1", "--batch_size=8", "--decay_lr=False", "--lr_decay_iters=500"])
    assert config["learning_rate"] == 1.0 and isinstance(config["learning_rate"], float)
    assert config["batch_size"] == 8 and config["decay_lr"] is False and config["lr_decay_iters"] == 500


def test_auto_default_takes_a_bool_and_strings_need_no_quotes():
    config, ns = run(["--compile=False", "--dataset=tinystories"])
    assert config["compile"] is False and ns["dataset"] == "tinystories"


def test_value_split_on_first_equals_only():
    config, _ = run(["--run_name=a=b"])
    assert config["run_name"] == "a=b"


def test_a_list_of_numbers_for_a_text_key_is_its_text():
    # --seeds=1337,1338 or --streams=1,8,32 parse as a tuple; a text key takes them as typed
    config, _ = run(["--run_name=1,8,32"])
    assert config["run_name"] == "1,8,32"
    with pytest.raises(ValueError, match="batch_size"):  # the control: a number key still refuses a list
        run(["--batch_size=1,8"])


@pytest.mark.parametrize("arg", ["--batch_size=1.5", "--batch_size=big", "--decay_lr=1"])
def test_wrong_type_is_a_one_line_error(arg):
    with pytest.raises(ValueError, match="batch_size|decay_lr") as e:
        run([arg])
    assert "\n" not in str(e.value)


def test_unknown_key_names_the_closest():
    with pytest.raises(ValueError, match="unknown config key 'learning_rat'.*did you mean learning_rate"):
        run(["--learning_rat=0.1"])


def test_typo_in_config_file_is_an_error_not_a_new_global(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text("batch_size = 64\nbatchsize = 12\n")
    with pytest.raises(ValueError, match="unknown config key 'batchsize'.*did you mean batch_size"):
        run([str(path)])


def test_config_file_then_command_line_wins(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text("import math\nbatch_size = 64\nlearning_rate = batch_size * 1e-5\n")
    config, _ = run([str(path), "--batch_size=16"])
    assert config["batch_size"] == 16 and config["learning_rate"] == pytest.approx(64e-5)


def test_missing_config_file_is_a_clear_error():
    with pytest.raises(OSError, match="cannot read config file"):
        run(["config/does_not_exist.py"])


def test_kernel_arguments_are_ignored(monkeypatch):
    # what Jupyter/Kaggle put in sys.argv when a script's text is pasted into a cell
    monkeypatch.setattr("sys.argv", ["/usr/lib/python3/site-packages/ipykernel_launcher.py", "-f",
                                     "/root/.local/share/jupyter/runtime/kernel-1234.json"])
    ns = defaults()
    assert configure(ns) == defaults()
    # and a '-f kernel.json' pair among real arguments is skipped too
    config, _ = run(["-f", "/tmp/kernel-abc.json", "--batch_size=4"])
    assert config["batch_size"] == 4


def test_keys_are_the_plain_lowercase_globals():
    ns = {**defaults(), "_private": 1, "MAX_SIZE": 3, "helper": len, "table": {"a": 1}, "__name__": "__main__"}
    assert configure(ns, argv=[]) == defaults()
    with pytest.raises(ValueError, match="unknown config key 'MAX_SIZE'"):
        run(["--MAX_SIZE=4"], ns)


@pytest.mark.parametrize("raised, one_line", [("ValueError('--n_head=5 must divide n_embd')", True),
                                              ("FileNotFoundError('no checkpoint at out/ckpt.pt')", True),
                                              ("RuntimeError('a bug')", False)])
def test_user_errors_end_in_one_line_and_bugs_keep_their_traceback(raised, one_line):
    code = f"from configurator import report_errors_in_one_line\nreport_errors_in_one_line()\nraise {raised}\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    if one_line:
        message = raised.split("'")[1]
        assert proc.stderr == f"error: {message}\n"
    else:
        assert "Traceback" in proc.stderr and "RuntimeError: a bug" in proc.stderr
