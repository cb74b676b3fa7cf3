"""Image-formation physics: pure, batched, differentiable functions (CPU and CUDA)."""
