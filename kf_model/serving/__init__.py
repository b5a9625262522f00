"""Everything the app does, minus the UI: image checks, preprocessing, banks, prediction, export.

``app.py`` only builds the Gradio interface on top of :class:`BankRegistry`; this module imports no
gradio, so tests call the prediction function directly.

- **Images** (:func:`open_image`, :func:`prepare_image`): any file PIL reads, refused with an
  :class:`~kf_model.errors.InvalidImageError` that says why when it is not an image, truncated, empty or
  larger than :data:`MAX_IMAGE_PIXELS` (decompression bombs are caught from the header, before decoding).
  Palette, CMYK, 16-bit, transparent and animated images are converted (first frame; transparency
  composited onto the background that contrasts with the drawing); large images are downscaled to
  :data:`WORKING_SIDE` before the bank's own preprocessing. Light-background images (a drawing on white)
  are inverted to the datasets' light-on-dark convention when ``invert=None``.
- **Banks** (:class:`BankRegistry`): the bundled banks of ``assets/factors/`` are loaded once, moved to
  the device once; Hub banks are fetched lazily: the manifest first, then only the CKN and the TSNs of
  the tasks asked for. Assembled networks are cached per (bank, task set).
- **Prediction** (:meth:`BankRegistry.predict`): one preprocessing, one forward pass (CUDA autocast when on
  a GPU, under ``spaces.GPU`` on ZeroGPU Spaces), softmax per task; by torch or by onnxruntime on the tick
  set's network exported once (:class:`ServingRuntime`, ``KF_RUNTIME``). :class:`PredictionGate` runs bank loads
  apart from predictions, each with its own limit, so a slow or hostile bank never delays the others.

One module a job: ``images`` (checks, conversion), ``registry`` (banks), ``predict`` (forward pass, answer),
``runtime`` (torch or onnxruntime), ``gate`` (load and prediction limits), ``memory`` (caches bounded by
bytes), ``export`` (zip of a bank, ONNX file), ``explain`` (text and figures of the UI),
``examples`` (``assets/examples/``), ``example_answers`` (their answers, kept).
``python -m kf_model.serving examples`` renders the example images.
"""

from kf_model.errors import RequestError
from kf_model.serving.example_answers import ExampleAnswers
from kf_model.serving.examples import EXAMPLES_DIR, EXAMPLES_FILE, Example, generate_examples, load_examples
from kf_model.serving.explain import assembly_svg, explain_markdown, format_metric, summary_markdown
from kf_model.serving.export import ScratchDir
from kf_model.serving.gate import LOADS, PredictionGate
from kf_model.serving.images import UPLOAD_MAX_BYTES, is_blank, open_image, prepare_image, should_invert
from kf_model.serving.memory import BoundedCache
from kf_model.serving.predict import Prediction
from kf_model.serving.registry import (
    BANK_ORDER,
    FACTORS_DIR,
    BankEntry,
    BankRegistry,
    in_bank_order,
    parse_hub_reference,
    plain_message,
)
from kf_model.serving.runtime import RUNTIMES

__all__ = [
    "BANK_ORDER", "EXAMPLES_DIR", "EXAMPLES_FILE", "FACTORS_DIR", "LOADS", "RUNTIMES",
    "UPLOAD_MAX_BYTES",
    "BankEntry", "BankRegistry", "BoundedCache", "Example", "ExampleAnswers", "Prediction", "PredictionGate",
    "RequestError", "ScratchDir", "assembly_svg", "explain_markdown", "format_metric", "generate_examples",
    "in_bank_order", "is_blank", "load_examples", "open_image", "parse_hub_reference", "plain_message",
    "prepare_image", "should_invert", "summary_markdown"
]
