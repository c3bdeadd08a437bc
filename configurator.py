"""
Config overrides for the scripts, nanoGPT style. A script defines its defaults as plain globals, then calls

    config = configure(globals())

which applies, in order, config files (`config/x.py`, plain assignments) and `--key=value` arguments, and returns
the resolved config as a dict. The keys are the script's globals of plain types (None, bool, int, float, str),
except names that start with '_' or are all capitals (constants): config_keys() is that one rule.

Values are parsed with ast.literal_eval; a value that is not a Python literal stays a string. A value must have the
type of its default, but an int is accepted for a float, and a default of None or 'auto' accepts any type. Unknown
keys, in a file or on the command line, are errors that name the closest valid keys.

Inside a Jupyter/Kaggle kernel sys.argv holds the kernel's own arguments (`-f .../kernel-xyz.json`). Those are
ignored, so pasting a script into a cell runs it with its defaults, and `%run train.py config/x.py --k=v` works.
Errors are ValueError (or OSError for an unreadable config file) with a one-line message; the scripts print
them as `error: ...` (report_errors_in_one_line).
"""

import ast
import difflib
import inspect
import linecache
import sys


def config_keys(namespace):
    """The names in namespace (a script's globals()) that are config keys: plain values the script assigns at its
    top level above the line that asks (its defaults)."""
    assigned = _assigned_above(namespace)
    return [k for k, v in namespace.items() if not k.startswith("_") and not k.isupper()
            and (v is None or type(v) in (bool, int, float, str)) and (assigned is None or k in assigned)]


def _assigned_above(namespace):
    """The names the script whose globals are namespace assigns at its top level above the line running now, read
    from its source: a file, or a notebook cell (IPython keeps cells in linecache). In a kernel where an earlier
    run left its variables (iter_num, rank...), those are not config keys. None where the source can't be read."""
    frame, script = inspect.currentframe(), None
    while frame is not None:
        if frame.f_globals is namespace:
            script = frame  # the outermost frame of the script: its top level
        frame = frame.f_back
    lines = linecache.getlines(script.f_code.co_filename, namespace) if script else []
    try:
        tree = ast.parse("".join(lines))
    except SyntaxError:
        return None
    return {target.id for node in tree.body if isinstance(node, ast.Assign) and node.lineno < script.f_lineno
            for target in node.targets if isinstance(target, ast.Name)} if lines else None


def _closest(key, keys):
    near = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(near)}?" if near else "; run with --help to list the valid keys"


TYPE_NAMES = {bool: "True or False", int: "a whole number", float: "a number", str: "text", type(None): "None"}


def _check_type(key, value, default):
    if default is None or default == "auto" or value is None:
        return value
    if isinstance(default, bool):  # bool before int: bool is a subclass of int
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, type(default)):
        return value
    raise ValueError(
        f"--{key}={value!r} is {TYPE_NAMES.get(type(value), 'a ' + type(value).__name__)}, but {key} takes "
        f"{TYPE_NAMES[type(default)]} (default {default!r})"
    )


def _parse_value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string such as --dataset=tinystories


def _kernel_argv(argv):
    """True when argv belongs to a Jupyter/IPython kernel rather than to the user."""
    launcher = argv[0] if argv else ""
    return "ipykernel" in launcher or "colab_kernel_launcher" in launcher


def configure(namespace, argv=None):
    """Apply config files and --key=value overrides to namespace (a script's globals()); return the config dict."""
    if argv is None:
        argv = [] if _kernel_argv(sys.argv) else sys.argv[1:]
    keys = config_keys(namespace)
    if "--help" in argv or "-h" in argv:
        print("valid keys and their defaults:\n" + "\n".join(f"  --{k}={namespace[k]!r}" for k in keys))
        raise SystemExit(0)
    argv = list(argv)
    while argv:
        arg = argv.pop(0)
        if arg == "-f" and argv and argv[0].endswith(".json"):  # a kernel's connection file: not ours
            argv.pop(0)
            continue
        if not arg.startswith("--"):
            _apply_file(namespace, keys, arg)
            continue
        key, sep, text = arg[2:].partition("=")  # split on the first '=' only: --run_name=a=b is fine
        if not sep:
            raise ValueError(f"argument {arg!r} must look like --key=value")
        if key not in keys:
            raise ValueError(f"unknown config key {key!r}{_closest(key, keys)}")
        value = _parse_value(text)
        if isinstance(namespace[key], str) and isinstance(value, tuple):
            value = text  # a list for a text key, as text keys take lists: --runs=a,b, --streams=1,8,32
        namespace[key] = _check_type(key, value, namespace[key])
        print(f"override: {key} = {namespace[key]!r}")
    return {k: namespace[k] for k in keys}


def check_values(config, positive=(), non_negative=(), fractions=(), choices=None, at_most_one=()):
    """Values of the right type but out of range, or not among a key's choices ({key: options}), are ValueErrors
    naming the key; None means 'not set'."""
    rules = [(positive, "> 0", lambda v: v > 0), (non_negative, ">= 0", lambda v: v >= 0),
             (fractions, "at least 0 and below 1", lambda v: 0 <= v < 1), (at_most_one, "above 0 and at most 1",
                                                                           lambda v: 0 < v <= 1)]
    for keys, what, ok in rules:
        for key in keys:
            value = config[key]
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if value is not None and not (number and ok(value)):
                raise ValueError(f"--{key}={value!r} must be a number {what}")
    for key, options in (choices or {}).items():
        if config[key] not in options:
            raise ValueError(f"--{key}={config[key]!r}; use one of {', '.join(map(str, options))}")


def _apply_file(namespace, keys, path):
    try:
        with open(path) as f:
            source = f.read()
    except OSError as e:
        raise OSError(f"cannot read config file {path!r} ({e.strerror}); config files live in config/")
    print(f"config file: {path}")
    scope = {k: namespace[k] for k in keys}  # a file may refer to earlier values, e.g. batch_size * 2
    try:
        exec(compile(source, path, "exec"), {}, scope)
    except Exception as e:  # a config file is Python: a typo there is the user's to fix, in one line
        line = f" line {e.lineno}" if isinstance(e, SyntaxError) else ""
        raise ValueError(f"config file {path}{line}: {type(e).__name__}: {getattr(e, 'msg', e)}") from None
    for key, value in scope.items():
        if key.startswith("_") or _is_helper(value):
            continue
        if key not in keys:
            raise ValueError(f"unknown config key {key!r} in {path}{_closest(key, keys)}")
        if value is not namespace[key] and value != namespace[key]:
            namespace[key] = _check_type(key, value, namespace[key])
            print(f"  {key} = {namespace[key]!r}")


def report_errors_in_one_line():
    """From here on, errors a user can fix end the script with one line on stderr, `error: ...`, and exit status 1.
    The library code raises ValueError (bad values), OSError (files), ImportError (optional packages) and
    MemoryError (out of memory) with a message that says what to do; any other exception is a bug and keeps its
    traceback."""
    default_hook = sys.excepthook

    def hook(kind, value, traceback):
        if issubclass(kind, (ValueError, OSError, ImportError, MemoryError)):
            print(f"error: {value}", file=sys.stderr)
        else:
            default_hook(kind, value, traceback)

    sys.excepthook = hook


def _is_helper(value):
    """Config files may import helpers (math, os); modules, functions and classes are not config values."""
    return callable(value) or type(value).__name__ == "module"
