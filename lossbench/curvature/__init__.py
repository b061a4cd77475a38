"""Curvature probes: Hessian / Gauss-Newton products, extreme eigenvalues, trace, spectral
density and per-block curvature, on any loss over any pytree of parameters.

Everything is a pure JAX function (jit, vmap, float32 or float64); nothing here knows Hydra.
`make_probe` bundles them into one function for the compiled training loop.

The first call of a compiled function here (`hessian_eigenvalues` & co.) turns on lossbench's
persistent compilation cache (`lossbench.compile_cache.cache_by_default`) unless JAX already
has a cache directory or `LOSSBENCH_NO_CACHE=1`: a notebook's second session loads them from
disk instead of compiling them again (benchmarks/peers.md: the first top-5 call then costs
about a quarter).
"""

from lossbench.curvature.density import SpectralDensity as SpectralDensity
from lossbench.curvature.density import lanczos_quadrature as lanczos_quadrature
from lossbench.curvature.density import spectral_density as spectral_density
from lossbench.curvature.density import spectral_density_of as spectral_density_of
from lossbench.curvature.eigen import EigenResult as EigenResult
from lossbench.curvature.eigen import block_top_eigenvalues as block_top_eigenvalues
from lossbench.curvature.eigen import block_top_eigenvalues_of as block_top_eigenvalues_of
from lossbench.curvature.eigen import block_top_ggn_eigenvalues as block_top_ggn_eigenvalues
from lossbench.curvature.eigen import eigenvalues_of as eigenvalues_of
from lossbench.curvature.eigen import ggn_eigenvalues as ggn_eigenvalues
from lossbench.curvature.eigen import hessian_eigenvalues as hessian_eigenvalues
from lossbench.curvature.lanczos import LanczosDecomposition as LanczosDecomposition
from lossbench.curvature.lanczos import lanczos as lanczos
from lossbench.curvature.operators import ggn_matvec as ggn_matvec
from lossbench.curvature.operators import ggn_vp as ggn_vp
from lossbench.curvature.operators import hessian_matvec as hessian_matvec
from lossbench.curvature.operators import hvp as hvp
from lossbench.curvature.operators import parameter_blocks as parameter_blocks
from lossbench.curvature.probe import make_probe as make_probe
from lossbench.curvature.probe import record_keys as record_keys
from lossbench.curvature.trace import TraceResult as TraceResult
from lossbench.curvature.trace import hessian_trace as hessian_trace
from lossbench.curvature.trace import trace_of as trace_of
