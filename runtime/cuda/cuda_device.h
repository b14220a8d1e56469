/* CUDA device discovery, callable from C without CUDA headers. The CUDA op table (backend.h)
 * is built on this in the GPU issue. */
#ifndef DINFER_RUNTIME_CUDA_DEVICE_H
#define DINFER_RUNTIME_CUDA_DEVICE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of visible CUDA devices; 0 when there is none or no driver (never fails). */
int rt_cuda_device_count(void);

/* One line naming device i (name, memory, compute capability) into buf; -1 when it is not there. */
int rt_cuda_describe(int device, char *buf, size_t n);

#ifdef __cplusplus
}
#endif

#endif
