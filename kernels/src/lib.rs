//! cubecl kernels for nanovllm (see README: each kernel is kernel + launcher + plain-burn reference).
