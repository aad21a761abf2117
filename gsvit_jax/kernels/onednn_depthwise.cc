// oneDNN depthwise convolution as an XLA FFI handler, forward only: y = dwconv(x, w) + b, ReLU'd
// if asked, plus a residual r if one is given (a binary post-op: the block's residual sum costs no
// pass of its own). NHWC activations in float32 or bfloat16 (f32 accumulation, rounded once), a
// float32 (k, k, 1, C) kernel and bias. XLA:CPU computes a bfloat16 depthwise sum with converts
// around every tap; oneDNN's depthwise kernels read each input once (benchmarks/RESULTS.md).
// Gradients come from XLA (gsvit_jax/kernels/depthwise.py).
#include <cstdint>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "onednn_common.h"

namespace {

using namespace gsvit;

// (batch, height, width, channels, kernel size, stride, padding, bfloat16?, ReLU?, residual?,
//  threads): the primitives of one depthwise convolution.
using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, bool,
                       bool, int64_t>;

struct Depthwise {
  dnnl::memory::desc user_weights;
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward prim;
  dnnl::reorder to_weights;  // float32 (k, k, 1, C) -> pd's weights

  explicit Depthwise(const Key& key) {
    auto [n, h, w, c, k, stride, pad, bf16, relu, residual, threads] = key;
    dt act = bf16 ? dt::bf16 : dt::f32;
    int64_t oh = (h + 2 * pad - k) / stride + 1, ow = (w + 2 * pad - k) / stride + 1;
    dnnl::memory::desc src({n, c, h, w}, act, tag::nhwc), dst({n, c, oh, ow}, act, tag::nhwc);
    // grouped weights (groups, out / group, in / group, kh, kw); (k, k, 1, C) is hwigo
    user_weights = dnnl::memory::desc({c, 1, 1, k, k}, dt::f32, tag::hwigo);
    dnnl::memory::desc weights({c, 1, 1, k, k}, act, tag::any), bias({c}, dt::f32, tag::a);
    pd = dnnl::convolution_forward::primitive_desc(
        Engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src,
        weights, bias, dst, {stride, stride}, {pad, pad}, {pad, pad},
        Attributes(relu, residual ? &dst : nullptr));
    prim = dnnl::convolution_forward(pd);
    to_weights = dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), user_weights, Engine(),
                                                             pd.weights_desc()));
  }
};

ffi::Error Run(const ffi::AnyBuffer& x, const ffi::Buffer<ffi::F32>& w,
               const ffi::Buffer<ffi::F32>& b, const ffi::AnyBuffer* residual,
               ffi::Result<ffi::AnyBuffer>& y, int64_t stride, int64_t pad, bool relu,
               int64_t threads) {
  auto xd = x.dimensions(), wd = w.dimensions();
  if (xd.size() != 4 || wd.size() != 4 || wd[0] != wd[1] || wd[2] != 1 || wd[3] != xd[3] ||
      !IsFloat(x)) {
    return ffi::Error::InvalidArgument(
        "gsvit_onednn_depthwise: NHWC float32/bfloat16 x (B, H, W, C), kernel (k, k, 1, C)");
  }
  if (residual && (residual->element_type() != x.element_type() ||
                   residual->element_count() != y->element_count())) {
    return ffi::Error::InvalidArgument("gsvit_onednn_depthwise: residual of y's shape and dtype");
  }
  SetThreads(threads);
  bool bf16 = x.element_type() == ffi::DataType::BF16;
  Key key{xd[0], xd[1], xd[2], xd[3], wd[0], stride, pad, bf16, relu, residual != nullptr, threads};
  return Guarded("gsvit_onednn_depthwise", [&] {
    const Depthwise& d = Lookup<Depthwise>(key);
    std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, dnnl::memory(d.pd.src_desc(), Engine(), x.untyped_data())},
        {DNNL_ARG_WEIGHTS,
         Reordered(d.to_weights, d.user_weights, d.pd.weights_desc(), w.untyped_data())},
        {DNNL_ARG_BIAS, dnnl::memory(d.pd.bias_desc(), Engine(), b.untyped_data())},
        {DNNL_ARG_DST, dnnl::memory(d.pd.dst_desc(), Engine(), y->untyped_data())}};
    if (residual) {
      args.insert(
          {AddedArg(relu), dnnl::memory(d.pd.dst_desc(), Engine(), residual->untyped_data())});
    }
    Execute(d.prim, d.pd.scratchpad_desc(), std::move(args));
  });
}

ffi::Error ForwardImpl(ffi::AnyBuffer x, ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> b,
                       ffi::Result<ffi::AnyBuffer> y, int64_t stride, int64_t pad, bool relu,
                       int64_t threads) {
  return Run(x, w, b, nullptr, y, stride, pad, relu, threads);
}

ffi::Error ResidualImpl(ffi::AnyBuffer x, ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> b,
                        ffi::AnyBuffer residual, ffi::Result<ffi::AnyBuffer> y, int64_t stride,
                        int64_t pad, bool relu, int64_t threads) {
  return Run(x, w, b, &residual, y, stride, pad, relu, threads);
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GsvitOnednnDepthwise, ForwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("pad")
                                  .Attr<bool>("relu")
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(GsvitOnednnDepthwiseResidual, ResidualImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("pad")
                                  .Attr<bool>("relu")
                                  .Attr<int64_t>("threads"));
