"""`import lancedb` without the parts of it the embedded index never runs (issue 27).

`import lancedb` costs ~1.5 s of a 2.2 s `clip-search search` (measured with `python -X importtime`,
LanceDB 0.40, pyarrow 26), and most of it is code no local table uses:

- `lance_namespace_urllib3_client`, a generated REST client for Lance namespace servers: its package
  `__init__` imports every API class (~60% of the package's import time; the pydantic models are the
  rest). LanceDB imports the package only for its models (`lancedb.db`, `lancedb.namespace`), so the
  package is registered here with its `__init__` deferred: submodules (`.models`, `.exceptions`, `.api`)
  import as usual, and the first attribute asked of the package itself runs the real `__init__`, so
  any code that does use the client gets all of it.
- pandas (~0.4 s): `pyarrow._dataset` builds a scalar at module init, and `pa.scalar` asks pyarrow's
  pandas shim whether pandas is installed, which imports it. Only in a `clip-search` command process
  (`cli.main` calls `defer_pandas()`; nothing in a command converts to or from pandas) is pandas
  refused while LanceDB imports: the shim then records "no pandas", and pyarrow imports it again on
  the first real conversion (`to_pandas`, `from_pandas`: the shim retries whenever it must raise), so
  only its soft type sniffing of pandas objects stays off. Code that imports clip_search as a
  library is untouched (`clip-search app` is a command too, and converts nothing to pandas either).
- `overrides` (~0.2 s): on Python < 3.12 LanceDB decorates ~100 methods with `overrides.override`,
  which disassembles each method's class bytecode at import to check it; on 3.12+ LanceDB uses
  `typing.override` (a marker) and a plain `EnforceOverrides` base instead. While LanceDB imports,
  it is given exactly that 3.12 pair; the real `overrides` package is left for anyone else.
- pydantic schemas (~0.2 s): the REST client's models and LanceDB's embedding registry are ~200
  pydantic classes, and pydantic builds each one's validation schema when the class is made. While
  LanceDB imports, `BaseModel`'s config says `defer_build` (a pydantic setting), so the classes made
  then build their schema on first use instead; the embedded index uses none of them. Classes made
  after the import are built as usual.

All are upstream costs; the figures for a report are in docs/performance.md (CLI start-up).
tests/search/test_import_budget.py keeps them out of a command that opens the embedded index.
"""
import importlib.util
import sys
import threading
from contextlib import contextmanager

REST_CLIENT = "lance_namespace_urllib3_client"
_lock = threading.Lock()
_refuse_pandas = False


def defer_pandas() -> None:
    """Called by the `clip-search` command line: refuse pandas while LanceDB imports (see above)."""
    global _refuse_pandas
    _refuse_pandas = True


class _RefusePandas:
    """A meta path finder, installed only for the duration of `import lancedb`."""

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"{name} is not imported while clip-search imports LanceDB", name=name)
        return None


def _defer_package_init(name: str) -> None:
    """Register package `name` with its `__init__` not run yet (see the module's docstring)."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None or spec.loader is None:
        return  # not installed (or not a package): LanceDB's own import says what is missing
    module = importlib.util.module_from_spec(spec)

    def run_init(attribute):
        # PEP 562: asked only for names the module lacks. Run the real __init__ once, then answer.
        with _lock:
            if module.__dict__.pop("__getattr__", None) is not None:
                spec.loader.exec_module(module)
        if attribute in module.__dict__:
            return module.__dict__[attribute]
        raise AttributeError(f"module {name!r} has no attribute {attribute!r}")

    module.__getattr__ = run_init
    sys.modules[name] = module


def _overrides_as_on_python_3_12():
    """A stand-in `overrides` module: what LanceDB itself uses on Python 3.12+ (see above)."""
    import types

    try:
        from typing import override
    except ImportError:  # Python < 3.12
        from typing_extensions import override

    module = types.ModuleType("overrides", "clip-search: LanceDB's Python 3.12 `override` while it imports")
    module.override = override
    module.EnforceOverrides = type("EnforceOverrides", (), {"__module__": "overrides"})
    return module


@contextmanager
def _schemas_built_on_first_use():
    """pydantic models made inside this block build their schema on first use (see above)."""
    try:
        from pydantic import BaseModel
    except ImportError:  # LanceDB's own import says what is missing
        yield
        return
    config = BaseModel.model_config
    had, before = "defer_build" in config, config.get("defer_build")
    config["defer_build"] = True
    try:
        yield
    finally:
        if had:
            config["defer_build"] = before
        else:
            del config["defer_build"]


def load():
    """The `lancedb` module, imported as above on first use."""
    if "lancedb" in sys.modules:
        return sys.modules["lancedb"]
    with _lock:
        _defer_package_init(REST_CLIENT)
    refuse = _RefusePandas() if _refuse_pandas and "pandas" not in sys.modules else None
    stand_in = _overrides_as_on_python_3_12() if "overrides" not in sys.modules else None
    if refuse is not None:
        sys.meta_path.insert(0, refuse)
    if stand_in is not None:
        sys.modules["overrides"] = stand_in
    try:
        with _schemas_built_on_first_use():
            import lancedb
    finally:
        if refuse is not None:
            sys.meta_path.remove(refuse)
        if stand_in is not None and sys.modules.get("overrides") is stand_in:
            del sys.modules["overrides"]
    return lancedb
