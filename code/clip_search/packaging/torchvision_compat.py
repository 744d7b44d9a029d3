"""Let open_clip import torchvision beside a CPU-only torch whose torchvision ops cannot load.

PyPI's torchvision wheel is built against CUDA torch. Beside the CPU torch this project pins, its
compiled library `torchvision/_C.so` fails to load, and `import torchvision` then dies while
registering fake kernels for `torchvision::nms` / `torchvision::qnms`, ops that library would have
defined. open_clip only needs `torchvision.transforms` (pure Python), so when, and only when, the
library cannot load, we declare those two op schemas (no kernels) so the import completes. Calling
`torchvision.ops.nms` would then fail loudly ("no kernel"), which nothing here does.

Users who install matching CPU wheels of both (PyTorch's CPU index) load the real library and this
module changes nothing.
"""
import importlib.util
import sys
from pathlib import Path

# The op schemas torchvision registers fake kernels for at import time, whatever the build.
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor",
)
_declared = None  # keeps the torch.library.Library alive, or True when nothing was needed


def ensure_torchvision_importable() -> bool:
    """Return True when the op schemas had to be declared, False when torchvision is fine as is."""
    global _declared
    if _declared is not None or "torchvision" in sys.modules:
        return _declared not in (None, True)
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        _declared = True
        return False
    compiled = sorted(Path(spec.origin).parent.glob("_C*.so")) + sorted(
        Path(spec.origin).parent.glob("_C*.pyd")
    )
    if compiled:
        try:
            torch.ops.load_library(str(compiled[0]))
            _declared = True
            return False
        except (OSError, RuntimeError):
            pass
    library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        library.define(schema)
    _declared = library
    return True


def import_open_clip():
    """`import open_clip`, after making torchvision importable beside the CPU torch."""
    ensure_torchvision_importable()
    import open_clip

    return open_clip
