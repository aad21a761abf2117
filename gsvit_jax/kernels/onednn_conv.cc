// oneDNN forward convolution as an XLA FFI handler: NHWC input, HWIO kernel, f32 bias, NHWC output,
// float32 or bfloat16 (bf16 in and out, f32 bias, f32 accumulation). XLA:CPU's own convolution runs
// the encoder's stride-2 3x3 patch-embedding convolutions 5x slower than oneDNN on the same cores
// (benchmarks/RESULTS.md); gsvit_jax/kernels/onednn.py builds, loads and calls this.
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// (batch, height, width, in channels, out channels, kernel height, kernel width, stride, padding,
//  bfloat16?, fused ReLU?): one oneDNN primitive per distinct convolution, made on first use.
using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int, int64_t>;

// The primitive (its kernels chosen for this CPU) and the reorder of XLA's HWIO kernel into the
// weight layout the primitive wants (done every call: the weights are an argument, a few hundred KiB).
struct Conv {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward prim;
  dnnl::reorder weight_reorder;
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

const Conv& Lookup(const Key& key) {
  static std::mutex mu;
  static std::map<Key, std::unique_ptr<Conv>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return *it->second;
  auto [n, h, w, ci, co, kh, kw, stride, pad, bf16, relu] = key;
  using tag = dnnl::memory::format_tag;
  auto dt = bf16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
  int64_t oh = (h + 2 * pad - kh) / stride + 1, ow = (w + 2 * pad - kw) / stride + 1;
  dnnl::memory::desc src({n, ci, h, w}, dt, tag::nhwc);
  dnnl::memory::desc wei({co, ci, kh, kw}, dt, tag::any);
  dnnl::memory::desc bias({co}, dnnl::memory::data_type::f32, tag::a);
  dnnl::memory::desc dst({n, co, oh, ow}, dt, tag::nhwc);
  dnnl::post_ops ops;
  if (relu) ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
  dnnl::primitive_attr attr;
  attr.set_post_ops(ops);
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // per call: safe from several threads
  auto conv = std::make_unique<Conv>();
  conv->pd = dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src, wei,
      bias, dst, {stride, stride}, {pad, pad}, {pad, pad}, attr);
  conv->prim = dnnl::convolution_forward(conv->pd);
  dnnl::memory::desc user_wei({co, ci, kh, kw}, dt, tag::hwio);
  conv->weight_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(
      Engine(), user_wei, Engine(), conv->pd.weights_desc()));
  return *cache.emplace(key, std::move(conv)).first->second;
}

void Run(const Conv& conv, bool bf16, ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Buffer<ffi::F32> b,
         ffi::AnyBuffer y) {
  auto wd = w.dimensions();
  using tag = dnnl::memory::format_tag;
  auto dt = bf16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
  auto& eng = Engine();
  dnnl::memory::desc user_wei({wd[3], wd[2], wd[0], wd[1]}, dt, tag::hwio);
  dnnl::memory wmem_user(user_wei, eng, w.untyped_data());
  dnnl::memory wmem(conv.pd.weights_desc(), eng);
  dnnl::memory src(conv.pd.src_desc(), eng, x.untyped_data());
  dnnl::memory dst(conv.pd.dst_desc(), eng, y.untyped_data());
  dnnl::memory bias(conv.pd.bias_desc(), eng, b.untyped_data());
  dnnl::memory scratch(conv.pd.scratchpad_desc(), eng);
  dnnl::stream stream(eng);
  conv.weight_reorder.execute(stream, wmem_user, wmem);
  conv.prim.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wmem}, {DNNL_ARG_BIAS, bias},
                             {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratch}});
  stream.wait();
}

ffi::Error ConvImpl(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Buffer<ffi::F32> b,
                    ffi::Result<ffi::AnyBuffer> y, int64_t stride, int64_t pad, int64_t relu) {
  auto xd = x.dimensions(), wd = w.dimensions();
  if (xd.size() != 4 || wd.size() != 4 || wd[2] != xd[3]) {
    return ffi::Error::InvalidArgument("gsvit_onednn_conv: NHWC input and HWIO kernel expected");
  }
  if (x.element_type() != w.element_type() || x.element_type() != y->element_type() ||
      (x.element_type() != ffi::DataType::F32 && x.element_type() != ffi::DataType::BF16)) {
    return ffi::Error::InvalidArgument("gsvit_onednn_conv: f32 or bf16 input, kernel and output");
  }
  bool bf16 = x.element_type() == ffi::DataType::BF16;
  Key key{xd[0], xd[1], xd[2], xd[3], wd[3], wd[0], wd[1], stride, pad, bf16 ? 1 : 0, relu};
  try {
    Run(Lookup(key), bf16, x, w, b, *y);
  } catch (const dnnl::error& e) {  // never let an exception cross into XLA
    return ffi::Error::Internal(std::string("gsvit_onednn_conv: oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GsvitOnednnConv, ConvImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("pad")
                                  .Attr<int64_t>("relu"));
