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

from kf_model.devices import autocast_dtype, describe_device, pick_device
from kf_model.errors import RequestError
from kf_model.serving.example_answers import ExampleAnswers
from kf_model.serving.examples import EXAMPLES_DIR, EXAMPLES_FILE, Example, generate_examples, load_examples
from kf_model.serving.explain import (
    METRIC_LABELS,
    assembly_svg,
    explain_markdown,
    format_bytes,
    format_count,
    format_metric,
    metric_label,
    metrics_markdown,
    summary_markdown,
)
from kf_model.serving.export import ScratchDir, write_bank_onnx, write_bank_zip
from kf_model.serving.gate import LOADS, MAX_WAITING_LOADS, PredictionGate
from kf_model.serving.images import (
    MAX_FILE_BYTES,
    MAX_IMAGE_PIXELS,
    PREVIEW_SIDE,
    WORKING_SIDE,
    is_blank,
    is_light_background,
    open_image,
    prepare_image,
    should_invert,
    tensor_to_preview,
)
from kf_model.serving.memory import MAX_HUB_BANKS, MAX_HUB_BYTES, MAX_NETWORK_BYTES, MAX_NETWORKS, BoundedCache
from kf_model.serving.predict import INPUT_KEY, TOP_K, Prediction, api_result, no_tasks
from kf_model.serving.registry import (
    BANK_ORDER,
    FACTORS_DIR,
    MAX_BANK_KEY,
    BankEntry,
    BankRegistry,
    in_bank_order,
    parse_bank_key,
    parse_hub_reference,
    plain_message,
)
from kf_model.serving.runtime import RUNTIMES, ServingRuntime, check_runtime
from kf_model.utils import ASSETS_DIR

__all__ = [
    "ASSETS_DIR",
    "BANK_ORDER",
    "EXAMPLES_DIR",
    "EXAMPLES_FILE",
    "FACTORS_DIR",
    "INPUT_KEY",
    "LOADS",
    "MAX_BANK_KEY",
    "MAX_FILE_BYTES",
    "MAX_HUB_BANKS",
    "MAX_HUB_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_NETWORKS",
    "MAX_NETWORK_BYTES",
    "MAX_WAITING_LOADS",
    "METRIC_LABELS",
    "PREVIEW_SIDE",
    "RUNTIMES",
    "TOP_K",
    "WORKING_SIDE",
    "BankEntry",
    "BankRegistry",
    "BoundedCache",
    "Example",
    "ExampleAnswers",
    "Prediction",
    "PredictionGate",
    "RequestError",
    "ScratchDir",
    "ServingRuntime",
    "api_result",
    "assembly_svg",
    "autocast_dtype",
    "check_runtime",
    "describe_device",
    "explain_markdown",
    "format_bytes",
    "format_count",
    "format_metric",
    "generate_examples",
    "in_bank_order",
    "is_blank",
    "is_light_background",
    "load_examples",
    "metric_label",
    "metrics_markdown",
    "no_tasks",
    "open_image",
    "parse_bank_key",
    "parse_hub_reference",
    "pick_device",
    "plain_message",
    "prepare_image",
    "should_invert",
    "summary_markdown",
    "tensor_to_preview",
    "write_bank_onnx",
    "write_bank_zip",
]
