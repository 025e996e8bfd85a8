"""Launch tunables of the CUDA kernels. Tests patch them small so that a launch spans several
blocks on the simulator."""

# threads per block for the per-stream kernels and the per-parameter kernels
THREADS_PER_BLOCK = 128
# cap on the blocks of the grid-stride per-parameter kernels (shared-weight reduction, update)
MAX_BLOCKS = 1024
# threads per block of the stream reduction (a power of two)
REDUCE_THREADS = 128
