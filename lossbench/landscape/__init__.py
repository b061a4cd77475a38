"""Loss landscapes: slices of a loss along directions in parameter space, on pytrees.

Directions (filter-normalised Gaussian, Li et al. 2018; Hessian eigenvectors; trajectory PCA;
straight lines), compiled evaluation on lines, planes and curves, barriers and Bézier mode
connectivity (Garipov et al. 2018), and figures. `compute_landscape` / `write_landscape` do it
for a saved run; `lossbench landscape RUN_DIR kind=…` is the same from the command line.
"""

from lossbench.landscape.barrier import barrier_height as barrier_height
from lossbench.landscape.barrier import bezier_path as bezier_path
from lossbench.landscape.barrier import bezier_point as bezier_point
from lossbench.landscape.barrier import fit_bezier as fit_bezier
from lossbench.landscape.barrier import linear_path as linear_path
from lossbench.landscape.cli import landscape_main as landscape_main
from lossbench.landscape.compute import KINDS as KINDS
from lossbench.landscape.compute import compute_landscape as compute_landscape
from lossbench.landscape.directions import eigen_directions as eigen_directions
from lossbench.landscape.directions import filter_normalize as filter_normalize
from lossbench.landscape.directions import filter_norms as filter_norms
from lossbench.landscape.directions import gaussian_like as gaussian_like
from lossbench.landscape.directions import line_direction as line_direction
from lossbench.landscape.directions import orthogonalize as orthogonalize
from lossbench.landscape.directions import project as project
from lossbench.landscape.directions import random_directions as random_directions
from lossbench.landscape.directions import tree_combine as tree_combine
from lossbench.landscape.files import load_landscape as load_landscape
from lossbench.landscape.files import write_landscape as write_landscape
from lossbench.landscape.first_layer import FirstLayerSplit as FirstLayerSplit
from lossbench.landscape.first_layer import first_layer_split as first_layer_split
from lossbench.landscape.grid import curvature_grid as curvature_grid
from lossbench.landscape.grid import evaluate_grid as evaluate_grid
from lossbench.landscape.grid import evaluate_points as evaluate_points
from lossbench.landscape.grid import grid_coords as grid_coords
from lossbench.landscape.pca import TrajectoryPCA as TrajectoryPCA
from lossbench.landscape.pca import trajectory_pca as trajectory_pca
from lossbench.landscape.runs import final_params as final_params
from lossbench.landscape.runs import load_run_problem as load_run_problem
from lossbench.landscape.runs import make_metrics_fn as make_metrics_fn
