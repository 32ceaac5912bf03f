// Host side of upfirdn2d: argument checks, output size and layout, dispatch to the kernel in
// upfirdn2d.cu. Separable filters are applied by the Python wrapper as two calls with
// [1, fw] and [fh, 1] filters.

#include <torch/extension.h>
// Only c10 CUDA headers: ATen/cuda/CUDAContext.h would also need the cuBLAS/cuSPARSE headers,
// which minimal CUDA toolkits lack.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <limits>

#include "upfirdn2d.h"

namespace {

constexpr int64_t kIntMax = std::numeric_limits<int>::max();

UpFirDn2dDtype dtype_code(at::ScalarType t) {
    switch (t) {
        case at::kFloat: return kUfdFloat;
        case at::kDouble: return kUfdDouble;
        case at::kHalf: return kUfdHalf;
        case at::kBFloat16: return kUfdBFloat16;
        default: TORCH_CHECK(false, "upfirdn2d: unsupported dtype ", t, "; expected float32, float64, float16 or bfloat16");
    }
    return kUfdFloat;
}

// Largest element offset a strided tensor reaches, for the 32-bit index check.
int64_t max_offset(const torch::Tensor& t) {
    int64_t off = 0;
    for (int64_t d = 0; d < t.dim(); d++) off += (t.size(d) - 1) * std::abs(t.stride(d));
    return off;
}

}  // namespace

torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor f, int64_t upx, int64_t upy, int64_t downx, int64_t downy,
                        int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1, bool flip, double gain) {
    TORCH_CHECK(x.is_cuda(), "upfirdn2d: x must be a CUDA tensor, got device ", x.device());
    TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must be 4-D [N, C, H, W], got shape ", x.sizes());
    TORCH_CHECK(f.dim() == 2 && f.size(0) >= 1 && f.size(1) >= 1, "upfirdn2d: f must be 2-D and non-empty, got shape ", f.sizes());
    TORCH_CHECK(upx >= 1 && upy >= 1, "upfirdn2d: up factors must be >= 1, got ", upx, ", ", upy);
    TORCH_CHECK(downx >= 1 && downy >= 1, "upfirdn2d: down factors must be >= 1, got ", downx, ", ", downy);
    TORCH_CHECK(f.device() == x.device(), "upfirdn2d: f must be on the device of x (", x.device(), "), got ", f.device());
    const c10::cuda::CUDAGuard device_guard(x.device());
    const int64_t n = x.size(0), c = x.size(1), in_h = x.size(2), in_w = x.size(3);
    const int64_t fh = f.size(0), fw = f.size(1);
    f = f.to(at::kFloat).contiguous();

    // Output size: upsampled and padded length, minus the filter's reach, over the stride.
    const int64_t span_h = in_h * upy + pady0 + pady1 - fh;
    const int64_t span_w = in_w * upx + padx0 + padx1 - fw;
    TORCH_CHECK(span_h >= 0 && span_w >= 0, "upfirdn2d: the padded, upsampled input (", in_h * upy + pady0 + pady1, " x ",
                in_w * upx + padx0 + padx1, ") is smaller than the filter (", fh, " x ", fw, ")");
    const int64_t out_h = span_h / downy + 1, out_w = span_w / downx + 1;

    // 32-bit index arithmetic in the kernel: every quantity it forms must fit in an int.
    const int64_t reach = std::max(in_h * upy + std::abs(pady0) + fh, in_w * upx + std::abs(padx0) + fw);
    TORCH_CHECK(n * c * out_h * out_w <= kIntMax && max_offset(x) <= kIntMax && fh * fw <= kIntMax &&
                    reach * std::max(std::max(downx, downy), std::max(upx, upy)) <= kIntMax,
                "upfirdn2d: tensors too large for the kernel's 32-bit indexing (x ", x.sizes(), ", output ",
                n, "x", c, "x", out_h, "x", out_w, "); split the batch");

    // The output keeps the memory format of the input (channels_last stays channels_last).
    const bool channels_last = x.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
    torch::Tensor out = at::empty({n, c, out_h, out_w},
                                  x.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
    if (out.numel() == 0) return out;
    TORCH_CHECK(x.numel() > 0, "upfirdn2d: x is empty but the output is not");

    UpFirDn2dParams p;
    p.x = x.data_ptr();
    p.f = f.data_ptr<float>();
    p.out = out.data_ptr();
    p.n = static_cast<int>(n); p.c = static_cast<int>(c); p.in_h = static_cast<int>(in_h); p.in_w = static_cast<int>(in_w);
    p.sx_n = static_cast<int>(x.stride(0)); p.sx_c = static_cast<int>(x.stride(1));
    p.sx_h = static_cast<int>(x.stride(2)); p.sx_w = static_cast<int>(x.stride(3));
    p.out_h = static_cast<int>(out_h); p.out_w = static_cast<int>(out_w);
    p.so_n = static_cast<int>(out.stride(0)); p.so_c = static_cast<int>(out.stride(1));
    p.so_h = static_cast<int>(out.stride(2)); p.so_w = static_cast<int>(out.stride(3));
    p.channels_last = channels_last ? 1 : 0;
    p.total = static_cast<int>(out.numel());
    p.fh = static_cast<int>(fh); p.fw = static_cast<int>(fw);
    p.upx = static_cast<int>(upx); p.upy = static_cast<int>(upy);
    p.downx = static_cast<int>(downx); p.downy = static_cast<int>(downy);
    p.padx0 = static_cast<int>(padx0); p.pady0 = static_cast<int>(pady0);
    p.flip = flip ? 1 : 0;
    p.gain = static_cast<float>(gain);

    C10_CUDA_CHECK(upfirdn2d_launch(p, dtype_code(x.scalar_type()), c10::cuda::getCurrentCUDAStream().stream()));
    return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("upfirdn2d", &upfirdn2d, "Upsample, FIR filter, downsample in 2-D (CUDA)");
}
