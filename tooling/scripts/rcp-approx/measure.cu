// Dumps where 1.0f/x under --use_fast_math (as bitsandbytes compiles it) differs from IEEE division, for x in [1, 2).
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <vector>
__global__ void k(const float* in, float* out, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = 1.0f / in[i];
}
int main(int argc, char** argv) {
  const int n = 1 << 23;
  std::vector<float> h(n), r(n);
  for (int i = 0; i < n; i++) { uint32_t b = 0x3f800000u | (uint32_t)i; memcpy(&h[i], &b, 4); }
  float *din, *dout;
  cudaMalloc(&din, n * 4); cudaMalloc(&dout, n * 4);
  cudaMemcpy(din, h.data(), n * 4, cudaMemcpyHostToDevice);
  k<<<(n + 255) / 256, 256>>>(din, dout, n);
  cudaError_t e = cudaMemcpy(r.data(), dout, n * 4, cudaMemcpyDeviceToHost);
  if (e != cudaSuccess) { printf("cuda error %s\n", cudaGetErrorString(e)); return 1; }
  FILE* f = fopen(argc > 1 ? argv[1] : "rcp_diff.bin", "wb");
  int cnt = 0, up = 0, down = 0;
  for (int i = 0; i < n; i++) {
    volatile float x = h[i];
    float ieee = 1.0f / x;
    uint32_t a, b; memcpy(&a, &ieee, 4); memcpy(&b, &r[i], 4);
    if (a != b) { cnt++; if (b > a) up++; else down++; uint32_t rec[2] = {(uint32_t)i, b}; fwrite(rec, 4, 2, f); }
  }
  fclose(f);
  printf("differ %d of %d (fast larger %d, smaller %d)\n", cnt, n, up, down);
  return 0;
}
