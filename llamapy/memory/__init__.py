"""Memory planning: will a model fit, how many layers to offload, where the bytes go."""
from .estimate import (
    DeviceMemory,
    EstimateError,
    GpuLayersEstimate,
    MemoryEstimate,
    estimate_gpu_layers,
    estimate_memory_usage,
)

__all__ = ["DeviceMemory", "EstimateError", "GpuLayersEstimate", "MemoryEstimate", "estimate_gpu_layers",
           "estimate_memory_usage"]
