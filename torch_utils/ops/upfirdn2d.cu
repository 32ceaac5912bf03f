// CUDA kernel of upfirdn2d. Per axis, with upsampling factor u, downsampling factor d,
// leading padding p0 and correlation kernel F (F = f when flip_filter, else f reversed):
//
//   out[o] = gain * sum_i x[i] * F[i * u + p0 - o * d],   over i with 0 <= i*u + p0 - o*d < fh.
//
// This is "insert u - 1 zeros after each sample, pad by p0 (crop if negative), correlate
// with F, keep every d-th sample" written so that the inserted zeros are never visited: each
// thread computes one output pixel and loops only over the input pixels under its window.
// Accumulation is in float (double for double inputs).

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "upfirdn2d.h"

namespace {

template <typename S, typename C> __device__ __forceinline__ C load(S v) { return static_cast<C>(v); }
template <> __device__ __forceinline__ float load<__half, float>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float load<__nv_bfloat16, float>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename S, typename C> __device__ __forceinline__ S store(C v) { return static_cast<S>(v); }
template <> __device__ __forceinline__ __half store<__half, float>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 store<__nv_bfloat16, float>(float v) { return __float2bfloat16_rn(v); }

// Floor and ceiling of a / b for b > 0 and any sign of a (C++ division truncates toward zero).
__device__ __forceinline__ int floor_div(int a, int b) { int q = a / b; return (a % b != 0 && a < 0) ? q - 1 : q; }
__device__ __forceinline__ int ceil_div(int a, int b) { return -floor_div(-a, b); }

template <typename S, typename C> __global__ void upfirdn2d_kernel(UpFirDn2dParams p) {
    const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= p.total) return;
    int rem = static_cast<int>(idx);

    // Output coordinates, in the order of the output's memory so that writes coalesce.
    int n, c, oy, ox;
    if (p.channels_last) {
        c = rem % p.c; rem /= p.c;
        ox = rem % p.out_w; rem /= p.out_w;
        oy = rem % p.out_h; n = rem / p.out_h;
    } else {
        ox = rem % p.out_w; rem /= p.out_w;
        oy = rem % p.out_h; rem /= p.out_h;
        c = rem % p.c; n = rem / p.c;
    }

    // Input rows/columns under the window: 0 <= i*u + p0 - o*d < fh, clipped to the image.
    const int base_y = oy * p.downy - p.pady0;
    const int base_x = ox * p.downx - p.padx0;
    const int iy0 = max(ceil_div(base_y, p.upy), 0);
    const int iy1 = min(floor_div(base_y + p.fh - 1, p.upy), p.in_h - 1);
    const int ix0 = max(ceil_div(base_x, p.upx), 0);
    const int ix1 = min(floor_div(base_x + p.fw - 1, p.upx), p.in_w - 1);

    const S* x = static_cast<const S*>(p.x) + n * p.sx_n + c * p.sx_c;
    C acc = C(0);
    for (int iy = iy0; iy <= iy1; iy++) {
        const int ky = iy * p.upy - base_y;            // Index into F along y.
        const int fy = p.flip ? ky : p.fh - 1 - ky;    // Index into f.
        const S* xrow = x + iy * p.sx_h;
        const float* frow = p.f + fy * p.fw;
        for (int ix = ix0; ix <= ix1; ix++) {
            const int kx = ix * p.upx - base_x;
            const int fx = p.flip ? kx : p.fw - 1 - kx;
            acc += load<S, C>(xrow[ix * p.sx_w]) * static_cast<C>(__ldg(frow + fx));
        }
    }
    static_cast<S*>(p.out)[n * p.so_n + c * p.so_c + oy * p.so_h + ox * p.so_w] = store<S, C>(acc * static_cast<C>(p.gain));
}

template <typename S, typename C> cudaError_t launch(const UpFirDn2dParams& p, cudaStream_t stream) {
    const int threads = 256;
    const int blocks = (p.total + threads - 1) / threads;
    upfirdn2d_kernel<S, C><<<blocks, threads, 0, stream>>>(p);
    return cudaGetLastError();
}

}  // namespace

cudaError_t upfirdn2d_launch(const UpFirDn2dParams& p, UpFirDn2dDtype dtype, cudaStream_t stream) {
    switch (dtype) {
        case kUfdFloat: return launch<float, float>(p, stream);
        case kUfdDouble: return launch<double, double>(p, stream);
        case kUfdHalf: return launch<__half, float>(p, stream);
        case kUfdBFloat16: return launch<__nv_bfloat16, float>(p, stream);
    }
    return cudaErrorInvalidValue;
}
