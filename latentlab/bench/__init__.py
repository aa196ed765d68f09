"""Model benchmarks: parameters, training / encode / decode throughput, reconstruction error, peak memory.

`measure` times one configuration in the current process (`run_benchmark`); `runner` runs each
configuration, inference and training apart, in processes of its own (`run_isolated`, what
`latentlab bench` calls); `machine` reads peak memory, the CPU's name and the load from the platform.
"""

from latentlab.bench.measure import (
    CONFIGS,
    BenchConfig,
    bench_images,
    forward_flops,
    perturb_output_convs,
    run_benchmark,
)
from latentlab.bench.runner import run_isolated

__all__ = [
    "CONFIGS",
    "BenchConfig",
    "bench_images",
    "forward_flops",
    "perturb_output_convs",
    "run_benchmark",
    "run_isolated",
]
