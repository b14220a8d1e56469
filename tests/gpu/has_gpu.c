/* Test helper: exits 0 when a CUDA device is visible, 1 otherwise (GPU tests then skip). */
#include <stdio.h>

#include "runtime/cuda/cuda_device.h"

int main(void)
{
    int n = rt_cuda_device_count();
    char d[160] = "";
    if (n > 0 && rt_cuda_describe(0, d, sizeof d) == 0)
        printf("%d CUDA device(s), first: %s\n", n, d);
    return n > 0 ? 0 : 1;
}
