"""GPU comparison: fastbp CUDA kernels vs cuBLAS and PyTorch CUDA (needs a GPU).

    python benchmarks/compare_cuda.py [--quick]      (the same as: fastbp bench --device cuda)
"""
import sys

from fastbp.bench.cuda import main

if __name__ == "__main__":
    sys.exit(main(quick="--quick" in sys.argv[1:]))
