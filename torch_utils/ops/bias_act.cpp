// Host side of the fused bias + activation op: argument checks, memory layout, dispatch to
// the kernel in bias_act.cu. See bias_act.cu for what `grad` 0, 1 and 2 compute.

#include <torch/extension.h>
// Only c10 CUDA headers: ATen/cuda/CUDAContext.h would also need the cuBLAS/cuSPARSE headers,
// which minimal CUDA toolkits lack.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <limits>

#include "bias_act.h"

namespace {

BiasActDtype dtype_code(at::ScalarType t) {
    switch (t) {
        case at::kFloat: return kBiasActFloat;
        case at::kDouble: return kBiasActDouble;
        case at::kHalf: return kBiasActHalf;
        case at::kBFloat16: return kBiasActBFloat16;
        default: TORCH_CHECK(false, "bias_act: unsupported dtype ", t, "; expected float32, float64, float16 or bfloat16");
    }
    return kBiasActFloat;
}

// A tensor laid out exactly like `like` (same sizes and strides), copying only when needed.
torch::Tensor same_layout(const torch::Tensor& t, const torch::Tensor& like, const char* name) {
    TORCH_CHECK(t.device() == like.device(), "bias_act: ", name, " must be on the device of x (", like.device(), "), got ", t.device());
    TORCH_CHECK(t.scalar_type() == like.scalar_type(), "bias_act: ", name, " must have the dtype of x (", like.scalar_type(), "), got ", t.scalar_type());
    TORCH_CHECK(t.sizes() == like.sizes(), "bias_act: ", name, " must have the shape of x ", like.sizes(), ", got ", t.sizes());
    if (t.strides() == like.strides()) return t;
    return at::empty_like(like).copy_(t);
}

}  // namespace

// x: input (grad 0) or incoming gradient (grad 1, 2); b: bias or empty; xref, yref: the forward
// input (without bias) and output, or empty when the act does not need them.
torch::Tensor bias_act(torch::Tensor x, torch::Tensor b, torch::Tensor xref, torch::Tensor yref,
                       int64_t grad, int64_t dim, int64_t act, double alpha, double gain, double clamp) {
    TORCH_CHECK(x.is_cuda(), "bias_act: x must be a CUDA tensor, got device ", x.device());
    TORCH_CHECK(grad >= 0 && grad <= 2, "bias_act: grad must be 0, 1 or 2, got ", grad);
    TORCH_CHECK(act >= 1 && act <= 9, "bias_act: activation index must be in 1..9, got ", act);
    TORCH_CHECK(x.dim() >= 1, "bias_act: x must have at least one dimension");
    TORCH_CHECK(dim >= 0 && dim < x.dim(), "bias_act: dim ", dim, " out of range for x with ", x.dim(), " dimensions");
    TORCH_CHECK(x.numel() <= std::numeric_limits<int>::max(), "bias_act: x has ", x.numel(),
                " elements; the kernel indexes with 32-bit integers (at most 2^31 - 1)");
    const c10::cuda::CUDAGuard device_guard(x.device());

    // Any dense layout works (contiguous, channels_last, ...); others are made contiguous.
    if (!x.is_non_overlapping_and_dense()) x = x.contiguous();
    if (b.numel() > 0) {
        TORCH_CHECK(b.dim() == 1 && b.size(0) == x.size(dim), "bias_act: b must be 1-D with x.size(", dim, ") = ",
                    x.size(dim), " elements, got shape ", b.sizes());
        TORCH_CHECK(b.device() == x.device(), "bias_act: b must be on the device of x");
        b = b.to(x.scalar_type()).contiguous();
    }
    if (xref.numel() > 0) xref = same_layout(xref, x, "xref");
    if (yref.numel() > 0) yref = same_layout(yref, x, "yref");
    TORCH_CHECK(grad == 0 || xref.numel() > 0 || yref.numel() > 0 || act == 1,
                "bias_act: gradients need xref or yref");

    torch::Tensor out = at::empty_like(x);  // Keeps the strides of x (dense, non-overlapping).
    if (x.numel() == 0) return out;

    BiasActParams p;
    p.x = x.data_ptr();
    p.b = b.numel() > 0 ? b.data_ptr() : nullptr;
    p.xref = xref.numel() > 0 ? xref.data_ptr() : nullptr;
    p.yref = yref.numel() > 0 ? yref.data_ptr() : nullptr;
    p.out = out.data_ptr();
    p.numel = static_cast<int>(x.numel());
    p.b_size = static_cast<int>(x.size(dim));
    p.b_stride = static_cast<int>(std::max<int64_t>(x.stride(dim), 1));
    p.grad = static_cast<int>(grad);
    p.act = static_cast<int>(act);
    p.alpha = static_cast<float>(alpha);
    p.gain = static_cast<float>(gain);
    p.clamp = static_cast<float>(clamp);

    C10_CUDA_CHECK(bias_act_launch(p, dtype_code(x.scalar_type()), c10::cuda::getCurrentCUDAStream().stream()));
    return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("bias_act", &bias_act, "Fused bias + activation + gain + clamp and its derivatives (CUDA)");
}
