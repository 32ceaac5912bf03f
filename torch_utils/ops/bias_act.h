// Fused bias + activation + gain + clamp: interface between the host binding (bias_act.cpp)
// and the CUDA kernels (bias_act.cu). Only plain types cross this boundary, so the .cu file
// compiles without the PyTorch headers (much faster builds).

#pragma once
#include <cuda_runtime.h>

// Element types the kernels are instantiated for.
enum BiasActDtype { kBiasActFloat = 0, kBiasActDouble = 1, kBiasActHalf = 2, kBiasActBFloat16 = 3 };

struct BiasActParams {
    // Tensors. x, xref, yref and out share one dense, non-overlapping layout; b is 1-D.
    const void* x;     // grad 0: the input; grad 1 and 2: the incoming gradient.
    const void* b;     // bias along `dim`, or nullptr.
    const void* xref;  // pre-bias input of the forward pass (x-referenced acts), or nullptr.
    const void* yref;  // output of the forward pass (y-referenced acts, clamp mask), or nullptr.
    void* out;

    int numel;         // elements of x.
    int b_size;        // x.size(dim), the bias length.
    int b_stride;      // x.stride(dim): element i of the buffer is in channel (i / b_stride) % b_size.

    int grad;          // 0: forward, 1: first derivative, 2: second derivative (see bias_act.cu).
    int act;           // activation index: 1 linear .. 9 swish.
    float alpha;       // lrelu slope.
    float gain;        // factor after the activation.
    float clamp;       // output clamped to [-clamp, clamp]; negative: no clamping.
};

// Launches the kernel on `stream`; returns the launch status.
cudaError_t bias_act_launch(const BiasActParams& p, BiasActDtype dtype, cudaStream_t stream);
