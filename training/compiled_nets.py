"""Optional `torch.compile` of the networks for the training phases (train.py --compile).

G's mapping and synthesis networks and D are compiled in place (`nn.Module.compile`): the
modules, their parameter names, state dicts, snapshots and G_ema (a copy taken before) stay
as they are; only the calls the loss makes go through the compiled graphs. Metrics and
image grids use G_ema and stay eager.

Random numbers drawn inside the compiled modules (G's noise inputs) come from torch's
generators as in eager mode (inductor's `fallback_random`), so the draws are the same.

Phases that take gradients of gradients (the regularisation phases: path length through G,
R1 through D, and the 'both' phases that include them) run eagerly: torch.compile does not
support a double backward through its graphs. Compiled graphs differ from the eager ops in
rounding (fused arithmetic), so a compiled run is reproducible with itself, not bit-equal to
an eager one; it is therefore never the default (see docs/performance.md for the figures).
"""

import contextlib
from typing import ContextManager, List

import torch

COMPILED = ('G.mapping', 'G.synthesis', 'D')
UNAVAILABLE = (f'needs torch.compile with torch.compiler.set_stance (PyTorch 2.6 or later); this is PyTorch '
               f'{torch.__version__}')


def available() -> bool:
    """Whether this torch has what the compile path needs."""
    return hasattr(torch, 'compile') and hasattr(torch.nn.Module, 'compile') and \
        hasattr(getattr(torch, 'compiler', None), 'set_stance')


def compile_networks(G: torch.nn.Module, D: torch.nn.Module) -> List[str]:
    """Compiles G.mapping, G.synthesis and D in place; returns their names."""
    if not available():
        raise RuntimeError(f'--compile {UNAVAILABLE}')
    # Random ops (G's noise inputs, style mixing) draw from torch's generators as in eager
    # mode, so a compiled run consumes the same random stream and resumes exactly like one.
    import torch._inductor.config as inductor_config  # pylint: disable=import-outside-toplevel
    inductor_config.fallback_random = True
    for module in (G.mapping, G.synthesis, D):
        module.compile(dynamic=False)
    return list(COMPILED)


def double_backward(phase_name: str) -> bool:
    """Whether a phase may differentiate through gradients (the regularisers)."""
    return phase_name.endswith(('reg', 'both'))


def phase_context(phase_name: str, enabled: bool = True) -> ContextManager:
    """Eager execution of the compiled modules for phases that need a double backward
    (nothing to do when the run does not compile, `enabled` False)."""
    if enabled and double_backward(phase_name):
        return torch.compiler.set_stance('force_eager')
    return contextlib.nullcontext()
