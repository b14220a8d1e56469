#include <cuda_runtime.h>
#include <stdio.h>

#include "runtime/cuda/cuda_device.h"

extern "C" int rt_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky "no driver" error */
        return 0;
    }
    return n;
}

extern "C" int rt_cuda_describe(int device, char *buf, size_t n)
{
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, device) != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    snprintf(buf, n, "cuda:%d %s, %.1f GiB, sm_%d%d", device, p.name,
             (double)p.totalGlobalMem / (1 << 30), p.major, p.minor);
    return 0;
}
