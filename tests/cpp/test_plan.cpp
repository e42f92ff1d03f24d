// Plan (JSON, llama-quantize arguments, size) and llama.cpp's quantization mixes. The expected
// mix types are worked out by hand from llama.cpp's src/llama-quant.cpp (llama_tensor_get_type_impl
// and tensor_type_fallback); each expectation names the rule that gives it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>

#include <mpq/plan.h>

namespace {

struct Dims {
  std::string arch;
  int64_t n_layer, hidden, n_head, n_head_kv, head_dim, ffn, vocab;
  bool tied;
  bool qk_norm = false;     // qwen3: attn_q_norm / attn_k_norm per layer
  bool qkv_bias = false;    // qwen2: attn_{q,k,v}.bias
  bool rope_freqs = false;  // llama 3.x: rope_freqs.weight
};

mpq::ModelSpec make_model(const Dims& d) {
  mpq::ModelSpec m;
  m.arch = d.arch;
  m.n_layer = d.n_layer;
  m.n_head = d.n_head;
  m.n_head_kv = d.n_head_kv;
  m.tied_output = d.tied;
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    m.tensors.push_back({std::move(name), std::move(shape)});
  };
  const int64_t q = d.n_head * d.head_dim, kv = d.n_head_kv * d.head_dim;
  add("token_embd.weight", {d.hidden, d.vocab});
  add("output_norm.weight", {d.hidden});
  if (!d.tied) add("output.weight", {d.hidden, d.vocab});
  if (d.rope_freqs) add("rope_freqs.weight", {d.head_dim / 2});
  for (int64_t i = 0; i < d.n_layer; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    add(p + "attn_norm.weight", {d.hidden});
    add(p + "attn_q.weight", {d.hidden, q});
    add(p + "attn_k.weight", {d.hidden, kv});
    add(p + "attn_v.weight", {d.hidden, kv});
    if (d.qkv_bias) {
      add(p + "attn_q.bias", {q});
      add(p + "attn_k.bias", {kv});
      add(p + "attn_v.bias", {kv});
    }
    if (d.qk_norm) {
      add(p + "attn_q_norm.weight", {d.head_dim});
      add(p + "attn_k_norm.weight", {d.head_dim});
    }
    add(p + "attn_output.weight", {q, d.hidden});
    add(p + "ffn_norm.weight", {d.hidden});
    add(p + "ffn_gate.weight", {d.hidden, d.ffn});
    add(p + "ffn_up.weight", {d.hidden, d.ffn});
    add(p + "ffn_down.weight", {d.ffn, d.hidden});
  }
  return m;
}

// Qwen3-0.6B: n_gqa = 16/8 = 2, every row length a multiple of 256, tied embeddings.
mpq::ModelSpec qwen3_06b() {
  return make_model({"qwen3", 28, 1024, 16, 8, 128, 3072, 151936, true, true});
}
// Llama-3.2-3B: n_gqa = 24/8 = 3, tied embeddings, rope_freqs.
mpq::ModelSpec llama32_3b() {
  return make_model({"llama", 28, 3072, 24, 8, 128, 8192, 128256, true, false, false, true});
}
// Qwen2-0.5B: hidden 896 is a multiple of 32 but not of 256 (row fallbacks); n_gqa = 14/2 = 7.
mpq::ModelSpec qwen2_05b() {
  return make_model({"qwen2", 24, 896, 14, 2, 64, 4864, 151936, true, false, true});
}

std::string blk(int64_t i, const char* what) { return "blk." + std::to_string(i) + "." + what; }

// use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2.
// n = 28: n/8 = 3, 7n/8 = 24 -> {0,1,2} + {24..27} + {5,8,...,23}.
const std::set<int64_t> kMoreBits28 = {0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27};
// n = 24: n/8 = 3, 7n/8 = 21 -> {0,1,2} + {21,22,23} + {5,8,...,20}.
const std::set<int64_t> kMoreBits24 = {0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23};

// Every 1-D tensor (norms, biases, rope_freqs) stays in its source type, f32 here
// (tensor_allows_quantization: fewer than 2 dims).
void expect_one_d_f32(const mpq::ModelSpec& m, const mpq::Plan& p) {
  for (const auto& t : m.tensors) {
    if (t.shape.size() == 1) {
      EXPECT_EQ(p.get(t.name).format, "f32") << t.name;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Plan map and JSON

mpq::Plan small_plan() {
  mpq::Plan p;
  p.name = "mine \"v1\"\\ \n\x01 \xc3\xa9";  // quotes, backslash, control chars, UTF-8
  p.base = "q4_k";
  p.set("token_embd.weight", {"q6_k", "kquant"});
  p.set("blk.0.attn_q.weight", {"q4_k", "gptq"});
  p.set("output_norm.weight", {"f32"});
  return p;
}

TEST(Plan, SetGetKeepsInsertionOrder) {
  mpq::Plan p = small_plan();
  EXPECT_EQ(p.size(), 3u);
  EXPECT_TRUE(p.contains("blk.0.attn_q.weight"));
  EXPECT_FALSE(p.contains("blk.1.attn_q.weight"));
  EXPECT_EQ(p.get("blk.0.attn_q.weight").expert, "gptq");
  EXPECT_EQ(p.get("output_norm.weight").expert, "kquant");  // the default
  p.set("token_embd.weight", {"q8_0"});  // replaced in place
  EXPECT_EQ(p.size(), 3u);
  EXPECT_EQ(p.tensors()[0].first, "token_embd.weight");
  EXPECT_EQ(p.tensors()[0].second.format, "q8_0");
  EXPECT_THROW(p.get("nope"), std::out_of_range);
}

TEST(Plan, JsonRoundTrip) {
  const mpq::Plan p = small_plan();
  const mpq::Plan q = mpq::Plan::from_json(p.to_json());
  EXPECT_EQ(q.name, p.name);
  EXPECT_EQ(q.base, p.base);
  EXPECT_EQ(q.tensors(), p.tensors());
  EXPECT_EQ(q.to_json(), p.to_json());
  const mpq::Plan empty = mpq::Plan::from_json(mpq::Plan().to_json());
  EXPECT_EQ(empty.size(), 0u);
  // A whole mix survives too.
  const mpq::Plan mix = mpq::llama_cpp_mix("Q4_K_M", qwen3_06b());
  EXPECT_EQ(mpq::Plan::from_json(mix.to_json()).tensors(), mix.tensors());
}

TEST(Plan, JsonReaderAcceptsOtherSpellings) {
  // Key order, whitespace, \u escapes (a surrogate pair included) and a missing expert.
  const mpq::Plan p = mpq::Plan::from_json(
      "\t{ \"tensors\" : { \"a\\u002eb\" : { \"expert\":\"x\", \"format\":\"q8_0\" },"
      "\"\\ud83d\\ude00\":{\"format\":\"f16\"} } , \"version\" : 1 }\r\n");
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p.get("a.b"), (mpq::TensorChoice{"q8_0", "x"}));
  EXPECT_EQ(p.get("\xf0\x9f\x98\x80").expert, "kquant");
  EXPECT_EQ(p.name, "");
}

TEST(Plan, JsonReaderRejectsMalformedInput) {
  const char* bad[] = {
      "",
      "   ",
      "[]",
      "{",
      "{}",                                                    // no version, no tensors
      "{\"version\":1}",                                       // no tensors
      "{\"tensors\":{}}",                                      // no version
      "{\"version\":2,\"tensors\":{}}",                        // unknown version
      "{\"version\":1.0,\"tensors\":{}}",                      // not an integer
      "{\"version\":-1,\"tensors\":{}}",
      "{\"version\":99999999999999999999,\"tensors\":{}}",
      "{\"version\":1,\"tensors\":{},}",                       // trailing comma
      "{\"version\":1,\"tensors\":{}} x",                      // trailing data
      "{\"version\":1,\"tensors\":{}}}",
      "{\"version\":1,\"tensors\":{},\"extra\":0}",            // unknown key
      "{\"version\":1,\"version\":1,\"tensors\":{}}",          // duplicate key
      "{\"version\":1 \"tensors\":{}}",                        // missing comma
      "{\"version\" 1,\"tensors\":{}}",                        // missing colon
      "{version:1,\"tensors\":{}}",                            // unquoted key
      "{\"version\":1,\"tensors\":{\"a\":{}}}",                // no format
      "{\"version\":1,\"tensors\":{\"a\":{\"format\":\"\"}}}", // empty format
      "{\"version\":1,\"tensors\":{\"a\":{\"format\":4}}}",    // format not a string
      "{\"version\":1,\"tensors\":{\"a\":{\"format\":\"q4_k\",\"bits\":4}}}",
      "{\"version\":1,\"tensors\":{\"a\":{\"format\":\"q4_k\"},\"a\":{\"format\":\"q4_k\"}}}",
      "{\"version\":1,\"tensors\":{\"\":{\"format\":\"q4_k\"}}}",
      "{\"version\":1,\"tensors\":[]}",
      "{\"version\":1,\"name\":\"abc,\"tensors\":{}}",         // unterminated string
      "{\"version\":1,\"name\":\"a\\x\",\"tensors\":{}}",      // bad escape
      "{\"version\":1,\"name\":\"\\u12\",\"tensors\":{}}",     // short \u
      "{\"version\":1,\"name\":\"\\ud83d\",\"tensors\":{}}",   // lone high surrogate
      "{\"version\":1,\"name\":\"\\ude00\",\"tensors\":{}}",   // lone low surrogate
      "{\"version\":1,\"name\":\"a\nb\",\"tensors\":{}}",      // raw control character
      "{\"version\":1,\"name\":null,\"tensors\":{}}",
  };
  for (const char* json : bad) {
    EXPECT_THROW(mpq::Plan::from_json(json), std::invalid_argument) << json;
  }
  // The message says where and what.
  try {
    mpq::Plan::from_json("{\"version\" 1}");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("at byte 11"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("':'"), std::string::npos) << e.what();
  }
}

TEST(Plan, JsonReaderNeverCrashesOnDamagedInput) {
  const std::string good = small_plan().to_json();
  // Every truncation is incomplete JSON.
  for (size_t n = 0; n < good.size() - 1; ++n) {
    EXPECT_THROW(mpq::Plan::from_json(good.substr(0, n)), std::invalid_argument) << n;
  }
  // Single-byte damage anywhere: parses or throws invalid_argument, nothing else.
  const std::string junk("{}[],:\"\\ \x00\x01" "a9\xff", 14);
  for (size_t i = 0; i < good.size(); ++i) {
    for (char c : junk) {
      std::string s = good;
      s[i] = c;
      try {
        mpq::Plan::from_json(s);
      } catch (const std::invalid_argument&) {
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// llama-quantize arguments

// Applies the lines as llama-quantize does: the pattern before the first '=' lowercased, then
// std::regex_search over the names, first match wins.
TEST(Plan, TensorTypeLinesMatchExactlyTheirTensor) {
  const mpq::ModelSpec m = qwen3_06b();
  const mpq::Plan p = mpq::llama_cpp_mix("Q4_K_M", m);
  const std::string lines = p.tensor_type_lines();
  size_t n_lines = 0;
  std::set<std::string> covered;
  for (size_t start = 0; start < lines.size();) {
    const size_t end = lines.find('\n', start);
    ASSERT_NE(end, std::string::npos);
    const std::string line = lines.substr(start, end - start);
    start = end + 1;
    ++n_lines;
    const size_t eq = line.find('=');
    ASSERT_NE(eq, std::string::npos) << line;
    std::string pattern = line.substr(0, eq);
    std::transform(pattern.begin(), pattern.end(), pattern.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    const std::regex re(pattern);
    std::vector<std::string> hits;
    for (const auto& t : m.tensors) {
      if (std::regex_search(t.name, re)) hits.push_back(t.name);
    }
    ASSERT_EQ(hits.size(), 1u) << line;
    EXPECT_EQ(line.substr(eq + 1), p.get(hits[0]).format) << line;
    EXPECT_NE(p.get(hits[0]).format, p.base);
    covered.insert(hits[0]);
  }
  // Q4_K_M on Qwen3-0.6B differs from q4_k in token_embd (q6_k) and in the 14 use_more_bits
  // layers of attn_v and ffn_down (q6_k); norms are never quantized, so no lines for them.
  EXPECT_EQ(n_lines, 1u + 14u + 14u);
  EXPECT_TRUE(covered.count("token_embd.weight"));
  EXPECT_TRUE(covered.count("blk.1.attn_v.weight"));
  // blk.10 is not a more-bits layer, and blk.1's line must not hit it.
  EXPECT_FALSE(covered.count("blk.10.attn_v.weight"));
  EXPECT_EQ(lines.substr(0, lines.find('\n')), "^token_embd\\.weight$=q6_k");

  mpq::Plan no_base = p;
  no_base.base.clear();
  EXPECT_THROW(no_base.tensor_type_lines(), std::invalid_argument);
  mpq::Plan upper;
  upper.base = "q4_k";
  upper.set("Blk.0.X.weight", {"q8_0"});
  EXPECT_THROW(upper.tensor_type_lines(), std::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
// Size

TEST(Plan, BytesAndBitsPerWeight) {
  mpq::ModelSpec m;
  m.tensors = {{"token_embd.weight", {256, 10}}, {"blk.0.attn_q.weight", {256, 4}},
               {"output_norm.weight", {256}}};
  mpq::Plan p;
  p.set("token_embd.weight", {"q8_0"});    // 10 rows * 8 blocks * 34 bytes = 2720
  p.set("blk.0.attn_q.weight", {"q4_k"});  // 4 rows * 1 block * 144 bytes = 576
  p.set("output_norm.weight", {"f32"});    // 256 * 4 = 1024
  EXPECT_EQ(p.bytes(m), 2720 + 576 + 1024);
  EXPECT_DOUBLE_EQ(p.bits_per_weight(m), 8.0 * 4320 / (2560 + 1024 + 256));

  p.set("blk.0.attn_q.weight", {"int4_g32"});  // not a ggml type
  EXPECT_THROW(p.bytes(m), std::invalid_argument);
  p.set("blk.0.attn_q.weight", {"q4_k"});
  m.tensors[1].shape = {96, 4};  // 96 is not a multiple of 256
  EXPECT_THROW(p.bytes(m), std::invalid_argument);
  m.tensors.push_back({"blk.0.attn_k.weight", {256, 4}});  // not in the plan
  m.tensors[1].shape = {256, 4};
  EXPECT_THROW(p.bytes(m), std::invalid_argument);
}

TEST(Plan, BytesOfQwen3Q4KM) {
  const mpq::ModelSpec m = qwen3_06b();
  const mpq::Plan p = mpq::llama_cpp_mix("Q4_K_M", m);
  // Row bytes at hidden 1024: q4_k 4*144 = 576, q6_k 4*210 = 840; at 2048: q4_k 1152;
  // at 3072: q4_k 12*144 = 1728, q6_k 12*210 = 2520. 14 of 28 layers are use_more_bits layers.
  const int64_t embd = 151936LL * 840;
  const int64_t norms = 1024 * 4 + 28LL * (2 * 1024 * 4 + 2 * 128 * 4);
  const int64_t plain = 2048LL * 576 + 1024LL * 576 + 1024LL * 1152 + 2 * 3072LL * 576;
  const int64_t wide = 1024LL * 840 + 1024LL * 2520;
  const int64_t narrow = 1024LL * 576 + 1024LL * 1728;
  const int64_t expect = embd + norms + 28 * plain + 14 * wide + 14 * narrow;
  EXPECT_EQ(p.bytes(m), expect);
  int64_t weights = 0;
  for (const auto& t : m.tensors) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    weights += n;
  }
  EXPECT_DOUBLE_EQ(p.bits_per_weight(m), 8.0 * expect / weights);
}

// ---------------------------------------------------------------------------------------------
// llama.cpp mixes

TEST(LlamaCppMix, NamesAndErrors) {
  const auto names = mpq::llama_cpp_mix_names();
  for (const char* n : {"Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S",
                        "Q5_K_M", "Q6_K", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "F16", "BF16",
                        "F32", "IQ4_NL", "IQ4_XS", "Q4_K_M+L8", "Q3_K_L+L8", "Q6_K+L8"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  }
  const mpq::ModelSpec m = qwen3_06b();
  EXPECT_EQ(mpq::llama_cpp_mix("q4_k_m", m).name, "Q4_K_M");  // case-insensitive
  EXPECT_EQ(mpq::llama_cpp_mix("Q4_K", m).name, "Q4_K_M");    // llama-quantize's alias
  EXPECT_EQ(mpq::llama_cpp_mix("q4_k_m+l8", m).name, "Q4_K_M+L8");
  EXPECT_EQ(mpq::llama_cpp_mix("Q3_K_M", m).base, "q3_k");
  try {
    mpq::llama_cpp_mix("Q4_K_X", m);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("Q4_K_M"), std::string::npos);  // lists the known ones
  }
  EXPECT_THROW(mpq::llama_cpp_mix("Q8_0+L8", m), std::invalid_argument);  // +L8 is for K mixes
  mpq::ModelSpec bad = m;
  bad.tied_output = false;  // but there is no output.weight
  EXPECT_THROW(mpq::llama_cpp_mix("Q4_K_M", bad), std::invalid_argument);
  bad = m;
  bad.arch = "gpt2";
  EXPECT_THROW(mpq::llama_cpp_mix("Q4_K_M", bad), std::invalid_argument);
  bad = m;
  bad.tensors.push_back(bad.tensors[3]);
  EXPECT_THROW(mpq::llama_cpp_mix("Q4_K_M", bad), std::invalid_argument);
}

TEST(LlamaCppMix, Qwen3Q4KM) {
  const mpq::ModelSpec m = qwen3_06b();
  const mpq::Plan p = mpq::llama_cpp_mix("Q4_K_M", m);
  EXPECT_EQ(p.size(), m.tensors.size());
  EXPECT_FALSE(p.contains("output.weight"));
  // Tied: token_embd takes the output rule; 1024 % 256 == 0 and q4_k != q8_0 -> q6_k.
  EXPECT_EQ(p.get("token_embd.weight").format, "q6_k");
  expect_one_d_f32(m, p);
  for (int64_t i = 0; i < 28; ++i) {
    const char* wide = kMoreBits28.count(i) ? "q6_k" : "q4_k";
    // attn_v: Q4_K_M && use_more_bits(i_attention_wv, n_attention_wv = 28) -> q6_k.
    EXPECT_EQ(p.get(blk(i, "attn_v.weight")).format, wide) << i;
    // ffn_down: Q4_K_M (not Falcon) && use_more_bits(i_layer, n_layer) -> q6_k.
    EXPECT_EQ(p.get(blk(i, "ffn_down.weight")).format, wide) << i;
    // No rule for attn_q/attn_k/attn_output/ffn_gate/ffn_up under Q4_K_M: the default q4_k.
    for (const char* t : {"attn_q.weight", "attn_k.weight", "attn_output.weight",
                          "ffn_gate.weight", "ffn_up.weight"}) {
      EXPECT_EQ(p.get(blk(i, t)).format, "q4_k") << i << t;
    }
  }
}

TEST(LlamaCppMix, Qwen3OtherKMixes) {
  const mpq::ModelSpec m = qwen3_06b();
  {
    // Q5_K_M: same layer choice as Q4_K_M for attn_v and ffn_down, default q5_k elsewhere.
    const mpq::Plan p = mpq::llama_cpp_mix("Q5_K_M", m);
    EXPECT_EQ(p.get("token_embd.weight").format, "q6_k");  // output rule
    for (int64_t i = 0; i < 28; ++i) {
      const char* wide = kMoreBits28.count(i) ? "q6_k" : "q5_k";
      EXPECT_EQ(p.get(blk(i, "attn_v.weight")).format, wide);
      EXPECT_EQ(p.get(blk(i, "ffn_down.weight")).format, wide);
      EXPECT_EQ(p.get(blk(i, "ffn_up.weight")).format, "q5_k");
    }
  }
  {
    // Q5_K_S: no rule touches any block tensor; token_embd q6_k (output rule).
    const mpq::Plan p = mpq::llama_cpp_mix("Q5_K_S", m);
    EXPECT_EQ(p.get("token_embd.weight").format, "q6_k");
    EXPECT_EQ(p.get(blk(0, "attn_v.weight")).format, "q5_k");
    EXPECT_EQ(p.get(blk(0, "ffn_down.weight")).format, "q5_k");
  }
  {
    // Q6_K: everything q6_k; the output rule gives q6_k too (q6_k != q8_0).
    const mpq::Plan p = mpq::llama_cpp_mix("Q6_K", m);
    for (const auto& t : m.tensors) {
      EXPECT_EQ(p.get(t.name).format, t.shape.size() == 1 ? "f32" : "q6_k") << t.name;
    }
  }
  {
    // Q4_K_M+L8: --token-embedding-type q8_0 returns before any rule; the rest is Q4_K_M.
    const mpq::Plan p = mpq::llama_cpp_mix("Q4_K_M+L8", m);
    const mpq::Plan ref = mpq::llama_cpp_mix("Q4_K_M", m);
    EXPECT_EQ(p.get("token_embd.weight").format, "q8_0");
    for (const auto& [name, choice] : ref.tensors()) {
      if (name != "token_embd.weight") {
        EXPECT_EQ(p.get(name), choice) << name;
      }
    }
  }
}

TEST(LlamaCppMix, Llama32KMixes) {
  const mpq::ModelSpec m = llama32_3b();  // n_gqa = 3: below every "n_gqa >= 4" rule
  {
    // Q3_K_M.
    const mpq::Plan p = mpq::llama_cpp_mix("Q3_K_M", m);
    EXPECT_EQ(p.get("token_embd.weight").format, "q6_k");  // tied -> output rule
    EXPECT_EQ(p.get("rope_freqs.weight").format, "f32");   // 1-D
    expect_one_d_f32(m, p);
    for (int64_t i = 0; i < 28; ++i) {
      // attn_v: Q3_K_M -> i_attention_wv < 2 ? q5_k : q4_k.
      EXPECT_EQ(p.get(blk(i, "attn_v.weight")).format, i < 2 ? "q5_k" : "q4_k") << i;
      // ffn_down: Q3_K_M -> i < n_layer/16 (= 1) ? q5_k : (not Falcon) q4_k.
      EXPECT_EQ(p.get(blk(i, "ffn_down.weight")).format, i < 1 ? "q5_k" : "q4_k") << i;
      // attn_output: Q3_K_M (dense, not Falcon) -> q4_k.
      EXPECT_EQ(p.get(blk(i, "attn_output.weight")).format, "q4_k");
      for (const char* t : {"attn_q.weight", "attn_k.weight", "ffn_gate.weight", "ffn_up.weight"}) {
        EXPECT_EQ(p.get(blk(i, t)).format, "q3_k") << t;  // default
      }
    }
  }
  {
    // Q2_K: attn_v -> n_gqa (3) >= 4 ? q4_k : q3_k; ffn_down -> q3_k; attn_output -> q3_k.
    const mpq::Plan p = mpq::llama_cpp_mix("Q2_K", m);
    EXPECT_EQ(p.get("token_embd.weight").format, "q6_k");
    EXPECT_EQ(p.get(blk(5, "attn_v.weight")).format, "q3_k");
    EXPECT_EQ(p.get(blk(5, "ffn_down.weight")).format, "q3_k");
    EXPECT_EQ(p.get(blk(5, "attn_output.weight")).format, "q3_k");
    EXPECT_EQ(p.get(blk(5, "attn_q.weight")).format, "q2_k");
    EXPECT_EQ(p.get(blk(5, "ffn_up.weight")).format, "q2_k");
  }
  {
    // Q3_K_S: no rule below the output one.
    const mpq::Plan p = mpq::llama_cpp_mix("Q3_K_S", m);
    EXPECT_EQ(p.get("token_embd.weight").format, "q6_k");
    EXPECT_EQ(p.get(blk(0, "attn_v.weight")).format, "q3_k");
    EXPECT_EQ(p.get(blk(0, "ffn_down.weight")).format, "q3_k");
    EXPECT_EQ(p.get(blk(0, "attn_output.weight")).format, "q3_k");
  }
  {
    // Q3_K_L: attn_v, ffn_down (not Falcon) and attn_output -> q5_k.
    const mpq::Plan p = mpq::llama_cpp_mix("Q3_K_L", m);
    for (int64_t i : {0, 13, 27}) {
      EXPECT_EQ(p.get(blk(i, "attn_v.weight")).format, "q5_k");
      EXPECT_EQ(p.get(blk(i, "ffn_down.weight")).format, "q5_k");
      EXPECT_EQ(p.get(blk(i, "attn_output.weight")).format, "q5_k");
      EXPECT_EQ(p.get(blk(i, "attn_k.weight")).format, "q3_k");
    }
  }
  {
    // Q4_K_S: attn_v -> i_attention_wv < 4 ? q5_k; ffn_down -> i_layer < n_layer/8 (= 3) ? q5_k.
    const mpq::Plan p = mpq::llama_cpp_mix("Q4_K_S", m);
    for (int64_t i = 0; i < 28; ++i) {
      EXPECT_EQ(p.get(blk(i, "attn_v.weight")).format, i < 4 ? "q5_k" : "q4_k") << i;
      EXPECT_EQ(p.get(blk(i, "ffn_down.weight")).format, i < 3 ? "q5_k" : "q4_k") << i;
    }
    EXPECT_EQ(p.get("token_embd.weight").format, "q6_k");
  }
  {
    // Q3_K_L+L8: token_embd at q8_0 (there is no output.weight, tied).
    const mpq::Plan p = mpq::llama_cpp_mix("Q3_K_L+L8", m);
    EXPECT_EQ(p.get("token_embd.weight").format, "q8_0");
    EXPECT_EQ(p.get(blk(0, "attn_v.weight")).format, "q5_k");
  }
}

TEST(LlamaCppMix, Llama32LegacyAndFloatMixes) {
  const mpq::ModelSpec m = llama32_3b();
  // Q4_0/Q4_1/Q5_0/Q5_1: every quantizable tensor gets the ftype's type (the Q4_0/Q5_0 ffn_down
  // rule needs an imatrix), but tied token_embd takes the output rule: 3072 % 32 == 0 and the
  // type is not q8_0 -> q6_k.
  for (const auto& [ftype, type] : std::vector<std::pair<std::string, std::string>>{
           {"Q4_0", "q4_0"}, {"Q4_1", "q4_1"}, {"Q5_0", "q5_0"}, {"Q5_1", "q5_1"}}) {
    const mpq::Plan p = mpq::llama_cpp_mix(ftype, m);
    EXPECT_EQ(p.base, type);
    for (const auto& t : m.tensors) {
      const std::string want =
          t.shape.size() == 1 ? "f32" : t.name == "token_embd.weight" ? "q6_k" : type;
      EXPECT_EQ(p.get(t.name).format, want) << ftype << " " << t.name;
    }
  }
  // Q8_0: the output rule keeps q8_0. F16/BF16/F32: not a block type, so no rule runs and every
  // quantizable tensor takes the type; 1-D tensors keep their source type (f32).
  for (const auto& [ftype, type] : std::vector<std::pair<std::string, std::string>>{
           {"Q8_0", "q8_0"}, {"F16", "f16"}, {"BF16", "bf16"}, {"F32", "f32"}}) {
    const mpq::Plan p = mpq::llama_cpp_mix(ftype, m);
    for (const auto& t : m.tensors) {
      EXPECT_EQ(p.get(t.name).format, t.shape.size() == 1 ? "f32" : type) << ftype << t.name;
    }
  }
}

TEST(LlamaCppMix, RowLengthFallbacks) {
  const mpq::ModelSpec m = qwen2_05b();  // rows of 896: a multiple of 32, not of 256
  {
    const mpq::Plan p = mpq::llama_cpp_mix("Q4_K_M", m);
    // Tied token_embd: 896 % 256 != 0 -> q8_0 (output rule), which fits 32-blocks.
    EXPECT_EQ(p.get("token_embd.weight").format, "q8_0");
    expect_one_d_f32(m, p);  // the qkv biases included
    for (int64_t i = 0; i < 24; ++i) {
      // attn_v: use_more_bits(i, 24) -> q6_k -> fallback q8_0; otherwise q4_k -> fallback q5_0.
      EXPECT_EQ(p.get(blk(i, "attn_v.weight")).format, kMoreBits24.count(i) ? "q8_0" : "q5_0");
      // ffn_down rows are 4864 = 19 * 256: no fallback, the plain Q4_K_M rule.
      EXPECT_EQ(p.get(blk(i, "ffn_down.weight")).format, kMoreBits24.count(i) ? "q6_k" : "q4_k");
      for (const char* t : {"attn_q.weight", "attn_k.weight", "attn_output.weight",
                            "ffn_gate.weight", "ffn_up.weight"}) {
        EXPECT_EQ(p.get(blk(i, t)).format, "q5_0") << t;  // q4_k -> q5_0
      }
    }
  }
  {
    const mpq::Plan p = mpq::llama_cpp_mix("Q2_K", m);
    EXPECT_EQ(p.get("token_embd.weight").format, "q8_0");
    // attn_v: n_gqa = 7 >= 4 -> q4_k -> fallback q5_0.
    EXPECT_EQ(p.get(blk(3, "attn_v.weight")).format, "q5_0");
    EXPECT_EQ(p.get(blk(3, "attn_output.weight")).format, "q4_0");  // q3_k -> q4_0
    EXPECT_EQ(p.get(blk(3, "attn_q.weight")).format, "q4_0");       // q2_k -> q4_0
    EXPECT_EQ(p.get(blk(3, "ffn_down.weight")).format, "q3_k");     // 4864 fits
  }
  {
    const mpq::Plan p = mpq::llama_cpp_mix("Q5_K_S", m);
    EXPECT_EQ(p.get(blk(3, "attn_q.weight")).format, "q5_1");     // q5_k -> q5_1
    EXPECT_EQ(p.get(blk(3, "ffn_down.weight")).format, "q5_k");
  }
  {
    const mpq::Plan p = mpq::llama_cpp_mix("IQ4_XS", m);
    // attn_v: IQ4_XS && n_gqa >= 4 -> q5_k -> fallback q5_1.
    EXPECT_EQ(p.get(blk(3, "attn_v.weight")).format, "q5_1");
    EXPECT_EQ(p.get(blk(3, "attn_q.weight")).format, "iq4_nl");  // iq4_xs -> iq4_nl
    // ffn_down: i_layer < n_layer/8 (= 3) && IQ4_XS && no imatrix -> q5_k.
    EXPECT_EQ(p.get(blk(2, "ffn_down.weight")).format, "q5_k");
    EXPECT_EQ(p.get(blk(3, "ffn_down.weight")).format, "iq4_xs");
  }
  // Rows of 100 fit no block: every fallback ends in f16, including the output rule's q8_0.
  const mpq::ModelSpec odd = make_model({"llama", 2, 100, 4, 4, 25, 100, 50, true});
  for (const char* ftype : {"Q4_K_M", "Q8_0", "Q4_0", "Q2_K"}) {
    const mpq::Plan p = mpq::llama_cpp_mix(ftype, odd);
    EXPECT_EQ(p.get("token_embd.weight").format, "f16") << ftype;
    EXPECT_EQ(p.get(blk(1, "attn_q.weight")).format, "f16") << ftype;
  }
  EXPECT_THROW(mpq::llama_cpp_mix("Q4_K_M+L8", odd), std::invalid_argument);  // q8_0 cannot fit
}

TEST(LlamaCppMix, UntiedGqaAnd70BRules) {
  // llama, 80 layers, 64 heads on 8 kv heads: llama.cpp's LLM_TYPE_70B, n_gqa = 8. Untied.
  const mpq::ModelSpec m = make_model({"llama", 80, 256, 64, 8, 4, 512, 1000, false});
  {
    const mpq::Plan p = mpq::llama_cpp_mix("Q2_K", m);
    // Untied: token_embd has no K-quant rule (stays q2_k); output.weight takes the output rule.
    EXPECT_EQ(p.get("token_embd.weight").format, "q2_k");
    EXPECT_EQ(p.get("output.weight").format, "q6_k");
    // attn_v: n_gqa >= 4 -> q4_k, then the 70B widening q4_k -> q5_k.
    EXPECT_EQ(p.get(blk(40, "attn_v.weight")).format, "q5_k");
  }
  {
    const mpq::Plan p = mpq::llama_cpp_mix("Q3_K_M", m);
    for (int64_t i = 0; i < 80; ++i) {
      // attn_v: q5_k for i < 2, else q4_k -> 70B -> q5_k.
      EXPECT_EQ(p.get(blk(i, "attn_v.weight")).format, "q5_k") << i;
      // ffn_down: i < 80/16 (= 5) ? q5_k : q4_k.
      EXPECT_EQ(p.get(blk(i, "ffn_down.weight")).format, i < 5 ? "q5_k" : "q4_k") << i;
    }
    EXPECT_EQ(p.get("token_embd.weight").format, "q3_k");
  }
  {
    const mpq::Plan p = mpq::llama_cpp_mix("Q3_K_S", m);  // q3_k -> 70B -> q5_k
    EXPECT_EQ(p.get(blk(7, "attn_v.weight")).format, "q5_k");
    EXPECT_EQ(p.get(blk(7, "attn_k.weight")).format, "q3_k");
  }
  {
    mpq::ModelSpec q = m;  // the same shapes as qwen3: no 70B type there
    q.arch = "qwen3";
    EXPECT_EQ(mpq::llama_cpp_mix("Q2_K", q).get(blk(40, "attn_v.weight")).format, "q4_k");
    EXPECT_EQ(mpq::llama_cpp_mix("Q3_K_S", q).get(blk(40, "attn_v.weight")).format, "q3_k");
    q.arch = "qwen2";  // qwen2 with 80 layers is LLM_TYPE_70B whatever the heads
    EXPECT_EQ(mpq::llama_cpp_mix("Q3_K_S", q).get(blk(40, "attn_v.weight")).format, "q5_k");
  }
  {
    // llama with 80 layers but no GQA is LLM_TYPE_65B: no widening, Q3_K_S attn_v stays q3_k.
    const mpq::ModelSpec mha = make_model({"llama", 80, 256, 8, 8, 32, 512, 1000, false});
    EXPECT_EQ(mpq::llama_cpp_mix("Q3_K_S", mha).get(blk(40, "attn_v.weight")).format, "q3_k");
  }
  {
    mpq::ModelSpec e = m;  // n_expert == 8: attn_v and attn_k -> q8_0, attn_output -> q5_k
    e.n_expert = 8;
    const mpq::Plan p = mpq::llama_cpp_mix("Q4_K_M", e);
    EXPECT_EQ(p.get(blk(9, "attn_v.weight")).format, "q8_0");
    EXPECT_EQ(p.get(blk(9, "attn_k.weight")).format, "q8_0");
    EXPECT_EQ(p.get(blk(9, "attn_output.weight")).format, "q5_k");
  }
}

TEST(LlamaCppMix, TensorsThatStayInTheirSourceType) {
  // tensor_allows_quantization: at least 2 dims larger than 1 (ggml_n_dims), a name ending in
  // "weight", no "_norm.weight", no MoE router "ffn_gate_inp.weight".
  mpq::ModelSpec m = make_model({"llama", 2, 256, 4, 4, 64, 256, 100, true});
  m.tensors.push_back({"blk.0.extra.weight", {256, 1}, "f16"});          // ggml_n_dims == 1
  m.tensors.push_back({"blk.0.ffn_gate_inp.weight", {256, 8}, "f32"});   // router
  m.tensors.push_back({"blk.0.proj.bias", {256, 8}, "bf16"});            // not a weight
  m.tensors.push_back({"blk.0.mix_norm.weight", {256, 8}, "f32"});       // a norm
  m.tensors.push_back({"blk.0.extra2.weight", {256, 4, 1}, "f32"});      // 2-D: quantized
  const mpq::Plan p = mpq::llama_cpp_mix("Q4_K_M", m);
  EXPECT_EQ(p.get("blk.0.extra.weight").format, "f16");
  EXPECT_EQ(p.get("blk.0.ffn_gate_inp.weight").format, "f32");
  EXPECT_EQ(p.get("blk.0.proj.bias").format, "bf16");
  EXPECT_EQ(p.get("blk.0.mix_norm.weight").format, "f32");
  EXPECT_EQ(p.get("blk.0.extra2.weight").format, "q4_k");  // no rule for its role: the default
}

TEST(LlamaCppMix, CountersFollowTheLoaderOrder) {
  // llama.cpp visits tensors sorted by block number, then name; a shuffled tensor list must give
  // the same plan (the attn_v counter is the layer index, not the position in the file).
  const mpq::ModelSpec m = qwen3_06b();
  mpq::ModelSpec r = m;
  std::reverse(r.tensors.begin(), r.tensors.end());
  const mpq::Plan a = mpq::llama_cpp_mix("Q4_K_M", m);
  const mpq::Plan b = mpq::llama_cpp_mix("Q4_K_M", r);
  for (const auto& [name, choice] : a.tensors()) EXPECT_EQ(b.get(name), choice) << name;
  EXPECT_EQ(b.tensors()[0].first, r.tensors[0].name);  // recorded in the model's order
}

// ---------------------------------------------------------------------------------------------
// llama.cpp's IQ file types. The rules are those of llama-cpp-python 0.3.36's vendored
// src/llama-quant.cpp: llama_ftype_get_default_type (the base), llama_tensor_get_type_impl's
// output/token_embd branch, its 1-/2-bit branch (IQ1_*, IQ2_*) and its general branch (IQ3_*),
// and tensor_requires_imatrix (what llama-quantize refuses without an imatrix).

// Qwen2.5-1.5B: 28 layers, hidden 1536, 12 heads on 2 kv heads (n_gqa = 6), ffn 8960 (= 35 * 256,
// so no row fallback), qkv biases, untied output.
mpq::ModelSpec qwen25_15b() {
  return make_model({"qwen2", 28, 1536, 12, 2, 128, 8960, 151936, false, false, true});
}
// Llama-3.2-1B: 16 layers, hidden 2048, 32 heads on 8 kv heads (n_gqa = 4), ffn 8192, tied
// output, rope_freqs.
mpq::ModelSpec llama32_1b() {
  return make_model({"llama", 16, 2048, 32, 8, 64, 8192, 128256, true, false, false, true});
}

// The expected type of one block tensor of an IQ mix, rule by rule. `n` is n_layer (which is also
// llama.cpp's n_ffn_down here, one ffn_down per layer); `i` the layer, which is also the value of
// every running counter (i_attention_wv, i_ffn_down, ...) when the tensor is reached, since the
// loader visits the blocks in order.
struct IqCase {
  const char* ftype;
  const char* base;  // llama_ftype_get_default_type
};

std::string iq_block_type(const std::string& ftype, const std::string& base, const std::string& t,
                          int64_t i, int64_t n, int64_t n_gqa, bool imatrix) {
  const bool one_or_two_bit = ftype.starts_with("IQ1") || ftype.starts_with("IQ2");
  const bool iq2_s_or_m = ftype == "IQ2_S" || ftype == "IQ2_M";
  if (one_or_two_bit) {
    // The 1-/2-bit branch.
    if (t == "attn_v.weight") {
      // n_gqa >= 4 || n_expert >= 4 -> q4_k; else IQ2_S/IQ2_M -> iq3_s, the others q2_k.
      if (n_gqa >= 4) return "q4_k";
      return iq2_s_or_m ? "iq3_s" : "q2_k";
    }
    if (t == "ffn_down.weight") {
      // i_ffn_down < n_ffn_down / 8 -> iq3_s (IQ2_S/IQ2_M) or q2_k; else the default.
      if (i < n / 8) return iq2_s_or_m ? "iq3_s" : "q2_k";
      return base;
    }
    if (t == "attn_output.weight") {
      // Dense: IQ1_S/IQ1_M -> iq2_xxs, IQ2_S/IQ2_M -> iq3_s; IQ2_XXS/IQ2_XS keep the default.
      if (ftype.starts_with("IQ1")) return "iq2_xxs";
      if (iq2_s_or_m) return "iq3_s";
      return base;
    }
    return base;  // attn_q, attn_k (no 8-expert rule), ffn_gate, ffn_up: no rule in this branch
  }
  // The general branch, IQ3 file types.
  if (t == "attn_v.weight") {
    // IQ3_XXS: n_gqa >= 4 ? q4_k : (no imatrix ? iq3_s : iq3_xxs).
    // IQ3_XS, IQ3_S: n_gqa >= 4 -> q4_k. IQ3_M: always q4_k. (Not 70B, no 8 experts.)
    if (ftype == "IQ3_M" || n_gqa >= 4) return "q4_k";
    if (ftype == "IQ3_XXS") return imatrix ? "iq3_xxs" : "iq3_s";
    return base;
  }
  if (t == "attn_k.weight" || t == "attn_q.weight") {
    // IQ3_XS -> iq3_xxs; IQ3_XXS -> iq2_s.
    if (ftype == "IQ3_XS") return "iq3_xxs";
    if (ftype == "IQ3_XXS") return "iq2_s";
    return base;
  }
  if (t == "ffn_down.weight") {
    // IQ3_XXS without an imatrix: i_layer < n_layer/8 ? q4_k : q3_k (with one: the default).
    // IQ3_M: i_layer < n_layer/8 -> q4_k (the use_more_bits part is for 8 experts only).
    if (ftype == "IQ3_XXS" && !imatrix) return i < n / 8 ? "q4_k" : "q3_k";
    if (ftype == "IQ3_M" && i < n / 8) return "q4_k";
    return base;
  }
  if (t == "attn_output.weight") {
    // Dense, not Falcon: IQ3_XXS -> iq3_s, IQ3_M -> q4_k.
    if (ftype == "IQ3_XXS") return "iq3_s";
    if (ftype == "IQ3_M") return "q4_k";
    return base;
  }
  if (t == "ffn_gate.weight" || t == "ffn_up.weight") {
    // IQ3_XS && n_layer/8 <= i_layer < 7*n_layer/8 -> iq3_xxs.
    if (ftype == "IQ3_XS" && i >= n / 8 && i < 7 * n / 8) return "iq3_xxs";
    return base;
  }
  return base;
}

constexpr IqCase kIqMixes[] = {
    {"IQ1_S", "iq1_s"},     {"IQ1_M", "iq1_m"},   {"IQ2_XXS", "iq2_xxs"}, {"IQ2_XS", "iq2_xs"},
    {"IQ2_S", "iq2_xs"},    {"IQ2_M", "iq2_s"},   {"IQ3_XXS", "iq3_xxs"}, {"IQ3_XS", "iq3_s"},
    {"IQ3_S", "iq3_s"},     {"IQ3_M", "iq3_s"},
};

constexpr const char* kBlockMatrices[] = {"attn_q.weight",      "attn_k.weight",
                                          "attn_v.weight",      "attn_output.weight",
                                          "ffn_gate.weight",    "ffn_up.weight",
                                          "ffn_down.weight"};

// The output matrix (output.weight, or token_embd when tied): row length % the base's block == 0,
// then IQ2_XXS, IQ2_XS, IQ3_XXS, IQ1_S, IQ2_S, IQ2_M, IQ1_M -> q5_k; otherwise (the base is not
// q8_0) q6_k.
std::string iq_output_type(const std::string& ftype) {
  return ftype == "IQ3_XS" || ftype == "IQ3_S" || ftype == "IQ3_M" ? "q6_k" : "q5_k";
}

// An untied token_embd: IQ2_XXS, IQ2_XS, IQ1_S, IQ1_M -> q2_k; IQ2_S, IQ2_M, IQ3_XXS -> iq3_s;
// no rule for the others (the default, iq3_s for IQ3_XS/IQ3_S/IQ3_M).
std::string iq_token_embd_type(const std::string& ftype, const std::string& base) {
  if (ftype == "IQ2_XXS" || ftype == "IQ2_XS" || ftype.starts_with("IQ1")) return "q2_k";
  if (ftype == "IQ2_S" || ftype == "IQ2_M" || ftype == "IQ3_XXS") return "iq3_s";
  return base;
}

// Checks a whole IQ plan of a dense model against the rules above.
void expect_iq_mix(const mpq::ModelSpec& m, const IqCase& c, bool imatrix) {
  SCOPED_TRACE(std::string(c.ftype) + (imatrix ? " with imatrix" : " without imatrix"));
  const mpq::Plan p = mpq::llama_cpp_mix(c.ftype, m, imatrix);
  EXPECT_EQ(p.base, c.base);
  EXPECT_EQ(p.size(), m.tensors.size());
  expect_one_d_f32(m, p);
  if (m.tied_output) {
    EXPECT_EQ(p.get("token_embd.weight").format, iq_output_type(c.ftype));
  } else {
    EXPECT_EQ(p.get("output.weight").format, iq_output_type(c.ftype));
    EXPECT_EQ(p.get("token_embd.weight").format, iq_token_embd_type(c.ftype, c.base));
  }
  const int64_t n_gqa = m.n_head / m.n_head_kv;
  for (int64_t i = 0; i < m.n_layer; ++i) {
    for (const char* t : kBlockMatrices) {
      EXPECT_EQ(p.get(blk(i, t)).format, iq_block_type(c.ftype, c.base, t, i, m.n_layer, n_gqa,
                                                       imatrix))
          << blk(i, t);
    }
  }
}

TEST(LlamaCppMix, IqMixesWithImatrix) {
  // Qwen3-0.6B too: its n_gqa of 2 reaches the attn_v branches that n_gqa >= 4 skips.
  for (const mpq::ModelSpec& m : {qwen25_15b(), llama32_1b(), qwen3_06b()}) {
    for (const IqCase& c : kIqMixes) expect_iq_mix(m, c, true);
  }
}

// A few of the same expectations written out, so that a slip shared by iq_block_type and the mix
// code would still show.
TEST(LlamaCppMix, IqMixesSpotChecks) {
  const mpq::ModelSpec q = qwen25_15b();  // n = 28: n/8 = 3, 7n/8 = 24; n_gqa = 6
  {
    const mpq::Plan p = mpq::llama_cpp_mix("IQ1_S", q, true);
    EXPECT_EQ(p.get("output.weight").format, "q5_k");           // output: IQ1_S -> q5_k
    EXPECT_EQ(p.get("token_embd.weight").format, "q2_k");       // untied: IQ1_S -> q2_k
    EXPECT_EQ(p.get(blk(0, "attn_v.weight")).format, "q4_k");   // n_gqa 6 >= 4
    EXPECT_EQ(p.get(blk(2, "ffn_down.weight")).format, "q2_k");  // i_ffn_down 2 < 28/8
    EXPECT_EQ(p.get(blk(3, "ffn_down.weight")).format, "iq1_s");
    EXPECT_EQ(p.get(blk(9, "attn_output.weight")).format, "iq2_xxs");  // IQ1_S -> iq2_xxs
    EXPECT_EQ(p.get(blk(9, "attn_k.weight")).format, "iq1_s");         // no rule
  }
  {
    const mpq::Plan p = mpq::llama_cpp_mix("IQ2_M", q, true);
    EXPECT_EQ(p.base, "iq2_s");                                   // IQ2_M's default type
    EXPECT_EQ(p.get("token_embd.weight").format, "iq3_s");        // untied: IQ2_M -> iq3_s
    EXPECT_EQ(p.get(blk(2, "ffn_down.weight")).format, "iq3_s");  // first eighth, IQ2_M
    EXPECT_EQ(p.get(blk(3, "ffn_down.weight")).format, "iq2_s");
    EXPECT_EQ(p.get(blk(3, "attn_output.weight")).format, "iq3_s");  // IQ2_S/IQ2_M -> iq3_s
  }
  {
    const mpq::Plan p = mpq::llama_cpp_mix("IQ3_XS", q, true);
    EXPECT_EQ(p.get("output.weight").format, "q6_k");              // not a Q5_K ftype
    EXPECT_EQ(p.get("token_embd.weight").format, "iq3_s");         // no token_embd rule
    EXPECT_EQ(p.get(blk(0, "attn_q.weight")).format, "iq3_xxs");   // IQ3_XS -> iq3_xxs
    EXPECT_EQ(p.get(blk(2, "ffn_gate.weight")).format, "iq3_s");   // 2 < 28/8
    EXPECT_EQ(p.get(blk(3, "ffn_gate.weight")).format, "iq3_xxs");
    EXPECT_EQ(p.get(blk(23, "ffn_up.weight")).format, "iq3_xxs");
    EXPECT_EQ(p.get(blk(24, "ffn_up.weight")).format, "iq3_s");    // 24 >= 7*28/8
    EXPECT_EQ(p.get(blk(5, "ffn_down.weight")).format, "iq3_s");   // no IQ3_XS ffn_down rule
  }
  {
    const mpq::Plan p = mpq::llama_cpp_mix("IQ3_XXS", q, true);
    EXPECT_EQ(p.get(blk(4, "attn_q.weight")).format, "iq2_s");        // IQ3_XXS -> iq2_s
    EXPECT_EQ(p.get(blk(4, "attn_output.weight")).format, "iq3_s");   // IQ3_XXS -> iq3_s
    EXPECT_EQ(p.get(blk(0, "ffn_down.weight")).format, "iq3_xxs");    // imatrix: no rule
  }
  const mpq::ModelSpec l = llama32_1b();  // n = 16: n/8 = 2, 7n/8 = 14; n_gqa = 4; tied
  {
    const mpq::Plan p = mpq::llama_cpp_mix("IQ2_XXS", l, true);
    EXPECT_FALSE(p.contains("output.weight"));
    EXPECT_EQ(p.get("token_embd.weight").format, "q5_k");         // tied: the output rule
    EXPECT_EQ(p.get(blk(7, "attn_v.weight")).format, "q4_k");     // n_gqa 4 >= 4
    EXPECT_EQ(p.get(blk(1, "ffn_down.weight")).format, "q2_k");   // 1 < 16/8
    EXPECT_EQ(p.get(blk(2, "ffn_down.weight")).format, "iq2_xxs");
  }
  {
    const mpq::Plan p = mpq::llama_cpp_mix("IQ3_M", l, false);
    EXPECT_EQ(p.get("token_embd.weight").format, "q6_k");          // tied, not a Q5_K ftype
    EXPECT_EQ(p.get(blk(1, "ffn_down.weight")).format, "q4_k");    // 1 < 16/8
    EXPECT_EQ(p.get(blk(2, "ffn_down.weight")).format, "iq3_s");
    EXPECT_EQ(p.get(blk(2, "attn_output.weight")).format, "q4_k");  // IQ3_M -> q4_k
    EXPECT_EQ(p.get(blk(2, "attn_v.weight")).format, "q4_k");       // IQ3_M -> q4_k
  }
  {
    const mpq::Plan p = mpq::llama_cpp_mix("IQ3_XS", l, true);
    EXPECT_EQ(p.get(blk(1, "ffn_up.weight")).format, "iq3_s");
    EXPECT_EQ(p.get(blk(2, "ffn_up.weight")).format, "iq3_xxs");   // 16/8 <= 2 < 14
    EXPECT_EQ(p.get(blk(13, "ffn_gate.weight")).format, "iq3_xxs");
    EXPECT_EQ(p.get(blk(14, "ffn_gate.weight")).format, "iq3_s");
  }
  const mpq::ModelSpec small_gqa = qwen3_06b();  // n_gqa = 2
  // 1-/2-bit attn_v below n_gqa 4: IQ2_S/IQ2_M -> iq3_s, the others q2_k.
  EXPECT_EQ(mpq::llama_cpp_mix("IQ1_M", small_gqa, true).get(blk(0, "attn_v.weight")).format,
            "q2_k");
  EXPECT_EQ(mpq::llama_cpp_mix("IQ2_S", small_gqa, true).get(blk(0, "attn_v.weight")).format,
            "iq3_s");
  // IQ3_XXS attn_v below n_gqa 4: iq3_xxs with an imatrix (without, iq3_s, but then attn_q's
  // iq2_s stops the file anyway). IQ3_S stays iq3_s; IQ3_M is q4_k whatever the heads.
  EXPECT_EQ(mpq::llama_cpp_mix("IQ3_XXS", small_gqa, true).get(blk(0, "attn_v.weight")).format,
            "iq3_xxs");
  EXPECT_EQ(mpq::llama_cpp_mix("IQ3_S", small_gqa, false).get(blk(0, "attn_v.weight")).format,
            "iq3_s");
  EXPECT_EQ(mpq::llama_cpp_mix("IQ3_M", small_gqa, false).get(blk(0, "attn_v.weight")).format,
            "q4_k");
}

TEST(LlamaCppMix, IqMixesWithoutImatrix) {
  for (const mpq::ModelSpec& m : {qwen25_15b(), llama32_1b()}) {
    for (const IqCase& c : kIqMixes) {
      const std::string f = c.ftype;
      // tensor_requires_imatrix: iq3_xxs, iq2_xxs, iq2_xs, iq2_s, iq1_m, iq1_s outside
      // token_embd/output. IQ1_*, IQ2_* and IQ3_XXS have such a base; IQ3_XS puts iq3_xxs on
      // attn_q/attn_k. Only IQ3_S and IQ3_M get through, and no rule of theirs reads the imatrix.
      if (f == "IQ3_S" || f == "IQ3_M") {
        expect_iq_mix(m, c, false);
        const mpq::Plan with = mpq::llama_cpp_mix(f, m, true);
        const mpq::Plan without = mpq::llama_cpp_mix(f, m, false);
        for (const auto& [name, choice] : with.tensors()) EXPECT_EQ(without.get(name), choice);
        continue;
      }
      try {
        mpq::llama_cpp_mix(f, m, false);
        ADD_FAILURE() << f << " without an imatrix did not throw";
      } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("importance matrix"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("blk.0."), std::string::npos) << e.what();
      }
    }
  }
}

}  // namespace
