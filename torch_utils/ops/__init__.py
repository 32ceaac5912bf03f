"""Low-level ops used by the networks: bias_act, upfirdn2d, conv2d_resample, fma, grid_sample_gradfix.

Each op has a plain-PyTorch reference implementation (the ground truth, usable everywhere and
differentiable to any order) and, where it pays off, an optional CUDA path selected with
`impl='cuda'` that falls back to the reference when the extension is unavailable.
"""
