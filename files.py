"""
Files written so that a crash, a full disk or a missing permission never leaves half of one (write_atomic: a
temporary file, then a rename), and JSON read with a one-line error that names the file. Checkpoints, meta.json,
config.json and log.csv all go through here.
"""

import json
import os
import re
import shutil


def read_json(path, fix=""):
    """A JSON file; one that isn't JSON is a ValueError naming it (and saying fix, if given)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing{'; ' + fix if fix else ''}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}){'; ' + fix if fix else ''}") from None


def write_json(obj, path):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)

    write_atomic(path, write)


def write_atomic(path, write):
    """write(tmp) fills a temporary file, then a rename puts it at path: a crash, a full disk or a missing permission
    leaves the previous file as it was, never a truncated one. A failure is an OSError saying so."""
    tmp = path + ".tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write (disk full) as a RuntimeError
        if os.path.exists(tmp):
            os.remove(tmp)
        kept = "the previous one is intact" if os.path.exists(path) else "there was none before"
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free / 2**20
        raise OSError(f"could not write {path} ({first_line(e)}; {free:,.0f} MB free on its disk); {kept}: free disk "
                      "space or fix permissions, then resume with --init_from=resume") from None


def first_line(e):
    """The gist of an exception's message: its first sentence, without terminal colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m|^\[enforce fail at [^\]]*\][ .]*", "", str(e)).strip() or type(e).__name__
    return text.splitlines()[0].split(". ")[0][:200]


def copy_atomic(src, dst):
    write_atomic(dst, lambda tmp: shutil.copyfile(src, tmp))
