// CUDA kernels of the fused bias + activation op. One thread per element;
// the op is memory bound, so the arithmetic is done in float (double for double inputs)
// whatever the storage type.
//
// Notation: v = x + b is the pre-activation, f the activation, y = clamp(gain * f(v)) the
// output and yn = y / gain the activation value before the gain.
//
//   grad 0 (forward):  out = clamp(gain * f(v)).
//   grad 1:            out = g * gain * f'(v),                       g = incoming gradient.
//   grad 2:            out = g * d/dr [gain * f'(v)] with r the reference the derivative is
//                      expressed in: r = v for x-referenced acts (linear, swish), giving
//                      gain * f''(v); r = y for y-referenced acts, where f'(v) = h(yn) and
//                      d/dy [gain * h(y / gain)] = h'(yn).
// In grads 1 and 2 the result is zero wherever the forward output was clamped (|y| >= clamp).

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "bias_act.h"

namespace {

// Storage <-> compute conversions.
template <typename S, typename C> __device__ __forceinline__ C load(S v) { return static_cast<C>(v); }
template <> __device__ __forceinline__ float load<__half, float>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float load<__nv_bfloat16, float>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename S, typename C> __device__ __forceinline__ S store(C v) { return static_cast<S>(v); }
template <> __device__ __forceinline__ __half store<__half, float>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 store<__nv_bfloat16, float>(float v) { return __float2bfloat16_rn(v); }

// SELU constants (Klambauer et al. 2017, eq. 2).
constexpr double kSeluLambda = 1.0507009873554804934193349852946;
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
// Above this pre-activation softplus returns its input, as torch.nn.functional.softplus does.
constexpr double kSoftplusThreshold = 20.0;

template <typename C> __device__ __forceinline__ C sigmoid(C v) { return C(1) / (C(1) + exp(-v)); }

// f(v).
template <typename C> __device__ __forceinline__ C act_value(int act, C v, C alpha) {
    switch (act) {
        case 1: return v;
        case 2: return v > C(0) ? v : C(0);
        case 3: return v > C(0) ? v : v * alpha;
        case 4: return tanh(v);
        case 5: return sigmoid(v);
        case 6: return v > C(0) ? v : expm1(v);
        case 7: return C(kSeluLambda) * (v > C(0) ? v : C(kSeluAlpha) * expm1(v));
        case 8: return v > C(kSoftplusThreshold) ? v : log1p(exp(v));
        case 9: return v * sigmoid(v);
    }
    return C(0);
}

// f'(v), from v (linear, swish) or from yn = f(v) (all others).
template <typename C> __device__ __forceinline__ C act_deriv(int act, C v, C yn, C alpha) {
    switch (act) {
        case 1: return C(1);
        case 2: return yn > C(0) ? C(1) : C(0);
        case 3: return yn > C(0) ? C(1) : alpha;
        case 4: return C(1) - yn * yn;
        case 5: return yn * (C(1) - yn);
        case 6: return yn > C(0) ? C(1) : yn + C(1);
        case 7: return yn > C(0) ? C(kSeluLambda) : yn + C(kSeluLambda * kSeluAlpha);
        case 8: return -expm1(-yn);
        case 9: { C s = sigmoid(v); return s * (C(1) + v * (C(1) - s)); }
    }
    return C(0);
}

// d/dr [gain * f'(v)] for the reference r of each act (see the top of this file).
template <typename C> __device__ __forceinline__ C act_deriv2(int act, C v, C yn, C gain) {
    switch (act) {
        case 4: return C(-2) * yn;
        case 5: return C(1) - C(2) * yn;
        case 6: return yn > C(0) ? C(0) : C(1);
        case 7: return yn > C(0) ? C(0) : C(1);
        case 8: return exp(-yn);
        case 9: { C s = sigmoid(v); return gain * s * (C(1) - s) * (C(2) + v * (C(1) - C(2) * s)); }
    }
    return C(0);  // linear, relu, lrelu: piecewise linear.
}

template <typename S, typename C> __global__ void bias_act_kernel(BiasActParams p) {
    const S* x = static_cast<const S*>(p.x);
    const S* b = static_cast<const S*>(p.b);
    const S* xref = static_cast<const S*>(p.xref);
    const S* yref = static_cast<const S*>(p.yref);
    S* out = static_cast<S*>(p.out);
    const C alpha = C(p.alpha), gain = C(p.gain), clamp = C(p.clamp);

    // The grid covers every element once (numel < 2^31 is checked by the host).
    const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= p.numel) return;
    const int i = static_cast<int>(idx);
    {
        const C bias = b ? load<S, C>(b[(i / p.b_stride) % p.b_size]) : C(0);
        const C in = load<S, C>(x[i]);
        C r;
        if (p.grad == 0) {
            r = act_value<C>(p.act, in + bias, alpha) * gain;
            if (clamp >= C(0)) r = r > clamp ? clamp : (r < -clamp ? -clamp : r);
        } else {
            const C v = xref ? load<S, C>(xref[i]) + bias : C(0);
            const C y = yref ? load<S, C>(yref[i]) : C(0);
            if (yref && clamp >= C(0) && !(fabs(y) < clamp)) {
                r = C(0);  // Clamped in the forward pass: no gradient.
            } else {
                const C yn = gain != C(0) ? y / gain : C(0);
                r = p.grad == 1 ? in * gain * act_deriv<C>(p.act, v, yn, alpha)
                                : in * act_deriv2<C>(p.act, v, yn, gain);
            }
        }
        out[i] = store<S, C>(r);
    }
}

template <typename S, typename C> cudaError_t launch(const BiasActParams& p, cudaStream_t stream) {
    const int threads = 256;
    const int blocks = (p.numel + threads - 1) / threads;
    bias_act_kernel<S, C><<<blocks, threads, 0, stream>>>(p);
    return cudaGetLastError();
}

}  // namespace

cudaError_t bias_act_launch(const BiasActParams& p, BiasActDtype dtype, cudaStream_t stream) {
    switch (dtype) {
        case kBiasActFloat: return launch<float, float>(p, stream);
        case kBiasActDouble: return launch<double, double>(p, stream);
        case kBiasActHalf: return launch<__half, float>(p, stream);
        case kBiasActBFloat16: return launch<__nv_bfloat16, float>(p, stream);
    }
    return cudaErrorInvalidValue;
}
