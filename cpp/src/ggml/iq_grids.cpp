// The quantizers' lattices, unpacked from ggml's packed tables as iq2xs_init_impl and
// iq3xs_init_impl do, with the same neighbour lists.
#include "ggml/iq_grids.h"

#include <algorithm>
#include <array>
#include <cassert>

namespace mpq::detail::ggml {

namespace {

struct Spec {
  const uint16_t* packed;
  int size, dim, level_bits;
  int max_level;  // levels the quantizers round to: 0..max_level
  int shells;     // ggml's nwant: distance shells kept as neighbours
};

Spec spec(LatticeKind kind) {
  switch (kind) {
    case LatticeKind::kIq2xxs: return {kPacked2bit256, 256, 8, 2, 2, 2};
    case LatticeKind::kIq2xs: return {kPacked2bit512, 512, 8, 2, 2, 2};
    case LatticeKind::kIq2s: return {kPacked2bit1024, 1024, 8, 2, 2, 1};
    case LatticeKind::kIq1s: return {kPacked1bit2048, 2048, 8, 2, 2, 3};
    case LatticeKind::kIq3xxs: return {kPacked3bit256, 256, 4, 3, 7, 2};
    case LatticeKind::kIq3s: return {kPacked3bit512, 512, 4, 3, 7, 3};
  }
  return {};
}

Lattice build(const Spec& s) {
  Lattice g;
  g.dim = s.dim;
  g.level_bits = s.level_bits;
  const int mask = (1 << s.level_bits) - 1;
  g.points.resize(static_cast<size_t>(s.size) * s.dim);
  g.map.assign(size_t{1} << (s.dim * s.level_bits), Lattice::kUnmapped);
  for (int k = 0; k < s.size; ++k) {
    for (int i = 0; i < s.dim; ++i) {
      g.points[k * s.dim + i] = static_cast<int8_t>(2 * ((s.packed[k] >> s.level_bits * i) & mask) + 1);
    }
    g.map[s.packed[k]] = k;  // the packed entry is the level vector's key
  }
  // Off-grid keys: the codewords in the `shells` smallest squared distances, ordered by
  // (distance, index) as ggml's qsort with its total-order comparator leaves them. Distances are
  // small integers, so a pass finding the shell radii and a pass collecting by radius suffice.
  std::vector<int> d2(s.size);
  std::array<int, 3> radius{};
  for (size_t key = 0; key < g.map.size(); ++key) {
    if (g.map[key] != Lattice::kUnmapped) continue;
    int8_t pos[8];
    bool valid = true;
    for (int i = 0; i < s.dim; ++i) {
      const int l = static_cast<int>(key >> s.level_bits * i) & mask;
      valid &= l <= s.max_level;
      pos[i] = static_cast<int8_t>(2 * l + 1);
    }
    if (!valid) continue;
    int found = 0;
    for (int j = 0; j < s.size; ++j) {
      int d = 0;
      for (int i = 0; i < s.dim; ++i) {
        const int diff = g.points[j * s.dim + i] - pos[i];
        d += diff * diff;
      }
      d2[j] = d;
      // keep the `shells` smallest distinct distances, ascending
      if (found == s.shells && d >= radius[found - 1]) continue;
      int at = 0;
      while (at < found && radius[at] < d) ++at;
      if (at < found && radius[at] == d) continue;
      for (int m = std::min(found, s.shells - 1); m > at; --m) radius[m] = radius[m - 1];
      radius[at] = d;
      found = std::min(found + 1, s.shells);
    }
    const size_t offset = g.neighbours.size();
    g.map[key] = -static_cast<int32_t>(offset) - 1;
    g.neighbours.push_back(0);
    for (int r = 0; r < found; ++r) {
      for (int j = 0; j < s.size; ++j) {
        if (d2[j] == radius[r]) g.neighbours.push_back(static_cast<uint16_t>(j));
      }
    }
    g.neighbours[offset] = static_cast<uint16_t>(g.neighbours.size() - offset - 1);
    assert(g.neighbours[offset] > 0 && g.neighbours[offset] <= kMaxNeighbours);
  }
  g.neighbour_coords.resize(g.neighbours.size() * s.dim);
  for (int32_t m : g.map) {
    if (m >= 0 || m == Lattice::kUnmapped) continue;
    const size_t offset = static_cast<size_t>(-m - 1);
    const int n = g.neighbours[offset];
    int8_t* c = g.neighbour_coords.data() + s.dim * (offset + 1);
    for (int j = 0; j < n; ++j) {
      for (int i = 0; i < s.dim; ++i) c[i * n + j] = g.points[g.neighbours[offset + 1 + j] * s.dim + i];
    }
  }
  return g;
}

}  // namespace

const Lattice& lattice(LatticeKind kind) {
  // Function-local statics: built once, on first use, thread-safely.
  switch (kind) {
    case LatticeKind::kIq2xxs: { static const Lattice g = build(spec(kind)); return g; }
    case LatticeKind::kIq2xs: { static const Lattice g = build(spec(kind)); return g; }
    case LatticeKind::kIq2s: { static const Lattice g = build(spec(kind)); return g; }
    case LatticeKind::kIq1s: { static const Lattice g = build(spec(kind)); return g; }
    case LatticeKind::kIq3xxs: { static const Lattice g = build(spec(kind)); return g; }
    case LatticeKind::kIq3s: break;
  }
  static const Lattice g = build(spec(LatticeKind::kIq3s));
  return g;
}

}  // namespace mpq::detail::ggml
