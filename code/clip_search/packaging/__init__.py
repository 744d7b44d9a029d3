"""Build time: package an open_clip model, export it to a faster runtime, guard its accuracy.

The only code in clip_search that imports torch, open_clip or onnx (the `package` extra)."""
from clip_search.extras import require

require("package", what="packaging (package-model, export, the accuracy guard, the torch runtime)")
