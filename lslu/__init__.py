"""lslu: Learnable Series Linear Units (arXiv 2409.08283), models, training and analysis."""
import warnings as _warnings

# Some dependencies (timm's hub helpers) create tqdm.auto bars; without ipywidgets a notebook
# then prints a warning that carries the interpreter's absolute path. Our bars are plain text.
_warnings.filterwarnings("ignore", message=".*IProgress not found.*")
from .activations import (ACTIVATIONS, LSLU, AconC, FReLU, SeriesActivation, SwishBeta,
                          make_activation, naive_series, reference_deploy_, three_piece,
                          three_piece_parameters)
from .models import (MODELS, BASELINE_ACTIVATION, build_model, count_parameters, lslu_layers,
                     no_weight_decay_parameters, param_groups)

__version__ = "0.1.0"
