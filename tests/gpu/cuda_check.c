/* A CUDA compute check for a distribution: loads the driver (libcuda.so.1) the way CUDA programs
 * do, lists the GPUs, JIT-compiles a small PTX kernel (y = a*x + y), runs it on 1M floats on GPU 0
 * and compares every element with the host's result. Needs only the C library and the driver's
 * files in /usr/lib/wsl/lib; build with `cc -O2 -o cuda-check cuda_check.c -ldl`.
 * Exit status: 0 when the kernel's result is right, 1 otherwise (the failing call is printed). */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUmodule;
typedef void *CUfunction;
typedef unsigned long long CUdeviceptr;

static const char kernel_ptx[] =
    ".version 7.0\n"
    ".target sm_50\n"
    ".address_size 64\n"
    ".visible .entry scale_add(.param .u64 x, .param .u64 y, .param .f32 a, .param .u32 n)\n"
    "{\n"
    "  .reg .pred %p<2>;\n"
    "  .reg .f32 %f<5>;\n"
    "  .reg .b32 %r<6>;\n"
    "  .reg .b64 %rd<8>;\n"
    "  ld.param.u64 %rd1, [x];\n"
    "  ld.param.u64 %rd2, [y];\n"
    "  ld.param.f32 %f1, [a];\n"
    "  ld.param.u32 %r2, [n];\n"
    "  mov.u32 %r3, %ctaid.x;\n"
    "  mov.u32 %r4, %ntid.x;\n"
    "  mov.u32 %r5, %tid.x;\n"
    "  mad.lo.s32 %r1, %r3, %r4, %r5;\n"
    "  setp.ge.u32 %p1, %r1, %r2;\n"
    "  @%p1 bra DONE;\n"
    "  cvta.to.global.u64 %rd3, %rd2;\n"
    "  cvta.to.global.u64 %rd4, %rd1;\n"
    "  mul.wide.u32 %rd5, %r1, 4;\n"
    "  add.s64 %rd6, %rd4, %rd5;\n"
    "  ld.global.f32 %f2, [%rd6];\n"
    "  add.s64 %rd7, %rd3, %rd5;\n"
    "  ld.global.f32 %f3, [%rd7];\n"
    "  fma.rn.f32 %f4, %f2, %f1, %f3;\n"
    "  st.global.f32 [%rd7], %f4;\n"
    "DONE:\n"
    "  ret;\n"
    "}\n";

static void *driver;

static void *symbol(const char *name)
{
    void *found = dlsym(driver, name);
    if (!found) {
        fprintf(stderr, "cuda-check: libcuda.so.1 has no %s\n", name);
        exit(1);
    }
    return found;
}

static void check(CUresult result, const char *call)
{
    if (result != 0) {
        const char *text = "unknown error";
        CUresult (*error_string)(CUresult, const char **) = (CUresult (*)(CUresult, const char **))dlsym(driver, "cuGetErrorString");
        if (error_string)
            error_string(result, &text);
        fprintf(stderr, "cuda-check: %s failed: %d (%s)\n", call, result, text);
        exit(1);
    }
}

int main(void)
{
    enum { N = 1 << 20, THREADS = 256 };
    driver = dlopen("libcuda.so.1", RTLD_NOW);
    if (!driver) {
        fprintf(stderr, "cuda-check: %s\n", dlerror());
        return 1;
    }
    CUresult (*cu_init)(unsigned) = (CUresult (*)(unsigned))symbol("cuInit");
    CUresult (*driver_version)(int *) = (CUresult (*)(int *))symbol("cuDriverGetVersion");
    CUresult (*device_count)(int *) = (CUresult (*)(int *))symbol("cuDeviceGetCount");
    CUresult (*device_get)(CUdevice *, int) = (CUresult (*)(CUdevice *, int))symbol("cuDeviceGet");
    CUresult (*device_name)(char *, int, CUdevice) = (CUresult (*)(char *, int, CUdevice))symbol("cuDeviceGetName");
    CUresult (*context_create)(CUcontext *, unsigned, CUdevice) = (CUresult (*)(CUcontext *, unsigned, CUdevice))symbol("cuCtxCreate_v2");
    CUresult (*module_load)(CUmodule *, const void *) = (CUresult (*)(CUmodule *, const void *))symbol("cuModuleLoadData");
    CUresult (*module_function)(CUfunction *, CUmodule, const char *) = (CUresult (*)(CUfunction *, CUmodule, const char *))symbol("cuModuleGetFunction");
    CUresult (*mem_alloc)(CUdeviceptr *, size_t) = (CUresult (*)(CUdeviceptr *, size_t))symbol("cuMemAlloc_v2");
    CUresult (*copy_in)(CUdeviceptr, const void *, size_t) = (CUresult (*)(CUdeviceptr, const void *, size_t))symbol("cuMemcpyHtoD_v2");
    CUresult (*copy_out)(void *, CUdeviceptr, size_t) = (CUresult (*)(void *, CUdeviceptr, size_t))symbol("cuMemcpyDtoH_v2");
    CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void *, void **, void **) =
        (CUresult (*)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void *, void **, void **))symbol("cuLaunchKernel");
    CUresult (*synchronize)(void) = (CUresult (*)(void))symbol("cuCtxSynchronize");
    CUresult (*mem_free)(CUdeviceptr) = (CUresult (*)(CUdeviceptr))symbol("cuMemFree_v2");
    CUresult (*context_destroy)(CUcontext) = (CUresult (*)(CUcontext))symbol("cuCtxDestroy_v2");

    int version = 0, count = 0;
    check(cu_init(0), "cuInit");
    check(driver_version(&version), "cuDriverGetVersion");
    check(device_count(&count), "cuDeviceGetCount");
    printf("driver API %d.%d, %d GPU(s)\n", version / 1000, version % 1000 / 10, count);
    if (count < 1) {
        fprintf(stderr, "cuda-check: no GPU\n");
        return 1;
    }
    for (int index = 0; index < count; index++) {
        CUdevice device;
        char name[256] = "";
        check(device_get(&device, index), "cuDeviceGet");
        check(device_name(name, sizeof name, device), "cuDeviceGetName");
        printf("GPU %d: %s\n", index, name);
    }

    CUdevice device;
    CUcontext context;
    CUmodule module;
    CUfunction function;
    CUdeviceptr x_gpu, y_gpu;
    check(device_get(&device, 0), "cuDeviceGet");
    check(context_create(&context, 0, device), "cuCtxCreate");
    check(module_load(&module, kernel_ptx), "cuModuleLoadData (PTX JIT)");
    check(module_function(&function, module, "scale_add"), "cuModuleGetFunction");

    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y), *out = malloc(N * sizeof *out);
    if (!x || !y || !out)
        return 1;
    for (unsigned i = 0; i < N; i++) {
        x[i] = (float)(i % 1000) * 0.5f;
        y[i] = (float)(i % 7);
    }
    float a = 3.0f;
    unsigned n = N;
    check(mem_alloc(&x_gpu, N * sizeof *x), "cuMemAlloc");
    check(mem_alloc(&y_gpu, N * sizeof *y), "cuMemAlloc");
    check(copy_in(x_gpu, x, N * sizeof *x), "cuMemcpyHtoD");
    check(copy_in(y_gpu, y, N * sizeof *y), "cuMemcpyHtoD");
    void *arguments[] = {&x_gpu, &y_gpu, &a, &n};
    check(launch(function, (N + THREADS - 1) / THREADS, 1, 1, THREADS, 1, 1, 0, NULL, arguments, NULL), "cuLaunchKernel");
    check(synchronize(), "cuCtxSynchronize");
    check(copy_out(out, y_gpu, N * sizeof *out), "cuMemcpyDtoH");
    unsigned wrong = 0;
    for (unsigned i = 0; i < N; i++)
        if (out[i] != a * x[i] + y[i])
            wrong++;
    check(mem_free(x_gpu), "cuMemFree");
    check(mem_free(y_gpu), "cuMemFree");
    check(context_destroy(context), "cuCtxDestroy");
    if (wrong) {
        fprintf(stderr, "cuda-check: %u of %d results wrong\n", wrong, N);
        return 1;
    }
    printf("kernel ran on GPU 0: %d of %d results right\n", N, N);
    return 0;
}
