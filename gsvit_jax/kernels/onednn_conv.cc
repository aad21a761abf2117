// oneDNN convolutions as XLA FFI handlers: forward, backward-data and backward-weights of a dense
// k x k conv with symmetric zero padding. NHWC activations in float32 or bfloat16 (f32
// accumulation); the HWIO kernel, the bias and their gradients are always float32 (reordered to and
// from oneDNN's blocked layouts here). XLA:CPU's own convolution runs the encoder's stride-2 convs
// ~5x and the decoder's backward passes 3-5x slower than oneDNN on the same cores
// (benchmarks/RESULTS.md); gsvit_jax/kernels/onednn.py builds, loads and calls this.
#include <cstdint>
#include <tuple>

#include "onednn_common.h"

namespace {

using namespace gsvit;

// (batch, height, width, in channels, out channels, kernel height, kernel width, stride, padding,
//  bfloat16?, threads): the primitives of one convolution are made on its first call and kept.
// `threads`: this call's OpenMP team size (SetThreads).
using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, bool, bool, int64_t>;

// Memory descriptors of one convolution: activations NHWC, weights in the layout oneDNN picks.
struct Descs {
  dnnl::memory::desc src, dst, weights, bias, user_weights;
  dnnl::memory::dims strides, padding;
  dnnl::primitive_attr attr;

  explicit Descs(const Key& key) {
    auto [n, h, w, ci, co, kh, kw, stride, pad, bf16, relu, threads] = key;
    dt act = bf16 ? dt::bf16 : dt::f32;
    src = dnnl::memory::desc({n, ci, h, w}, act, tag::nhwc);
    int64_t oh = (h + 2 * pad - kh) / stride + 1, ow = (w + 2 * pad - kw) / stride + 1;
    dst = dnnl::memory::desc({n, co, oh, ow}, act, tag::nhwc);
    weights = dnnl::memory::desc({co, ci, kh, kw}, act, tag::any);
    bias = dnnl::memory::desc({co}, dt::f32, tag::a);
    user_weights = dnnl::memory::desc({co, ci, kh, kw}, dt::f32, tag::hwio);
    strides = {stride, stride};
    padding = {pad, pad};
    attr = Attributes(relu);
  }

  dnnl::convolution_forward::primitive_desc Forward() const {
    return dnnl::convolution_forward::primitive_desc(
        Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src,
        weights, bias, dst, strides, padding, padding, attr);
  }
};

struct Forward {
  dnnl::memory::desc user_weights;
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward prim;
  dnnl::reorder to_weights;  // float32 HWIO -> pd's weights
  explicit Forward(const Key& key) : Forward(Descs(key)) {}
  explicit Forward(const Descs& d)
      : user_weights(d.user_weights), pd(d.Forward()), prim(pd),
        to_weights(dnnl::reorder::primitive_desc(Engine(), d.user_weights, Engine(),
                                                 pd.weights_desc())) {}
};

struct BackwardData {
  dnnl::memory::desc user_weights;
  dnnl::convolution_backward_data::primitive_desc pd;
  dnnl::convolution_backward_data prim;
  dnnl::reorder to_weights;
  explicit BackwardData(const Key& key) : BackwardData(Descs(key)) {}
  explicit BackwardData(const Descs& d)
      : user_weights(d.user_weights),
        pd(Engine(), dnnl::algorithm::convolution_direct, d.src, d.weights, d.dst, d.strides,
           d.padding, d.padding, d.Forward(), d.attr),
        prim(pd),
        to_weights(dnnl::reorder::primitive_desc(Engine(), d.user_weights, Engine(),
                                                 pd.weights_desc())) {}
};

struct BackwardWeights {
  dnnl::memory::desc user_weights;
  dnnl::convolution_backward_weights::primitive_desc pd;
  dnnl::convolution_backward_weights prim;
  dnnl::reorder from_weights;  // pd's weight gradient -> float32 HWIO
  static dnnl::memory::desc F32Weights(const Descs& d) {
    return dnnl::memory::desc(d.user_weights.get_dims(), dt::f32, tag::any);
  }
  explicit BackwardWeights(const Key& key) : BackwardWeights(Descs(key)) {}
  explicit BackwardWeights(const Descs& d)
      : user_weights(d.user_weights),
        pd(Engine(), dnnl::algorithm::convolution_direct, d.src, F32Weights(d), d.bias, d.dst,
           d.strides, d.padding, d.padding, d.Forward(), d.attr),
        prim(pd),
        from_weights(dnnl::reorder::primitive_desc(Engine(), pd.diff_weights_desc(), Engine(),
                                                   d.user_weights)) {}
};

// Key of an NHWC activation x and a float32 HWIO kernel.
// Also sets this thread's OpenMP team size for the primitives made and run by the call.
Key MakeKey(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w, int64_t stride, int64_t pad,
            bool bf16, bool relu, int64_t threads) {
  SetThreads(threads);
  return Key{x[0], x[1], x[2], x[3], w[3], w[0], w[1], stride, pad, bf16, relu, threads};
}

ffi::Error Check(const ffi::AnyBuffer& x, ffi::Span<const int64_t> w) {
  auto xd = x.dimensions();
  if (xd.size() != 4 || w.size() != 4 || w[2] != xd[3]) {
    return ffi::Error::InvalidArgument("gsvit_onednn_conv: NHWC activations and HWIO kernel");
  }
  if (!IsFloat(x)) {
    return ffi::Error::InvalidArgument("gsvit_onednn_conv: float32 or bfloat16 activations");
  }
  return ffi::Error::Success();
}

ffi::Error ForwardImpl(ffi::AnyBuffer x, ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> b,
                       ffi::Result<ffi::AnyBuffer> y, int64_t stride, int64_t pad, bool relu,
                       int64_t threads) {
  if (auto e = Check(x, w.dimensions()); e.failure()) return e;
  bool bf16 = x.element_type() == ffi::DataType::BF16;
  Key key = MakeKey(x.dimensions(), w.dimensions(), stride, pad, bf16, relu, threads);
  return Guarded("gsvit_onednn_conv", [&] {
    const Forward& f = Lookup<Forward>(key);
    dnnl::memory weights = Reordered(f.to_weights, f.user_weights, f.pd.weights_desc(),
                                     w.untyped_data());
    Execute(f.prim, f.pd.scratchpad_desc(),
            {{DNNL_ARG_SRC, dnnl::memory(f.pd.src_desc(), Engine(), x.untyped_data())},
             {DNNL_ARG_WEIGHTS, weights},
             {DNNL_ARG_BIAS, dnnl::memory(f.pd.bias_desc(), Engine(), b.untyped_data())},
             {DNNL_ARG_DST, dnnl::memory(f.pd.dst_desc(), Engine(), y->untyped_data())}});
  });
}

// dx = the gradient of the input, from the output's gradient dy and the kernel.
ffi::Error BackwardDataImpl(ffi::AnyBuffer dy, ffi::Buffer<ffi::F32> w,
                            ffi::Result<ffi::AnyBuffer> dx, int64_t stride, int64_t pad,
                            int64_t threads) {
  if (auto e = Check(*dx, w.dimensions()); e.failure()) return e;
  bool bf16 = dx->element_type() == ffi::DataType::BF16;
  Key key = MakeKey(dx->dimensions(), w.dimensions(), stride, pad, bf16, false, threads);
  return Guarded("gsvit_onednn_conv", [&] {
    const BackwardData& bd = Lookup<BackwardData>(key);
    dnnl::memory weights = Reordered(bd.to_weights, bd.user_weights, bd.pd.weights_desc(),
                                     w.untyped_data());
    Execute(bd.prim, bd.pd.scratchpad_desc(),
            {{DNNL_ARG_DIFF_DST, dnnl::memory(bd.pd.diff_dst_desc(), Engine(), dy.untyped_data())},
             {DNNL_ARG_WEIGHTS, weights},
             {DNNL_ARG_DIFF_SRC, dnnl::memory(bd.pd.diff_src_desc(), Engine(),
                                              dx->untyped_data())}});
  });
}

// (dw, db) = the gradients of the kernel (float32 HWIO) and the bias, from the input x and dy.
ffi::Error BackwardWeightsImpl(ffi::AnyBuffer x, ffi::AnyBuffer dy,
                               ffi::Result<ffi::Buffer<ffi::F32>> dw,
                               ffi::Result<ffi::Buffer<ffi::F32>> db, int64_t stride, int64_t pad,
                               int64_t threads) {
  if (auto e = Check(x, dw->dimensions()); e.failure()) return e;
  bool bf16 = x.element_type() == ffi::DataType::BF16;
  Key key = MakeKey(x.dimensions(), dw->dimensions(), stride, pad, bf16, false, threads);
  return Guarded("gsvit_onednn_conv", [&] {
    const BackwardWeights& bw = Lookup<BackwardWeights>(key);
    dnnl::memory weights(bw.pd.diff_weights_desc(), Engine());
    Execute(bw.prim, bw.pd.scratchpad_desc(),
            {{DNNL_ARG_SRC, dnnl::memory(bw.pd.src_desc(), Engine(), x.untyped_data())},
             {DNNL_ARG_DIFF_DST, dnnl::memory(bw.pd.diff_dst_desc(), Engine(), dy.untyped_data())},
             {DNNL_ARG_DIFF_WEIGHTS, weights},
             {DNNL_ARG_DIFF_BIAS, dnnl::memory(bw.pd.diff_bias_desc(), Engine(),
                                               db->untyped_data())}});
    dnnl::memory user(bw.user_weights, Engine(), dw->untyped_data());
    dnnl::stream stream(Engine());
    bw.from_weights.execute(stream, weights, user);
    stream.wait();
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GsvitOnednnConv, ForwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("pad")
                                  .Attr<bool>("relu")
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(GsvitOnednnConvBackwardData, BackwardDataImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("pad")
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(GsvitOnednnConvBackwardWeights, BackwardWeightsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("pad")
                                  .Attr<int64_t>("threads"));
