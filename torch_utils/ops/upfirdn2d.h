// Upsample, FIR filter, downsample in 2-D: interface between the host binding (upfirdn2d.cpp)
// and the CUDA kernel (upfirdn2d.cu). Only plain types cross this boundary, so the .cu file
// compiles without the PyTorch headers.

#pragma once
#include <cuda_runtime.h>

// Element types the kernel is instantiated for.
enum UpFirDn2dDtype { kUfdFloat = 0, kUfdDouble = 1, kUfdHalf = 2, kUfdBFloat16 = 3 };

struct UpFirDn2dParams {
    const void* x;      // input [N, C, H, W], any strides.
    const float* f;     // filter [fh, fw], contiguous float32.
    void* out;          // output [N, C, out_h, out_w].

    int n, c, in_h, in_w;
    int sx_n, sx_c, sx_h, sx_w;   // input strides in elements.
    int out_h, out_w;
    int so_n, so_c, so_h, so_w;   // output strides in elements.
    int channels_last;            // thread order: channel fastest (1) or column fastest (0).
    int total;                    // n * c * out_h * out_w.

    int fh, fw;
    int upx, upy, downx, downy;
    int padx0, pady0;             // leading padding; negative values crop.
    int flip;                     // 1: correlate with f as given; 0: true convolution (f flipped).
    float gain;
};

// Launches the kernel on `stream`; returns the launch status.
cudaError_t upfirdn2d_launch(const UpFirDn2dParams& p, UpFirDn2dDtype dtype, cudaStream_t stream);
