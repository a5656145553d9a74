"""napari dock widgets: thin clients of :mod:`napari_microseg.core`.

Importing this package keeps PyTorch from loading Triton in this process.
Triton ships its own LLVM; napari's OpenGL, when rendered by Mesa
(llvmpipe: virtual machines, remote desktops, CI), has already loaded the
system LLVM, and the two clash: the first ``torch.optim`` optimizer (which
imports ``torch._dynamo`` and through it Triton) then crashes napari with a
segmentation fault. The plugin never compiles with Triton, so it is not lost.
"""

import sys

if "triton" not in sys.modules:
    # A None entry makes `import triton` raise ImportError, which torch treats as "no Triton".
    sys.modules["triton"] = None  # type: ignore[assignment]
