# Writes `size` bytes of deterministic text for one synthetic package: every third line is a
# repeated phrase (compressible), the others hex from a Park-Miller LCG seeded by `seed`
# (incompressible). Doubles represent every intermediate product exactly (< 2^47).
BEGIN {
  m = 2147483647
  s = seed
  n = 0
  i = 0
  while (n < size) {
    if (i % 3 == 0) {
      line = sprintf("%s line %08d: the quick brown fox jumps over the lazy dog", name, i)
    } else {
      s = (s * 48271) % m; a = s
      s = (s * 48271) % m; b = s
      s = (s * 48271) % m; c = s
      s = (s * 48271) % m; d = s
      line = sprintf("%08x%08x%08x%08x%08x%08x", a, b, c, d, (a + b) % m, (c + d) % m)
    }
    print line
    n += length(line) + 1
    i++
  }
}
