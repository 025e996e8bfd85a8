"""Launch tunables of the CUDA kernels. Tests patch them small so that a launch spans several
blocks on the simulator."""

# threads per block for the per-stream kernels and the per-parameter kernels
THREADS_PER_BLOCK = 128
# cap on the blocks of the grid-stride per-parameter kernels (shared-weight reduction, update)
MAX_BLOCKS = 1024
# threads per block of the one-block norm reduction (a power of two, at most 1024)
REDUCE_THREADS = 128
# partial sums per parameter in the shared-gradient reduction (a warp: coalesced reads)
REDUCE_LANES = 32
