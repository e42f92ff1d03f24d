#pragma once
// Internal: the codebooks of llama.cpp's IQ1-IQ3 formats. Two views of each:
//   - the dequantization grids (kIq2xxsGrid ...): entry i holds the 8 (or 4) decoded magnitudes of
//     codeword i as bytes, exactly ggml-common.h's tables;
//   - the quantizer's Lattice: the same codewords as points with odd coordinates 2l+1 (l a small
//     level), a map from every level vector to its codeword, and, for level vectors that are not
//     codewords, the codewords in their closest few distance shells (ggml's iq2xs_init_impl /
//     iq3xs_init_impl). The quantizer rounds to level vectors and only searches those neighbours.
#include <bit>
#include <cstdint>
#include <vector>

namespace mpq::detail::ggml {

#include "ggml/iq_grids.inc"

// ggml's ksigns_iq2xs: 7 stored sign bits, the 8th the parity that makes the count of minus signs
// even (the quantizers of IQ2_XXS, IQ2_XS and IQ3_XXS enforce it).
constexpr uint8_t sign_byte(uint32_t seven_bits) {
  const uint32_t s = seven_bits & 127;
  return static_cast<uint8_t>(s | ((std::popcount(s) & 1) << 7));
}

// The packed codebooks the quantizers search.
enum class LatticeKind {
  kIq2xxs,  // 256 points of 8 two-bit levels
  kIq2xs,   // 512
  kIq2s,    // 1024
  kIq1s,    // 2048 points of 8 levels 0..2 (IQ1_S and IQ1_M)
  kIq3xxs,  // 256 points of 4 three-bit levels
  kIq3s,    // 512
};

struct Lattice {
  int dim = 0;          // coordinates per point: 8 or 4
  int level_bits = 0;   // bits per level in a level vector's key: 2 or 3
  std::vector<int8_t> points;  // [size][dim], coordinates 2l+1
  // key (levels packed level_bits apiece, coordinate 0 lowest) -> codeword index if >= 0, else
  // -(offset + 1) into neighbours, where neighbours[offset] = n and the n codewords follow,
  // nearest shell first, by index within a shell (ggml's order, which decides ties). Keys with a
  // level the quantizers never produce (3 in the two-bit lattices) are kUnmapped.
  static constexpr int32_t kUnmapped = INT32_MIN;
  std::vector<int32_t> map;
  std::vector<uint16_t> neighbours;
  // The coordinates of each neighbour list, transposed ([dim][n], at dim * (offset + 1)), so that
  // a search computes the distances of all the neighbours side by side in vector lanes.
  std::vector<int8_t> neighbour_coords;

  const int8_t* point(int index) const { return points.data() + dim * index; }
  const uint16_t* neighbours_of(int key) const { return neighbours.data() + (-map[key] - 1); }
  const int8_t* neighbour_coords_of(int key) const { return neighbour_coords.data() + dim * (-map[key]); }
};

// The most neighbours any key has (IQ2_XS: 292), for the searches' stack buffers.
inline constexpr int kMaxNeighbours = 320;

// Built on first use (thread-safe), then shared read-only.
const Lattice& lattice(LatticeKind kind);

}  // namespace mpq::detail::ggml
